//! Typed configuration from environment variables (and matching command-line
//! flags), parsed with clap's `env` support so `--help` documents every
//! variable with its default. Defaults suit local development.
//!
//! Variables read by the groups in this module:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BACKROOM_LISTEN_ADDR` | the service's port on 0.0.0.0 | gRPC listen address |
//! | `BACKROOM_REQUEST_TIMEOUT_MS` | 30000 | upper bound on any call (a shorter `grpc-timeout` wins) |
//! | `BACKROOM_CONCURRENCY_LIMIT` | 256 | in-flight calls per process before RESOURCE_EXHAUSTED |
//! | `BACKROOM_MAX_MESSAGE_BYTES` | 4194304 | largest request or response message |
//! | `BACKROOM_SHUTDOWN_DELAY_MS` | 0 | after SIGTERM: NOT_SERVING published, still serving, for this long |
//! | `BACKROOM_DRAIN_TIMEOUT_MS` | 20000 | after the delay: longest wait for in-flight calls |
//! | `BACKROOM_CONCURRENCY_LIMIT_PER_CLIENT` | 32 | calls one client address may have in flight (0: no cap) |
//! | `BACKROOM_SERVICE_CONCURRENCY_RESERVE` | 32 | extra in-flight calls only service principals may use |
//! | `BACKROOM_REQUEST_BODY_TIMEOUT_MS` | 5000 | a request body not complete this long after its headers fails, freeing its slot (0: off) |
//! | `BACKROOM_RATE_LIMIT_PER_SEC` | 10 | rate-limited RPCs: calls per second per client address and method (0: no limit) |
//! | `BACKROOM_RATE_LIMIT_BURST` | 20 | rate-limited RPCs: calls allowed at once before the rate applies |
//! | `BACKROOM_TRUSTED_PROXIES` | unset | comma-separated CIDRs whose `x-forwarded-for` names the client |
//! | `BACKROOM_CORS_ALLOWED_ORIGINS` | unset | comma-separated origins (`https://shop.example.com`, or `*`) browsers may call the port from (REST/JSON and gRPC-Web); unset: no CORS headers, browsers on other origins are refused |
//! | `DATABASE_URL` | (required by services) | the service's runtime role (`backroom_<svc>`) + database: serving only reads and writes rows |
//! | `BACKROOM_MIGRATION_DATABASE_URL` | unset | the schema owner (`backroom_<svc>_migrator`) + database: what `migrate` and `RUN_MIGRATIONS=true` connect as; never needed to serve |
//! | `BACKROOM_DB_POOL_SIZE` | 10 | pooled connections |
//! | `BACKROOM_DB_POOL_MIN_IDLE` | 2 | connections kept open when idle |
//! | `BACKROOM_DB_CHECKOUT_TIMEOUT_MS` | 2000 | wait for a pooled connection before UNAVAILABLE (at most half the call's remaining deadline; 100 ms once connecting has failed) |
//! | `BACKROOM_DB_STATEMENT_TIMEOUT_MS` | 10000 | Postgres `statement_timeout` |
//! | `RUN_MIGRATIONS` | true | apply pending migrations at start-up (needs `BACKROOM_MIGRATION_DATABASE_URL`) |
//! | `RUST_LOG` | `info` | log filter (tracing `EnvFilter` syntax) |
//! | `BACKROOM_LOG_FORMAT` | `auto` | `json`, `pretty`, or `auto` (pretty on a terminal) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | unset | OTLP/gRPC collector; unset disables export |
//! | `OTEL_SERVICE_NAME` | the binary's service name | `service.name` resource attribute |
//! | `BACKROOM_METRICS_ADDR` | unset | Prometheus `/metrics` listen address; unset disables |
//! | `BACKROOM_JWT_ISSUER` | `backroom` | `iss` of every access token |
//! | `BACKROOM_ACCOUNT_ENDPOINT` | `http://127.0.0.1:50051` | the account service (JWKS, service tokens, revocations) |
//! | `BACKROOM_JWKS_REFRESH_SECS` | 300 | how often verifiers refetch the JWKS (a removed key stops counting within this) |
//! | `BACKROOM_REVOCATION_POLL_MS` | 2000 | how often verifiers refetch the token revocation list |

use std::{fmt, net::SocketAddr, time::Duration};

/// A string that never shows in `Debug`/`Display` output (database URLs with
/// passwords, signing keys, client secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// How the gRPC server listens, limits and shuts down.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// gRPC listen address. Unset: 0.0.0.0 on the service's default port.
    #[arg(long, env = "BACKROOM_LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// Upper bound on any call, in milliseconds; a shorter client deadline
    /// (`grpc-timeout`) wins.
    #[arg(long, env = "BACKROOM_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Calls in flight across all connections before new ones are shed with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "BACKROOM_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,
    /// Calls one client address may have in flight (0: no cap), so one
    /// client cannot take every slot.
    #[arg(
        long,
        env = "BACKROOM_CONCURRENCY_LIMIT_PER_CLIENT",
        default_value_t = 32
    )]
    pub concurrency_limit_per_client: usize,
    /// Extra in-flight calls only service principals may use, so calls
    /// between services get through while the public slots are full.
    #[arg(
        long,
        env = "BACKROOM_SERVICE_CONCURRENCY_RESERVE",
        default_value_t = 32
    )]
    pub service_concurrency_reserve: usize,
    /// A request body not complete this long after its headers fails,
    /// freeing its slot (milliseconds; 0: off). Bidirectional streams are
    /// exempt.
    #[arg(
        long,
        env = "BACKROOM_REQUEST_BODY_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub request_body_timeout_ms: u64,
    /// Largest encoded request or response message, in bytes.
    #[arg(long, env = "BACKROOM_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// After SIGTERM: health says NOT_SERVING but calls are still accepted for
    /// this long (milliseconds), so load balancers stop routing first.
    #[arg(long, env = "BACKROOM_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,
    /// After the delay: the longest wait for in-flight calls (milliseconds).
    #[arg(long, env = "BACKROOM_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
    /// Origins browsers may call this port from (CORS), comma-separated;
    /// `*` for any. Unset: no CORS headers.
    #[arg(long, env = "BACKROOM_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
    /// Per-client rate limits of the RPCs a service names.
    #[command(flatten)]
    pub rate_limit: RateLimitConfig,
}

/// Per-client rate limits (see `crate::ratelimit`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RateLimitConfig {
    /// Rate-limited RPCs: calls per second per client address and method;
    /// 0 turns the limit off.
    #[arg(long, env = "BACKROOM_RATE_LIMIT_PER_SEC", default_value_t = 10)]
    pub rate_limit_per_sec: u32,
    /// Rate-limited RPCs: calls a client may make at once before the rate
    /// applies (the bucket size).
    #[arg(long, env = "BACKROOM_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Proxies (comma-separated CIDRs, e.g. `10.0.0.0/8,::1/128`) trusted to
    /// name the client in `x-forwarded-for`; calls from anyone else are
    /// keyed by their peer address. Unset: trust no one.
    #[arg(
        long,
        env = "BACKROOM_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, as a /32 or /128).
fn parse_network(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{raw:?} is neither a CIDR nor an IP address"))
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_sec: 10,
            rate_limit_burst: 20,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// No limit (tests that make many calls from one address on purpose).
    pub fn unlimited() -> Self {
        Self {
            rate_limit_per_sec: 0,
            ..Self::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: None,
            request_timeout_ms: 30_000,
            concurrency_limit: 256,
            concurrency_limit_per_client: 32,
            service_concurrency_reserve: 32,
            request_body_timeout_ms: 5_000,
            max_message_bytes: 4 * 1024 * 1024,
            shutdown_delay_ms: 0,
            drain_timeout_ms: 20_000,
            cors_allowed_origins: Vec::new(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The defaults without the per-client limits (rate limits, the
    /// per-client share of the concurrency limit): for tests and load that
    /// come from one address on purpose.
    pub fn without_client_limits() -> Self {
        Self {
            concurrency_limit_per_client: 0,
            rate_limit: RateLimitConfig::unlimited(),
            ..Self::default()
        }
    }

    /// The concurrency limits these settings describe.
    pub fn concurrency_limits(&self) -> crate::concurrency::Limits {
        crate::concurrency::Limits {
            total: self.concurrency_limit,
            per_client: (self.concurrency_limit_per_client > 0)
                .then_some(self.concurrency_limit_per_client),
            service_reserve: self.service_concurrency_reserve,
            body_timeout: (self.request_body_timeout_ms > 0)
                .then(|| Duration::from_millis(self.request_body_timeout_ms)),
        }
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// [`Self::shutdown_delay_ms`] as a duration.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }
    /// [`Self::drain_timeout_ms`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    /// The listen address, or 0.0.0.0:`default_port`.
    pub fn listen_addr_or(&self, default_port: u16) -> SocketAddr {
        self.listen_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    }
}

/// The service's database connections and pool.
///
/// Two roles, two URLs (see [`crate::db`]): the service serves as its
/// runtime role, which may read and write rows but not change the schema;
/// migrations run as the schema's owner, whose URL the serving process needs
/// only when it migrates at start-up.
#[derive(Debug, Clone, clap::Args)]
pub struct DbConfig {
    /// Postgres URL of the service's runtime role, e.g.
    /// `postgres://backroom_account:…@db:5432/backroom`: everything but
    /// migrations connects with it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// Postgres URL of the role that owns the service's schema, e.g.
    /// `postgres://backroom_account_migrator:…@db:5432/backroom`: used only
    /// to apply migrations (`migrate`, or `RUN_MIGRATIONS=true`).
    #[arg(long, env = "BACKROOM_MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<Secret>,
    /// Pooled connections.
    #[arg(long, env = "BACKROOM_DB_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,
    /// Connections kept open while idle.
    #[arg(long, env = "BACKROOM_DB_POOL_MIN_IDLE", default_value_t = 2)]
    pub pool_min_idle: u32,
    /// Wait for a pooled connection before answering UNAVAILABLE (ms).
    #[arg(long, env = "BACKROOM_DB_CHECKOUT_TIMEOUT_MS", default_value_t = 2_000)]
    pub checkout_timeout_ms: u64,
    /// Postgres `statement_timeout` for every pooled connection (ms).
    #[arg(
        long,
        env = "BACKROOM_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub statement_timeout_ms: u64,
    /// Apply pending migrations at start-up, as the schema owner of
    /// `--migration-database-url` (the `migrate` subcommand always does).
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_migrations: bool,
}

impl DbConfig {
    /// A config for `database_url` with every other value at its default
    /// (no migration URL: see [`Self::with_migration_url`]).
    pub fn for_url(database_url: impl Into<String>) -> Self {
        Self {
            database_url: Secret::new(database_url),
            migration_database_url: None,
            pool_size: 10,
            pool_min_idle: 2,
            checkout_timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
            run_migrations: true,
        }
    }
    /// The same config, migrating as the schema owner of `migration_database_url`.
    pub fn with_migration_url(mut self, migration_database_url: impl Into<String>) -> Self {
        self.migration_database_url = Some(Secret::new(migration_database_url));
        self
    }
    /// [`Self::checkout_timeout_ms`] as a duration.
    pub fn checkout_timeout(&self) -> Duration {
        Duration::from_millis(self.checkout_timeout_ms)
    }
    /// [`Self::statement_timeout_ms`] as a duration.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable, coloured (development).
    Pretty,
    /// Pretty when stderr is a terminal, JSON otherwise.
    Auto,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Log line format.
    #[arg(long, env = "BACKROOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint of an OpenTelemetry collector, e.g.
    /// `http://otel-collector:4317`. Unset: traces are not exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported traces. Unset: the binary's service name.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Listen address of the Prometheus `/metrics` endpoint. Unset: disabled.
    #[arg(long, env = "BACKROOM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: LogFormat::Auto,
            otlp_endpoint: None,
            service_name: None,
            metrics_addr: None,
        }
    }
}

/// Who issues tokens and where their verification keys come from.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// `iss` of every access token; verifiers reject any other.
    #[arg(long, env = "BACKROOM_JWT_ISSUER", default_value = "backroom")]
    pub jwt_issuer: String,
    /// The account service, `http://host:port`: verifiers fetch its JWKS,
    /// services redeem their client credentials there.
    #[arg(
        long,
        env = "BACKROOM_ACCOUNT_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub account_endpoint: String,
    /// How often verifiers refetch the account service's JWKS (seconds): a
    /// key removed there stops being trusted within this time.
    #[arg(long, env = "BACKROOM_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,
    /// How often verifiers refetch the token revocation list
    /// (milliseconds): a disabled, demoted or re-passworded account's older
    /// tokens stop working within about this long.
    #[arg(long, env = "BACKROOM_REVOCATION_POLL_MS", default_value_t = 2_000)]
    pub revocation_poll_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_issuer: "backroom".into(),
            account_endpoint: "http://127.0.0.1:50051".into(),
            jwks_refresh_secs: 300,
            revocation_poll_ms: 2_000,
        }
    }
}

impl AuthConfig {
    /// [`Self::jwks_refresh_secs`] as a duration.
    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs.max(1))
    }

    /// The revocation policy that [`Self::revocation_poll_ms`] implies.
    pub fn revocation_policy(&self) -> crate::auth::revocation::RevocationPolicy {
        crate::auth::revocation::RevocationPolicy::polling_every(Duration::from_millis(
            self.revocation_poll_ms,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        server: ServerConfig,
        #[command(flatten)]
        db: DbConfig,
        #[command(flatten)]
        telemetry: TelemetryConfig,
    }

    #[test]
    fn defaults_suit_development_and_flags_override_them() {
        let probe = Probe::try_parse_from([
            "probe",
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--request-timeout-ms",
            "500",
            "--run-migrations",
            "false",
        ])
        .unwrap();
        assert_eq!(probe.server.request_timeout(), Duration::from_millis(500));
        assert_eq!(probe.server.concurrency_limit, 256);
        assert_eq!(probe.db.pool_size, 10);
        assert!(!probe.db.run_migrations);
        assert_eq!(probe.telemetry.log_format, LogFormat::Auto);
        assert_eq!(
            probe.server.listen_addr_or(50051),
            "0.0.0.0:50051".parse().unwrap()
        );
    }

    #[test]
    fn secrets_never_print() {
        let probe = Probe::try_parse_from([
            "probe",
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--migration-database-url",
            "postgres://m:swordfish@h/db",
        ])
        .unwrap();
        let printed = format!("{probe:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("swordfish"));
        assert_eq!(probe.db.database_url.expose(), "postgres://u:hunter2@h/db");
        assert_eq!(
            probe.db.migration_database_url.as_ref().map(Secret::expose),
            Some("postgres://m:swordfish@h/db")
        );
    }

    #[test]
    fn the_migration_url_is_optional_and_separate() {
        if std::env::var_os("BACKROOM_MIGRATION_DATABASE_URL").is_some() {
            return;
        }
        let probe =
            Probe::try_parse_from(["probe", "--database-url", "postgres://u@h/db"]).unwrap();
        assert!(probe.db.migration_database_url.is_none());
        assert!(probe.db.run_migrations, "the default: migrate at start-up");
    }

    #[test]
    fn a_missing_database_url_is_a_clear_error() {
        // SAFETY-free: only reads; the variable is not set in the test env.
        if std::env::var_os("DATABASE_URL").is_none() {
            let err = Probe::try_parse_from(["probe"]).unwrap_err();
            assert!(err.to_string().contains("--database-url"));
        }
    }
}
