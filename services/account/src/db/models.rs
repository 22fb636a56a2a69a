//! Rows and their conversions to and from domain values: the only place
//! rows and domain meet. Each table has its `Row` (read back) and, where
//! inserts differ, its `NewRow`.

use backroom_shared::stored::UnknownStoredValue;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::account::{accounts, addresses, login_throttles, refresh_tokens};
use crate::domain::{
    Account, Address, Email, PostalAddress, Role, lockout::LoginFailures, sessions::RefreshToken,
};

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

/// The stored form of a role set.
pub fn stored_roles(roles: &[Role]) -> Vec<Option<String>> {
    roles.iter().map(|r| Some(r.as_str().to_owned())).collect()
}

impl AccountRow {
    /// The roles as stored; a role this code does not know is an error.
    pub fn roles(&self) -> Result<Vec<Role>, UnknownStoredValue> {
        self.roles
            .iter()
            .flatten()
            .map(|r| Role::from_stored(r))
            .collect()
    }

    /// The domain account and the stored password hash.
    pub fn into_parts(self) -> Result<(Account, String), UnknownStoredValue> {
        let account = Account {
            roles: self.roles()?,
            id: self.id,
            email: Email::from_stored(self.email),
            display_name: self.display_name,
            disabled: self.disabled,
            disable_reason: self.disable_reason,
            security_version: self.security_version,
            locked_until: None,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        Ok((account, self.password_hash))
    }

    /// The domain account.
    pub fn into_account(self) -> Result<Account, UnknownStoredValue> {
        Ok(self.into_parts()?.0)
    }
}

/// A stored address (inserted as is).
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

impl From<&Address> for AddressRow {
    fn from(address: &Address) -> Self {
        let postal = address.postal.clone();
        Self {
            id: address.id,
            account_id: address.account_id,
            recipient: postal.recipient,
            line1: postal.line1,
            line2: postal.line2,
            city: postal.city,
            region: postal.region,
            postal_code: postal.postal_code,
            country_code: postal.country_code,
            created_at: address.created_at,
        }
    }
}

impl From<AddressRow> for Address {
    fn from(row: AddressRow) -> Self {
        Self {
            id: row.id,
            account_id: row.account_id,
            postal: PostalAddress {
                recipient: row.recipient,
                line1: row.line1,
                line2: row.line2,
                city: row.city,
                region: row.region,
                postal_code: row.postal_code,
                country_code: row.country_code,
            },
            created_at: row.created_at,
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

impl From<RefreshTokenRow> for RefreshToken {
    fn from(row: RefreshTokenRow) -> Self {
        Self {
            family_id: row.family_id,
            account_id: row.account_id,
            expires_at: row.expires_at,
            rotated_at: row.rotated_at,
            revoked_at: row.revoked_at,
            session_expires_at: row.session_expires_at,
        }
    }
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
#[diesel(
    table_name = login_throttles,
    check_for_backend(diesel::pg::Pg),
    treat_none_as_null = true
)]
pub struct LoginThrottleRow {
    pub email_hash: Vec<u8>,
    pub client: String,
    pub attempts: i32,
    pub window_start: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    pub lock_count: i32,
    pub updated_at: DateTime<Utc>,
    /// The last successful login from this client (never set on the
    /// ceiling row): a client that has it within the policy's `trusted_for`
    /// is not bound by the ceiling lock.
    pub last_success_at: Option<DateTime<Utc>>,
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
