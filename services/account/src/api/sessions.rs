//! Sessions and passwords: Login, RefreshSession, Logout, ChangePassword.
//!
//! Every password check goes through a [`PasswordCheck`]: it is admitted —
//! and counted — under the lockout policy before the hash is computed, and
//! taken back if the hash never ran (see `domain::lockout`).

use backroom_proto::account::v1 as pb;
use backroom_shared::{
    auth::{Access, AccessDenied, AccountRef},
    clock::to_timestamp,
    errors::{FieldViolation, Violations},
    idempotency,
    ratelimit::client_addr,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use tracing::{field::Empty, instrument};

use super::{AccountApi, RequestId, account_name, acting_on, record_account};
use crate::{
    Deps,
    db::repo,
    domain::{
        Account, Email, Error, Password,
        lockout::{Admission, email_hash},
        passwords::Verified,
        sessions::Rotation,
        tokens,
    },
};

/// ChangePassword's requirement: an admin resets nobody's password by
/// knowing it.
const OWNER_ONLY: AccessDenied = AccessDenied { required: "owner" };

/// The client key of `request` for the login counters.
fn client_of<T>(request: &Request<T>) -> String {
    client_addr(request).map_or_else(|| "unknown".to_owned(), |c| c.key().to_string())
}

/// A new session for `account`: an access token for every audience and a
/// refresh token (already stored, expiring then).
fn session(
    deps: &Deps,
    account: &Account,
    refresh_token: String,
    refresh_expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<pb::Session, Error> {
    let (access_token, access_expires) = deps.issuer.issue_for_account(account, now)?;
    Ok(pb::Session {
        access_token,
        access_token_expire_time: Some(to_timestamp(access_expires)),
        refresh_token,
        refresh_token_expire_time: Some(to_timestamp(refresh_expires)),
        token_type: "Bearer".into(),
        account: account_name(account.id),
    })
}

/// One password check of an email from a client, admitted under the
/// lockout policy.
#[derive(Debug)]
struct PasswordCheck<'a> {
    deps: &'a Deps,
    email_hash: [u8; 32],
    client: String,
}

impl<'a> PasswordCheck<'a> {
    /// Admits a check of `email`'s password from `client` (counting it), or
    /// answers the lock.
    async fn admit(deps: &'a Deps, email: &Email, client: String) -> Result<Self, Status> {
        let check = Self {
            deps,
            email_hash: email_hash(email),
            client,
        };
        let (hash, client, policy) = (check.email_hash, check.client.clone(), deps.lockout);
        let (admission, now) = deps
            .store
            .write(move |conn, now| {
                Ok::<_, Error>((
                    repo::begin_attempt(conn, &hash, &client, &policy, now)?,
                    now,
                ))
            })
            .await?;
        match admission {
            Admission::Granted => Ok(check),
            Admission::Locked(until) => Err(Error::locked(until, now).into()),
        }
    }

    /// Verifies `password` against `stored` (or the dummy hash); a check
    /// that could not run (queue full, caller gone) is taken back before
    /// its error is returned.
    async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<Verified, Status> {
        match self.deps.hasher.verify(password, stored).await {
            Ok(verified) => Ok(verified),
            Err(err) => {
                if matches!(err, Error::Overloaded | Error::DeadlineExceeded) {
                    self.take_back().await;
                }
                Err(err.into())
            }
        }
    }

    /// Takes back the admitted attempt: its password was never checked.
    async fn take_back(&self) {
        let (hash, client) = (self.email_hash, self.client.clone());
        if let Err(err) = self
            .deps
            .store
            .write(move |conn, now| repo::cancel_attempt(conn, &hash, &client, now))
            .await
        {
            tracing::warn!(code = ?err.code(), "could not take back an unchecked login attempt");
        }
    }
}

/// A Login request, parsed.
#[derive(Debug)]
struct Login {
    email: Email,
    password: Password,
}

impl TryFrom<pb::LoginRequest> for Login {
    type Error = Error;

    fn try_from(req: pb::LoginRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &req.email));
        let password = violations.check(Password::presented("password", &req.password));
        let (email, password) = violations.finish_with((email, password))?;
        Ok(Self { email, password })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn login(
    api: &AccountApi,
    request: Request<pb::LoginRequest>,
) -> Result<Response<pb::Session>, Status> {
    let client = client_of(&request);
    let Login { email, password } = Login::try_from(request.into_inner())?;
    let deps = &api.deps;
    // Counted before the check, whether or not the email has an account:
    // concurrent guesses cannot all pass, and unknown emails lock alike.
    let check = PasswordCheck::admit(deps, &email, client).await?;
    let lookup = email.clone();
    let found = deps
        .store
        .read(move |conn| repo::find_by_email(conn, &lookup))
        .await?;
    // Always one hash, account or not: same answer, same time.
    let verified = check
        .verify(&password, found.as_ref().map(|(_, hash)| hash.as_str()))
        .await?;
    // A disabled account answers exactly like a wrong password: the answer
    // must not confirm that the password was right.
    let account = match found {
        Some((account, _)) if verified.matches && !account.disabled => account,
        _ => return Err(Error::InvalidCredentials.into()),
    };
    record_account(account.id);
    let rehash = if verified.needs_rehash {
        deps.hasher.hash(&password).await.ok()
    } else {
        None
    };
    let (refresh_token, refresh_hash) = tokens::new_refresh_token();
    let (id, lifetime) = (account.id, deps.sessions);
    let PasswordCheck {
        email_hash, client, ..
    } = check;
    let (expires, now) = deps
        .store
        .write(move |conn, now| {
            repo::clear_client(conn, &email_hash, &client, now)?;
            if let Some(hash) = &rehash {
                repo::store_rehash(conn, id, hash)?;
            }
            Ok::<_, Error>((
                repo::start_session(conn, id, &refresh_hash, lifetime, now)?,
                now,
            ))
        })
        .await?;
    Ok(Response::new(session(
        deps,
        &account,
        refresh_token,
        expires,
        now,
    )?))
}

/// A refresh token presented by RefreshSession or Logout, in its stored
/// form (its hash).
#[derive(Debug)]
struct PresentedRefreshToken(Vec<u8>);

impl PresentedRefreshToken {
    fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > 256 {
            return Err(FieldViolation::new(
                "refresh_token",
                "is required (at most 256 characters)",
            )
            .into());
        }
        Ok(Self(tokens::hash_refresh_token(raw)))
    }
}

impl TryFrom<pb::RefreshSessionRequest> for PresentedRefreshToken {
    type Error = Error;

    fn try_from(req: pb::RefreshSessionRequest) -> Result<Self, Error> {
        Self::parse(&req.refresh_token)
    }
}

impl TryFrom<pb::LogoutRequest> for PresentedRefreshToken {
    type Error = Error;

    fn try_from(req: pb::LogoutRequest) -> Result<Self, Error> {
        Self::parse(&req.refresh_token)
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn refresh_session(
    api: &AccountApi,
    request: Request<pb::RefreshSessionRequest>,
) -> Result<Response<pb::Session>, Status> {
    let PresentedRefreshToken(presented) = PresentedRefreshToken::try_from(request.into_inner())?;
    let (refresh_token, refresh_hash) = tokens::new_refresh_token();
    let lifetime = api.deps.sessions;
    let (rotation, now) = api
        .deps
        .store
        .write(move |conn, now| {
            Ok::<_, Error>((
                repo::rotate_refresh_token(conn, &presented, &refresh_hash, lifetime, now)?,
                now,
            ))
        })
        .await?;
    match rotation {
        Rotation::Rotated(account, expires) => {
            record_account(account.id);
            Ok(Response::new(session(
                &api.deps,
                &account,
                refresh_token,
                expires,
                now,
            )?))
        }
        Rotation::Rejected(err) => Err(err.into()),
    }
}

#[instrument(skip_all)]
pub(super) async fn logout(
    api: &AccountApi,
    request: Request<pb::LogoutRequest>,
) -> Result<Response<()>, Status> {
    let PresentedRefreshToken(presented) = PresentedRefreshToken::try_from(request.into_inner())?;
    api.deps
        .store
        .write(move |conn, now| repo::revoke_family_of(conn, &presented, now))
        .await?;
    Ok(Response::new(()))
}

/// A ChangePassword request, parsed.
#[derive(Debug)]
struct ChangePassword {
    account: AccountRef,
    current: Password,
    /// Meets the policy as far as it goes without the account's email.
    new_password: Password,
    request_id: RequestId,
}

impl TryFrom<pb::ChangePasswordRequest> for ChangePassword {
    type Error = Error;

    fn try_from(req: pb::ChangePasswordRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("name", &req.name));
        let current = violations.check(Password::presented(
            "current_password",
            &req.current_password,
        ));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let new_password =
            violations.check(Password::parse("new_password", &req.new_password, None));
        if req.new_password == req.current_password && !req.new_password.is_empty() {
            violations.push("new_password", "must differ from the current password");
        }
        let (account, current, new_password, request_id) =
            violations.finish_with((account, current, new_password, request_id))?;
        Ok(Self {
            account,
            current,
            new_password,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn change_password(
    api: &AccountApi,
    request: Request<pb::ChangePasswordRequest>,
) -> Result<Response<()>, Status> {
    let caller = api.caller(&request).await?;
    let client = client_of(&request);
    let cmd = ChangePassword::try_from(request.into_inner())?;
    let id = acting_on(&caller, cmd.account, "name", Access::require_owner_or_admin)?;
    let access = caller.access();
    if access.account != Some(id) {
        return Err(Error::from(OWNER_ONLY).into());
    }
    let deps = &api.deps;
    let (stored_account, stored_hash) = deps
        .store
        .read(move |conn| repo::password_hash_for_update(conn, id))
        .await?;
    let new_password = cmd
        .new_password
        .not_the_email("new_password", &stored_account.email)
        .map_err(Error::from)?;
    // A stolen access token must not become a password oracle: the check
    // is counted like a login of this email from this client.
    let check = PasswordCheck::admit(deps, &stored_account.email, client).await?;
    let verified = check.verify(&cmd.current, Some(&stored_hash)).await?;
    if !verified.matches {
        return Err(Error::WrongCurrentPassword.into());
    }
    let new_hash = deps.hasher.hash(&new_password).await?;
    let key = cmd.request_id.key("ChangePassword", Some(&caller))?;
    let fingerprint = idempotency::fingerprint(&pb::ChangePasswordRequest {
        name: account_name(id),
        ..Default::default()
    });
    deps.store
        .idempotent(key, fingerprint, move |conn, now| {
            repo::set_password(conn, id, &new_hash, now)
        })
        .await?;
    tracing::info!(account = %account_name(id), "password changed; sessions revoked");
    Ok(Response::new(()))
}
