//! The load engine: closed loop (N workers, each starting its next operation
//! when the last finished) or open loop (operations started at a fixed rate,
//! whatever the latency — latencies are measured from the scheduled start,
//! so a slow server cannot hide its queueing: no coordinated omission).
//! A warm-up precedes the measured window; a progress line ticks on stderr.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Code, Status};

use crate::stats::{StatsMap, merge_into};

/// How operations are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` workers in a loop.
    Closed {
        /// Operations in flight.
        concurrency: usize,
    },
    /// `rate` operations per second, at most `max_in_flight` at once (the
    /// excess is counted as `ClientOverloaded`, never silently dropped).
    Open {
        /// Arrivals per second.
        rate: f64,
        /// Bound on concurrently running operations.
        max_in_flight: usize,
    },
}

/// One run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How operations start.
    pub mode: Mode,
    /// Unmeasured lead-in.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Records the calls of one operation.
#[derive(Debug)]
pub struct Recorder {
    stats: StatsMap,
    measure_from: Instant,
    /// When the current operation was due (open loop) or started.
    op_start: Instant,
    calls: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl Recorder {
    /// Times `call` as RPC `rpc` and records its outcome; returns its value
    /// on success. Only calls started inside the measured window count.
    pub async fn call<T, F>(&mut self, rpc: &str, call: F) -> Option<T>
    where
        F: Future<Output = Result<T, Status>>,
    {
        // The first call of an operation is timed from the operation's due
        // time (open loop); later calls from their own start.
        let started = std::mem::replace(&mut self.op_start, Instant::now()).min(Instant::now());
        let result = call.await;
        self.op_start = Instant::now();
        let outcome = result.as_ref().map(|_| ()).map_err(Status::code);
        self.note(rpc, started, outcome);
        result.ok()
    }

    /// Records a non-RPC step (e.g. a raw hash) that took from `started`.
    pub fn note(&mut self, rpc: &str, started: Instant, outcome: Result<(), Code>) {
        if started >= self.measure_from {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            self.stats
                .entry(rpc.to_owned())
                .or_default()
                .record(started.elapsed(), outcome);
        }
    }
}

/// A unit of work: one or more RPCs recorded through the recorder.
pub type Operation =
    Arc<dyn Fn(usize, Recorder) -> Pin<Box<dyn Future<Output = Recorder> + Send>> + Send + Sync>;

/// Runs `operation` under `plan`; returns per-RPC statistics of the measured
/// window and its exact length.
pub async fn run(plan: Plan, operation: Operation) -> (StatsMap, Duration) {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Mutex::new(StatsMap::new()));
    let recorder = |op_start: Instant| Recorder {
        stats: StatsMap::new(),
        measure_from,
        op_start,
        calls: calls.clone(),
        errors: errors.clone(),
    };
    let progress = plan.progress.then(|| {
        let (calls, errors) = (calls.clone(), errors.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let now = calls.load(Ordering::Relaxed);
                let phase = if Instant::now() < measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprintln!(
                    "  [{phase}] {:>5.1}s  calls {now:>9}  {:>8}/s  errors {}",
                    start.elapsed().as_secs_f64(),
                    now - last,
                    errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    });

    let mut tasks = tokio::task::JoinSet::new();
    match plan.mode {
        Mode::Closed { concurrency } => {
            for worker in 0..concurrency.max(1) {
                let operation = operation.clone();
                let mut rec = recorder(Instant::now());
                let totals = totals.clone();
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        rec.op_start = Instant::now();
                        rec = operation(worker, rec).await;
                    }
                    let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                    merge_into(&mut totals, &rec.stats);
                });
            }
        }
        Mode::Open {
            rate,
            max_in_flight,
        } => {
            let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut due = start;
            let mut index = 0usize;
            while due < deadline {
                tokio::time::sleep_until(due).await;
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let operation = operation.clone();
                        let rec = recorder(due);
                        let totals = totals.clone();
                        tasks.spawn(async move {
                            let rec = operation(index, rec).await;
                            drop(permit);
                            let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                            merge_into(&mut totals, &rec.stats);
                        });
                    }
                    Err(_) => {
                        let mut rec = recorder(due);
                        rec.note("client-overloaded", due, Err(Code::ResourceExhausted));
                        let mut totals = totals.lock().unwrap_or_else(|e| e.into_inner());
                        merge_into(&mut totals, &rec.stats);
                    }
                }
                due += interval;
                index += 1;
                // Reap finished tasks so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Some(progress) = progress {
        progress.abort();
    }
    let measured = Instant::now()
        .saturating_duration_since(measure_from)
        .min(plan.duration.max(Duration::from_millis(1)));
    let stats = std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
    (stats, measured.max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(latency: Duration, fail_every: usize) -> Operation {
        Arc::new(move |worker, mut rec| {
            Box::pin(async move {
                rec.call("Op", async move {
                    tokio::time::sleep(latency).await;
                    if fail_every > 0 && worker % fail_every == 0 {
                        Err(Status::unavailable("down"))
                    } else {
                        Ok(())
                    }
                })
                .await;
                rec
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_runs_concurrency_workers_back_to_back() {
        let plan = Plan {
            mode: Mode::Closed { concurrency: 4 },
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            progress: false,
        };
        let (stats, measured) = run(plan, fixed(Duration::from_millis(100), 0)).await;
        let op = &stats["Op"];
        // 4 workers × 10 calls per second × 10 s, give or take the edges.
        assert!((396..=404).contains(&op.total()), "{}", op.total());
        assert_eq!(op.errors(), 0);
        assert_eq!(measured, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_keeps_its_rate_and_counts_failures_as_errors() {
        let plan = Plan {
            mode: Mode::Open {
                rate: 50.0,
                max_in_flight: 1000,
            },
            warmup: Duration::ZERO,
            duration: Duration::from_secs(4),
            progress: false,
        };
        // Latency longer than the interval: an open loop still starts on time.
        let (stats, _) = run(plan, fixed(Duration::from_millis(500), 2)).await;
        let op = &stats["Op"];
        assert_eq!(op.total(), 200);
        assert_eq!(op.errors(), 100, "every other operation failed");
        assert_eq!(op.successes(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_includes_the_wait_for_a_slot() {
        let plan = Plan {
            mode: Mode::Open {
                rate: 10.0,
                max_in_flight: 1,
            },
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            progress: false,
        };
        let (stats, _) = run(plan, fixed(Duration::from_millis(250), 0)).await;
        // One slot, 250 ms per call, 100 ms between arrivals: most arrivals
        // find the slot taken and are reported, not silently skipped.
        assert!(stats["client-overloaded"].errors() > 0);
        assert!(stats["Op"].successes() > 0);
    }
}
