//! The tonic `AccountService`: parse the request into domain values, check
//! who may do it, run the domain operation, convert back. The one exhaustive
//! `Error` → `Status` mapping is [`status`].

use backroom_proto::account::v1::{self as pb, account_service_server::AccountService};
use backroom_shared::{
    auth::{Caller, Principal, ROLE_ADMIN, ROLE_CUSTOMER, audience},
    clock::to_timestamp,
    errors::{
        FieldViolation, Violations, internal, invalid_argument, invalid_argument_with_reason,
        with_reason, with_retry_info,
    },
    idempotency::{self, IdempotencyKey, request_key},
    paging::{PageRequest, fingerprint as page_fingerprint},
    ratelimit::client_addr,
};
use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection};
use tonic::{Code, Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    DOMAIN, Deps,
    db::{
        models::{Account, AddressRow},
        repo::{self, AccountChanges, AccountFilter, Admission, Rotation},
    },
    domain::{
        AccountRef, AddressFields, Email, Error, MAX_DISPLAY_NAME, NewAddress, Password,
        account_name, address_name, etag, lockout::email_hash, parse_address_name, parse_roles,
        required_text, tokens,
    },
};

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

    fn now(&self) -> DateTime<Utc> {
        self.deps.store.now()
    }

    /// Runs `work` in a transaction guarded by the request id (AIP-155).
    async fn idempotent<R, F>(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: Vec<u8>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        F: FnOnce(&mut PgConnection, DateTime<Utc>) -> Result<R, Error> + Send + 'static,
    {
        let now = self.now();
        self.deps
            .store
            .pool()
            .run(move |conn| {
                Ok::<_, Error>(idempotency::run(
                    conn,
                    DOMAIN,
                    key.as_ref(),
                    &fingerprint,
                    now,
                    |conn| work(conn, now).map_err(status),
                ))
            })
            .await
            .map_err(status)?
    }

    /// Runs read or single-statement work on the pool.
    async fn db<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    {
        self.deps.store.read(work).await
    }

    /// A new session for `account`: an access token for every audience and
    /// a refresh token (already stored by the caller, expiring then).
    fn session(
        &self,
        account: &Account,
        refresh_token: String,
        refresh_expires: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<pb::Session, Status> {
        let (access_token, access_expires) = self
            .deps
            .issuer
            .issue_versioned(
                account_name(account.id),
                account.roles.clone(),
                audience::ALL.iter().map(|a| (*a).to_owned()).collect(),
                account.security_version,
                now,
            )
            .map_err(status)?;
        Ok(pb::Session {
            access_token,
            access_token_expire_time: Some(to_timestamp(access_expires)),
            refresh_token,
            refresh_token_expire_time: Some(to_timestamp(refresh_expires)),
            token_type: "Bearer".into(),
            account: account_name(account.id),
        })
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
        let account = self.db(move |conn| repo::find_account(conn, id)).await?;
        match account {
            Some(account) if !account.disabled && account.security_version <= caller.claims.sv => {
                Ok(caller.with_roles(account.roles))
            }
            _ => Err(status(Error::TokenRevoked)),
        }
    }

    /// The client key of `request` for the login counters.
    fn client_of<T>(request: &Request<T>) -> String {
        client_addr(request).map_or_else(|| "unknown".to_owned(), |c| c.key().to_string())
    }

    /// Admits a password check for `email` from `client` under the lockout
    /// policy (counting it), or answers the lock.
    async fn admit(&self, email: &Email, client: &str) -> Result<(), Status> {
        let (hash, client, policy, now) = (
            email_hash(email),
            client.to_owned(),
            self.deps.lockout,
            self.now(),
        );
        match self
            .db(move |conn| repo::begin_attempt(conn, &hash, &client, &policy, now))
            .await?
        {
            Admission::Granted => Ok(()),
            Admission::Locked(until) => Err(status(Error::locked(until, now))),
        }
    }

    /// Takes back an admitted attempt whose password was never checked.
    async fn readmit(&self, email: &Email, client: &str) {
        let (hash, client, now) = (email_hash(email), client.to_owned(), self.now());
        if let Err(err) = self
            .db(move |conn| repo::cancel_attempt(conn, &hash, &client, now))
            .await
        {
            tracing::warn!(code = ?err.code(), "could not take back an unchecked login attempt");
        }
    }

    /// Verifies `password` against `stored` (or the dummy hash) after the
    /// attempt was admitted; an attempt that could not be checked (queue
    /// full, caller gone) is taken back before its error is returned.
    async fn checked_verify(
        &self,
        email: &Email,
        client: &str,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<crate::domain::passwords::Verified, Status> {
        match self.deps.hasher.verify(password, stored).await {
            Ok(verified) => Ok(verified),
            Err(err) => {
                if matches!(err, Error::Overloaded | Error::DeadlineExceeded) {
                    self.readmit(email, client).await;
                }
                Err(status(err))
            }
        }
    }
}

fn validation(violations: Vec<FieldViolation>) -> Status {
    invalid_argument(DOMAIN, &violations)
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        status(err)
    }
}

/// The one mapping of domain errors to statuses; exhaustive on purpose.
fn status(err: Error) -> Status {
    let reason =
        |code: Code, reason: &str, message: &str| with_reason(code, DOMAIN, reason, message, []);
    match err {
        Error::Validation(violations) => validation(violations),
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
        Error::AccountNotFound(name) => with_reason(
            Code::NotFound,
            DOMAIN,
            "ACCOUNT_NOT_FOUND",
            format!("{name} not found"),
            [("name".to_owned(), name)],
        ),
        Error::AddressNotFound(name) => with_reason(
            Code::NotFound,
            DOMAIN,
            "ADDRESS_NOT_FOUND",
            format!("{name} not found"),
            [("name".to_owned(), name)],
        ),
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
        Error::Overloaded => backroom_shared::concurrency::overloaded(DOMAIN),
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
        Error::Db(err) => err.into_status(DOMAIN),
        Error::Internal(err) => internal(DOMAIN, err.as_ref()),
    }
}

fn account_to_proto(account: &Account, now: DateTime<Utc>) -> pb::Account {
    pb::Account {
        name: account_name(account.id),
        email: account.email.as_str().to_owned(),
        display_name: account.display_name.clone(),
        roles: account.roles.clone(),
        state: if account.disabled {
            pb::AccountState::Disabled
        } else {
            pb::AccountState::Active
        } as i32,
        lock_expire_time: account
            .locked_until
            .filter(|until| *until > now)
            .map(to_timestamp),
        disable_reason: account.disable_reason.clone(),
        create_time: Some(to_timestamp(account.created_at)),
        update_time: Some(to_timestamp(account.updated_at)),
        etag: etag(account.version),
    }
}

fn address_to_proto(row: &AddressRow) -> pb::Address {
    pb::Address {
        name: address_name(row.account_id, row.id),
        recipient: row.recipient.clone(),
        line1: row.line1.clone(),
        line2: row.line2.clone(),
        city: row.city.clone(),
        region: row.region.clone(),
        postal_code: row.postal_code.clone(),
        country_code: row.country_code.clone(),
        create_time: Some(to_timestamp(row.created_at)),
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    #[instrument(skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = Caller::maybe(&request);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &req.email));
        let password = violations.check(Password::parse("password", &req.password, email.as_ref()));
        let display_name = violations.check(required_text(
            "display_name",
            &req.display_name,
            MAX_DISPLAY_NAME,
        ));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "Register",
            caller.as_ref(),
        );
        violations.finish().map_err(validation)?;
        let (Some(email), Some(password), Some(display_name)) = (email, password, display_name)
        else {
            unreachable!("no violations means every field parsed");
        };
        let fingerprint = idempotency::fingerprint(&pb::RegisterRequest {
            email: email.as_str().to_owned(),
            display_name: display_name.clone(),
            ..Default::default()
        });
        // The cheap checks before the expensive hash: a replayed request id
        // answers from the store, a taken email is refused. (The insert
        // below still decides a race between two new registrations.)
        let (check_key, check_fingerprint, check_email, now) =
            (key.clone(), fingerprint.clone(), email.clone(), self.now());
        let early = self
            .db(move |conn| {
                if let Some(key) = &check_key
                    && let Some(outcome) =
                        idempotency::replay(conn, DOMAIN, key, &check_fingerprint, now)?
                {
                    return Ok(Some(outcome));
                }
                if repo::email_taken(conn, &check_email)? {
                    return Ok(Some(Err(status(Error::EmailTaken))));
                }
                Ok(None)
            })
            .await?;
        if let Some(outcome) = early {
            return outcome.map(Response::new);
        }
        let hash = self.deps.hasher.hash(&password).await.map_err(status)?;
        let account = self
            .idempotent(key, fingerprint, move |conn, now| {
                let account = repo::insert_account(
                    conn,
                    &email,
                    &display_name,
                    &hash,
                    &[ROLE_CUSTOMER],
                    now,
                )?;
                Ok(account_to_proto(&account, now))
            })
            .await?;
        tracing::info!(account = %account.name, "account registered");
        Ok(Response::new(account))
    }

    #[instrument(skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let client = Self::client_of(&request);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &req.email));
        let password = violations.check(Password::presented("password", &req.password));
        violations.finish().map_err(validation)?;
        let (Some(email), Some(password)) = (email, password) else {
            unreachable!("no violations means every field parsed");
        };
        // Counted before the check, whether or not the email has an account:
        // concurrent guesses cannot all pass, and unknown emails lock alike.
        self.admit(&email, &client).await?;
        let lookup = email.clone();
        let found = self
            .db(move |conn| repo::find_by_email(conn, &lookup))
            .await?;
        // Always one hash, account or not: same answer, same time.
        let verified = self
            .checked_verify(
                &email,
                &client,
                &password,
                found.as_ref().map(|(_, hash)| hash.as_str()),
            )
            .await?;
        // A disabled account answers exactly like a wrong password: the
        // answer must not confirm that the password was right.
        let account = match found {
            Some((account, _)) if verified.matches && !account.disabled => account,
            _ => return Err(status(Error::InvalidCredentials)),
        };
        let rehash = if verified.needs_rehash {
            self.deps.hasher.hash(&password).await.ok()
        } else {
            None
        };
        let (refresh_token, refresh_hash) = tokens::new_refresh_token();
        let (id, lifetime, now) = (account.id, self.deps.sessions, self.now());
        let email_key = email_hash(&email);
        let expires = self
            .db(move |conn| {
                conn.transaction(|conn| {
                    repo::clear_client(conn, &email_key, &client, now)?;
                    if let Some(hash) = &rehash {
                        repo::store_rehash(conn, id, hash)?;
                    }
                    repo::start_session(conn, id, &refresh_hash, lifetime, now)
                })
            })
            .await?;
        Ok(Response::new(self.session(
            &account,
            refresh_token,
            expires,
            now,
        )?))
    }

    #[instrument(skip_all)]
    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = request.into_inner();
        if req.refresh_token.is_empty() || req.refresh_token.len() > 256 {
            return Err(validation(vec![FieldViolation::new(
                "refresh_token",
                "is required (at most 256 characters)",
            )]));
        }
        let presented = tokens::hash_refresh_token(&req.refresh_token);
        let (refresh_token, refresh_hash) = tokens::new_refresh_token();
        let now = self.now();
        let ttl = self.deps.sessions.refresh_ttl;
        let rotation = self
            .db(move |conn| repo::rotate_refresh_token(conn, &presented, &refresh_hash, ttl, now))
            .await?;
        match rotation {
            Rotation::Rotated(account, expires) => Ok(Response::new(self.session(
                &account,
                refresh_token,
                expires,
                now,
            )?)),
            Rotation::Rejected(err) => Err(status(err)),
        }
    }

    #[instrument(skip_all)]
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        if req.refresh_token.is_empty() || req.refresh_token.len() > 256 {
            return Err(validation(vec![FieldViolation::new(
                "refresh_token",
                "is required (at most 256 characters)",
            )]));
        }
        let presented = tokens::hash_refresh_token(&req.refresh_token);
        let now = self.now();
        self.db(move |conn| repo::revoke_family_of(conn, &presented, now))
            .await?;
        Ok(Response::new(()))
    }

    #[instrument(skip_all)]
    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        let client = Self::client_of(&request);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("name", &req.name));
        let current = violations.check(Password::presented(
            "current_password",
            &req.current_password,
        ));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "ChangePassword",
            Some(&caller),
        );
        // The policy check needs the email; the length bounds apply already.
        let new_shape = violations.check(Password::parse("new_password", &req.new_password, None));
        if req.new_password == req.current_password && !req.new_password.is_empty() {
            violations.push("new_password", "must differ from the current password");
        }
        violations.finish().map_err(validation)?;
        let (Some(account), Some(current), Some(_)) = (account, current, new_shape) else {
            unreachable!("no violations means every field parsed");
        };
        let id = account
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        // Only the owner: an admin resets nobody's password by knowing it.
        if caller.account_id() != Some(id) {
            caller.require_owner_or_admin(id)?;
            if !caller.is_admin() || caller.account_id() != Some(id) {
                return Err(with_reason(
                    Code::PermissionDenied,
                    DOMAIN,
                    "ACCESS_DENIED",
                    "only the owner can change a password",
                    [("required".to_owned(), "owner".to_owned())],
                ));
            }
        }
        let (stored_account, stored_hash) = self
            .db(move |conn| repo::password_hash_for_update(conn, id))
            .await?;
        let new_password = Password::parse(
            "new_password",
            &req.new_password,
            Some(&stored_account.email),
        )
        .map_err(|v| validation(vec![v]))?;
        // A stolen access token must not become a password oracle: the
        // check is counted like a login of this email from this client.
        let email = stored_account.email.clone();
        self.admit(&email, &client).await?;
        let verified = self
            .checked_verify(&email, &client, &current, Some(&stored_hash))
            .await?;
        if !verified.matches {
            return Err(status(Error::WrongCurrentPassword));
        }
        let new_hash = self.deps.hasher.hash(&new_password).await.map_err(status)?;
        let fingerprint = idempotency::fingerprint(&pb::ChangePasswordRequest {
            name: account_name(id),
            ..Default::default()
        });
        self.idempotent(key, fingerprint, move |conn, now| {
            repo::set_password(conn, id, &new_hash, now)?;
            Ok(())
        })
        .await?;
        tracing::info!(account = %account_name(id), "password changed; sessions revoked");
        Ok(Response::new(()))
    }

    #[instrument(skip_all)]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let account = AccountRef::parse("name", &req.name).map_err(|v| validation(vec![v]))?;
        let id = account
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_admin_or_service(id)?;
        let account = self.db(move |conn| repo::get_account(conn, id)).await?;
        Ok(Response::new(account_to_proto(&account, self.now())))
    }

    #[instrument(skip_all)]
    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "UpdateAccount",
            Some(&caller),
        );
        let Some(account) = req.account else {
            violations.push("account", "is required");
            return Err(validation(violations.finish().err().unwrap_or_default()));
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
        violations.finish().map_err(validation)?;
        let Some(target) = target else {
            unreachable!("no violations means the name parsed");
        };
        let id = target
            .resolve("account.name", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_or_admin(id)?;
        if changes.roles.is_some() {
            caller.require_role(ROLE_ADMIN)?;
            // Nobody grants (or restores) their own roles: another admin must.
            if caller.account_id() == Some(id) {
                return Err(status(Error::CannotChangeOwnRoles));
            }
        }
        let fingerprint = idempotency::fingerprint(&pb::UpdateAccountRequest {
            account: Some(pb::Account {
                name: account_name(id),
                display_name: changes.display_name.clone().unwrap_or_default(),
                roles: changes.roles.clone().unwrap_or_default(),
                etag: account.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
            request_id: String::new(),
        });
        let updated = self
            .idempotent(key, fingerprint, move |conn, now| {
                let account = repo::update_account(conn, id, expected_version, changes, now)?;
                Ok(account_to_proto(&account, now))
            })
            .await?;
        Ok(Response::new(updated))
    }

    #[instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = self.caller(&request).await?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
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
            violations.check(backroom_shared::validate::no_control_characters(
                "email_prefix",
                &prefix,
            ));
        }
        let page = violations.check(
            PageRequest::parse(
                req.page_size,
                &req.page_token,
                page_fingerprint(&[&req.state.to_string(), &prefix]),
            )
            .map_err(|mut v| v.remove(0)),
        );
        violations.finish().map_err(validation)?;
        let Some(page) = page else {
            unreachable!("no violations means the page parsed");
        };
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let filter = AccountFilter {
            disabled,
            email_prefix: (!prefix.is_empty()).then_some(prefix),
        };
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_accounts(conn, &filter, &lookup, after))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |a| a.id.to_string());
        let now = self.now();
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: rows.iter().map(|a| account_to_proto(a, now)).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn disable_account(
        &self,
        request: Request<pb::DisableAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = self.caller(&request).await?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let target = violations.check(AccountRef::parse("name", &req.name));
        let reason = violations.check(required_text("reason", &req.reason, 500));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "DisableAccount",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let (Some(target), Some(reason)) = (target, reason) else {
            unreachable!("no violations means every field parsed");
        };
        let id = target
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        if caller.account_id() == Some(id) {
            return Err(status(Error::CannotDisableSelf));
        }
        let fingerprint = idempotency::fingerprint(&pb::DisableAccountRequest {
            name: account_name(id),
            reason: reason.clone(),
            request_id: String::new(),
        });
        let account = self
            .idempotent(key, fingerprint, move |conn, now| {
                let account = repo::set_disabled(conn, id, true, &reason, now)?;
                Ok(account_to_proto(&account, now))
            })
            .await?;
        tracing::info!(account = %account.name, "account disabled");
        Ok(Response::new(account))
    }

    #[instrument(skip_all)]
    async fn enable_account(
        &self,
        request: Request<pb::EnableAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let caller = self.caller(&request).await?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let target = violations.check(AccountRef::parse("name", &req.name));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "EnableAccount",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let Some(target) = target else {
            unreachable!("no violations means the name parsed");
        };
        let id = target
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        if caller.account_id() == Some(id) {
            return Err(status(Error::CannotEnableSelf));
        }
        let fingerprint = idempotency::fingerprint(&pb::EnableAccountRequest {
            name: account_name(id),
            request_id: String::new(),
        });
        let account = self
            .idempotent(key, fingerprint, move |conn, now| {
                let account = repo::set_disabled(conn, id, false, "", now)?;
                Ok(account_to_proto(&account, now))
            })
            .await?;
        Ok(Response::new(account))
    }

    #[instrument(skip_all)]
    async fn create_address(
        &self,
        request: Request<pb::CreateAddressRequest>,
    ) -> Result<Response<pb::Address>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let parent = violations.check(AccountRef::parse("parent", &req.parent));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CreateAddress",
            Some(&caller),
        );
        let address = match &req.address {
            Some(a) => NewAddress::parse(
                "address",
                AddressFields {
                    recipient: &a.recipient,
                    line1: &a.line1,
                    line2: &a.line2,
                    city: &a.city,
                    region: &a.region,
                    postal_code: &a.postal_code,
                    country_code: &a.country_code,
                },
                &mut violations,
            ),
            None => {
                violations.push("address", "is required");
                None
            }
        };
        violations.finish().map_err(validation)?;
        let (Some(parent), Some(address)) = (parent, address) else {
            unreachable!("no violations means every field parsed");
        };
        let account_id = parent
            .resolve("parent", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_or_admin(account_id)?;
        let fingerprint = idempotency::fingerprint(&pb::CreateAddressRequest {
            parent: account_name(account_id),
            address: req.address.map(|mut a| {
                a.name.clear();
                a.create_time = None;
                a
            }),
            request_id: String::new(),
        });
        let created = self
            .idempotent(key, fingerprint, move |conn, now| {
                let row = AddressRow::new(Uuid::now_v7(), account_id, address, now);
                Ok(address_to_proto(&repo::insert_address(conn, &row)?))
            })
            .await?;
        Ok(Response::new(created))
    }

    #[instrument(skip_all)]
    async fn get_address(
        &self,
        request: Request<pb::GetAddressRequest>,
    ) -> Result<Response<pb::Address>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let (account, address) =
            parse_address_name("name", &req.name).map_err(|v| validation(vec![v]))?;
        let account_id = account
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_admin_or_service(account_id)?;
        let row = self
            .db(move |conn| repo::get_address(conn, account_id, address))
            .await?;
        Ok(Response::new(address_to_proto(&row)))
    }

    #[instrument(skip_all)]
    async fn list_addresses(
        &self,
        request: Request<pb::ListAddressesRequest>,
    ) -> Result<Response<pb::ListAddressesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let parent = violations.check(AccountRef::parse("parent", &req.parent));
        let page = violations.check(
            PageRequest::parse(
                req.page_size,
                &req.page_token,
                page_fingerprint(&[&req.parent]),
            )
            .map_err(|mut v| v.remove(0)),
        );
        violations.finish().map_err(validation)?;
        let (Some(parent), Some(page)) = (parent, page) else {
            unreachable!("no violations means every field parsed");
        };
        let account_id = parent
            .resolve("parent", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_or_admin(account_id)?;
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_addresses(conn, account_id, &lookup, after))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.id.to_string());
        Ok(Response::new(pb::ListAddressesResponse {
            addresses: rows.iter().map(address_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn delete_address(
        &self,
        request: Request<pb::DeleteAddressRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let name = violations.check(parse_address_name("name", &req.name));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "DeleteAddress",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let Some((account, address)) = name else {
            unreachable!("no violations means the name parsed");
        };
        let account_id = account
            .resolve("name", &caller)
            .map_err(|v| status(v.into()))?;
        caller.require_owner_or_admin(account_id)?;
        let fingerprint = idempotency::fingerprint(&pb::DeleteAddressRequest {
            name: address_name(account_id, address),
            request_id: String::new(),
        });
        self.idempotent(key, fingerprint, move |conn, _now| {
            repo::delete_address(conn, account_id, address)
        })
        .await?;
        Ok(Response::new(()))
    }

    #[instrument(skip_all)]
    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        let keys = self
            .deps
            .issuer
            .keys()
            .public_keys()
            .into_iter()
            .map(|key| pb::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: key.x,
                kid: key.kid,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(pb::Jwks { keys }))
    }

    #[instrument(skip_all)]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::ServiceToken>, Status> {
        let req = request.into_inner();
        let mut violations = Violations::default();
        if req.client_id.is_empty() || req.client_id.len() > 100 {
            violations.push("client_id", "is required (at most 100 characters)");
        }
        let secret = violations.check(Password::presented("client_secret", &req.client_secret));
        if req.audience.is_empty() {
            violations.push("audience", "is required");
        }
        violations.finish().map_err(validation)?;
        let Some(secret) = secret else {
            unreachable!("no violations means the secret parsed");
        };
        if !audience::ALL.contains(&req.audience.as_str()) {
            return Err(status(Error::UnknownAudience));
        }
        let client = self.deps.clients.iter().find(|c| c.id == req.client_id);
        // Unknown clients cost a hash too: no oracle for valid client ids.
        let verified = self
            .deps
            .hasher
            .verify(&secret, client.map(|c| c.secret_hash.as_str()))
            .await
            .map_err(status)?;
        let Some(client) = client.filter(|_| verified.matches) else {
            return Err(status(Error::InvalidClient));
        };
        if !client.audiences.contains(&req.audience) {
            return Err(status(Error::AudienceNotAllowed));
        }
        let now = self.now();
        let (access_token, expires) = self
            .deps
            .issuer
            .issue(
                format!("services/{}", req.client_id),
                vec![backroom_shared::auth::ROLE_SERVICE.to_owned()],
                vec![req.audience],
                now,
            )
            .map_err(status)?;
        Ok(Response::new(pb::ServiceToken {
            access_token,
            expire_time: Some(to_timestamp(expires)),
            token_type: "Bearer".into(),
        }))
    }

    #[instrument(skip_all)]
    async fn list_token_revocations(
        &self,
        request: Request<pb::ListTokenRevocationsRequest>,
    ) -> Result<Response<pb::ListTokenRevocationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        if !caller.is_service() {
            caller.require_role(ROLE_ADMIN)?;
        }
        let req = request.into_inner();
        // Verifiers read the whole list every few seconds: larger pages.
        let page = PageRequest::parse_with_limits(
            req.page_size,
            &req.page_token,
            page_fingerprint(&[]),
            500,
            1000,
        )
        .map_err(validation)?;
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        // Tokens issued before an older change have expired anyway.
        let since = self.now()
            - self.deps.issuer.access_ttl
            - chrono::Duration::seconds(
                i64::try_from(backroom_shared::auth::LEEWAY_SECS).unwrap_or(60),
            );
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_revocations(conn, since, &lookup, after))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.account.to_string());
        Ok(Response::new(pb::ListTokenRevocationsResponse {
            token_revocations: rows
                .iter()
                .map(|r| pb::TokenRevocation {
                    account: account_name(r.account),
                    min_security_version: r.min_security_version,
                    revoke_time: Some(to_timestamp(r.changed_at)),
                })
                .collect(),
            next_page_token,
        }))
    }
}
