//! Accounts: Register, GetAccount, UpdateAccount, ListAccounts,
//! DisableAccount, EnableAccount.

use backroom_proto::account::v1 as pb;
use backroom_shared::{
    auth::{Access, AccountRef, Caller},
    clock::to_timestamp,
    errors::Violations,
    idempotency,
    paging::{PageRequest, fingerprint as page_fingerprint},
    validate::no_control_characters,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, instrument};
use uuid::Uuid;

use super::{AccountApi, RequestId, account_name, acting_on, record_account};
use crate::{
    DOMAIN,
    db::repo,
    domain::{
        Account, AccountChanges, AccountFilter, Email, Error, MAX_DISPLAY_NAME, Password, Role,
        SelfAction, parse_roles, required_text,
    },
};

/// The etag of an account version.
fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The account as the API shows it at `now` (its lock only while it lasts).
pub(crate) fn account_to_proto(account: &Account, now: DateTime<Utc>) -> pb::Account {
    pb::Account {
        name: account_name(account.id),
        email: account.email.as_str().to_owned(),
        display_name: account.display_name.clone(),
        roles: account.role_names(),
        state: if account.disabled {
            pb::AccountState::Disabled
        } else {
            pb::AccountState::Active
        } as i32,
        lock_expire_time: account.lock_at(now).map(to_timestamp),
        disable_reason: account.disable_reason.clone(),
        create_time: Some(to_timestamp(account.created_at)),
        update_time: Some(to_timestamp(account.updated_at)),
        etag: etag(account.version),
    }
}

/// A Register request, parsed.
#[derive(Debug)]
struct RegisterAccount {
    email: Email,
    password: Password,
    display_name: String,
    request_id: RequestId,
}

impl TryFrom<pb::RegisterRequest> for RegisterAccount {
    type Error = Error;

    fn try_from(req: pb::RegisterRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &req.email));
        let password = violations.check(Password::parse("password", &req.password, email.as_ref()));
        let display_name = violations.check(required_text(
            "display_name",
            &req.display_name,
            MAX_DISPLAY_NAME,
        ));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let (email, password, display_name, request_id) =
            violations.finish_with((email, password, display_name, request_id))?;
        Ok(Self {
            email,
            password,
            display_name,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn register(
    api: &AccountApi,
    request: Request<pb::RegisterRequest>,
) -> Result<Response<pb::Account>, Status> {
    let caller = Caller::maybe(&request);
    let cmd = RegisterAccount::try_from(request.into_inner())?;
    let key = cmd.request_id.key("Register", caller.as_ref())?;
    let fingerprint = idempotency::fingerprint(&pb::RegisterRequest {
        email: cmd.email.as_str().to_owned(),
        display_name: cmd.display_name.clone(),
        ..Default::default()
    });
    // The cheap checks before the expensive hash: a replayed request id
    // answers from the store, a taken email is refused. (The insert below
    // still decides a race between two new registrations.)
    let (check_key, check_fingerprint, check_email, now) = (
        key.clone(),
        fingerprint.clone(),
        cmd.email.clone(),
        api.deps.store.now(),
    );
    let early = api
        .deps
        .store
        .read(move |conn| {
            if let Some(key) = &check_key
                && let Some(outcome) =
                    idempotency::replay(conn, DOMAIN, key, &check_fingerprint, now)?
            {
                return Ok(Some(outcome));
            }
            if repo::email_taken(conn, &check_email)? {
                return Ok(Some(Err(Error::EmailTaken.into())));
            }
            Ok::<_, Error>(None)
        })
        .await?;
    if let Some(outcome) = early {
        return outcome.map(Response::new);
    }
    let hash = api
        .deps
        .hasher
        .hash_at(&cmd.password, crate::domain::passwords::Priority::Bulk)
        .await?;
    let RegisterAccount {
        email,
        display_name,
        ..
    } = cmd;
    let account = api
        .deps
        .store
        .idempotent(key, fingerprint, move |conn, now| {
            let account =
                repo::insert_account(conn, &email, &display_name, &hash, &[Role::Customer], now)?;
            Ok::<_, Error>(account_to_proto(&account, now))
        })
        .await?;
    Span::current().record("account", account.name.as_str());
    tracing::info!(account = %account.name, "account registered");
    Ok(Response::new(account))
}

/// A GetAccount request, parsed.
#[derive(Debug)]
struct GetAccount {
    account: AccountRef,
}

impl TryFrom<pb::GetAccountRequest> for GetAccount {
    type Error = Error;

    fn try_from(req: pb::GetAccountRequest) -> Result<Self, Error> {
        Ok(Self {
            account: AccountRef::parse("name", &req.name)?,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn get_account(
    api: &AccountApi,
    request: Request<pb::GetAccountRequest>,
) -> Result<Response<pb::Account>, Status> {
    let caller = api.caller(&request).await?;
    let cmd = GetAccount::try_from(request.into_inner())?;
    let id = acting_on(
        &caller,
        cmd.account,
        "name",
        Access::require_owner_admin_or_service,
    )?;
    let account = api
        .deps
        .store
        .read(move |conn| repo::get_account(conn, id))
        .await?;
    Ok(Response::new(account_to_proto(
        &account,
        api.deps.store.now(),
    )))
}

/// An UpdateAccount request, parsed.
#[derive(Debug)]
struct UpdateAccount {
    account: AccountRef,
    changes: AccountChanges,
    /// The version the etag names, when one was sent.
    expected_version: Option<i64>,
    /// The etag and mask as sent, for the request's fingerprint.
    etag: String,
    paths: Vec<String>,
    request_id: RequestId,
}

impl TryFrom<pb::UpdateAccountRequest> for UpdateAccount {
    type Error = Error;

    fn try_from(req: pb::UpdateAccountRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let Some(account) = req.account else {
            violations.push("account", "is required");
            return Err(violations.finish().err().unwrap_or_default().into());
        };
        let target = violations.check(AccountRef::parse("account.name", &account.name));
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() {
            violations.push(
                "update_mask",
                "name at least one field: display_name, roles",
            );
        }
        let mut changes = AccountChanges::default();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = violations.check(required_text(
                        "account.display_name",
                        &account.display_name,
                        MAX_DISPLAY_NAME,
                    ));
                }
                "roles" => {
                    changes.roles = violations.check(parse_roles("account.roles", &account.roles))
                }
                other => violations.push(
                    "update_mask",
                    format!("unknown or immutable field {other:?}"),
                ),
            }
        }
        let expected_version = if account.etag.is_empty() {
            None
        } else {
            let version = account.etag.trim_matches('"').parse::<i64>().ok();
            if version.is_none() {
                violations.push("account.etag", "is not an etag this API issued");
            }
            version
        };
        let (target, request_id) = violations.finish_with((target, request_id))?;
        Ok(Self {
            account: target,
            changes,
            expected_version,
            etag: account.etag,
            paths,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn update_account(
    api: &AccountApi,
    request: Request<pb::UpdateAccountRequest>,
) -> Result<Response<pb::Account>, Status> {
    let caller = api.caller(&request).await?;
    let cmd = UpdateAccount::try_from(request.into_inner())?;
    let id = acting_on(
        &caller,
        cmd.account,
        "account.name",
        Access::require_owner_or_admin,
    )?;
    let access = caller.access();
    if cmd.changes.roles.is_some() {
        access.require_admin().map_err(Error::from)?;
        SelfAction::ChangeRoles.check(access.account, id)?;
    }
    let key = cmd.request_id.key("UpdateAccount", Some(&caller))?;
    let fingerprint = idempotency::fingerprint(&pb::UpdateAccountRequest {
        account: Some(pb::Account {
            name: account_name(id),
            display_name: cmd.changes.display_name.clone().unwrap_or_default(),
            roles: cmd
                .changes
                .roles
                .iter()
                .flatten()
                .map(|r| r.as_str().to_owned())
                .collect(),
            etag: cmd.etag.clone(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: cmd.paths }),
        request_id: String::new(),
    });
    let (changes, expected_version) = (cmd.changes, cmd.expected_version);
    let updated = api
        .deps
        .store
        .idempotent(key, fingerprint, move |conn, now| {
            let account = repo::update_account(conn, id, expected_version, changes.clone(), now)?;
            Ok::<_, Error>(account_to_proto(&account, now))
        })
        .await?;
    Ok(Response::new(updated))
}

/// A ListAccounts request, parsed.
#[derive(Debug)]
struct ListAccounts {
    filter: AccountFilter,
    page: PageRequest,
    after: Option<Uuid>,
}

impl TryFrom<pb::ListAccountsRequest> for ListAccounts {
    type Error = Error;

    fn try_from(req: pb::ListAccountsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let disabled = match pb::AccountState::try_from(req.state) {
            Ok(pb::AccountState::Unspecified) => None,
            Ok(pb::AccountState::Active) => Some(false),
            Ok(pb::AccountState::Disabled) => Some(true),
            Err(_) => {
                violations.push("state", "unknown state");
                None
            }
        };
        let prefix = req.email_prefix.trim().to_lowercase();
        if prefix.len() > 254 {
            violations.push("email_prefix", "must be at most 254 characters");
        } else {
            violations.check(no_control_characters("email_prefix", &prefix));
        }
        let page = violations.check(
            PageRequest::parse(
                req.page_size,
                &req.page_token,
                page_fingerprint(&[&req.state.to_string(), &prefix]),
            )
            .map_err(|mut v| v.remove(0)),
        );
        let page = violations.finish_with(page)?;
        let after = page.after_uuid()?;
        Ok(Self {
            filter: AccountFilter {
                disabled,
                email_prefix: (!prefix.is_empty()).then_some(prefix),
            },
            page,
            after,
        })
    }
}

#[instrument(skip_all)]
pub(super) async fn list_accounts(
    api: &AccountApi,
    request: Request<pb::ListAccountsRequest>,
) -> Result<Response<pb::ListAccountsResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller.access().require_admin().map_err(Error::from)?;
    let ListAccounts {
        filter,
        page,
        after,
    } = ListAccounts::try_from(request.into_inner())?;
    let lookup = page.clone();
    let accounts = api
        .deps
        .store
        .read(move |conn| repo::list_accounts(conn, &filter, &lookup, after))
        .await?;
    let (accounts, next_page_token) = page.finish(accounts, |a| a.id.to_string());
    let now = api.deps.store.now();
    Ok(Response::new(pb::ListAccountsResponse {
        accounts: accounts.iter().map(|a| account_to_proto(a, now)).collect(),
        next_page_token,
    }))
}

/// A DisableAccount request, parsed.
#[derive(Debug)]
struct DisableAccount {
    account: AccountRef,
    reason: String,
    request_id: RequestId,
}

impl TryFrom<pb::DisableAccountRequest> for DisableAccount {
    type Error = Error;

    fn try_from(req: pb::DisableAccountRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("name", &req.name));
        let reason = violations.check(required_text("reason", &req.reason, 500));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let (account, reason, request_id) =
            violations.finish_with((account, reason, request_id))?;
        Ok(Self {
            account,
            reason,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn disable_account(
    api: &AccountApi,
    request: Request<pb::DisableAccountRequest>,
) -> Result<Response<pb::Account>, Status> {
    let caller = api.caller(&request).await?;
    caller.access().require_admin().map_err(Error::from)?;
    let cmd = DisableAccount::try_from(request.into_inner())?;
    let account = change_state(
        api,
        &caller,
        cmd.account,
        StateChange::Disable(cmd.reason),
        &cmd.request_id,
    )
    .await?;
    tracing::info!(account = %account.name, "account disabled");
    Ok(Response::new(account))
}

/// An EnableAccount request, parsed.
#[derive(Debug)]
struct EnableAccount {
    account: AccountRef,
    request_id: RequestId,
}

impl TryFrom<pb::EnableAccountRequest> for EnableAccount {
    type Error = Error;

    fn try_from(req: pb::EnableAccountRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("name", &req.name));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let (account, request_id) = violations.finish_with((account, request_id))?;
        Ok(Self {
            account,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn enable_account(
    api: &AccountApi,
    request: Request<pb::EnableAccountRequest>,
) -> Result<Response<pb::Account>, Status> {
    let caller = api.caller(&request).await?;
    caller.access().require_admin().map_err(Error::from)?;
    let cmd = EnableAccount::try_from(request.into_inner())?;
    let account = change_state(
        api,
        &caller,
        cmd.account,
        StateChange::Enable,
        &cmd.request_id,
    )
    .await?;
    Ok(Response::new(account))
}

/// What DisableAccount (with its reason) and EnableAccount change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StateChange {
    Disable(String),
    Enable,
}

/// The part DisableAccount and EnableAccount share, once the caller is
/// known to be an admin: `target` resolved, never the caller's own
/// account, the change made once per request id.
async fn change_state(
    api: &AccountApi,
    caller: &Caller,
    target: AccountRef,
    change: StateChange,
    request_id: &RequestId,
) -> Result<pb::Account, Status> {
    let id = target.resolve("name", caller).map_err(Error::from)?;
    record_account(id);
    let (action, method, fingerprint) = match &change {
        StateChange::Disable(reason) => (
            SelfAction::Disable,
            "DisableAccount",
            idempotency::fingerprint(&pb::DisableAccountRequest {
                name: account_name(id),
                reason: reason.clone(),
                request_id: String::new(),
            }),
        ),
        StateChange::Enable => (
            SelfAction::Enable,
            "EnableAccount",
            idempotency::fingerprint(&pb::EnableAccountRequest {
                name: account_name(id),
                request_id: String::new(),
            }),
        ),
    };
    action.check(caller.access().account, id)?;
    let key = request_id.key(method, Some(caller))?;
    api.deps
        .store
        .idempotent(key, fingerprint, move |conn, now| {
            let account = match &change {
                StateChange::Disable(reason) => repo::set_disabled(conn, id, true, reason, now)?,
                StateChange::Enable => repo::set_disabled(conn, id, false, "", now)?,
            };
            Ok::<_, Error>(account_to_proto(&account, now))
        })
        .await
}
