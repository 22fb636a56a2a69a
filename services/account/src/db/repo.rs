//! Repository functions: each takes a connection (the caller owns the
//! transaction) and the current time from the service clock. Every call is
//! instrumented.

use backroom_shared::{db::DbError, paging::PageRequest};
use chrono::{DateTime, Duration, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::{
    models::{Account, AccountRow, AddressRow, NewAccountRow, NewRefreshTokenRow, RefreshTokenRow},
    schema::account::{accounts, addresses, refresh_tokens},
};
use crate::domain::{
    Email, Error, MAX_ADDRESSES, account_name, address_name,
    lockout::{LockoutPolicy, LoginFailures},
};

/// Inserts a new account; a taken email is [`Error::EmailTaken`].
#[instrument(skip_all)]
pub fn insert_account(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    roles: &[&str],
    now: DateTime<Utc>,
) -> Result<Account, Error> {
    let row = NewAccountRow {
        id: Uuid::now_v7(),
        email: email.as_str(),
        display_name,
        password_hash,
        roles: roles.iter().map(|r| Some((*r).to_owned())).collect(),
        created_at: now,
        updated_at: now,
    };
    diesel::insert_into(accounts::table)
        .values(&row)
        .returning(AccountRow::as_returning())
        .get_result(conn)
        .map(AccountRow::into_account)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::EmailTaken,
            other => Error::Db(other),
        })
}

/// The account registered with `email` and its password hash.
#[instrument(skip_all)]
pub fn find_by_email(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<Option<(Account, String)>, Error> {
    Ok(accounts::table
        .filter(accounts::email.eq(email.as_str()))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?
        .map(AccountRow::into_parts))
}

/// The account with `id`.
#[instrument(skip_all, fields(account = %id))]
pub fn get_account(conn: &mut PgConnection, id: Uuid) -> Result<Account, Error> {
    get_row(conn, id, false).map(AccountRow::into_account)
}

fn get_row(conn: &mut PgConnection, id: Uuid, for_update: bool) -> Result<AccountRow, Error> {
    let query = accounts::table.find(id).select(AccountRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    row.ok_or_else(|| Error::AccountNotFound(account_name(id)))
}

/// Records a failed login under the lockout policy; returns the new counters.
#[instrument(skip_all, fields(account = %id))]
pub fn record_login_failure(
    conn: &mut PgConnection,
    id: Uuid,
    policy: &LockoutPolicy,
    now: DateTime<Utc>,
) -> Result<LoginFailures, Error> {
    conn.transaction(|conn| {
        // Row lock: concurrent failures must each count.
        let (account, _) = get_row(conn, id, true)?.into_parts();
        let next = policy.after_failure(account.failures, now);
        diesel::update(accounts::table.find(id))
            .set((
                accounts::failed_logins.eq(next.count),
                accounts::first_failed_at.eq(next.window_start),
                accounts::locked_until.eq(next.locked_until),
                accounts::lock_count.eq(next.lock_count),
            ))
            .execute(conn)?;
        Ok(next)
    })
}

/// After a successful login: clears the lockout counters, stores a rehash
/// if one was made, and opens a session (a new refresh-token family).
#[instrument(skip_all, fields(account = %id))]
pub fn start_session(
    conn: &mut PgConnection,
    id: Uuid,
    rehash: Option<&str>,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    conn.transaction(|conn| {
        diesel::update(accounts::table.find(id))
            .set((
                accounts::failed_logins.eq(0),
                accounts::first_failed_at.eq(None::<DateTime<Utc>>),
                accounts::locked_until.eq(None::<DateTime<Utc>>),
                accounts::lock_count.eq(0),
            ))
            .execute(conn)?;
        if let Some(hash) = rehash {
            diesel::update(accounts::table.find(id))
                .set(accounts::password_hash.eq(hash))
                .execute(conn)?;
        }
        insert_refresh_token(conn, id, Uuid::now_v7(), token_hash, expires_at, now)
    })
}

fn insert_refresh_token(
    conn: &mut PgConnection,
    account_id: Uuid,
    family_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::insert_into(refresh_tokens::table)
        .values(NewRefreshTokenRow {
            token_hash,
            family_id,
            account_id,
            created_at: now,
            expires_at,
        })
        .execute(conn)?;
    Ok(())
}

/// What presenting a refresh token led to. A rejection may still have
/// changed state (reuse revokes the family), so both outcomes commit.
#[derive(Debug)]
pub enum Rotation {
    /// The token was exchanged for `new_hash`; the session's account.
    Rotated(Account),
    /// The token was refused, for this reason.
    Rejected(Error),
}

/// Exchanges the refresh token `presented` for `new_hash` in the same family.
/// The row lock makes concurrent uses of one token serial: the first
/// rotates it, every later one sees a rotated token, which is reuse.
#[instrument(skip_all)]
pub fn rotate_refresh_token(
    conn: &mut PgConnection,
    presented: &[u8],
    new_hash: &[u8],
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Rotation, Error> {
    conn.transaction(|conn| {
        let Some(token) = refresh_tokens::table
            .find(presented)
            .select(RefreshTokenRow::as_select())
            .for_update()
            .first(conn)
            .optional()?
        else {
            return Ok(Rotation::Rejected(Error::InvalidRefreshToken));
        };
        if token.revoked_at.is_some() {
            return Ok(Rotation::Rejected(Error::SessionRevoked));
        }
        if token.rotated_at.is_some() {
            tracing::warn!(family = %token.family_id, "refresh token reused: revoking the family");
            revoke_family(conn, token.family_id, now)?;
            return Ok(Rotation::Rejected(Error::RefreshTokenReused));
        }
        if token.expires_at <= now {
            return Ok(Rotation::Rejected(Error::RefreshTokenExpired));
        }
        let account = get_account(conn, token.account_id)?;
        if account.disabled {
            return Ok(Rotation::Rejected(Error::Disabled));
        }
        diesel::update(refresh_tokens::table.find(presented))
            .set(refresh_tokens::rotated_at.eq(now))
            .execute(conn)?;
        insert_refresh_token(
            conn,
            token.account_id,
            token.family_id,
            new_hash,
            now + ttl,
            now,
        )?;
        Ok(Rotation::Rotated(account))
    })
}

fn revoke_family(conn: &mut PgConnection, family: Uuid, now: DateTime<Utc>) -> Result<(), Error> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)?;
    Ok(())
}

/// Revokes the family of `token_hash`, if the token exists.
#[instrument(skip_all)]
pub fn revoke_family_of(
    conn: &mut PgConnection,
    token_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let family = refresh_tokens::table
        .find(token_hash)
        .select(refresh_tokens::family_id)
        .first::<Uuid>(conn)
        .optional()?;
    if let Some(family) = family {
        revoke_family(conn, family, now)?;
    }
    Ok(())
}

/// Revokes every session of an account.
#[instrument(skip_all, fields(account = %account_id))]
pub fn revoke_all_sessions(
    conn: &mut PgConnection,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::account_id.eq(account_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)?;
    Ok(())
}

/// The stored password hash of an account (locked for update).
#[instrument(skip_all, fields(account = %id))]
pub fn password_hash_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<(Account, String), Error> {
    Ok(get_row(conn, id, true)?.into_parts())
}

/// Replaces the password hash and revokes every session.
#[instrument(skip_all, fields(account = %id))]
pub fn set_password(
    conn: &mut PgConnection,
    id: Uuid,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(accounts::table.find(id))
        .set((
            accounts::password_hash.eq(hash),
            accounts::version.eq(accounts::version + 1),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
    revoke_all_sessions(conn, id, now)
}

/// The changes of an UpdateAccount.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New roles.
    pub roles: Option<Vec<String>>,
}

/// Applies `changes` if the account is at `expected_version` (when given).
#[instrument(skip_all, fields(account = %id))]
pub fn update_account(
    conn: &mut PgConnection,
    id: Uuid,
    expected_version: Option<i64>,
    changes: AccountChanges,
    now: DateTime<Utc>,
) -> Result<Account, Error> {
    let current = get_row(conn, id, true)?;
    if expected_version.is_some_and(|v| v != current.version) {
        return Err(Error::EtagMismatch);
    }
    let display_name = changes.display_name.unwrap_or(current.display_name);
    let roles = changes
        .roles
        .map(|roles| roles.into_iter().map(Some).collect())
        .unwrap_or(current.roles);
    Ok(diesel::update(accounts::table.find(id))
        .set((
            accounts::display_name.eq(display_name),
            accounts::roles.eq(roles),
            accounts::version.eq(accounts::version + 1),
            accounts::updated_at.eq(now),
        ))
        .returning(AccountRow::as_returning())
        .get_result(conn)?
        .into_account())
}

/// Disables (revoking every session) or re-enables an account. A no-op
/// change returns the account unchanged.
#[instrument(skip_all, fields(account = %id, disabled))]
pub fn set_disabled(
    conn: &mut PgConnection,
    id: Uuid,
    disabled: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Account, Error> {
    let current = get_row(conn, id, true)?;
    if current.disabled == disabled {
        return Ok(current.into_account());
    }
    let account = diesel::update(accounts::table.find(id))
        .set((
            accounts::disabled.eq(disabled),
            accounts::disable_reason.eq(if disabled { reason } else { "" }),
            accounts::version.eq(accounts::version + 1),
            accounts::updated_at.eq(now),
        ))
        .returning(AccountRow::as_returning())
        .get_result(conn)?
        .into_account();
    if disabled {
        revoke_all_sessions(conn, id, now)?;
    }
    Ok(account)
}

/// Filters of ListAccounts.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    /// Only disabled (`Some(true)`) or only active (`Some(false)`) accounts.
    pub disabled: Option<bool>,
    /// Email prefix, lower-cased.
    pub email_prefix: Option<String>,
}

/// A page of accounts in creation order.
#[instrument(skip_all)]
pub fn list_accounts(
    conn: &mut PgConnection,
    filter: &AccountFilter,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<Account>, Error> {
    let mut query = accounts::table
        .select(AccountRow::as_select())
        .order(accounts::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(accounts::id.gt(after));
    }
    if let Some(disabled) = filter.disabled {
        query = query.filter(accounts::disabled.eq(disabled));
    }
    if let Some(prefix) = &filter.email_prefix {
        // LIKE metacharacters in the prefix match themselves.
        let escaped = prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(accounts::email.like(format!("{escaped}%")));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(AccountRow::into_account)
        .collect())
}

/// Makes sure an admin account with `email` exists: creates it with the
/// hash `make_hash` produces, or grants `admin` to the existing account.
/// Returns whether it was created.
#[instrument(skip_all)]
pub fn ensure_admin(
    conn: &mut PgConnection,
    email: &Email,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    conn.transaction(|conn| match find_by_email(conn, email)? {
        Some((account, _)) => {
            if !account.roles.iter().any(|r| r == "admin") {
                let mut roles = account.roles.clone();
                roles.push("admin".into());
                roles.sort();
                update_account(
                    conn,
                    account.id,
                    None,
                    AccountChanges {
                        display_name: None,
                        roles: Some(roles),
                    },
                    now,
                )?;
            }
            Ok(false)
        }
        None => {
            insert_account(
                conn,
                email,
                "Administrator",
                password_hash,
                &["admin", "customer"],
                now,
            )?;
            Ok(true)
        }
    })
}

/// Adds an address unless the account already has [`MAX_ADDRESSES`].
#[instrument(skip_all, fields(account = %row.account_id))]
pub fn insert_address(conn: &mut PgConnection, row: &AddressRow) -> Result<AddressRow, Error> {
    // Lock the account row so two concurrent creates cannot both pass the
    // limit check.
    get_row(conn, row.account_id, true)?;
    let count: i64 = addresses::table
        .filter(addresses::account_id.eq(row.account_id))
        .count()
        .get_result(conn)?;
    if count >= MAX_ADDRESSES {
        return Err(Error::AddressLimitReached);
    }
    Ok(diesel::insert_into(addresses::table)
        .values(row)
        .returning(AddressRow::as_returning())
        .get_result(conn)?)
}

/// One address of an account.
#[instrument(skip_all, fields(account = %account_id, address = %id))]
pub fn get_address(
    conn: &mut PgConnection,
    account_id: Uuid,
    id: Uuid,
) -> Result<AddressRow, Error> {
    addresses::table
        .filter(addresses::account_id.eq(account_id))
        .filter(addresses::id.eq(id))
        .select(AddressRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::AddressNotFound(address_name(account_id, id)))
}

/// A page of an account's addresses, oldest first.
#[instrument(skip_all, fields(account = %account_id))]
pub fn list_addresses(
    conn: &mut PgConnection,
    account_id: Uuid,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<AddressRow>, Error> {
    get_account(conn, account_id)?;
    let mut query = addresses::table
        .filter(addresses::account_id.eq(account_id))
        .select(AddressRow::as_select())
        .order(addresses::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(addresses::id.gt(after));
    }
    Ok(query.load(conn)?)
}

/// Deletes an address.
#[instrument(skip_all, fields(account = %account_id, address = %id))]
pub fn delete_address(conn: &mut PgConnection, account_id: Uuid, id: Uuid) -> Result<(), Error> {
    let deleted = diesel::delete(
        addresses::table
            .filter(addresses::account_id.eq(account_id))
            .filter(addresses::id.eq(id)),
    )
    .execute(conn)?;
    if deleted == 0 {
        return Err(Error::AddressNotFound(address_name(account_id, id)));
    }
    Ok(())
}
