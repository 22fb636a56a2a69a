//! `backroom-account`: identities, passwords, sessions, service tokens,
//! shipping addresses, and the keys that sign every Backroom access token.
//!
//! Layout:
//! - [`api`]: the tonic `AccountService` impl, one module per resource, the
//!   only place proto ⇄ domain conversions and `Error` → `Status` happen;
//! - [`domain`]: values, entities and their rules, the `Error` enum,
//!   password hashing, tokens, lockout;
//! - [`db`]: diesel schema, rows ⇄ domain, repository functions per
//!   aggregate;
//! - here: [`Cli`] and [`AccountConfig`], [`Deps`], [`AccountService`] (what
//!   the shared service main runs) and [`server`] (what it and `backroom up`
//!   serve).

pub mod api;
pub mod db;
pub mod domain;
pub mod events;

use std::{path::PathBuf, sync::Arc};

use backroom_proto::account::v1::account_service_server::AccountServiceServer;
use backroom_shared::{
    auth::{AuthLayer, Verifier, audience},
    clock::{self, SharedClock},
    config::{AuthConfig, Secret, ServerConfig},
    db::Pool,
    errors::Domain,
    events::{Events, EventsConfig},
    server::GrpcServer,
    service::{CommonConfig, Service, Shutdown},
    store::Store,
};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;

pub use backroom_shared::service::Command;

use crate::{
    db::repo,
    domain::{
        Bootstrap, Email, Password,
        lockout::LockoutPolicy,
        passwords::{DEFAULT_QUEUE_DEPTH, Hasher, default_params},
        service_clients::{ServiceClient, ServiceClients},
        sessions::SessionLifetime,
        tokens::{SigningKeys, TokenIssuer},
    },
};

/// The service's name, schema and role suffix.
pub const SERVICE: &str = "account";
/// `ErrorInfo.domain` of every error.
pub const DOMAIN: Domain = "backroom.account";
/// Default gRPC port.
pub const DEFAULT_PORT: u16 = 50051;
/// The service's migrations (run after the shared ones, in schema `account`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// RPCs callable without a token.
pub const PUBLIC_METHODS: [&str; 6] = [
    "/backroom.account.v1.AccountService/Register",
    "/backroom.account.v1.AccountService/Login",
    "/backroom.account.v1.AccountService/RefreshSession",
    "/backroom.account.v1.AccountService/Logout",
    "/backroom.account.v1.AccountService/GetJwks",
    "/backroom.account.v1.AccountService/IssueServiceToken",
];

/// RPCs rate-limited per client address (see `backroom_shared::ratelimit`):
/// every public one, and ChangePassword (it checks a password too).
pub const RATE_LIMITED_METHODS: [&str; 7] = [
    PUBLIC_METHODS[0],
    PUBLIC_METHODS[1],
    PUBLIC_METHODS[2],
    PUBLIC_METHODS[3],
    PUBLIC_METHODS[4],
    PUBLIC_METHODS[5],
    "/backroom.account.v1.AccountService/ChangePassword",
];

/// Shortest client secret a service principal may have: secrets are
/// machine-made, so this costs nothing and makes guessing hopeless.
pub const MIN_CLIENT_SECRET_LEN: usize = 32;

/// The `backroom-account` command line: every flag also reads the
/// environment variable named in its help.
#[derive(Debug, clap::Parser)]
#[command(name = "backroom-account", version, about = "Backroom account service")]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server, database, telemetry and token settings every service reads.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Account-specific settings.
    #[command(flatten)]
    pub account: AccountConfig,
}

/// The service's part of its binary (see `backroom_shared::service`): the
/// command line above, the `account` schema, and [`server`] built from
/// [`Deps`] after the bootstrap admin exists.
#[derive(Debug, Clone, Copy)]
pub struct AccountService;

impl Service for AccountService {
    type Cli = Cli;
    const NAME: &'static str = SERVICE;
    const DEFAULT_PORT: u16 = DEFAULT_PORT;
    const MIGRATIONS: EmbeddedMigrations = MIGRATIONS;

    fn command(cli: &Cli) -> Command {
        cli.command.unwrap_or_default()
    }

    fn common(cli: &Cli) -> &CommonConfig {
        &cli.common
    }

    /// A missing or unreadable signing key, bad lifetimes or a malformed
    /// service-principal list stop the binary before it migrates anything.
    fn preflight(cli: &Cli) -> anyhow::Result<()> {
        cli.account.check()
    }

    async fn build(
        cli: &Cli,
        pool: Pool,
        _listener: &TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<GrpcServer> {
        let mut deps = Deps::new(&cli.common.auth, &cli.account, pool, clock::system()).await?;
        deps.shutdown = shutdown;
        deps.events = Events::new(
            deps.store.pool().clone(),
            SERVICE,
            cli.common.events.clone(),
        );
        bootstrap_admin(&deps, &cli.account).await?;
        Ok(server(cli.common.server.clone(), deps))
    }
}

/// Account-specific configuration (see the README's table).
#[derive(Debug, Clone, clap::Args)]
pub struct AccountConfig {
    /// One or more PKCS#8 PEM Ed25519 private keys, concatenated: the first
    /// signs, all are published in the JWKS.
    #[arg(long, env = "BACKROOM_JWT_SIGNING_KEYS", hide_env_values = true)]
    pub jwt_signing_keys: Option<Secret>,
    /// A file holding the same (a mounted Kubernetes Secret).
    #[arg(long, env = "BACKROOM_JWT_SIGNING_KEYS_FILE")]
    pub jwt_signing_keys_file: Option<PathBuf>,
    /// Lifetime of access and service tokens, seconds.
    #[arg(long, env = "BACKROOM_ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: i64,
    /// Lifetime of a refresh token unused (the idle timeout), seconds.
    #[arg(long, env = "BACKROOM_REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: i64,
    /// Absolute lifetime of a session from its Login, however often it is
    /// refreshed, seconds.
    #[arg(long, env = "BACKROOM_SESSION_MAX_LIFETIME_SECS", default_value_t = 90 * 24 * 3600)]
    pub session_max_lifetime_secs: i64,
    /// Password-hashing jobs that may wait for a hashing thread; past it,
    /// calls that need a hash answer RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "BACKROOM_HASH_QUEUE_DEPTH", default_value_t = DEFAULT_QUEUE_DEPTH)]
    pub hash_queue_depth: usize,
    /// Service principals: `client_id:secret` pairs separated by commas
    /// (secrets of at least 32 characters).
    #[arg(long, env = "BACKROOM_SERVICE_CLIENTS", hide_env_values = true)]
    pub service_clients: Option<Secret>,
    /// Audiences each service principal may ask tokens for:
    /// `client_id=aud|aud,…` (e.g. `payment=backroom.account|backroom.inventory`).
    /// Every client in BACKROOM_SERVICE_CLIENTS must be listed.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_AUDIENCES")]
    pub service_client_audiences: Option<String>,
    /// Roles a service principal has beside `service`:
    /// `client_id=role|role,…`; the only such role is `fulfillment` (a
    /// warehouse system: it ships orders and receives returns). Clients
    /// not listed have none.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_ROLES")]
    pub service_client_roles: Option<String>,
    /// Email of an admin account created at start-up if no account has it.
    #[arg(long, env = "BACKROOM_BOOTSTRAP_ADMIN_EMAIL")]
    pub bootstrap_admin_email: Option<String>,
    /// Its password (used only when the account is created).
    #[arg(
        long,
        env = "BACKROOM_BOOTSTRAP_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub bootstrap_admin_password: Option<Secret>,
    /// If an account that is not an admin already has the bootstrap email,
    /// make it an admin (its password unchanged) instead of refusing to
    /// start. Off by default: whoever registered that email first would
    /// otherwise become admin.
    #[arg(
        long,
        env = "BACKROOM_BOOTSTRAP_ADMIN_PROMOTE_EXISTING",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub bootstrap_admin_promote_existing: bool,
}

impl AccountConfig {
    /// A config with `signing_keys_pem` and every other value at its default.
    pub fn with_keys(signing_keys_pem: String) -> Self {
        Self {
            jwt_signing_keys: Some(Secret::new(signing_keys_pem)),
            jwt_signing_keys_file: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            session_max_lifetime_secs: 90 * 24 * 3600,
            hash_queue_depth: DEFAULT_QUEUE_DEPTH,
            service_clients: None,
            service_client_audiences: None,
            service_client_roles: None,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            bootstrap_admin_promote_existing: false,
        }
    }

    fn signing_keys(&self) -> anyhow::Result<SigningKeys> {
        let pem = match (&self.jwt_signing_keys, &self.jwt_signing_keys_file) {
            (Some(pem), _) => pem.expose().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            (None, None) => anyhow::bail!(
                "no signing key: set BACKROOM_JWT_SIGNING_KEYS (PKCS#8 PEM Ed25519) or BACKROOM_JWT_SIGNING_KEYS_FILE"
            ),
        };
        SigningKeys::from_pem(&pem)
    }

    /// Refuses a configuration [`Deps::new`] would refuse, without hashing
    /// anything (the binary's preflight).
    pub fn check(&self) -> anyhow::Result<()> {
        self.sessions()?;
        self.signing_keys()?;
        self.service_clients()?;
        Ok(())
    }

    fn sessions(&self) -> anyhow::Result<SessionLifetime> {
        anyhow::ensure!(
            self.refresh_token_ttl_secs > 0 && self.session_max_lifetime_secs > 0,
            "BACKROOM_REFRESH_TOKEN_TTL_SECS and BACKROOM_SESSION_MAX_LIFETIME_SECS must be positive"
        );
        Ok(SessionLifetime {
            refresh_ttl: chrono::Duration::seconds(self.refresh_token_ttl_secs),
            max_lifetime: chrono::Duration::seconds(self.session_max_lifetime_secs),
        })
    }

    /// The configured service principals: id, secret (not yet hashed), the
    /// audiences each may ask tokens for and its roles beside `service`.
    fn service_clients(&self) -> anyhow::Result<Vec<ConfiguredClient>> {
        let allowed = parse_audiences(self.service_client_audiences.as_deref().unwrap_or(""))?;
        let roles = parse_client_roles(self.service_client_roles.as_deref().unwrap_or(""))?;
        let Some(list) = &self.service_clients else {
            return Ok(Vec::new());
        };
        list.expose()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (id, secret) = pair
                    .split_once(':')
                    .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("BACKROOM_SERVICE_CLIENTS: expected client_id:secret pairs")
                    })?;
                anyhow::ensure!(
                    secret.chars().count() >= MIN_CLIENT_SECRET_LEN,
                    "BACKROOM_SERVICE_CLIENTS: the secret of {id} must have at least {MIN_CLIENT_SECRET_LEN} characters"
                );
                let secret = Password::presented("client_secret", secret).map_err(|v| {
                    anyhow::anyhow!("BACKROOM_SERVICE_CLIENTS: secret of {id} {}", v.description)
                })?;
                // No default: a principal may reach only what it was given.
                let audiences = allowed
                    .iter()
                    .find(|(client, _)| client == id)
                    .map(|(_, a)| a.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "BACKROOM_SERVICE_CLIENT_AUDIENCES: no entry for service client {id}; list the audiences it may call, e.g. {id}=backroom.account"
                        )
                    })?;
                let roles = roles
                    .iter()
                    .find(|(client, _)| client == id)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                Ok(ConfiguredClient {
                    id: id.to_owned(),
                    secret,
                    audiences,
                    roles,
                })
            })
            .collect()
    }
}

/// Everything the service needs beyond the database, built once.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The `account` schema and the service clock.
    pub store: Store,
    /// Argon2id hashing.
    pub hasher: Hasher,
    /// Token signing.
    pub issuer: TokenIssuer,
    /// Refresh-token and session lifetimes.
    pub sessions: SessionLifetime,
    /// Failed-login policy.
    pub lockout: LockoutPolicy,
    /// Service principals, secrets kept only hashed.
    pub clients: Arc<ServiceClients>,
    /// Stops the server's background purges: [`AccountService`] passes the
    /// binary's; `backroom up` and tests may trigger their own.
    pub shutdown: Shutdown,
    /// The account events' feed (and relay, when configured).
    pub events: Events,
}

/// Parses `client_id=aud|aud,…`.
/// A service principal as configured, its secret not yet hashed.
struct ConfiguredClient {
    id: String,
    secret: Password,
    audiences: Vec<String>,
    roles: Vec<String>,
}

/// `client_id=role|role,…`: the roles service principals have beside
/// `service`, each one of [`SERVICE_CLIENT_ROLES`].
fn parse_client_roles(spec: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (id, roles) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("BACKROOM_SERVICE_CLIENT_ROLES: expected client_id=role|role")
            })?;
            let roles: Vec<String> = roles.split('|').map(|r| r.trim().to_owned()).collect();
            for role in &roles {
                anyhow::ensure!(
                    SERVICE_CLIENT_ROLES.contains(&role.as_str()),
                    "BACKROOM_SERVICE_CLIENT_ROLES: a service principal may have role {} only, not {role:?}",
                    SERVICE_CLIENT_ROLES.join(", ")
                );
            }
            Ok((id.trim().to_owned(), roles))
        })
        .collect()
}

/// The roles a service principal may be given beside `service` (never
/// admin: a principal's powers are what its role names, nothing more).
const SERVICE_CLIENT_ROLES: &[&str] = &[backroom_shared::auth::ROLE_FULFILLMENT];

fn parse_audiences(spec: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (id, audiences) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("BACKROOM_SERVICE_CLIENT_AUDIENCES: expected client_id=aud|aud")
            })?;
            let audiences: Vec<String> =
                audiences.split('|').map(|a| a.trim().to_owned()).collect();
            for audience in &audiences {
                anyhow::ensure!(
                    audience::ALL.contains(&audience.as_str()),
                    "BACKROOM_SERVICE_CLIENT_AUDIENCES: unknown audience {audience:?}"
                );
            }
            Ok((id.trim().to_owned(), audiences))
        })
        .collect()
}

impl Deps {
    /// Checks the configuration, starts the hashing threads and hashes the
    /// client secrets (secrets are kept only hashed).
    pub async fn new(
        auth: &AuthConfig,
        config: &AccountConfig,
        pool: Pool,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let depth = config.hash_queue_depth;
        let hasher = backroom_shared::db::blocking(move || {
            Hasher::with_queue(default_params(), None, depth)
                .map_err(backroom_shared::db::DbError::Other)
        })
        .await?;
        let sessions = config.sessions()?;
        let issuer = TokenIssuer::new(
            config.signing_keys()?,
            auth.jwt_issuer.clone(),
            chrono::Duration::seconds(config.access_token_ttl_secs),
        );
        let mut clients = Vec::new();
        for client in config.service_clients()? {
            let secret_hash = hasher.hash(&client.secret).await?;
            clients.push(ServiceClient {
                id: client.id,
                secret_hash,
                audiences: client.audiences,
                roles: client.roles,
            });
        }
        Ok(Self {
            events: Events::new(pool.clone(), SERVICE, EventsConfig::default()),
            store: Store::new(pool, clock, DOMAIN),
            hasher,
            issuer,
            sessions,
            lockout: LockoutPolicy::default(),
            clients: Arc::new(clients.into()),
            shutdown: Shutdown::default(),
        })
    }
}

/// Creates the bootstrap admin from config if no account has its email;
/// returns the email when configured. An existing account with that email
/// keeps its password; if it is not an admin, start-up fails unless
/// `BACKROOM_BOOTSTRAP_ADMIN_PROMOTE_EXISTING` asks to promote it (logged
/// loudly).
pub async fn bootstrap_admin(
    deps: &Deps,
    config: &AccountConfig,
) -> anyhow::Result<Option<String>> {
    let (Some(email), Some(password)) = (
        &config.bootstrap_admin_email,
        &config.bootstrap_admin_password,
    ) else {
        return Ok(None);
    };
    let email = Email::parse("BACKROOM_BOOTSTRAP_ADMIN_EMAIL", email)
        .map_err(|v| anyhow::anyhow!("{}: {}", v.field, v.description))?;
    let password = Password::parse(
        "BACKROOM_BOOTSTRAP_ADMIN_PASSWORD",
        password.expose(),
        Some(&email),
    )
    .map_err(|v| anyhow::anyhow!("{}: {}", v.field, v.description))?;
    let hash = deps.hasher.hash(&password).await?;
    let stored = email.clone();
    let promote = config.bootstrap_admin_promote_existing;
    let outcome = deps
        .store
        .write(move |conn, now| repo::ensure_admin(conn, &stored, &hash, promote, now))
        .await?;
    match outcome {
        Bootstrap::Created => tracing::info!(email = email.as_str(), "bootstrap admin created"),
        Bootstrap::AlreadyAdmin => {
            tracing::info!(
                email = email.as_str(),
                "bootstrap admin exists (password unchanged)"
            );
        }
        Bootstrap::Promoted => tracing::warn!(
            email = email.as_str(),
            "BOOTSTRAP_ADMIN_PROMOTE_EXISTING: an existing account was made admin; its password is unchanged and NOT the configured one"
        ),
        Bootstrap::RefusedToPromote => anyhow::bail!(
            "BACKROOM_BOOTSTRAP_ADMIN_EMAIL {} belongs to an existing account that is not an admin; refusing to promote it (whoever registered it would become admin). Choose another email, or set BACKROOM_BOOTSTRAP_ADMIN_PROMOTE_EXISTING=true if that account is yours",
            email.as_str()
        ),
    }
    Ok(Some(email.as_str().to_owned()))
}

/// The account gRPC server: the service, the auth layer (verifying with the
/// service's own keys), a readiness probe on the database, and the purges of
/// expired request ids, sessions and login counters, which stop on
/// `deps.shutdown`.
pub fn server(config: ServerConfig, deps: Deps) -> GrpcServer {
    let shutdown = deps.shutdown.clone();
    let verifier = Arc::new(Verifier::with_keys(
        deps.issuer.issuer(),
        audience::ACCOUNT,
        &deps.issuer.keys().public_keys(),
    ));
    let max = config.max_message_bytes;
    let pool = deps.store.pool().clone();
    tokio::spawn(
        shutdown.until(backroom_shared::idempotency::purge_periodically(
            pool.clone(),
            deps.store.clock().clone(),
        )),
    );
    tokio::spawn(shutdown.until(purge_sessions_periodically(deps.clone())));
    let events = deps.events.clone();
    let server = GrpcServer::new(config)
        // The server refuses a flood before any token or password work.
        .with_rate_limits(&RATE_LIMITED_METHODS)
        .with_layer(AuthLayer::new(verifier, DOMAIN, &PUBLIC_METHODS))
        .with_health_probe(Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.is_healthy().await })
        }))
        .add_service(
            AccountServiceServer::new(api::AccountApi::new(deps))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    events.serve(server, DOMAIN, &shutdown)
}

/// Deletes expired refresh tokens and idle failed-login counters every ten
/// minutes, until shutdown (spawned by [`server`]).
async fn purge_sessions_periodically(deps: Deps) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let policy = deps.lockout;
        let purged = deps
            .store
            .write(move |conn, now| {
                Ok::<_, domain::Error>((
                    repo::purge_refresh_tokens(conn, now)?,
                    repo::purge_throttles(conn, &policy, now)?,
                ))
            })
            .await;
        match purged {
            Ok((0, 0)) => {}
            Ok((tokens, throttles)) => {
                tracing::info!(
                    tokens,
                    throttles,
                    "expired sessions and login counters purged"
                );
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "purging sessions failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_principal_may_be_given_fulfillment_and_nothing_more() {
        let mut config = AccountConfig::with_keys(String::new());
        config.service_clients = Some(Secret::new(format!(
            "warehouse:{},payment:{}",
            "w".repeat(32),
            "p".repeat(32)
        )));
        config.service_client_audiences =
            Some("warehouse=backroom.payment,payment=backroom.account".into());
        config.service_client_roles = Some("warehouse=fulfillment".into());
        let clients = config.service_clients().unwrap();
        let roles: Vec<(&str, &[String])> = clients
            .iter()
            .map(|c| (c.id.as_str(), c.roles.as_slice()))
            .collect();
        assert_eq!(
            roles,
            [
                ("warehouse", &["fulfillment".to_owned()][..]),
                ("payment", &[][..])
            ]
        );
        for refused in [
            "warehouse=admin",
            "warehouse=fulfillment|service",
            "warehouse",
        ] {
            config.service_client_roles = Some(refused.into());
            let err = config.service_clients().err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("BACKROOM_SERVICE_CLIENT_ROLES")),
                "{refused}: {err:?}"
            );
        }
    }
}
