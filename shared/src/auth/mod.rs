//! Authentication and authorization for every service.
//!
//! Layout:
//! - this module: [`Claims`] (what a Backroom access token says: iss, sub,
//!   aud, exp, nbf, iat, jti, roles and `sv`, the account's security
//!   version), [`Caller`] (the verified caller a handler sees, with the
//!   `require_*` authorization checks), [`AccountRef`], [`TokenError`];
//! - [`verifier`]: [`Verifier`] checks a bearer JWT — EdDSA only (so
//!   `alg: none` and HS256-with-the-public-key are refused), issuer,
//!   audience, exp/nbf with 60 s leeway — against a fixed key set or the
//!   account service's JWKS (fetched, refreshed on a schedule and on an
//!   unknown `kid`, failed fetches rate-limited, fail closed), then against
//!   the [`revocation`] list;
//! - [`revocation`]: [`Revocations`], the accounts whose older tokens no
//!   longer count (password changed, disabled, roles changed), kept fresh by
//!   polling the account service;
//! - [`layer`]: [`AuthLayer`], the tower layer every server stacks. Health
//!   and reflection are always public; each service names its other public
//!   methods; every other call without a valid token is UNAUTHENTICATED.
//! - [`credentials`]: [`ServiceCredentials`], a service's own token (client
//!   credentials), cached until shortly before it expires.
//!
//! JWT parsing and signature checks are jsonwebtoken's (a well-kept library),
//! not ours.

pub mod access;
pub mod credentials;
pub mod layer;
pub mod revocation;
pub mod verifier;

pub use access::{Access, AccessDenied, required};
pub use credentials::ServiceCredentials;
pub use layer::{Auth, AuthLayer};
pub use revocation::{RevocationFetcher, Revocations};
pub use verifier::{KeyFetcher, PublicKey, Verifier};

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::errors::{Domain, with_reason};

/// Runs `refresh` on `target` every `interval` (the first run one interval
/// from now: the first call fetches on demand) until `target` is dropped.
/// Failures are the refresher's to log; the next tick tries again.
pub(crate) async fn refresh_every<T, F, Fut>(target: Weak<T>, interval: Duration, refresh: F)
where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(target) = target.upgrade() else {
            return;
        };
        refresh(target).await;
    }
}

/// Role of every account.
pub const ROLE_CUSTOMER: &str = "customer";
/// Role of administrators.
pub const ROLE_ADMIN: &str = "admin";
/// Role of service principals (calls between services).
pub const ROLE_SERVICE: &str = "service";
/// Role a service principal may be given beside `service`: a warehouse
/// system, which ships orders and receives returns.
pub const ROLE_FULFILLMENT: &str = "fulfillment";

/// The token audience of each service.
pub mod audience {
    /// The account service.
    pub const ACCOUNT: &str = "backroom.account";
    /// The inventory service.
    pub const INVENTORY: &str = "backroom.inventory";
    /// The payment (and checkout) service.
    pub const PAYMENT: &str = "backroom.payment";
    /// Every audience; user tokens carry all of them.
    pub const ALL: [&str; 3] = [ACCOUNT, INVENTORY, PAYMENT];
}

/// Longest clock skew tolerated on exp and nbf.
pub const LEEWAY_SECS: u64 = 60;

/// The claims of a Backroom access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `accounts/{uuid}` or `services/{client_id}`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Roles granted.
    pub roles: Vec<String>,
    /// The account's security version when the token was issued: a
    /// password change, a disable or a role change raises it, and every
    /// token with a lower `sv` stops counting (see [`revocation`]). Zero for
    /// service principals, which are configured, not revoked.
    #[serde(default)]
    pub sv: i64,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person's account.
    Account(Uuid),
    /// A service principal, by client id.
    Service(String),
}

impl Claims {
    /// The principal named by `sub`, if it is well formed.
    pub fn principal(&self) -> Option<Principal> {
        if let Some(id) = self.sub.strip_prefix("accounts/") {
            Uuid::parse_str(id).ok().map(Principal::Account)
        } else {
            self.sub
                .strip_prefix("services/")
                .filter(|id| !id.is_empty())
                .map(|id| Principal::Service(id.to_owned()))
        }
    }

    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The verified caller of an RPC, put into the request extensions by
/// [`AuthLayer`]. Its `require_*` methods answer PERMISSION_DENIED
/// `ACCESS_DENIED` (with `metadata.required`) in the service's domain.
/// Its `Debug` output never shows the bearer token.
#[derive(Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Arc<Claims>,
    /// The raw bearer token, to forward on behalf of the caller.
    token: Arc<str>,
    domain: Domain,
    /// The verifier that admitted the token, so long-lived work (a stream)
    /// can check again that it still counts.
    verifier: Arc<Verifier>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("sub", &self.claims.sub)
            .field("roles", &self.claims.roles)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The caller of `request`, or UNAUTHENTICATED when the method was called
    /// without a token (public methods that still need a caller).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated("this call needs `authorization: Bearer <token>` metadata")
            })
    }

    /// The caller if the request carried a valid token.
    pub fn maybe<T>(request: &tonic::Request<T>) -> Option<Caller> {
        request.extensions().get::<Caller>().cloned()
    }

    /// The caller's account id, if the caller is a person.
    pub fn account_id(&self) -> Option<Uuid> {
        match self.claims.principal() {
            Some(Principal::Account(id)) => Some(id),
            _ => None,
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.claims.has_role(ROLE_ADMIN)
    }

    /// Whether the caller is a service principal.
    pub fn is_service(&self) -> bool {
        self.claims.has_role(ROLE_SERVICE)
            && matches!(self.claims.principal(), Some(Principal::Service(_)))
    }

    /// The bearer token itself (forwarded when acting for the caller).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The same caller with `roles` in place of the token's: for a service
    /// that knows the caller's current roles better than the token does
    /// (the account service reads them from its database).
    pub fn with_roles(&self, roles: Vec<String>) -> Self {
        let mut claims = (*self.claims).clone();
        claims.roles = roles;
        Self {
            claims: Arc::new(claims),
            ..self.clone()
        }
    }

    /// Whether the token still counts now: not expired (with the usual
    /// leeway) and not revoked. Long-lived calls (server streams) check this
    /// periodically and end when it fails.
    pub async fn revalidate(&self) -> Result<(), TokenError> {
        let now = chrono::Utc::now().timestamp();
        // The same rule as jsonwebtoken's at verification: valid until
        // exp + leeway has passed.
        if self.claims.exp + i64::try_from(LEEWAY_SECS).unwrap_or(60) < now {
            return Err(TokenError::Expired);
        }
        self.verifier.check_revocation(&self.claims).await
    }

    /// The status for `err` in this caller's service domain.
    pub fn token_status(&self, err: TokenError) -> Status {
        err.into_status(self.domain)
    }
}

/// An account named in a request: `accounts/{uuid}`, or `accounts/me` for
/// the caller's own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRef {
    /// The caller's own account.
    Me,
    /// An explicit account.
    Id(Uuid),
}

impl AccountRef {
    /// Parses `accounts/{uuid}` / `accounts/me`; `field` names it in the
    /// violation.
    pub fn parse(field: &str, name: &str) -> Result<Self, crate::errors::FieldViolation> {
        use crate::errors::FieldViolation;
        match name.strip_prefix("accounts/") {
            Some("me") => Ok(Self::Me),
            Some(id) => Uuid::try_parse(id)
                .map(Self::Id)
                .map_err(|_| FieldViolation::new(field, "must be accounts/{uuid} or accounts/me")),
            None if name.is_empty() => Err(FieldViolation::new(field, "is required")),
            None => Err(FieldViolation::new(
                field,
                "must be accounts/{uuid} or accounts/me",
            )),
        }
    }

    /// The account id, resolving `me` against the caller.
    pub fn resolve(
        self,
        field: &str,
        caller: &Caller,
    ) -> Result<Uuid, crate::errors::FieldViolation> {
        match self {
            Self::Id(id) => Ok(id),
            Self::Me => caller.account_id().ok_or_else(|| {
                crate::errors::FieldViolation::new(
                    field,
                    "accounts/me needs a person's token, not a service token",
                )
            }),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization: Bearer …` metadata, or more than one.
    #[error("missing bearer token: send exactly one `authorization: Bearer <token>` header")]
    Missing,
    /// Malformed, wrong algorithm, bad signature, wrong iss/aud, not yet valid,
    /// or signed by an unknown key.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past its exp (plus leeway).
    #[error("token expired")]
    Expired,
    /// The key set could not be fetched to check an unknown kid.
    #[error("cannot fetch verification keys: {0}")]
    KeysUnavailable(String),
    /// The account's security version moved past the token's: a password
    /// change, a disable or a role change revoked it.
    #[error("token revoked: sign in again")]
    Revoked,
    /// The revocation list is too stale to trust this token (the account
    /// service has been unreachable for too long).
    #[error("cannot check whether the token was revoked; retry shortly")]
    RevocationsUnavailable,
}

impl TokenError {
    /// The status for this refusal, in `domain`.
    pub fn into_status(self, domain: Domain) -> Status {
        let (code, reason) = match &self {
            TokenError::Missing => (Code::Unauthenticated, "TOKEN_MISSING"),
            TokenError::Invalid(_) => (Code::Unauthenticated, "TOKEN_INVALID"),
            TokenError::Expired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
            TokenError::KeysUnavailable(_) => (Code::Unavailable, "SERVICE_UNAVAILABLE"),
            TokenError::Revoked => (Code::Unauthenticated, "TOKEN_REVOKED"),
            TokenError::RevocationsUnavailable => (Code::Unavailable, "SERVICE_UNAVAILABLE"),
        };
        // The detail of an invalid token is logged, not sent: it would help an
        // attacker probe the verifier.
        if let TokenError::Invalid(detail) = &self {
            tracing::debug!(%detail, "token refused");
        }
        let message = match self {
            TokenError::Invalid(_) => "invalid token".to_owned(),
            other => other.to_string(),
        };
        with_reason(code, domain, reason, message, [])
    }
}

/// The bearer token of a request's `authorization` metadata.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    // Two credentials are ambiguous (a proxy may have checked the other
    // one): neither is used.
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_debug_output_never_shows_its_token() {
        let caller = Caller {
            claims: Arc::new(Claims {
                iss: "backroom".into(),
                sub: "accounts/x".into(),
                aud: vec![],
                exp: 0,
                nbf: 0,
                iat: 0,
                jti: String::new(),
                roles: vec![ROLE_CUSTOMER.into()],
                sv: 1,
            }),
            token: Arc::from("eyJhbGciOiJFZERTQSJ9.secret-token-material.sig"),
            domain: "backroom.test",
            verifier: Arc::new(Verifier::with_keys("backroom", "backroom.test", &[])),
        };
        let printed = format!("{caller:?}");
        assert!(printed.contains("accounts/x"), "{printed}");
        assert!(!printed.contains("secret-token-material"), "{printed}");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "bearer abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        headers.append("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None, "two credentials: neither");
    }

    #[test]
    fn principals_parse_from_sub() {
        let id = Uuid::now_v7();
        let mut claims = Claims {
            iss: "i".into(),
            sub: format!("accounts/{id}"),
            aud: vec![],
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: String::new(),
            roles: vec![ROLE_CUSTOMER.into()],
            sv: 0,
        };
        assert_eq!(claims.principal(), Some(Principal::Account(id)));
        claims.sub = "services/payment".into();
        assert_eq!(
            claims.principal(),
            Some(Principal::Service("payment".into()))
        );
        claims.sub = "accounts/not-a-uuid".into();
        assert_eq!(claims.principal(), None);
        claims.sub = "services/".into();
        assert_eq!(claims.principal(), None);
    }
}
