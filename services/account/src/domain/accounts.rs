//! Accounts: the [`Account`] entity, the changes and filters its RPCs take,
//! the [`Revocation`] list entries its security version feeds, and the rule
//! that admins do not act on themselves ([`SelfAction`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Email, Error, Role};

/// An account as the domain sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's id (UUIDv7).
    pub id: Uuid,
    /// Its normalised, unique email.
    pub email: Email,
    /// Name shown to humans.
    pub display_name: String,
    /// Roles held, sorted by name; `customer` always among them.
    pub roles: Vec<Role>,
    /// Disabled by an admin.
    pub disabled: bool,
    /// Why, when disabled.
    pub disable_reason: String,
    /// Raised by a password change, a disable and a role change; tokens
    /// carry the version they were issued under.
    pub security_version: i64,
    /// The lock across all clients (too many failures from everywhere),
    /// if one is set; filled in by the repository where it is shown.
    pub locked_until: Option<DateTime<Utc>>,
    /// Row version, the etag of updates.
    pub version: i64,
    /// When it registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Account {
    /// Whether the account holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The role names tokens carry.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }

    /// Whether an access token issued under security version `sv` still
    /// counts: the account is active and nothing revoked it since.
    pub fn honours_token(&self, sv: i64) -> bool {
        !self.disabled && self.security_version <= sv
    }

    /// The lock across all clients in force at `now`, if any.
    pub fn lock_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }
}

/// The changes of an UpdateAccount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New roles.
    pub roles: Option<Vec<Role>>,
}

/// Filters of ListAccounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// Only disabled (`Some(true)`) or only active (`Some(false)`) accounts.
    pub disabled: Option<bool>,
    /// Email prefix, lower-cased.
    pub email_prefix: Option<String>,
}

/// One entry of the revocation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The account.
    pub account: Uuid,
    /// Its current security version: tokens below it no longer count.
    pub min_security_version: i64,
    /// When it last changed.
    pub changed_at: DateTime<Utc>,
}

/// What start-up did about the bootstrap admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The admin account was created.
    Created,
    /// An account with the email already was an admin: nothing changed.
    AlreadyAdmin,
    /// An existing account was promoted to admin (only when asked to).
    Promoted,
    /// An account with the email exists but is not an admin, and promoting
    /// it was not asked for: nothing changed.
    RefusedToPromote,
}

/// What an admin may do to other accounts but never to their own: another
/// admin must (a compromised admin cannot entrench itself, and nobody
/// locks themselves out by mistake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfAction {
    /// DisableAccount.
    Disable,
    /// EnableAccount.
    Enable,
    /// UpdateAccount naming `roles`.
    ChangeRoles,
}

impl SelfAction {
    /// Refuses the action when `actor` (the caller's account, if a person)
    /// is `target`.
    pub fn check(self, actor: Option<Uuid>, target: Uuid) -> Result<(), Error> {
        if actor != Some(target) {
            return Ok(());
        }
        Err(match self {
            SelfAction::Disable => Error::CannotDisableSelf,
            SelfAction::Enable => Error::CannotEnableSelf,
            SelfAction::ChangeRoles => Error::CannotChangeOwnRoles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_may_not_disable_enable_or_re_role_themselves() {
        let (me, other) = (Uuid::now_v7(), Uuid::now_v7());
        for action in [
            SelfAction::Disable,
            SelfAction::Enable,
            SelfAction::ChangeRoles,
        ] {
            assert!(action.check(Some(me), other).is_ok());
            assert!(action.check(None, other).is_ok(), "a service principal");
        }
        assert!(matches!(
            SelfAction::Disable.check(Some(me), me),
            Err(Error::CannotDisableSelf)
        ));
        assert!(matches!(
            SelfAction::Enable.check(Some(me), me),
            Err(Error::CannotEnableSelf)
        ));
        assert!(matches!(
            SelfAction::ChangeRoles.check(Some(me), me),
            Err(Error::CannotChangeOwnRoles)
        ));
    }
}
