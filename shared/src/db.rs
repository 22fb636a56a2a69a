//! Postgres access for every service: an r2d2 pool of diesel `PgConnection`s,
//! schema + role provisioning, embedded migrations run inside a service's own
//! schema, and ONE mapping of diesel / pool errors ([`DbError`]).
//!
//! Layout:
//! - [`Pool`]: the pool; [`Pool::run`] / [`Pool::transaction`] move blocking
//!   diesel work onto tokio's blocking pool, keeping the caller's span.
//! - `provisioning` (re-exported here): [`provision_service`] /
//!   [`provision`], the two roles of a service and its schema (below);
//!   [`run_migrations`] / [`migrate`], embedded migrations as the schema's
//!   owner, serialised by an advisory lock so several replicas (or a Job and
//!   a replica) may start at once.
//!
//! Roles: each service has two, so that a compromised service cannot remove
//! the guards its schema puts around its data (CHECK constraints, the
//! ledger's triggers):
//! - `backroom_<svc>_migrator` ([`migrator_role_name`]) owns schema `<svc>`
//!   and every object in it, and is what migrations connect as
//!   (`BACKROOM_MIGRATION_DATABASE_URL`);
//! - `backroom_<svc>` ([`runtime_role_name`]) is what the service serves as
//!   (`DATABASE_URL`). It owns nothing: USAGE on its schema and, through the
//!   migrator's default privileges, SELECT/INSERT/UPDATE/DELETE on the
//!   tables, USAGE/SELECT on the sequences and EXECUTE on the functions
//!   migrations create. So it cannot ALTER, DROP, TRUNCATE, create objects,
//!   disable triggers or replace trigger functions. A migration may narrow
//!   its rights further (payment's append-only ledger: INSERT and SELECT only).
//!
//! Neither role has any privilege on another service's schema, nor can
//! create in `public`.
//!
//! Why r2d2 + `spawn_blocking` rather than an async driver: diesel is the
//! house ORM, and a probe on this kind of machine measured this path at
//! parity with diesel-async (≈17k point reads/s each, see BENCHMARKS.md for
//! today's figures).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, HandleError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection};
use r2d2::{HandleEvent, event::AcquireEvent};
use tracing::Instrument;

use crate::config::DbConfig;

mod provisioning;
pub use provisioning::{
    RolePasswords, migrate, migrator_role_name, provision, provision_service, run_migrations,
    runtime_role_name,
};

/// A pooled connection.
pub type PooledConn = r2d2::PooledConnection<ConnectionManager<PgConnection>>;

/// Everything that can go wrong talking to Postgres, sorted by what the caller
/// should do about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated (the constraint name, when known).
    #[error("conflict on {constraint:?}")]
    Conflict {
        /// The violated constraint, e.g. `accounts_email_key`.
        constraint: Option<String>,
    },
    /// A CHECK constraint was violated: a domain invariant the code should have
    /// caught first (the database is the backstop).
    #[error("check constraint {constraint:?} violated")]
    CheckViolation {
        /// The violated constraint.
        constraint: Option<String>,
    },
    /// Serialization failure or deadlock: the transaction may be retried as is.
    #[error("transaction conflict, retry: {0}")]
    Retryable(String),
    /// The statement ran past `statement_timeout` (or was cancelled).
    #[error("statement cancelled: {0}")]
    Timeout(String),
    /// The database is down, the connection broke, or the pool had no
    /// connection within the checkout timeout.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Text Postgres cannot store (NUL in `text`, `\u0000` in `jsonb`) that
    /// a field check let through: the caller's input, so INVALID_ARGUMENT.
    #[error("unstorable text: {0}")]
    UnstorableText(String),
    /// Anything else: a bug or an unexpected database state.
    #[error(transparent)]
    Other(anyhow::Error),
}

impl DbError {
    /// Whether running the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Retryable(_))
    }

    /// The status for a database error that the service's domain did not
    /// turn into something more specific (a missing row is usually
    /// NOT_FOUND of a named resource, a conflict ALREADY_EXISTS, …). The
    /// cause is logged, never sent.
    pub fn into_status(self, domain: crate::errors::Domain) -> tonic::Status {
        use crate::errors::{internal, unavailable, with_reason};
        match self {
            DbError::NotFound => {
                with_reason(tonic::Code::NotFound, domain, "NOT_FOUND", "not found", [])
            }
            DbError::Conflict { .. } => with_reason(
                tonic::Code::Aborted,
                domain,
                "CONFLICT",
                "conflicting write, retry",
                [],
            ),
            DbError::Retryable(_) => with_reason(
                tonic::Code::Aborted,
                domain,
                "CONFLICT",
                "concurrent update, retry",
                [],
            ),
            DbError::Timeout(_) => with_reason(
                tonic::Code::DeadlineExceeded,
                domain,
                "DATABASE_TIMEOUT",
                "database statement timed out",
                [],
            ),
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                unavailable(domain, "database unavailable, retry later")
            }
            DbError::UnstorableText(cause) => {
                tracing::warn!(%cause, "a request carried text Postgres cannot store");
                with_reason(
                    tonic::Code::InvalidArgument,
                    domain,
                    "VALIDATION_FAILED",
                    "a text field contains a character that cannot be stored (NUL)",
                    [],
                )
            }
            err @ (DbError::CheckViolation { .. } | DbError::Other(_)) => internal(domain, &err),
        }
    }
}

impl From<DieselError> for DbError {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let constraint = info.constraint_name().map(str::to_owned);
                let message = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => DbError::Conflict { constraint },
                    DatabaseErrorKind::CheckViolation => DbError::CheckViolation { constraint },
                    DatabaseErrorKind::SerializationFailure => DbError::Retryable(message),
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand => DbError::Unavailable(message),
                    // diesel reports these SQLSTATEs as `Unknown`; the server's
                    // message text is stable across versions (and lc_messages=C
                    // in every cluster we start).
                    _ if message.contains("deadlock detected") => DbError::Retryable(message),
                    _ if message.starts_with("invalid byte sequence for encoding")
                        || message.starts_with("unsupported Unicode escape sequence") =>
                    {
                        DbError::UnstorableText(message)
                    }
                    _ if message.starts_with("canceling statement") => DbError::Timeout(message),
                    _ if message.starts_with("terminating connection")
                        || message.contains("the database system is") =>
                    {
                        DbError::Unavailable(message)
                    }
                    _ => DbError::Other(anyhow::anyhow!("{kind:?}: {message}")),
                }
            }
            DieselError::BrokenTransactionManager => {
                DbError::Unavailable("broken transaction manager".into())
            }
            other => DbError::Other(other.into()),
        }
    }
}

impl From<r2d2::Error> for DbError {
    fn from(err: r2d2::Error) -> Self {
        // r2d2 only fails a checkout when no connection came within the
        // timeout: the pool is exhausted or the database cannot be reached.
        DbError::Unavailable(err.to_string())
    }
}

impl From<diesel::ConnectionError> for DbError {
    fn from(err: diesel::ConnectionError) -> Self {
        DbError::Unavailable(err.to_string())
    }
}

/// Sets per-connection session parameters when r2d2 opens a connection.
#[derive(Debug, Clone)]
struct SessionSetup {
    schema: String,
    statement_timeout: Duration,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSetup {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        // The service's own schema first, whatever the role's defaults are;
        // and a runaway statement is cancelled by the server instead of
        // holding a pooled connection (and a blocking thread) forever.
        conn.batch_execute(&format!(
            "SET search_path TO {}; SET statement_timeout = {}",
            self.schema,
            self.statement_timeout.as_millis()
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Logs connection failures through `tracing` (r2d2's default uses `log`)
/// and marks the database unreachable until a connection opens again.
#[derive(Debug)]
struct TracingErrorHandler(Arc<AtomicBool>);

impl HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        self.0.store(true, Ordering::Relaxed);
        tracing::warn!(%error, "database connection failed");
    }
}

/// Clears the unreachable mark when r2d2 opens a connection.
#[derive(Debug)]
struct ReachableAgain(Arc<AtomicBool>);

impl HandleEvent for ReachableAgain {
    fn handle_acquire(&self, _event: AcquireEvent) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// How long a checkout waits while the last attempt to open a connection
/// failed: long enough to take a connection the pool frees or reopens, short
/// enough that calls fail fast with UNAVAILABLE while Postgres is down.
const UNREACHABLE_CHECKOUT: Duration = Duration::from_millis(100);

/// The share of a caller's remaining deadline a checkout may use: the rest is
/// left for the query and the answer, so a checkout that finds no connection
/// answers UNAVAILABLE before the caller's deadline rather than racing it.
const CHECKOUT_SHARE_OF_DEADLINE: u32 = 2; // one half

/// A pool of connections for one service.
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<ConnectionManager<PgConnection>>,
    checkout_timeout: Duration,
    statement_timeout: Duration,
    /// The last attempt to open a connection failed (see
    /// [`UNREACHABLE_CHECKOUT`]).
    unreachable: Arc<AtomicBool>,
    /// The runtime role's URL and the service's schema: the event feed
    /// opens its own (asynchronous) connection with them.
    url: crate::config::Secret,
    schema: Arc<str>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state();
        f.debug_struct("Pool")
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish()
    }
}

impl Pool {
    /// Builds the pool without waiting for the database: connections are
    /// opened in the background, and a checkout that finds none within the
    /// checkout timeout is [`DbError::Unavailable`]. The server's health
    /// probe decides when the service is SERVING.
    ///
    /// `schema` is the service's schema; every connection's `search_path`
    /// starts with it.
    pub fn new(config: &DbConfig, schema: &str) -> Self {
        debug_assert!(check_identifier(schema).is_ok(), "schema names are [a-z_]+");
        let manager = ConnectionManager::<PgConnection>::new(config.database_url.expose());
        let unreachable = Arc::new(AtomicBool::new(false));
        let inner = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(config.pool_min_idle.min(config.pool_size)))
            // Measured on this kind of machine: the health query on every
            // checkout costs ~24 % of a point read; broken connections are caught by diesel's
            // `has_broken` on return and by error mapping instead.
            .test_on_check_out(false)
            .connection_timeout(config.checkout_timeout())
            .connection_customizer(Box::new(SessionSetup {
                schema: schema.to_owned(),
                statement_timeout: config.statement_timeout(),
            }))
            .error_handler(Box::new(TracingErrorHandler(unreachable.clone())))
            .event_handler(Box::new(ReachableAgain(unreachable.clone())))
            .build_unchecked(manager);
        Self {
            inner,
            checkout_timeout: config.checkout_timeout(),
            statement_timeout: config.statement_timeout(),
            unreachable,
            url: config.database_url.clone(),
            schema: schema.into(),
        }
    }

    /// The runtime role's database URL.
    pub fn url(&self) -> &crate::config::Secret {
        &self.url
    }

    /// The service's schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How long a checkout may wait: the checkout timeout, at most half of
    /// the caller's remaining deadline (`budget`), and only
    /// [`UNREACHABLE_CHECKOUT`] while the database is unreachable.
    fn checkout_wait(&self, budget: Option<Duration>) -> Duration {
        let mut wait = self.checkout_timeout;
        if let Some(budget) = budget {
            wait = wait.min(budget / CHECKOUT_SHARE_OF_DEADLINE);
        }
        if self.unreachable.load(Ordering::Relaxed) {
            wait = wait.min(UNREACHABLE_CHECKOUT);
        }
        wait
    }

    /// Checks out a connection, waiting at most the checkout timeout (or
    /// [`UNREACHABLE_CHECKOUT`] while the database is unreachable).
    /// Blocking: call it from [`Pool::run`] or another blocking context.
    pub fn get(&self) -> Result<PooledConn, DbError> {
        self.get_timeout(self.checkout_wait(None))
    }

    fn get_timeout(&self, timeout: Duration) -> Result<PooledConn, DbError> {
        let conn = self.inner.get_timeout(timeout)?;
        // A connection came: whatever failed before, the pool is working
        // (if this one is broken, its replacement's failure marks it again).
        self.unreachable.store(false, Ordering::Relaxed);
        Ok(conn)
    }

    /// Runs blocking diesel work on tokio's blocking pool with a pooled
    /// connection, inside the caller's tracing span.
    /// The error type is the caller's (a service's domain error, or
    /// `tonic::Status`) as long as a [`DbError`] converts into it.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.clone();
        // Read in the caller's task (the deadline is task-local), counted
        // from when the blocking pool gets to the work: work queued behind
        // a flood finds its caller's time gone and is skipped, not run for
        // nobody.
        let deadline = crate::deadline::remaining().map(|left| Instant::now() + left);
        blocking(move || {
            let budget = deadline
                .map(|deadline| deadline.saturating_duration_since(Instant::now()))
                .filter(|left| *left < pool.statement_timeout);
            if budget.is_some_and(|b| b.is_zero()) {
                return Err(
                    DbError::Timeout("the call's deadline passed before the query".into()).into(),
                );
            }
            let mut conn = pool.get_timeout(pool.checkout_wait(budget))?;
            let Some(budget) = budget else {
                return work(&mut conn);
            };
            // The caller's deadline is shorter than the pool's statement
            // timeout: lower it for this work so Postgres cancels the
            // statement when the caller gives up, then put it back.
            conn.batch_execute(&format!(
                "SET statement_timeout = {}",
                budget.as_millis().max(1)
            ))
            .map_err(DbError::from)?;
            let result = work(&mut conn);
            conn.batch_execute(&format!(
                "SET statement_timeout = {}",
                pool.statement_timeout.as_millis()
            ))
            .map_err(DbError::from)?;
            result
        })
        .await
    }

    /// Runs `work` in a transaction, retrying it (up to 3 attempts) when
    /// Postgres reports a serialization failure or deadlock. `work` must be
    /// safe to run again: everything it did in a failed attempt rolled back.
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: Fn(&mut PgConnection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(move |conn: &mut PgConnection| {
            let mut attempt = 1;
            loop {
                match conn.transaction(&work) {
                    Err(err) if err.is_retryable() && attempt < 3 => {
                        tracing::debug!(%err, attempt, "retrying transaction");
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
        .await
    }

    /// True when a connection can be checked out and answers `SELECT 1`.
    pub async fn is_healthy(&self) -> bool {
        self.run(|conn| Ok::<_, DbError>(conn.batch_execute("SELECT 1")?))
            .await
            .is_ok()
    }
}

/// Runs blocking work on tokio's blocking pool inside the current span (a bare
/// `spawn_blocking` would start a new trace).
pub async fn blocking<T, E, F>(work: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .instrument(tracing::Span::current())
        .await
        .map_err(|join| DbError::Other(anyhow::anyhow!("blocking task failed: {join}")))?
}

/// Opens one connection (blocking), for provisioning and migrations.
pub fn connect(url: &str) -> Result<PgConnection, DbError> {
    Ok(PgConnection::establish(url)?)
}

/// Schema and service names are spliced into SQL: allow only `[a-z_]+`.
pub(crate) fn check_identifier(name: &str) -> Result<(), DbError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        Ok(())
    } else {
        Err(DbError::Other(anyhow::anyhow!(
            "invalid identifier {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_leaves_half_the_deadline_and_fails_fast_while_unreachable() {
        // No idle connections wanted: nothing connects in the background.
        let config = DbConfig {
            pool_min_idle: 0,
            ..DbConfig::for_url("postgres://nobody@127.0.0.1:1/none")
        };
        let pool = Pool::new(&config, "alpha");
        assert_eq!(pool.checkout_wait(None), Duration::from_secs(2));
        assert_eq!(
            pool.checkout_wait(Some(Duration::from_secs(1))),
            Duration::from_millis(500)
        );
        assert_eq!(
            pool.checkout_wait(Some(Duration::from_secs(10))),
            Duration::from_secs(2)
        );
        pool.unreachable.store(true, Ordering::Relaxed);
        assert_eq!(pool.checkout_wait(None), UNREACHABLE_CHECKOUT);
        assert_eq!(
            pool.checkout_wait(Some(Duration::from_millis(50))),
            Duration::from_millis(25)
        );
    }

    #[test]
    fn identifiers_spliced_into_sql_are_restricted() {
        assert!(check_identifier("account").is_ok());
        assert!(check_identifier("x; DROP TABLE y").is_err());
        assert!(check_identifier("").is_err());
    }
}
