//! The account domain: values that are valid by construction, the
//! entities and their rules, the service's one [`Error`] enum, and the
//! policies (passwords, lockout, tokens) the repository and API apply. No
//! proto type and no diesel row appears here.
//!
//! Layout: [`values`] (emails, passwords, roles), [`accounts`] (the
//! account, its changes, revocations, admins' self-actions),
//! [`addresses`], [`sessions`] (refresh-token families and lifetimes),
//! [`lockout`] (failed-login policy), [`passwords`] (Argon2id on its own
//! bounded thread pool), [`tokens`] (signing keys, JWTs, refresh tokens),
//! [`service_clients`] (service principals).

pub mod accounts;
pub mod addresses;
pub mod lockout;
pub mod passwords;
pub mod service_clients;
pub mod sessions;
pub mod tokens;
pub mod values;

use backroom_shared::{auth::AccessDenied, db::DbError, errors::FieldViolation};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use accounts::{Account, AccountChanges, AccountFilter, Bootstrap, Revocation, SelfAction};
pub use addresses::{Address, AddressFields, MAX_ADDRESSES, PostalAddress};
pub use values::*;

/// Everything an account operation can fail with. Mapped to a gRPC status in
/// exactly one place (`impl From<Error> for Status` in `api`), exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, one violation per field.
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldViolation>),
    /// Register with an email that is already registered.
    #[error("email already registered")]
    EmailTaken,
    /// Unknown email or wrong password (indistinguishable on purpose).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// ChangePassword with a wrong current password.
    #[error("current password is wrong")]
    WrongCurrentPassword,
    /// Too many failed logins; locked until then.
    #[error("account locked until {until}")]
    Locked {
        /// When the lock ends.
        until: DateTime<Utc>,
        /// Whole seconds until then.
        retry_after: i64,
    },
    /// An admin disabled the account.
    #[error("account disabled")]
    Disabled,
    /// The refresh token is unknown.
    #[error("unknown refresh token")]
    InvalidRefreshToken,
    /// The refresh token was already rotated: its family is now revoked.
    #[error("refresh token reused")]
    RefreshTokenReused,
    /// The refresh token passed its expiry.
    #[error("refresh token expired")]
    RefreshTokenExpired,
    /// The token's family was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// No such account.
    #[error("account {0} not found")]
    AccountNotFound(Uuid),
    /// No such address of that account.
    #[error("address {address} of account {account} not found")]
    AddressNotFound {
        /// The account named.
        account: Uuid,
        /// The address named.
        address: Uuid,
    },
    /// The etag sent with an update is stale.
    #[error("etag mismatch")]
    EtagMismatch,
    /// An admin tried to disable their own account.
    #[error("cannot disable own account")]
    CannotDisableSelf,
    /// The account already has the maximum number of addresses.
    #[error("address limit reached")]
    AddressLimitReached,
    /// Unknown client id or wrong secret.
    #[error("invalid client credentials")]
    InvalidClient,
    /// The client may not ask tokens for that audience.
    #[error("audience not allowed for this client")]
    AudienceNotAllowed,
    /// A service token was asked for an audience that does not exist.
    #[error("unknown audience")]
    UnknownAudience,
    /// The password-hashing queue is full: try again shortly.
    #[error("password hashing is overloaded")]
    Overloaded,
    /// The caller's deadline passed (or it hung up) before the work began.
    #[error("the caller's deadline passed")]
    DeadlineExceeded,
    /// An admin tried to change their own roles.
    #[error("cannot change own roles")]
    CannotChangeOwnRoles,
    /// An admin tried to enable their own account.
    #[error("cannot enable own account")]
    CannotEnableSelf,
    /// The caller's token no longer counts (account disabled, security
    /// version moved on, account gone).
    #[error("token revoked")]
    TokenRevoked,
    /// The caller lacks the role or ownership the call requires.
    #[error(transparent)]
    AccessDenied(#[from] AccessDenied),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Anything else unexpected (hashing or signing failures).
    #[error(transparent)]
    Internal(anyhow::Error),
}

backroom_shared::domain_error_conversions!(Error);

impl Error {
    /// The lock in force at `now`.
    pub fn locked(until: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        // Rounded up: "retry in 0 s" while still locked would be a lie.
        let retry_after = ((until - now).num_milliseconds() + 999)
            .div_euclid(1000)
            .max(1);
        Error::Locked { until, retry_after }
    }
}
