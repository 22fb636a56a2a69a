//! Argon2id password hashing on a small dedicated thread pool, one thread
//! per core, never on the async workers.
//!
//! Why not tokio's blocking pool with a semaphore: the bound is the same
//! (on the 2-core development machines, dozens of 19 MiB hashes at once
//! cost ~3× the CPU per hash: they thrash the caches), but each hash allocates 19 MiB, and spread over tokio's many
//! blocking threads the allocator keeps a copy per thread — `backroom up`
//! grew past 1 GiB under a login storm. A few long-lived threads reuse the
//! same memory; excess requests queue for them.
//!
//! The hashing threads run at normal scheduling priority. They once ran at
//! nice 19, which did not keep a login storm from slowing GetProduct
//! (BENCHMARKS.md: 11× at normal priority, 12× at nice 19 — the cost is cold
//! caches, not lost wakeups) but did let a flood of cheap calls starve them:
//! with the async workers busy refusing the flood, a Login's 20 ms hash got
//! 1–2 % of a core and took seconds (`services/loadgen/tests/it/attacks/
//! login_flood.rs` times out at 2 s).
//!
//! The queue in front of the threads is bounded: when it is full a call is
//! refused at once ([`Error::Overloaded`], RESOURCE_EXHAUSTED) instead of
//! waiting behind work nobody may still want. And a queued job whose caller
//! has gone (its deadline passed, or it hung up and tonic dropped the
//! handler) is skipped, not run: a flood of short-deadline calls leaves a
//! queue of dead jobs that drains in microseconds, so a normal Login right
//! after the flood waits for no one.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
};

use tokio::time::Instant;

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher as _, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};

use super::{Error, Password};

/// The parameters every new hash uses (OWASP's Argon2id minimum).
pub fn default_params() -> Params {
    // Constant, valid parameters: m=19 MiB, t=2, p=1.
    Params::new(19_456, 2, 1, None).expect("valid Argon2 parameters")
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matches.
    pub matches: bool,
    /// The stored hash uses other parameters than today's: rehash it.
    pub needs_rehash: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// Default number of hash jobs that may wait for a thread: with two threads
/// at ~19 ms a hash, the last of them waits about 0.6 s.
pub const DEFAULT_QUEUE_DEPTH: usize = 64;

/// Which queue a hash job waits in. Threads take [`Priority::Login`] jobs
/// first — but never more than [`LOGINS_IN_A_ROW`] in a row while a
/// [`Priority::Bulk`] job waits — and bulk jobs may fill only a quarter of
/// the queue: a flood of sign-ups or service-token requests (from however
/// many addresses) cannot crowd out the logins of people who have accounts,
/// and a login storm slows sign-ups and service tokens to a share of the
/// hashing instead of stopping them. (Strict priority once starved them for
/// as long as the storm lasted: with IssueServiceToken stuck, the other
/// services could not refresh their revocation lists, and after ten seconds
/// they refused every admin token.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Checking the password of an existing account (Login, ChangePassword).
    Login,
    /// Hashing a new password (Register) or checking a client secret.
    Bulk,
}

/// Login jobs a thread takes in a row while a bulk job waits; then one bulk.
pub const LOGINS_IN_A_ROW: usize = 3;

/// The two waiting lines and their bounds.
struct Queues {
    login: VecDeque<Job>,
    bulk: VecDeque<Job>,
    depth: usize,
    bulk_depth: usize,
    /// Login jobs taken since the last bulk one while bulk jobs waited.
    logins_in_a_row: usize,
    closed: bool,
}

/// The queue the hashing threads take jobs from.
struct JobQueue {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl JobQueue {
    fn new(depth: usize) -> Self {
        Self {
            queues: Mutex::new(Queues {
                login: VecDeque::new(),
                bulk: VecDeque::new(),
                depth,
                bulk_depth: (depth / 4).max(1),
                logins_in_a_row: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues `job`, or hands it back when its line is full.
    fn push(&self, job: Job, priority: Priority) -> Result<(), Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = queues.login.len() + queues.bulk.len();
        let fits = match priority {
            Priority::Login => waiting < queues.depth,
            Priority::Bulk => waiting < queues.depth && queues.bulk.len() < queues.bulk_depth,
        };
        if !fits {
            return Err(job);
        }
        match priority {
            Priority::Login => queues.login.push_back(job),
            Priority::Bulk => queues.bulk.push_back(job),
        }
        drop(queues);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, logins first (see [`Priority`]); `None` once closed
    /// and empty.
    fn pop(&self) -> Option<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let bulk_turn = !queues.bulk.is_empty()
                && (queues.login.is_empty() || queues.logins_in_a_row >= LOGINS_IN_A_ROW);
            if bulk_turn {
                queues.logins_in_a_row = 0;
                return queues.bulk.pop_front();
            }
            if let Some(job) = queues.login.pop_front() {
                queues.logins_in_a_row = if queues.bulk.is_empty() {
                    0
                } else {
                    queues.logins_in_a_row + 1
                };
                return Some(job);
            }
            if queues.closed {
                return None;
            }
            queues = self.ready.wait(queues).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Lets the threads finish what is queued and exit.
    fn close(&self) {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// Closes the queue when the last [`Hasher`] clone is dropped.
struct QueueHandle(Arc<JobQueue>);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Hashes and verifies passwords; see the module docs.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    threads: usize,
    jobs: Arc<QueueHandle>,
    /// Verified against when the account does not exist, so an unknown
    /// email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Starts `threads` hashing threads behind a queue of `depth` jobs; they
/// exit when every [`Hasher`] clone is gone.
fn start_pool(threads: usize, depth: usize) -> anyhow::Result<Arc<QueueHandle>> {
    let queue = Arc::new(JobQueue::new(depth));
    for n in 0..threads {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{n}"))
            .spawn(move || {
                while let Some(job) = queue.pop() {
                    job();
                }
            })?;
    }
    Ok(Arc::new(QueueHandle(queue)))
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

thread_local! {
    /// This thread's Argon2 working memory (19 MiB at today's parameters),
    /// reused by every hash the thread computes. Allocating it per hash left
    /// the allocator holding freed 19 MiB blocks: the account process grew
    /// to ~390 MiB under login storms. Reused, the hashing memory is the
    /// number of hashing threads × m_cost, however many logins arrive.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2 with `argon2`'s parameters into `out`, in this thread's
/// reusable memory.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = argon2.params().block_count();
        if memory.len() != blocks {
            // Only when the parameters change (a hash made with old ones).
            *memory = vec![Block::default(); blocks];
        }
        argon2.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
    })
}

/// A new Argon2id PHC string for `password` with a random 16-byte salt.
fn hash_phc(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let salt = Salt::generate();
    let argon2 = argon2(params.clone());
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    compute(&argon2, password, salt.as_ref(), &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow::anyhow!("{e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` produces `stored`'s output with `stored`'s algorithm,
/// version, `params` and salt (compared in constant time by `Output`).
fn verify_phc(stored: &PasswordHash, params: &Params, password: &[u8]) -> anyhow::Result<bool> {
    let algorithm =
        Algorithm::try_from(stored.algorithm.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .unwrap_or_default();
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        anyhow::bail!("the stored hash has no salt or output");
    };
    let mut out = vec![0u8; expected.len()];
    compute(
        &Argon2::new(algorithm, version, params.clone()),
        password,
        salt.as_ref(),
        &mut out,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Output::new(&out).map_err(|e| anyhow::anyhow!("{e}"))? == *expected)
}

impl Hasher {
    /// A hasher with `params` on `parallelism` threads (default: the number
    /// of cores) behind a queue of [`DEFAULT_QUEUE_DEPTH`] jobs. Blocking:
    /// computes the dummy hash.
    pub fn new(params: Params, parallelism: Option<usize>) -> anyhow::Result<Self> {
        Self::with_queue(params, parallelism, DEFAULT_QUEUE_DEPTH)
    }

    /// [`Self::new`] with a queue of `depth` waiting jobs.
    pub fn with_queue(
        params: Params,
        parallelism: Option<usize>,
        depth: usize,
    ) -> anyhow::Result<Self> {
        let parallelism = parallelism
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(2)
            .max(1);
        let dummy = argon2(params.clone())
            .hash_password(b"backroom dummy password for timing")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Self {
            params,
            threads: parallelism,
            jobs: start_pool(parallelism, depth.max(1))?,
            dummy_hash: dummy.into(),
        })
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`)
    /// at login priority (a rehash, a password change).
    pub async fn hash(&self, password: &Password) -> Result<String, Error> {
        self.hash_at(password, Priority::Login).await
    }

    /// [`Self::hash`] in the `priority` line (Register: [`Priority::Bulk`]).
    pub async fn hash_at(&self, password: &Password, priority: Priority) -> Result<String, Error> {
        let params = self.params.clone();
        let password = password.clone();
        self.on_pool(priority, move || {
            hash_phc(&params, password.expose())
                .map_err(|e| Error::Internal(anyhow::anyhow!("argon2 hash: {e}")))
        })
        .await
    }

    /// Checks `password` against `stored` (a PHC string), or against the
    /// dummy hash when there is no account, so both paths cost one hash; at
    /// login priority.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verified, Error> {
        self.verify_at(password, stored, Priority::Login).await
    }

    /// [`Self::verify`] in the `priority` line (client secrets:
    /// [`Priority::Bulk`]).
    pub async fn verify_at(
        &self,
        password: &Password,
        stored: Option<&str>,
        priority: Priority,
    ) -> Result<Verified, Error> {
        let exists = stored.is_some();
        let stored: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = password.clone();
        let current = self.params.clone();
        self.on_pool(priority, move || {
            let hash = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
            let params = Params::try_from(&hash)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored hash params: {e}")))?;
            // Verify with the parameters the hash was made with.
            let matches = verify_phc(&hash, &params, password.expose())
                .map_err(|e| Error::Internal(anyhow::anyhow!("argon2 verify: {e}")))?;
            let needs_rehash = hash.algorithm.as_str() != "argon2id"
                || params.m_cost() != current.m_cost()
                || params.t_cost() != current.t_cost()
                || params.p_cost() != current.p_cost();
            Ok(Verified {
                matches: matches && exists,
                needs_rehash,
            })
        })
        .await
    }

    /// Runs `work` on a hashing thread inside the caller's span, unless the
    /// queue is full ([`Error::Overloaded`] at once) or the caller is gone
    /// by the time a thread is free (the job is skipped).
    async fn on_pool<T: Send + 'static>(
        &self,
        priority: Priority,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let deadline = backroom_shared::deadline::current();
        let job: Job = Box::new(move || {
            // Nobody waits for the answer any more: the handler was dropped
            // (the client hung up or its deadline fired) or the deadline has
            // passed. Computing it would only delay the next caller.
            if reply.is_closed() || deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = reply.send(Err(Error::DeadlineExceeded));
                return;
            }
            let _ = reply.send(span.in_scope(work));
        });
        self.jobs
            .0
            .push(job, priority)
            .map_err(|_| Error::Overloaded)?;
        result
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("hashing thread dropped the job")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::presented("password", raw).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let hasher = Hasher::new(default_params(), None).unwrap();
        let hash = hasher
            .hash(&password("correct horse battery"))
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let ok = hasher
            .verify(&password("correct horse battery"), Some(&hash))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher
            .verify(&password("wrong horse battery"), Some(&hash))
            .await
            .unwrap();
        assert!(!wrong.matches);
        let missing = hasher
            .verify(&password("correct horse battery"), None)
            .await
            .unwrap();
        assert!(
            !missing.matches,
            "no account never matches, even the dummy's password"
        );
    }

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crates_own() {
        use argon2::PasswordVerifier as _;
        let hasher = Hasher::new(default_params(), None).unwrap();
        let theirs = argon2(default_params())
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        let verified = hasher
            .verify(&password("correct horse battery"), Some(&theirs))
            .await
            .unwrap();
        assert!(verified.matches && !verified.needs_rehash);
        let ours = hasher
            .hash(&password("correct horse battery"))
            .await
            .unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        argon2(default_params())
            .verify_password(b"correct horse battery", &parsed)
            .unwrap();
        assert!(
            argon2(default_params())
                .verify_password(b"wrong horse battery", &parsed)
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_and_dead_jobs_are_skipped() {
        // One thread, one queued job: a third concurrent hash is refused.
        let hasher = Hasher::with_queue(default_params(), Some(1), 1).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        // Occupy the only thread until told otherwise.
        let busy = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                hasher
                    .on_pool(Priority::Login, move || {
                        let _ = started_tx.send(());
                        let _ = release_rx.recv();
                        Ok(())
                    })
                    .await
            }
        });
        started_rx.recv().unwrap();
        // Fill the queue with a job whose caller then gives up: polled
        // once (queued), then dropped by the timeout.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            hasher.on_pool(Priority::Login, move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(gave_up.is_err(), "the thread is busy: the job only queued");
        // The queue is full: the next call is refused at once.
        assert!(matches!(
            hasher.hash(&password("correct horse battery")).await,
            Err(Error::Overloaded)
        ));
        release_tx.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // The thread is free: it skips the abandoned job (at once) and the
        // next hash runs. Until the thread has taken that job off the queue
        // the queue may still be full, so a call may still be refused.
        let started = std::time::Instant::now();
        loop {
            match hasher.hash(&password("correct horse battery")).await {
                Ok(_) => break,
                Err(Error::Overloaded) if started.elapsed() < std::time::Duration::from_secs(5) => {
                    tokio::task::yield_now().await;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "a job whose caller had gone must not run"
        );
    }

    #[test]
    fn bulk_jobs_fill_a_quarter_of_the_queue_and_logins_go_first_but_not_always() {
        let queue = JobQueue::new(8);
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |label: &'static str| -> Job {
            let order = order.clone();
            Box::new(move || order.lock().unwrap().push(label))
        };
        assert!(queue.push(job("bulk 1"), Priority::Bulk).is_ok());
        assert!(queue.push(job("bulk 2"), Priority::Bulk).is_ok());
        assert!(
            queue.push(job("bulk 3"), Priority::Bulk).is_err(),
            "bulk may hold a quarter of 8"
        );
        for _ in 0..6 {
            assert!(queue.push(job("login"), Priority::Login).is_ok());
        }
        assert!(queue.push(job("login"), Priority::Login).is_err(), "full");
        queue.close();
        while let Some(job) = queue.pop() {
            job();
        }
        let order = order.lock().unwrap();
        assert_eq!(
            *order,
            [
                "login", "login", "login", "bulk 1", "login", "login", "login", "bulk 2"
            ],
            "logins first, but a waiting bulk job gets every fourth turn"
        );
    }

    #[test]
    fn a_login_storm_never_starves_bulk_jobs() {
        // Logins refilled as fast as they are taken: a bulk job still runs
        // within LOGINS_IN_A_ROW + 1 turns.
        let queue = JobQueue::new(64);
        let ran = Arc::new(Mutex::new(Vec::new()));
        let job = |label: &'static str| -> Job {
            let ran = ran.clone();
            Box::new(move || ran.lock().unwrap().push(label))
        };
        for _ in 0..32 {
            assert!(queue.push(job("login"), Priority::Login).is_ok());
        }
        assert!(queue.push(job("bulk"), Priority::Bulk).is_ok());
        for _ in 0..=LOGINS_IN_A_ROW {
            queue.pop().unwrap()();
            assert!(queue.push(job("login"), Priority::Login).is_ok());
        }
        let ran = ran.lock().unwrap();
        assert_eq!(ran.last(), Some(&"bulk"), "{ran:?}");
    }

    #[tokio::test]
    async fn hashes_with_old_parameters_ask_for_a_rehash() {
        let old = Hasher::new(Params::new(8_192, 1, 1, None).unwrap(), None).unwrap();
        let hash = old.hash(&password("correct horse battery")).await.unwrap();
        let current = Hasher::new(default_params(), None).unwrap();
        let verified = current
            .verify(&password("correct horse battery"), Some(&hash))
            .await
            .unwrap();
        assert_eq!(
            verified,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }
}
