//! [`Store`]: how a handler reaches its service's database — one way in
//! every service.
//!
//! - [`Store::read`]: reads (or one statement) on the blocking pool.
//! - [`Store::write`]: a transaction at the service clock's `now`, run again
//!   when it lost a race (a serialization failure, a deadlock, or a unique
//!   violation between two concurrent first writes: `ABORTED CONFLICT`) —
//!   never shown to the client while attempts remain.
//! - [`Store::idempotent`]: the same, guarded by the request id (AIP-155,
//!   [`crate::idempotency`]): a retry replays the first definitive outcome.
//!
//! The work returns the service's own error type; it becomes a status
//! through the service's one `impl From<Error> for Status`, here, so a
//! handler writes `store.write(|conn, now| …).await?`.

use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection};
use tonic::{Code, Status};

use crate::{
    clock::SharedClock,
    db::{DbError, Pool},
    errors::{Domain, reason_of},
    idempotency::{self, IdempotencyKey},
};

/// Attempts of a transaction that keeps losing races.
const MAX_ATTEMPTS: u32 = 5;

/// A service's database and clock; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    clock: SharedClock,
    domain: Domain,
}

/// Whether a status is a lost race the same work may win on a new attempt.
fn lost_race(status: &Status) -> bool {
    status.code() == Code::Aborted && reason_of(status).as_deref() == Some("CONFLICT")
}

/// A short, growing pause before another attempt (on the blocking pool).
fn backoff(attempt: u32) {
    std::thread::sleep(std::time::Duration::from_millis(u64::from(attempt) * 3));
}

impl Store {
    /// The store of `pool`, its times from `clock`, its errors in `domain`.
    pub fn new(pool: Pool, clock: SharedClock, domain: Domain) -> Self {
        Self {
            pool,
            clock,
            domain,
        }
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The pool (for background tasks that run their own work).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Runs read-only (or single-statement) work on the blocking pool.
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        E: From<DbError> + Into<Status> + Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    {
        self.pool.run(work).await.map_err(Into::into)
    }

    /// Runs `work` in a transaction at `now`, again when it lost a race.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Into<Status> + Send + 'static,
        F: Fn(&mut PgConnection, DateTime<Utc>) -> Result<T, E> + Send + 'static,
    {
        let now = self.now();
        self.pool
            .run(move |conn| {
                let mut attempt = 1;
                loop {
                    let outcome: Result<T, Status> =
                        conn.transaction(|conn| work(conn, now)).map_err(Into::into);
                    match outcome {
                        Err(status) if attempt < MAX_ATTEMPTS && lost_race(&status) => {
                            tracing::debug!(attempt, "transaction lost a race, retrying");
                            attempt += 1;
                            backoff(attempt);
                        }
                        outcome => return Ok::<_, DbError>(outcome),
                    }
                }
            })
            .await
            .map_err(|err| err.into_status(self.domain))?
    }

    /// Runs `work` in a transaction guarded by the request id `key` (see
    /// [`crate::idempotency::run`]), again when it lost a race (a lost race
    /// is never stored as the outcome).
    pub async fn idempotent<R, E, F>(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: Vec<u8>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        E: Into<Status> + Send + 'static,
        F: Fn(&mut PgConnection, DateTime<Utc>) -> Result<R, E> + Send + 'static,
    {
        let (now, domain) = (self.now(), self.domain);
        self.pool
            .run(move |conn| {
                let mut attempt = 1;
                loop {
                    let outcome =
                        idempotency::run(conn, domain, key.as_ref(), &fingerprint, now, |conn| {
                            work(conn, now).map_err(Into::into)
                        });
                    match outcome {
                        Err(status) if attempt < MAX_ATTEMPTS && lost_race(&status) => {
                            tracing::debug!(attempt, "transaction lost a race, retrying");
                            attempt += 1;
                            backoff(attempt);
                        }
                        outcome => return Ok::<_, DbError>(outcome),
                    }
                }
            })
            .await
            .map_err(|err| err.into_status(domain))?
    }
}
