//! Per-RPC statistics: an HDR histogram of successful-call latencies, the
//! count of calls by final gRPC status code, and the table/JSON report.
//!
//! A call counts as a success only when it returned `OK`; every other
//! status (and a transport failure, reported as UNAVAILABLE) is an error and
//! its latency is not mixed into the success histogram.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::Code;

/// Highest latency tracked: 60 s (larger values are clamped).
const MAX_MICROS: u64 = 60_000_000;

/// Statistics of one RPC (or one synthetic step, e.g. `raw-argon2id`).
#[derive(Debug, Clone)]
pub struct RpcStats {
    latencies: Histogram<u64>,
    codes: BTreeMap<String, u64>,
}

impl Default for RpcStats {
    fn default() -> Self {
        Self {
            // 3 significant digits over 1 µs … 60 s: bounds are constant and valid.
            latencies: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("valid histogram bounds"),
            codes: BTreeMap::new(),
        }
    }
}

impl RpcStats {
    /// Records one finished call.
    pub fn record(&mut self, latency: Duration, outcome: Result<(), Code>) {
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(MAX_MICROS)
                    .clamp(1, MAX_MICROS);
                self.latencies.saturating_record(micros);
                *self.codes.entry("OK".into()).or_default() += 1;
            }
            Err(code) => *self.codes.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    /// Adds another worker's statistics.
    pub fn merge(&mut self, other: &RpcStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        for (code, count) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += count;
        }
    }

    /// Calls that returned OK.
    pub fn successes(&self) -> u64 {
        self.codes.get("OK").copied().unwrap_or(0)
    }

    /// Calls that returned anything else.
    pub fn errors(&self) -> u64 {
        self.total() - self.successes()
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.codes.values().sum()
    }

    /// Latency of successful calls at `quantile` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Maximum successful latency, ms.
    pub fn max_ms(&self) -> f64 {
        self.latencies.max() as f64 / 1000.0
    }

    /// Counts by status code name.
    pub fn codes(&self) -> &BTreeMap<String, u64> {
        &self.codes
    }
}

/// Statistics keyed by RPC name.
pub type StatsMap = BTreeMap<String, RpcStats>;

/// Merges `from` into `into`.
pub fn merge_into(into: &mut StatsMap, from: &StatsMap) {
    for (rpc, stats) in from {
        into.entry(rpc.clone()).or_default().merge(stats);
    }
}

/// One row of the final report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportRow {
    /// RPC name.
    pub rpc: String,
    /// All calls.
    pub count: u64,
    /// Calls not OK.
    pub errors: u64,
    /// Counts by status code.
    pub codes: BTreeMap<String, u64>,
    /// Successful calls per second over the measured window.
    pub throughput: f64,
    /// Latency percentiles of successful calls, ms.
    pub p50_ms: f64,
    /// p90.
    pub p90_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// p99.9.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Builds report rows for a window of `elapsed`.
pub fn report(stats: &StatsMap, elapsed: Duration) -> Vec<ReportRow> {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    stats
        .iter()
        .map(|(rpc, s)| ReportRow {
            rpc: rpc.clone(),
            count: s.total(),
            errors: s.errors(),
            codes: s.codes().clone(),
            throughput: s.successes() as f64 / seconds,
            p50_ms: s.quantile_ms(0.50),
            p90_ms: s.quantile_ms(0.90),
            p99_ms: s.quantile_ms(0.99),
            p999_ms: s.quantile_ms(0.999),
            max_ms: s.max_ms(),
        })
        .collect()
}

/// The report as a fixed-width table.
pub fn render_table(rows: &[ReportRow]) -> String {
    let mut out = format!(
        "{:<34} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  errors by code\n",
        "rpc", "count", "errors", "ok/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms"
    );
    for row in rows {
        let errors: Vec<String> = row
            .codes
            .iter()
            .filter(|(code, _)| code.as_str() != "OK")
            .map(|(code, n)| format!("{code}={n}"))
            .collect();
        out.push_str(&format!(
            "{:<34} {:>9} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}\n",
            row.rpc,
            row.count,
            row.errors,
            row.throughput,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.p999_ms,
            row.max_ms,
            errors.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_are_never_successes_and_keep_out_of_the_latency_histogram() {
        let mut stats = RpcStats::default();
        stats.record(Duration::from_millis(2), Ok(()));
        stats.record(Duration::from_secs(30), Err(Code::Unavailable));
        stats.record(Duration::from_secs(30), Err(Code::ResourceExhausted));
        assert_eq!(
            (stats.total(), stats.successes(), stats.errors()),
            (3, 1, 2)
        );
        assert!(
            stats.max_ms() < 3.0,
            "a failed call's latency leaked: {}",
            stats.max_ms()
        );
        assert_eq!(stats.codes().get("Unavailable"), Some(&1));
    }

    #[test]
    fn percentiles_follow_the_recorded_distribution() {
        let mut stats = RpcStats::default();
        for ms in 1..=100u64 {
            stats.record(Duration::from_millis(ms), Ok(()));
        }
        let within = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.01 + 0.01;
        assert!(
            within(stats.quantile_ms(0.5), 50.0),
            "{}",
            stats.quantile_ms(0.5)
        );
        assert!(
            within(stats.quantile_ms(0.9), 90.0),
            "{}",
            stats.quantile_ms(0.9)
        );
        assert!(
            within(stats.quantile_ms(0.99), 99.0),
            "{}",
            stats.quantile_ms(0.99)
        );
        assert!(within(stats.max_ms(), 100.0));
    }

    #[test]
    fn merging_adds_counts_and_histograms_and_throughput_counts_only_successes() {
        let mut a = StatsMap::new();
        let mut b = StatsMap::new();
        a.entry("Get".into())
            .or_default()
            .record(Duration::from_millis(1), Ok(()));
        b.entry("Get".into())
            .or_default()
            .record(Duration::from_millis(3), Ok(()));
        b.entry("Get".into())
            .or_default()
            .record(Duration::from_millis(3), Err(Code::Internal));
        merge_into(&mut a, &b);
        let rows = report(&a, Duration::from_secs(2));
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].count, rows[0].errors), (3, 1));
        assert!((rows[0].throughput - 1.0).abs() < 1e-9);
        assert!(render_table(&rows).contains("Internal=1"));
    }
}
