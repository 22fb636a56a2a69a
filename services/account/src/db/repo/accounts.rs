//! Accounts: creation, lookups, changes, and the security version that
//! revokes older access tokens.

use backroom_shared::{db::DbError, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::{sessions::revoke_all_sessions, throttles::attach_locks};
use crate::{
    db::{
        models::{AccountRow, NewAccountRow, stored_roles},
        schema::account::accounts,
    },
    domain::{Account, AccountChanges, AccountFilter, Bootstrap, Email, Error, Revocation, Role},
    events,
};

/// Inserts a new account; a taken email is [`Error::EmailTaken`].
#[instrument(skip_all, fields(account = tracing::field::Empty))]
pub fn insert_account(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    roles: &[Role],
    now: DateTime<Utc>,
) -> Result<Account, Error> {
    let id = Uuid::now_v7();
    tracing::Span::current().record("account", tracing::field::display(id));
    let row = NewAccountRow {
        id,
        email: email.as_str(),
        display_name,
        password_hash,
        roles: stored_roles(roles),
        created_at: now,
        updated_at: now,
    };
    let inserted = diesel::insert_into(accounts::table)
        .values(&row)
        .returning(AccountRow::as_returning())
        .get_result(conn)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::EmailTaken,
            other => Error::Db(other),
        })?;
    let account = inserted.into_account()?;
    events::registered(conn, &account, now)?;
    Ok(account)
}

/// Whether an account with `email` exists (Register's check before it
/// spends a hash).
#[instrument(skip_all)]
pub fn email_taken(conn: &mut PgConnection, email: &Email) -> Result<bool, Error> {
    Ok(diesel::select(diesel::dsl::exists(
        accounts::table.filter(accounts::email.eq(email.as_str())),
    ))
    .get_result(conn)?)
}

/// The account registered with `email` and its password hash.
#[instrument(skip_all, fields(account = tracing::field::Empty))]
pub fn find_by_email(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<Option<(Account, String)>, Error> {
    let found = accounts::table
        .filter(accounts::email.eq(email.as_str()))
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?
        .map(AccountRow::into_parts)
        .transpose()?;
    if let Some((account, _)) = &found {
        tracing::Span::current().record("account", tracing::field::display(account.id));
    }
    Ok(found)
}

/// The account with `id`, with its lock across clients.
#[instrument(skip_all, fields(account = %id))]
pub fn get_account(conn: &mut PgConnection, id: Uuid) -> Result<Account, Error> {
    let account = get_row(conn, id, false)?.into_account()?;
    Ok(attach_locks(conn, vec![account])?.remove(0))
}

/// The account with `id` if it exists, without its lock (authorization
/// reads it on every call).
#[instrument(skip_all, fields(account = %id))]
pub fn find_account(conn: &mut PgConnection, id: Uuid) -> Result<Option<Account>, Error> {
    Ok(accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .first(conn)
        .optional()?
        .map(AccountRow::into_account)
        .transpose()?)
}

pub(super) fn get_row(
    conn: &mut PgConnection,
    id: Uuid,
    for_update: bool,
) -> Result<AccountRow, Error> {
    let query = accounts::table.find(id).select(AccountRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    row.ok_or(Error::AccountNotFound(id))
}

/// Raises the security version of `id`: every access token issued before
/// stops counting.
fn bump_security_version(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(accounts::table.find(id))
        .set((
            accounts::security_version.eq(accounts::security_version + 1),
            accounts::security_changed_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The stored password hash of an account (locked for update).
#[instrument(skip_all, fields(account = %id))]
pub fn password_hash_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<(Account, String), Error> {
    Ok(get_row(conn, id, true)?.into_parts()?)
}

/// Stores a rehash of the same password (new parameters); changes nothing
/// else.
#[instrument(skip_all, fields(account = %id))]
pub fn store_rehash(conn: &mut PgConnection, id: Uuid, hash: &str) -> Result<(), Error> {
    diesel::update(accounts::table.find(id))
        .set(accounts::password_hash.eq(hash))
        .execute(conn)?;
    Ok(())
}

/// Replaces the password hash, revokes every session and every access token
/// issued before.
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
    bump_security_version(conn, id, now)?;
    revoke_all_sessions(conn, id, now)?;
    let account = get_account(conn, id)?;
    events::password_changed(conn, &account, now)
}

/// Applies `changes` if the account is at `expected_version` (when given).
/// A change of roles revokes the account's earlier access tokens.
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
    let old_roles = current.roles()?;
    let display_name = changes.display_name.unwrap_or(current.display_name);
    let roles_changed = changes.roles.as_ref().is_some_and(|roles| {
        let mut new: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let mut old: Vec<&str> = old_roles.iter().map(|r| r.as_str()).collect();
        new.sort_unstable();
        old.sort_unstable();
        new != old
    });
    let roles = stored_roles(changes.roles.as_deref().unwrap_or(&old_roles));
    diesel::update(accounts::table.find(id))
        .set((
            accounts::display_name.eq(display_name),
            accounts::roles.eq(roles),
            accounts::version.eq(accounts::version + 1),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
    if roles_changed {
        bump_security_version(conn, id, now)?;
    }
    let account = get_account(conn, id)?;
    if roles_changed {
        let previous = old_roles
            .iter()
            .map(|role| role.as_str().to_owned())
            .collect();
        events::roles_changed(conn, &account, previous, now)?;
    }
    Ok(account)
}

/// Disables (revoking every session and access token) or re-enables an
/// account. A no-op change returns the account unchanged.
#[instrument(skip_all, fields(account = %id, disabled = disabled))]
pub fn set_disabled(
    conn: &mut PgConnection,
    id: Uuid,
    disabled: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Account, Error> {
    let current = get_row(conn, id, true)?;
    if current.disabled == disabled {
        return get_account(conn, id);
    }
    diesel::update(accounts::table.find(id))
        .set((
            accounts::disabled.eq(disabled),
            accounts::disable_reason.eq(if disabled { reason } else { "" }),
            accounts::version.eq(accounts::version + 1),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
    if disabled {
        bump_security_version(conn, id, now)?;
        revoke_all_sessions(conn, id, now)?;
    }
    let account = get_account(conn, id)?;
    events::disabled_changed(conn, &account, now)?;
    Ok(account)
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
    let accounts = query
        .load(conn)?
        .into_iter()
        .map(AccountRow::into_account)
        .collect::<Result<_, _>>()?;
    attach_locks(conn, accounts)
}

/// A page (by account id) of the accounts whose security version changed
/// after `since`.
#[instrument(skip_all)]
pub fn list_revocations(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<Revocation>, Error> {
    let mut query = accounts::table
        .filter(accounts::security_changed_at.gt(since))
        .select((
            accounts::id,
            accounts::security_version,
            accounts::security_changed_at,
        ))
        .order(accounts::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(accounts::id.gt(after));
    }
    Ok(query
        .load::<(Uuid, i64, Option<DateTime<Utc>>)>(conn)?
        .into_iter()
        .map(|(account, min_security_version, changed_at)| Revocation {
            account,
            min_security_version,
            changed_at: changed_at.unwrap_or(since),
        })
        .collect())
}

/// Makes sure an admin account with `email` exists: creates it with
/// `password_hash`; never touches an existing account's password; promotes
/// an existing non-admin account only if `promote_existing`. Run it in a
/// transaction (`Store::write`).
#[instrument(skip_all)]
pub fn ensure_admin(
    conn: &mut PgConnection,
    email: &Email,
    password_hash: &str,
    promote_existing: bool,
    now: DateTime<Utc>,
) -> Result<Bootstrap, Error> {
    match find_by_email(conn, email)? {
        Some((account, _)) if account.has_role(Role::Admin) => Ok(Bootstrap::AlreadyAdmin),
        Some(_) if !promote_existing => Ok(Bootstrap::RefusedToPromote),
        Some((account, _)) => {
            let mut roles = account.roles.clone();
            roles.push(Role::Admin);
            roles.sort_by_key(|role| role.as_str());
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
            Ok(Bootstrap::Promoted)
        }
        None => {
            insert_account(
                conn,
                email,
                "Administrator",
                password_hash,
                &[Role::Admin, Role::Customer],
                now,
            )?;
            Ok(Bootstrap::Created)
        }
    }
}
