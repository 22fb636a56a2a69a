//! The tonic `AccountService`: the only place proto ⇄ domain conversions
//! and `Error` → `Status` happen. Every handler reads the same way: who is
//! calling ([`AccountApi::caller`]), the request parsed into a command
//! (`TryFrom<pb::…Request>`), the work done through the domain and the
//! store, the result converted back.
//!
//! The account service authorizes from its own database: a person's roles
//! are read from their account row on every call, not taken from the
//! token, and a token of a disabled account, or one older than the
//! account's security version, is refused.
//!
//! Layout: this module (the delegating `impl AccountService`, the caller,
//! the one `impl From<Error> for Status`, resource names and request ids),
//! then one module per resource: [`accounts`], [`sessions`],
//! [`addresses`], [`service_tokens`].

mod accounts;
pub(crate) use accounts::account_to_proto;
mod addresses;
mod service_tokens;
mod sessions;

use backroom_proto::account::v1::{self as pb, account_service_server};
use backroom_shared::{
    auth::{Access, AccessDenied, AccountRef, Caller, Principal},
    errors::{
        FieldViolation, internal, invalid_argument, invalid_argument_with_reason, with_reason,
        with_retry_info,
    },
    idempotency::IdempotencyKey,
    names,
};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{DOMAIN, Deps, db::repo, domain::Error};

/// The service implementation.
#[derive(Debug, Clone)]
pub struct AccountApi {
    deps: Deps,
}

impl AccountApi {
    /// Wraps the service's dependencies.
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    /// The verified caller of `request` as the database knows it now: a
    /// person's roles are read from their account row, not the token, and a
    /// token of a disabled account, of an account whose security version
    /// moved past the token's, or of an account that is gone is refused
    /// (UNAUTHENTICATED TOKEN_REVOKED). Service principals are configured,
    /// so their token's roles stand.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = Caller::of(request)?;
        let Some(Principal::Account(id)) = caller.claims.principal() else {
            return Ok(caller);
        };
        let account = self
            .deps
            .store
            .read(move |conn| repo::find_account(conn, id))
            .await?;
        match account {
            Some(account) if account.honours_token(caller.claims.sv) => {
                Ok(caller.with_roles(account.role_names()))
            }
            _ => Err(Error::TokenRevoked.into()),
        }
    }
}

/// `accounts/{id}`.
pub(crate) fn account_name(id: Uuid) -> String {
    names::name("accounts", id)
}

/// `accounts/{account}/addresses/{address}`.
fn address_name(account: Uuid, address: Uuid) -> String {
    names::nested("accounts", account, "addresses", address)
}

/// Records the account an RPC acts on in its span, by resource name.
fn record_account(id: Uuid) {
    tracing::Span::current().record("account", account_name(id).as_str());
}

/// The account `named` (request field `field`; `me` is the caller's own),
/// recorded in the span, once `rule` lets the caller act on it.
fn acting_on(
    caller: &Caller,
    named: AccountRef,
    field: &str,
    rule: fn(Access, Uuid) -> Result<(), AccessDenied>,
) -> Result<Uuid, Error> {
    let id = named.resolve(field, caller)?;
    record_account(id);
    rule(caller.access(), id)?;
    Ok(id)
}

/// A mutation's `request_id` (AIP-155), checked while the request parses —
/// a malformed one is a violation of `request_id` beside the others — and
/// bound to its caller once the caller is known.
// hoist to shared: `IdempotencyKey` could be parsed before its caller is
// known and scoped later; every service parses requests before it resolves
// `accounts/me`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestId(String);

impl RequestId {
    /// Checks `raw`: empty (de-duplication off) or a UUID.
    fn parse(raw: &str) -> Result<Self, FieldViolation> {
        IdempotencyKey::parse(raw, "", None)?;
        Ok(Self(raw.to_owned()))
    }

    /// The idempotency key of `method` called by `caller` (`None` when the
    /// request id is empty).
    fn key(
        &self,
        method: &'static str,
        caller: Option<&Caller>,
    ) -> Result<Option<IdempotencyKey>, Error> {
        Ok(IdempotencyKey::parse(&self.0, method, caller)?)
    }
}

#[tonic::async_trait]
impl account_service_server::AccountService for AccountApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        accounts::register(self, request).await
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        sessions::login(self, request).await
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        sessions::refresh_session(self, request).await
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<()>, Status> {
        sessions::logout(self, request).await
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<()>, Status> {
        sessions::change_password(self, request).await
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        accounts::get_account(self, request).await
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        accounts::update_account(self, request).await
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        accounts::list_accounts(self, request).await
    }

    async fn disable_account(
        &self,
        request: Request<pb::DisableAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        accounts::disable_account(self, request).await
    }

    async fn enable_account(
        &self,
        request: Request<pb::EnableAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        accounts::enable_account(self, request).await
    }

    async fn create_address(
        &self,
        request: Request<pb::CreateAddressRequest>,
    ) -> Result<Response<pb::Address>, Status> {
        addresses::create_address(self, request).await
    }

    async fn get_address(
        &self,
        request: Request<pb::GetAddressRequest>,
    ) -> Result<Response<pb::Address>, Status> {
        addresses::get_address(self, request).await
    }

    async fn list_addresses(
        &self,
        request: Request<pb::ListAddressesRequest>,
    ) -> Result<Response<pb::ListAddressesResponse>, Status> {
        addresses::list_addresses(self, request).await
    }

    async fn delete_address(
        &self,
        request: Request<pb::DeleteAddressRequest>,
    ) -> Result<Response<()>, Status> {
        addresses::delete_address(self, request).await
    }

    async fn get_jwks(
        &self,
        request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        service_tokens::get_jwks(self, request).await
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::ServiceToken>, Status> {
        service_tokens::issue_service_token(self, request).await
    }

    async fn list_token_revocations(
        &self,
        request: Request<pb::ListTokenRevocationsRequest>,
    ) -> Result<Response<pb::ListTokenRevocationsResponse>, Status> {
        service_tokens::list_token_revocations(self, request).await
    }
}

/// The one mapping of domain errors to statuses; exhaustive on purpose.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let reason = |code: Code, reason: &str, message: &str| {
            with_reason(code, DOMAIN, reason, message, [])
        };
        let not_found = |reason: &str, name: String| {
            with_reason(
                Code::NotFound,
                DOMAIN,
                reason,
                format!("{name} not found"),
                [("name".to_owned(), name)],
            )
        };
        match err {
            Error::Validation(violations) => invalid_argument(DOMAIN, &violations),
            Error::EmailTaken => reason(
                Code::AlreadyExists,
                "EMAIL_TAKEN",
                "an account with this email already exists",
            ),
            Error::InvalidCredentials => reason(
                Code::Unauthenticated,
                "INVALID_CREDENTIALS",
                "invalid email or password",
            ),
            Error::WrongCurrentPassword => invalid_argument_with_reason(
                DOMAIN,
                "INVALID_CREDENTIALS",
                &[FieldViolation::new(
                    "current_password",
                    "is not the current password",
                )],
            ),
            Error::Locked { until, retry_after } => with_retry_info(
                Code::PermissionDenied,
                DOMAIN,
                "ACCOUNT_LOCKED",
                format!("too many failed logins; try again in {retry_after} s"),
                [
                    ("retry_after".to_owned(), retry_after.to_string()),
                    ("lock_expire_time".to_owned(), until.to_rfc3339()),
                ],
                std::time::Duration::from_secs(u64::try_from(retry_after).unwrap_or(1)),
            ),
            Error::Disabled => reason(
                Code::PermissionDenied,
                "ACCOUNT_DISABLED",
                "the account is disabled",
            ),
            Error::InvalidRefreshToken => reason(
                Code::Unauthenticated,
                "INVALID_REFRESH_TOKEN",
                "unknown refresh token",
            ),
            Error::RefreshTokenReused => reason(
                Code::Unauthenticated,
                "REFRESH_TOKEN_REUSED",
                "refresh token already used; the session is revoked, log in again",
            ),
            Error::RefreshTokenExpired => reason(
                Code::Unauthenticated,
                "REFRESH_TOKEN_EXPIRED",
                "refresh token expired",
            ),
            Error::SessionRevoked => reason(
                Code::Unauthenticated,
                "SESSION_REVOKED",
                "the session was revoked",
            ),
            Error::AccountNotFound(id) => not_found("ACCOUNT_NOT_FOUND", account_name(id)),
            Error::AddressNotFound { account, address } => {
                not_found("ADDRESS_NOT_FOUND", address_name(account, address))
            }
            Error::EtagMismatch => reason(
                Code::Aborted,
                "ETAG_MISMATCH",
                "the account changed since it was read; re-read and retry",
            ),
            Error::CannotDisableSelf => reason(
                Code::FailedPrecondition,
                "CANNOT_DISABLE_SELF",
                "admins cannot disable their own account",
            ),
            Error::CannotEnableSelf => reason(
                Code::FailedPrecondition,
                "CANNOT_ENABLE_SELF",
                "admins cannot enable their own account",
            ),
            Error::CannotChangeOwnRoles => reason(
                Code::FailedPrecondition,
                "CANNOT_CHANGE_OWN_ROLES",
                "admins cannot change their own roles; another admin must",
            ),
            Error::TokenRevoked => reason(
                Code::Unauthenticated,
                "TOKEN_REVOKED",
                "the token was revoked (password, state or roles changed); sign in again",
            ),
            Error::Overloaded => with_reason(
                Code::ResourceExhausted,
                DOMAIN,
                "OVERLOADED",
                "password hashing is busy; retry with backoff",
                [],
            ),
            Error::DeadlineExceeded => Status::deadline_exceeded("the caller's deadline passed"),
            Error::AddressLimitReached => reason(
                Code::FailedPrecondition,
                "ADDRESS_LIMIT_REACHED",
                "the account already has 20 addresses",
            ),
            Error::InvalidClient => reason(
                Code::Unauthenticated,
                "INVALID_CLIENT",
                "invalid client credentials",
            ),
            Error::AudienceNotAllowed => with_reason(
                Code::PermissionDenied,
                DOMAIN,
                "AUDIENCE_NOT_ALLOWED",
                "this client may not call that audience",
                [("required".to_owned(), "an allowed audience".to_owned())],
            ),
            Error::UnknownAudience => invalid_argument_with_reason(
                DOMAIN,
                "UNKNOWN_AUDIENCE",
                &[FieldViolation::new(
                    "audience",
                    "must be backroom.account, backroom.inventory or backroom.payment",
                )],
            ),
            Error::AccessDenied(denied) => denied.into_status(DOMAIN),
            Error::Db(err) => err.into_status(DOMAIN),
            Error::Internal(err) => internal(DOMAIN, err.as_ref()),
        }
    }
}
