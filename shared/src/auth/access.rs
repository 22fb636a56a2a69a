//! [`Access`]: what a verified caller may do, reduced to a `Copy` value that
//! moves into blocking database closures, and the one place an
//! `ACCESS_DENIED` refusal is built ([`AccessDenied`]).
//!
//! Two kinds of check:
//! - `require_*`: the call needs a role or ownership the caller may lack;
//!   refusing reveals nothing (PERMISSION_DENIED `ACCESS_DENIED`, with
//!   `metadata["required"]`).
//! - [`Access::sees`]: a resource was looked up and belongs to someone; one
//!   the caller may not see must look exactly like one that does not exist
//!   (NOT_FOUND), or the refusal would confirm its existence.

use tonic::{Code, Status};
use uuid::Uuid;

use super::{Caller, ROLE_ADMIN, ROLE_FULFILLMENT, ROLE_SERVICE};
use crate::errors::{Domain, with_reason};

/// What `metadata["required"]` says for the common requirements.
pub mod required {
    /// Role admin.
    pub const ADMIN: &str = "role admin";
    /// Role service.
    pub const SERVICE: &str = "role service";
    /// Role admin or role service.
    pub const ADMIN_OR_SERVICE: &str = "role admin or role service";
    /// Role admin, or a service principal with role fulfillment.
    pub const ADMIN_OR_FULFILLMENT: &str = "role admin or a service with role fulfillment";
    /// The owner or an admin.
    pub const OWNER_OR_ADMIN: &str = "owner or role admin";
    /// The owner, an admin or a service.
    pub const OWNER_ADMIN_OR_SERVICE: &str = "owner, role admin or role service";
}

/// The caller lacks what the call requires (`required` says what, in the
/// words of [`required`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this call requires {required}")]
pub struct AccessDenied {
    /// What the call requires.
    pub required: &'static str,
}

impl AccessDenied {
    /// PERMISSION_DENIED `ACCESS_DENIED` in `domain`, with
    /// `metadata["required"]`.
    pub fn into_status(self, domain: Domain) -> Status {
        with_reason(
            Code::PermissionDenied,
            domain,
            "ACCESS_DENIED",
            format!("this call requires {}", self.required),
            [("required".to_owned(), self.required.to_owned())],
        )
    }
}

/// What a caller may do; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The caller's account, if a person.
    pub account: Option<Uuid>,
    /// Role admin.
    pub admin: bool,
    /// A service principal with role service.
    pub service: bool,
    /// A service principal with role fulfillment too (a warehouse).
    pub fulfillment: bool,
}

impl Access {
    /// The access of a verified caller.
    pub fn of(caller: &Caller) -> Self {
        Self {
            account: caller.account_id(),
            admin: caller.claims.has_role(ROLE_ADMIN),
            service: caller.is_service(),
            fulfillment: caller.is_service() && caller.claims.has_role(ROLE_FULFILLMENT),
        }
    }

    fn allow(allowed: bool, required: &'static str) -> Result<(), AccessDenied> {
        if allowed {
            Ok(())
        } else {
            Err(AccessDenied { required })
        }
    }

    /// Admins only.
    pub fn require_admin(self) -> Result<(), AccessDenied> {
        Self::allow(self.admin, required::ADMIN)
    }

    /// Service principals only.
    pub fn require_service(self) -> Result<(), AccessDenied> {
        Self::allow(self.service, required::SERVICE)
    }

    /// Admins and service principals.
    pub fn require_admin_or_service(self) -> Result<(), AccessDenied> {
        Self::allow(self.admin || self.service, required::ADMIN_OR_SERVICE)
    }

    /// Admins and warehouse systems (service principals with role
    /// fulfillment).
    pub fn require_admin_or_fulfillment(self) -> Result<(), AccessDenied> {
        Self::allow(
            self.admin || self.fulfillment,
            required::ADMIN_OR_FULFILLMENT,
        )
    }

    /// `owner` itself or an admin.
    pub fn require_owner_or_admin(self, owner: Uuid) -> Result<(), AccessDenied> {
        Self::allow(
            self.account == Some(owner) || self.admin,
            required::OWNER_OR_ADMIN,
        )
    }

    /// `owner` itself, an admin or a service principal.
    pub fn require_owner_admin_or_service(self, owner: Uuid) -> Result<(), AccessDenied> {
        Self::allow(
            self.account == Some(owner) || self.admin || self.service,
            required::OWNER_ADMIN_OR_SERVICE,
        )
    }

    /// Whether a resource of `owner` is visible to this caller: its owner,
    /// admins and service principals see it.
    pub fn may_see(self, owner: Uuid) -> bool {
        self.account == Some(owner) || self.admin || self.service
    }

    /// `found` if this caller may see it (`owner_of` names its owner), else
    /// `None` — so the caller answers NOT_FOUND exactly as for a resource
    /// that does not exist.
    pub fn sees<T>(self, found: Option<T>, owner_of: impl FnOnce(&T) -> Uuid) -> Option<T> {
        found.filter(|resource| self.may_see(owner_of(resource)))
    }
}

impl Caller {
    /// What this caller may do, as a `Copy` value.
    pub fn access(&self) -> Access {
        Access::of(self)
    }

    fn deny(&self, result: Result<(), AccessDenied>) -> Result<(), Status> {
        result.map_err(|denied| denied.into_status(self.domain))
    }

    /// PERMISSION_DENIED unless the caller has `role` (admin or service).
    pub fn require_role(&self, role: &str) -> Result<(), Status> {
        match role {
            ROLE_ADMIN => self.deny(self.access().require_admin()),
            ROLE_SERVICE => self.deny(self.access().require_service()),
            // No other role guards an RPC.
            _ => self.deny(Err(AccessDenied {
                required: "a role no caller has",
            })),
        }
    }

    /// PERMISSION_DENIED unless the caller is a service principal.
    pub fn require_service(&self) -> Result<(), Status> {
        self.deny(self.access().require_service())
    }

    /// PERMISSION_DENIED unless the caller is an admin or a service.
    pub fn require_admin_or_service(&self) -> Result<(), Status> {
        self.deny(self.access().require_admin_or_service())
    }

    /// PERMISSION_DENIED unless the caller owns `account` or is an admin.
    pub fn require_owner_or_admin(&self, account: Uuid) -> Result<(), Status> {
        self.deny(self.access().require_owner_or_admin(account))
    }

    /// PERMISSION_DENIED unless the caller owns `account`, is an admin, or is
    /// a service principal.
    pub fn require_owner_admin_or_service(&self, account: Uuid) -> Result<(), Status> {
        self.deny(self.access().require_owner_admin_or_service(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_admins_and_services_see_a_resource_and_nobody_else() {
        let owner = Uuid::now_v7();
        let customer = Access {
            account: Some(Uuid::now_v7()),
            admin: false,
            service: false,
            fulfillment: false,
        };
        assert_eq!(customer.sees(Some(owner), |o| *o), None);
        let me = Access {
            account: Some(owner),
            ..customer
        };
        assert_eq!(me.sees(Some(owner), |o| *o), Some(owner));
        assert!(
            Access {
                admin: true,
                ..customer
            }
            .may_see(owner)
        );
        assert!(
            Access {
                service: true,
                ..customer
            }
            .may_see(owner)
        );
        let denied = customer.require_owner_or_admin(owner).unwrap_err();
        let status = denied.into_status("backroom.test");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            crate::errors::reason_of(&status).as_deref(),
            Some("ACCESS_DENIED")
        );
        assert_eq!(status.message(), "this call requires owner or role admin");
        // A warehouse is a service with role fulfillment; a service
        // without it, or a customer, is no warehouse.
        let service = Access {
            account: None,
            service: true,
            ..customer
        };
        assert!(service.require_admin_or_fulfillment().is_err());
        assert!(customer.require_admin_or_fulfillment().is_err());
        assert!(
            Access {
                fulfillment: true,
                ..service
            }
            .require_admin_or_fulfillment()
            .is_ok()
        );
    }
}
