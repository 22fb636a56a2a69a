//! `backroom-inventory`: the product catalogue, stock per (sku, location)
//! with its append-only movement log, order quotes with shipping, and stock
//! reservations for the checkout saga.
//!
//! Layout:
//! - [`api`]: the tonic `InventoryService` impl, the only place proto ⇄
//!   domain conversions and `Error` → `Status` happen;
//! - [`domain`]: values, the `Error` enum, shipping-band selection;
//! - [`db`]: diesel schema, rows, repository functions (the concurrency
//!   rules are in [`db::repo`]'s docs);
//! - [`watch`]: the WatchStock hub, the one poller that feeds every stream;
//! - [`Cli`], [`Deps`], [`server`], [`sweep_expired`]: how `main` and
//!   `backroom up` build and run it.
//!
//! Background work started by [`server`]: the reservation expiry sweeper,
//! the purge of old request ids and the WatchStock hub; all stop when
//! [`Shutdown::trigger`] is called (WatchStock streams then end with
//! UNAVAILABLE).

pub mod api;
pub mod db;
pub mod domain;
pub mod watch;

use std::{future::Future, sync::Arc, time::Duration};

use backroom_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use backroom_shared::{
    auth::{AuthLayer, Verifier, audience},
    clock::SharedClock,
    config::{AuthConfig, DbConfig, Secret, ServerConfig, TelemetryConfig},
    db::{DbError, Pool},
    errors::Domain,
    server::GrpcServer,
};
use chrono::{DateTime, Utc};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::db::repo;

/// The service's name, schema and role suffix.
pub const SERVICE: &str = "inventory";
/// `ErrorInfo.domain` of every error.
pub const DOMAIN: Domain = "backroom.inventory";
/// Default gRPC port.
pub const DEFAULT_PORT: u16 = 50052;
/// The service's migrations (run after the shared ones, in schema `inventory`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// RPCs callable without a token: none (health and reflection are public
/// by construction).
pub const PUBLIC_METHODS: [&str; 0] = [];

/// The `backroom-inventory` command line: every flag also reads the
/// environment variable named in its help.
#[derive(Debug, clap::Parser)]
#[command(
    name = "backroom-inventory",
    version,
    about = "Backroom inventory service"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// gRPC server settings.
    #[command(flatten)]
    pub server: ServerConfig,
    /// Database settings.
    #[command(flatten)]
    pub db: DbConfig,
    /// Logs, traces, metrics.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Token issuer and account endpoint.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Inventory-specific settings.
    #[command(flatten)]
    pub inventory: InventoryConfig,
}

/// Subcommands of `backroom-inventory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending migrations to the `inventory` schema, then exit.
    Migrate,
}

/// Inventory-specific configuration.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `BACKROOM_RESERVATION_SWEEP_INTERVAL_MS` | 1000 | how often expired reservations are swept; 0 disables the sweeper |
/// | `BACKROOM_WATCH_POLL_INTERVAL_MS` | 250 | how often the WatchStock hub reads the watched levels (one query for every stream) |
/// | `BACKROOM_WATCH_STREAMS_PER_CALLER` | 4 | open WatchStock streams per caller (token subject) on this process; the next is RESOURCE_EXHAUSTED `TOO_MANY_STREAMS` |
/// | `BACKROOM_WATCH_STREAMS_MAX` | 128 | open WatchStock streams of all callers on this process; the next is RESOURCE_EXHAUSTED `TOO_MANY_STREAMS` (scope `server`) |
/// | `BACKROOM_SERVICE_CLIENT_ID` | unset | this service's principal: reads the token revocation list (required to serve) |
/// | `BACKROOM_SERVICE_CLIENT_SECRET` | unset | its secret |
#[derive(Debug, Clone, clap::Args)]
pub struct InventoryConfig {
    /// How often the sweeper returns the units of expired reservations
    /// (milliseconds); 0 disables it (reads and reservations still treat
    /// expired reservations as released).
    #[arg(
        long,
        env = "BACKROOM_RESERVATION_SWEEP_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub reservation_sweep_interval_ms: u64,
    /// How often the WatchStock hub reads the levels every open stream
    /// watches, with one query (milliseconds; at least 10).
    #[arg(long, env = "BACKROOM_WATCH_POLL_INTERVAL_MS", default_value_t = 250)]
    pub watch_poll_interval_ms: u64,
    /// Open WatchStock streams each caller (token subject) may hold on this
    /// process; past it a new stream is refused at once (at least 1).
    #[arg(
        long,
        env = "BACKROOM_WATCH_STREAMS_PER_CALLER",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub watch_streams_per_caller: u32,
    /// Open WatchStock streams of all callers together on this process;
    /// past it a new stream is refused at once (at least 1). Keep it below
    /// BACKROOM_CONCURRENCY_LIMIT: every open stream holds one of its slots.
    #[arg(
        long,
        env = "BACKROOM_WATCH_STREAMS_MAX",
        default_value_t = 128,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub watch_streams_max: u32,
    /// Client id of this service's principal: the verifier reads the
    /// account service's token revocation list with it.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_ID")]
    pub service_client_id: Option<String>,
    /// The principal's secret.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_SECRET", hide_env_values = true)]
    pub service_client_secret: Option<Secret>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            reservation_sweep_interval_ms: 1_000,
            watch_poll_interval_ms: 250,
            watch_streams_per_caller: 4,
            watch_streams_max: 128,
            service_client_id: None,
            service_client_secret: None,
        }
    }
}

/// Tells background tasks and open streams that the server is shutting
/// down. Cheap to clone; every clone triggers the same signal.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Shutdown {
    /// Signals shutdown (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Self::trigger`] was called.
    pub async fn triggered(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close first.
        let _ = rx.wait_for(|down| *down).await;
    }

    /// `signal`, then trigger: pass the result to `GrpcServer::serve` as its
    /// shutdown future so streams end and background tasks stop with it.
    pub fn after<F: Future<Output = ()>>(&self, signal: F) -> impl Future<Output = ()> + use<F> {
        let this = self.clone();
        async move {
            signal.await;
            this.trigger();
        }
    }
}

/// Everything the service needs, built once.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The pool of the `inventory` schema.
    pub pool: Pool,
    /// Where "now" comes from.
    pub clock: SharedClock,
    /// Verifies bearer tokens (audience `backroom.inventory`).
    pub verifier: Arc<Verifier>,
    /// Sweeper period; `None` disables the sweeper (tests sweep by hand).
    pub sweep_interval: Option<Duration>,
    /// WatchStock's hub: its one poller, subscribers and per-caller cap.
    pub watch: watch::WatchHub,
    /// Shutdown signal for background tasks and streams.
    pub shutdown: Shutdown,
}

impl Deps {
    /// Dependencies with `config`'s intervals.
    pub fn new(
        config: &InventoryConfig,
        pool: Pool,
        clock: SharedClock,
        verifier: Arc<Verifier>,
    ) -> Self {
        Self {
            pool,
            clock,
            verifier,
            sweep_interval: (config.reservation_sweep_interval_ms > 0)
                .then(|| Duration::from_millis(config.reservation_sweep_interval_ms)),
            watch: watch::WatchHub::new(watch::WatchConfig {
                poll_interval: Duration::from_millis(config.watch_poll_interval_ms.max(10)),
                streams_per_caller: usize::try_from(config.watch_streams_per_caller)
                    .unwrap_or(usize::MAX),
                streams_max: usize::try_from(config.watch_streams_max).unwrap_or(usize::MAX),
            }),
            shutdown: Shutdown::default(),
        }
    }
}

/// The production verifier: keys from the account service's JWKS at
/// `auth.account_endpoint`, and its revocation list read with this service's
/// credentials (see `Verifier::for_service`).
pub fn verifier(auth: &AuthConfig, config: &InventoryConfig) -> anyhow::Result<Arc<Verifier>> {
    Verifier::for_service(
        auth,
        audience::INVENTORY,
        config.service_client_id.as_deref(),
        config.service_client_secret.as_ref(),
    )
}

/// The inventory gRPC server: the service behind the auth layer, a
/// readiness probe on the database, and the background tasks (sweeper,
/// request-id purge, WatchStock hub), which must be spawned inside a tokio
/// runtime.
pub fn server(config: ServerConfig, deps: Deps) -> GrpcServer {
    let max = config.max_message_bytes;
    let pool = deps.pool.clone();
    if let Some(interval) = deps.sweep_interval {
        tokio::spawn(api::run_sweeper(deps.clone(), interval));
    }
    tokio::spawn(
        deps.watch
            .clone()
            .run(deps.pool.clone(), deps.shutdown.clone()),
    );
    let (pool_for_purge, clock, shutdown) =
        (deps.pool.clone(), deps.clock.clone(), deps.shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = backroom_shared::idempotency::purge_periodically(pool_for_purge, clock) => {}
            () = shutdown.triggered() => {}
        }
    });
    GrpcServer::new(config)
        .with_layer(AuthLayer::new(
            deps.verifier.clone(),
            DOMAIN,
            &PUBLIC_METHODS,
        ))
        .with_health_probe(Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.is_healthy().await })
        }))
        .add_service(
            InventoryServiceServer::new(api::InventoryApi::new(deps))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
}

/// Expires every ACTIVE reservation past its expiry at `now`, returning its
/// units (EXPIRE movements); returns how many it expired. Idempotent and
/// safe to run on several replicas at once (`FOR UPDATE SKIP LOCKED`).
pub async fn sweep_expired(pool: &Pool, now: DateTime<Utc>) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let expired = pool
            .transaction(move |conn| {
                repo::expire_due(conn, None, now, repo::Lock::SkipLocked).map_err(|err| match err {
                    domain::Error::Db(err) => err,
                    other => DbError::Other(anyhow::anyhow!("{other}")),
                })
            })
            .await?;
        total += expired;
        if i64::try_from(expired).unwrap_or(i64::MAX) < repo::EXPIRY_BATCH {
            return Ok(total);
        }
    }
}
