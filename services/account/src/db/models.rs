//! Rows and their conversions to domain values (the only place rows and
//! domain meet).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::account::{accounts, addresses, login_throttles, refresh_tokens};
use crate::domain::{Email, NewAddress, lockout::LoginFailures};

/// An account as stored.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = accounts, check_for_backend(diesel::pg::Pg))]
pub struct AccountRow {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub roles: Vec<Option<String>>,
    pub disabled: bool,
    pub disable_reason: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub security_version: i64,
    pub security_changed_at: Option<DateTime<Utc>>,
}

/// A new account.
#[derive(Debug, Insertable)]
#[diesel(table_name = accounts)]
pub struct NewAccountRow<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub roles: Vec<Option<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An account as the domain sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub email: Email,
    pub display_name: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub disable_reason: String,
    /// Raised by a password change, a disable and a role change; tokens
    /// carry the version they were issued under.
    pub security_version: i64,
    /// The lock across all clients (too many failures from everywhere),
    /// if one is set; filled in by the repository where it is shown.
    pub locked_until: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AccountRow {
    /// The domain account and the stored password hash.
    pub fn into_parts(self) -> (Account, String) {
        let account = Account {
            id: self.id,
            email: Email::from_stored(self.email),
            display_name: self.display_name,
            roles: self.roles.into_iter().flatten().collect(),
            disabled: self.disabled,
            disable_reason: self.disable_reason,
            security_version: self.security_version,
            locked_until: None,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        (account, self.password_hash)
    }

    /// The domain account.
    pub fn into_account(self) -> Account {
        self.into_parts().0
    }
}

/// A stored address.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable, Insertable)]
#[diesel(table_name = addresses, check_for_backend(diesel::pg::Pg))]
pub struct AddressRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub recipient: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country_code: String,
    pub created_at: DateTime<Utc>,
}

impl AddressRow {
    /// The row for a new address.
    pub fn new(id: Uuid, account_id: Uuid, address: NewAddress, now: DateTime<Utc>) -> Self {
        Self {
            id,
            account_id,
            recipient: address.recipient,
            line1: address.line1,
            line2: address.line2,
            city: address.city,
            region: address.region,
            postal_code: address.postal_code,
            country_code: address.country_code,
            created_at: now,
        }
    }
}

/// A stored refresh token.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens, check_for_backend(diesel::pg::Pg))]
pub struct RefreshTokenRow {
    pub token_hash: Vec<u8>,
    pub family_id: Uuid,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub session_expires_at: DateTime<Utc>,
}

/// A new refresh token.
#[derive(Debug, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshTokenRow<'a> {
    pub token_hash: &'a [u8],
    pub family_id: Uuid,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
}

/// Failed-login counters of one (email, client) pair.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = login_throttles, check_for_backend(diesel::pg::Pg))]
pub struct LoginThrottleRow {
    pub email_hash: Vec<u8>,
    pub client: String,
    pub attempts: i32,
    pub window_start: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    pub lock_count: i32,
    pub updated_at: DateTime<Utc>,
}

impl LoginThrottleRow {
    /// The counters as the lockout policy sees them.
    pub fn failures(&self) -> LoginFailures {
        LoginFailures {
            count: self.attempts,
            window_start: self.window_start,
            locked_until: self.locked_until,
            lock_count: self.lock_count,
        }
    }

    /// The row holding `failures`.
    pub fn with_failures(mut self, failures: LoginFailures, now: DateTime<Utc>) -> Self {
        self.attempts = failures.count;
        self.window_start = failures.window_start;
        self.locked_until = failures.locked_until;
        self.lock_count = failures.lock_count;
        self.updated_at = now;
        self
    }
}
