//! Failed-login counters per (email, client), and per email across all
//! clients (client [`ALL_CLIENTS`]); the policy is `domain::lockout`.
//!
//! An attempt is admitted — and counted — before its password is checked,
//! in one transaction (the caller's `Store::write`) that locks both rows: concurrent guesses serialise
//! here, so no more of them are checked than the policy allows. Rows are
//! keyed by the email's hash whether or not an account has that email, so
//! unknown and known emails behave the same.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use tracing::instrument;

use crate::{
    db::{models::LoginThrottleRow, schema::account::login_throttles},
    domain::{
        Account, Error,
        lockout::{Admission, LockoutPolicy, email_hash},
    },
};

/// The client key of the ceiling row (no address looks like it).
pub const ALL_CLIENTS: &str = "*";

fn fresh(email_hash: &[u8], client: &str, now: DateTime<Utc>) -> LoginThrottleRow {
    LoginThrottleRow {
        email_hash: email_hash.to_vec(),
        client: client.to_owned(),
        attempts: 0,
        window_start: None,
        locked_until: None,
        lock_count: 0,
        updated_at: now,
        last_success_at: None,
    }
}

/// Admits and counts one login attempt for `email_hash` from `client`, or
/// refuses it while either counter is locked. Run it in a transaction
/// (`Store::write`): the row locks are what serialise concurrent guesses.
#[instrument(skip_all, fields(client = %client))]
pub fn begin_attempt(
    conn: &mut PgConnection,
    email_hash: &[u8],
    client: &str,
    policy: &LockoutPolicy,
    now: DateTime<Utc>,
) -> Result<Admission, Error> {
    diesel::insert_into(login_throttles::table)
        .values([
            fresh(email_hash, ALL_CLIENTS, now),
            fresh(email_hash, client, now),
        ])
        .on_conflict_do_nothing()
        .execute(conn)?;
    // Locked in key order ('*' first): concurrent attempts cannot
    // deadlock.
    let rows: Vec<LoginThrottleRow> = login_throttles::table
        .filter(login_throttles::email_hash.eq(email_hash))
        .filter(login_throttles::client.eq_any([ALL_CLIENTS, client]))
        .order(login_throttles::client.asc())
        .select(LoginThrottleRow::as_select())
        .for_update()
        .load(conn)?;
    // A client the owner logged in from recently is bound by its own lock
    // only: the ceiling, which anyone can trigger from enough addresses,
    // does not lock the owner out of a known client.
    let trusted = rows
        .iter()
        .any(|row| row.client == client && policy.trusts(row.last_success_at, now));
    let locked = rows
        .iter()
        .filter(|row| !(trusted && row.client == ALL_CLIENTS))
        .filter_map(|row| row.failures().lock_at(now))
        .max();
    if let Some(until) = locked {
        return Ok(Admission::Locked(until));
    }
    for row in rows {
        let limit = if row.client == ALL_CLIENTS {
            policy.ceiling
        } else {
            policy.max_failures
        };
        let next = policy.after_attempt(row.failures(), now, limit);
        if next.lock_at(now).is_some() {
            tracing::warn!(
                scope = if row.client == ALL_CLIENTS {
                    "every client"
                } else {
                    "one client"
                },
                "login locked after repeated attempts"
            );
        }
        let updated = row.with_failures(next, now);
        diesel::update(login_throttles::table.find((&updated.email_hash, &updated.client)))
            .set(&updated)
            .execute(conn)?;
    }
    Ok(Admission::Granted)
}

fn uncount(
    conn: &mut PgConnection,
    email_hash: &[u8],
    clients: &[&str],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(
        login_throttles::table
            .filter(login_throttles::email_hash.eq(email_hash))
            .filter(login_throttles::client.eq_any(clients))
            .filter(login_throttles::attempts.gt(0)),
    )
    .set((
        login_throttles::attempts.eq(login_throttles::attempts - 1),
        login_throttles::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(())
}

/// Takes back an admitted attempt whose password was never checked (the
/// hashing queue was full, the caller gave up).
#[instrument(skip_all, fields(client = %client))]
pub fn cancel_attempt(
    conn: &mut PgConnection,
    email_hash: &[u8],
    client: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    uncount(conn, email_hash, &[ALL_CLIENTS, client], now)
}

/// After a successful login: the client's counters start over and the
/// client is remembered as one the owner uses (see `begin_attempt`); the
/// successful attempt no longer counts toward the ceiling.
#[instrument(skip_all, fields(client = %client))]
pub fn clear_client(
    conn: &mut PgConnection,
    email_hash: &[u8],
    client: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let known = LoginThrottleRow {
        last_success_at: Some(now),
        ..fresh(email_hash, client, now)
    };
    diesel::insert_into(login_throttles::table)
        .values(&known)
        .on_conflict((login_throttles::email_hash, login_throttles::client))
        .do_update()
        .set(&known)
        .execute(conn)?;
    uncount(conn, email_hash, &[ALL_CLIENTS], now)
}

/// Fills in each account's lock across all clients.
#[instrument(skip_all)]
pub fn attach_locks(
    conn: &mut PgConnection,
    mut accounts: Vec<Account>,
) -> Result<Vec<Account>, Error> {
    let hashes: Vec<Vec<u8>> = accounts
        .iter()
        .map(|a| email_hash(&a.email).to_vec())
        .collect();
    let locks: Vec<(Vec<u8>, Option<DateTime<Utc>>)> = login_throttles::table
        .filter(login_throttles::client.eq(ALL_CLIENTS))
        .filter(login_throttles::email_hash.eq_any(&hashes))
        .filter(login_throttles::locked_until.is_not_null())
        .select((login_throttles::email_hash, login_throttles::locked_until))
        .load(conn)?;
    for (account, hash) in accounts.iter_mut().zip(&hashes) {
        account.locked_until = locks
            .iter()
            .find(|(h, _)| h == hash)
            .and_then(|(_, until)| *until);
    }
    Ok(accounts)
}

/// Deletes counters nobody needs any more: idle past the window with no
/// lock to remember, or idle for a day whatever they hold — unless they
/// remember a client the owner still counts as known. Returns how many.
#[instrument(skip_all)]
pub fn purge_throttles(
    conn: &mut PgConnection,
    policy: &LockoutPolicy,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let idle = now - policy.window;
    Ok(diesel::delete(
        login_throttles::table
            .filter(
                login_throttles::updated_at
                    .lt(idle)
                    .and(login_throttles::lock_count.eq(0))
                    .or(login_throttles::updated_at.lt(now - Duration::days(1))),
            )
            .filter(
                login_throttles::last_success_at
                    .is_null()
                    .or(login_throttles::last_success_at.lt(now - policy.trusted_for)),
            ),
    )
    .execute(conn)?)
}
