//! AIP-155 request ids for every retryable mutation, in one place.
//!
//! The key row is inserted in the SAME transaction as the mutation itself:
//! a concurrent duplicate blocks on the primary key until the first commits,
//! then replays its stored outcome — so a duplicate never has a second effect
//! and never sees a half-done first call. If the first call rolls back, the
//! duplicate simply runs.
//!
//! Stored: the encoded response (replayed byte for byte) or a non-retryable
//! error status. Retryable failures (UNAVAILABLE, ABORTED, …) roll back the
//! key with everything else, so a retry runs again. Keys are kept 24 hours
//! ([`RETENTION`]); [`purge_expired`] deletes older ones.

use chrono::{DateTime, Utc};
use diesel::{
    Connection as _, OptionalExtension as _, PgConnection, QueryableByName, RunQueryDsl as _,
    sql_query,
    sql_types::{Bytea, Integer, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    auth::Caller,
    db::DbError,
    errors::{Domain, FieldViolation, with_reason},
};

/// The `idempotency_keys` table; every service runs these migrations in its
/// own schema before its own.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How long a request id is remembered.
pub const RETENTION: chrono::Duration = chrono::Duration::hours(24);

/// Identifies one logical operation: who, which RPC, which request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    scope: String,
    method: &'static str,
    request_id: Uuid,
}

impl IdempotencyKey {
    /// The key of a request: `None` when `request_id` is empty
    /// (de-duplication off); a field violation when it is not a UUID.
    pub fn parse(
        request_id: &str,
        method: &'static str,
        caller: Option<&Caller>,
    ) -> Result<Option<Self>, FieldViolation> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let request_id = Uuid::try_parse(request_id)
            .map_err(|_| FieldViolation::new("request_id", "must be a UUID"))?;
        Ok(Some(Self {
            scope: caller.map_or_else(|| "anonymous".to_owned(), |c| c.claims.sub.clone()),
            method,
            request_id,
        }))
    }
}

/// The key of a mutation's `request_id`, recording a malformed one in
/// `violations` (`None` when the id is empty or malformed).
pub fn request_key(
    violations: &mut crate::errors::Violations,
    request_id: &str,
    method: &'static str,
    caller: Option<&Caller>,
) -> Option<IdempotencyKey> {
    violations
        .check(IdempotencyKey::parse(request_id, method, caller))
        .flatten()
}

/// A fingerprint of a request's parameters. Clear secrets and the
/// request id from the message before calling (so neither is stored, and
/// retries with a fresh token still match).
pub fn fingerprint<M: prost::Message>(message: &M) -> Vec<u8> {
    Sha256::digest(message.encode_to_vec()).to_vec()
}

/// Codes that mean "try again": never stored.
fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

#[derive(Debug)]
enum TxError {
    Db(DbError),
    Outcome(Status),
}

impl From<diesel::result::Error> for TxError {
    fn from(err: diesel::result::Error) -> Self {
        TxError::Db(err.into())
    }
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Bytea)]
    fingerprint: Vec<u8>,
    #[diesel(sql_type = Integer)]
    status_code: i32,
    #[diesel(sql_type = Text)]
    status_message: String,
    #[diesel(sql_type = Bytea)]
    status_details: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    response: Vec<u8>,
}

/// Runs `work` in a transaction guarded by `key` (see the module docs) and
/// returns its outcome, or the stored outcome of an earlier call with the
/// same key. `work` returns the final status already mapped from the
/// service's domain error; database errors are mapped in `domain`.
pub fn run<R, F>(
    conn: &mut PgConnection,
    domain: Domain,
    key: Option<&IdempotencyKey>,
    fingerprint: &[u8],
    now: DateTime<Utc>,
    work: F,
) -> Result<R, Status>
where
    R: prost::Message + Default,
    F: FnOnce(&mut PgConnection) -> Result<R, Status>,
{
    let result = conn.transaction::<Result<R, Status>, TxError, _>(|conn| {
        if let Some(key) = key
            && let Some(outcome) = claim(conn, domain, key, fingerprint, now)?
        {
            return Ok(outcome);
        }
        // A savepoint: a refused mutation's partial writes are undone while
        // the refusal itself is stored.
        let outcome =
            conn.transaction::<R, TxError, _>(|conn| work(conn).map_err(TxError::Outcome));
        let outcome = match outcome {
            Ok(response) => Ok(response),
            Err(TxError::Outcome(status)) if !is_retryable(status.code()) => Err(status),
            Err(err) => return Err(err),
        };
        if let Some(key) = key {
            store(conn, key, &outcome)?;
        }
        Ok(outcome)
    });
    match result {
        Ok(outcome) => outcome,
        Err(TxError::Outcome(status)) => Err(status),
        Err(TxError::Db(err)) => Err(err.into_status(domain)),
    }
}

/// The stored outcome of an earlier call with `key`, if there is one, read
/// without claiming the key: lets a handler answer a retry before doing
/// expensive work (hashing a password) that [`run`] would then discard.
/// `None` when the key is new, still running, or expired.
pub fn replay<R: prost::Message + Default>(
    conn: &mut PgConnection,
    domain: Domain,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Result<R, Status>>, DbError> {
    let stored: Option<Stored> = sql_query(
        "SELECT fingerprint, status_code, status_message, status_details, response \
         FROM idempotency_keys WHERE scope = $1 AND method = $2 AND request_id = $3 \
         AND created_at >= $4 AND status_code <> -1",
    )
    .bind::<Text, _>(&key.scope)
    .bind::<Text, _>(key.method)
    .bind::<SqlUuid, _>(key.request_id)
    .bind::<Timestamptz, _>(now - RETENTION)
    .get_result(conn)
    .optional()?;
    Ok(stored.map(|stored| outcome_of(domain, stored, fingerprint)))
}

/// The outcome a stored row replays (REQUEST_ID_REUSED if the parameters
/// differ).
fn outcome_of<R: prost::Message + Default>(
    domain: Domain,
    stored: Stored,
    fingerprint: &[u8],
) -> Result<R, Status> {
    if stored.fingerprint != fingerprint {
        return Err(with_reason(
            Code::InvalidArgument,
            domain,
            "REQUEST_ID_REUSED",
            "request_id was already used with different parameters",
            [("field".to_owned(), "request_id".to_owned())],
        ));
    }
    match stored.status_code {
        0 => R::decode(stored.response.as_slice())
            .map_err(|err| crate::errors::internal(domain, &err)),
        // Never committed by `run`; defensive only.
        -1 => Err(with_reason(
            Code::Aborted,
            domain,
            "REQUEST_IN_PROGRESS",
            "the first call with this request_id is still running",
            [],
        )),
        code => Err(Status::with_details(
            Code::from_i32(code),
            stored.status_message,
            stored.status_details.into(),
        )),
    }
}

/// Inserts the key; if it exists, returns the stored outcome to replay.
fn claim<R: prost::Message + Default>(
    conn: &mut PgConnection,
    domain: Domain,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Result<R, Status>>, TxError> {
    sql_query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND method = $2 AND request_id = $3 AND created_at < $4",
    )
    .bind::<Text, _>(&key.scope)
    .bind::<Text, _>(key.method)
    .bind::<SqlUuid, _>(key.request_id)
    .bind::<Timestamptz, _>(now - RETENTION)
    .execute(conn)?;
    let inserted = sql_query(
        "INSERT INTO idempotency_keys (scope, method, request_id, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(&key.scope)
    .bind::<Text, _>(key.method)
    .bind::<SqlUuid, _>(key.request_id)
    .bind::<Bytea, _>(fingerprint)
    .bind::<Timestamptz, _>(now)
    .execute(conn)?;
    if inserted == 1 {
        return Ok(None);
    }
    let stored: Stored = sql_query(
        "SELECT fingerprint, status_code, status_message, status_details, response \
         FROM idempotency_keys WHERE scope = $1 AND method = $2 AND request_id = $3",
    )
    .bind::<Text, _>(&key.scope)
    .bind::<Text, _>(key.method)
    .bind::<SqlUuid, _>(key.request_id)
    .get_result(conn)?;
    Ok(Some(outcome_of(domain, stored, fingerprint)))
}

fn store<R: prost::Message>(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    outcome: &Result<R, Status>,
) -> Result<(), TxError> {
    let (code, message, details, response) = match outcome {
        Ok(response) => (0, String::new(), Vec::new(), response.encode_to_vec()),
        Err(status) => (
            status.code() as i32,
            status.message().to_owned(),
            status.details().to_vec(),
            Vec::new(),
        ),
    };
    sql_query(
        "UPDATE idempotency_keys SET status_code = $4, status_message = $5, status_details = $6, response = $7 \
         WHERE scope = $1 AND method = $2 AND request_id = $3",
    )
    .bind::<Text, _>(&key.scope)
    .bind::<Text, _>(key.method)
    .bind::<SqlUuid, _>(key.request_id)
    .bind::<Integer, _>(code)
    .bind::<Text, _>(message)
    .bind::<Bytea, _>(details)
    .bind::<Bytea, _>(response)
    .execute(conn)?;
    Ok(())
}

/// Deletes keys older than [`RETENTION`]; returns how many.
pub fn purge_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<usize, DbError> {
    Ok(
        sql_query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind::<Timestamptz, _>(now - RETENTION)
            .execute(conn)?,
    )
}

/// Purges expired keys every ten minutes, forever (spawn it).
pub async fn purge_periodically(pool: crate::db::Pool, clock: crate::clock::SharedClock) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = clock.now();
        match pool.run(move |conn| purge_expired(conn, now)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired request ids purged"),
            Err(err) => tracing::warn!(%err, "purging request ids failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_uuids_and_empty_means_off() {
        assert_eq!(IdempotencyKey::parse("", "Register", None).unwrap(), None);
        let key = IdempotencyKey::parse("0196f0c4-8c1e-7a3e-9d7e-3b5a1c2d4e5f", "Register", None)
            .unwrap()
            .unwrap();
        assert_eq!(key.scope, "anonymous");
        let err = IdempotencyKey::parse("nope", "Register", None).unwrap_err();
        assert_eq!(err.field, "request_id");
    }

    #[test]
    fn only_definitive_outcomes_are_stored() {
        assert!(!is_retryable(Code::InvalidArgument));
        assert!(!is_retryable(Code::FailedPrecondition));
        assert!(!is_retryable(Code::AlreadyExists));
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::Aborted));
    }
}
