//! Sessions: refresh-token families, their rotation, revocation, absolute
//! lifetime and purge.

use chrono::{DateTime, Duration, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::accounts::get_row;
use crate::{
    db::{
        models::{NewRefreshTokenRow, RefreshTokenRow},
        schema::account::refresh_tokens,
    },
    domain::{
        Error,
        sessions::{RefreshToken, Rotation, SessionLifetime},
    },
};

/// Opens a session after a successful login: a new refresh-token family
/// whose first token is `token_hash`. Returns when that token expires.
#[instrument(skip_all, fields(account = %account))]
pub fn start_session(
    conn: &mut PgConnection,
    account: Uuid,
    token_hash: &[u8],
    lifetime: SessionLifetime,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Error> {
    let (expires_at, session_expires_at) = lifetime.opened(now);
    insert_refresh_token(
        conn,
        &NewRefreshTokenRow {
            token_hash,
            family_id: Uuid::now_v7(),
            account_id: account,
            created_at: now,
            expires_at,
            session_expires_at,
        },
    )?;
    Ok(expires_at)
}

fn insert_refresh_token(
    conn: &mut PgConnection,
    row: &NewRefreshTokenRow<'_>,
) -> Result<(), Error> {
    diesel::insert_into(refresh_tokens::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Exchanges the refresh token `presented` for `new_hash` in the same family.
/// The row lock makes concurrent uses of one token serial: the first
/// rotates it, every later one sees a rotated token, which is reuse. Run it
/// in a transaction (`Store::write`): a refusal commits too (reuse revokes
/// the family).
#[instrument(skip_all, fields(account = tracing::field::Empty))]
pub fn rotate_refresh_token(
    conn: &mut PgConnection,
    presented: &[u8],
    new_hash: &[u8],
    lifetime: SessionLifetime,
    now: DateTime<Utc>,
) -> Result<Rotation, Error> {
    let Some(token) = refresh_tokens::table
        .find(presented)
        .select(RefreshTokenRow::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .map(RefreshToken::from)
    else {
        return Ok(Rotation::Rejected(Error::InvalidRefreshToken));
    };
    tracing::Span::current().record("account", tracing::field::display(token.account_id));
    if let Some(refusal) = token.refusal(now) {
        if matches!(refusal, Error::RefreshTokenReused) {
            tracing::warn!(family = %token.family_id, "refresh token reused: revoking the family");
            revoke_family(conn, token.family_id, now)?;
        }
        return Ok(Rotation::Rejected(refusal));
    }
    let account = get_row(conn, token.account_id, false)?.into_account()?;
    if account.disabled {
        return Ok(Rotation::Rejected(Error::Disabled));
    }
    diesel::update(refresh_tokens::table.find(presented))
        .set(refresh_tokens::rotated_at.eq(now))
        .execute(conn)?;
    let expires_at = lifetime.successor(now, token.session_expires_at);
    insert_refresh_token(
        conn,
        &NewRefreshTokenRow {
            token_hash: new_hash,
            family_id: token.family_id,
            account_id: token.account_id,
            created_at: now,
            expires_at,
            session_expires_at: token.session_expires_at,
        },
    )?;
    Ok(Rotation::Rotated(account, expires_at))
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
#[instrument(skip_all, fields(family = tracing::field::Empty))]
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
        tracing::Span::current().record("family", tracing::field::display(family));
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

/// How long an expired or revoked refresh token is kept: presenting it
/// within this time still answers precisely (expired, revoked) rather than
/// "unknown".
pub const REFRESH_TOKEN_RETENTION: Duration = Duration::days(1);

/// Deletes refresh tokens that expired or were revoked more than
/// [`REFRESH_TOKEN_RETENTION`] ago; returns how many. A rotated token is
/// kept until it expires, so reuse is detected for as long as it matters.
#[instrument(skip_all)]
pub fn purge_refresh_tokens(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<usize, Error> {
    let cutoff = now - REFRESH_TOKEN_RETENTION;
    Ok(diesel::delete(
        refresh_tokens::table.filter(
            refresh_tokens::expires_at
                .lt(cutoff)
                .or(refresh_tokens::session_expires_at.lt(cutoff))
                .or(refresh_tokens::revoked_at.lt(cutoff)),
        ),
    )
    .execute(conn)?)
}
