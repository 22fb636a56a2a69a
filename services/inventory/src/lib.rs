//! `backroom-inventory`: the product catalogue, stock per (sku, location)
//! with its append-only movement log, order quotes with shipping, and stock
//! reservations for the checkout saga.
//!
//! Layout:
//! - [`api`]: the tonic `InventoryService`, one module per resource, the
//!   only place proto ⇄ domain conversions and `Error` → `Status` happen;
//!   WatchStock's hub ([`api::watch::hub`]);
//! - [`domain`]: entities, commands, rules and state machines, the `Error`
//!   enum;
//! - [`db`]: diesel schema, rows and their conversions, repository
//!   functions per aggregate (the concurrency rules are in [`db::repo`]'s
//!   docs);
//! - here: [`Cli`], [`InventoryConfig`], [`Deps`], [`server`] and
//!   [`InventoryService`], how the binary (`backroom_shared::service::main`)
//!   and `backroom up` build and run it.
//!
//! Background work started by [`server`]: the reservation expiry sweeper,
//! the purge of old request ids and the WatchStock hub; all stop when the
//! deps' [`Shutdown`] triggers (WatchStock streams then end with
//! UNAVAILABLE).

pub mod api;
pub mod db;
pub mod domain;
pub mod events;

use std::{sync::Arc, time::Duration};

use backroom_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use backroom_shared::{
    auth::{AuthLayer, Verifier, audience},
    clock::{self, SharedClock},
    config::{AuthConfig, Secret, ServerConfig},
    db::Pool,
    errors::Domain,
    events::{Events, EventsConfig},
    server::GrpcServer,
    service::{Command, CommonConfig, Service, Shutdown},
    store::Store,
};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;

use crate::{api::watch::WatchHub, db::repo::reservations::sweep_expired};

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
    /// Server, database, telemetry and token settings.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Inventory-specific settings.
    #[command(flatten)]
    pub inventory: InventoryConfig,
}

/// Inventory-specific configuration.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `BACKROOM_RESERVATION_SWEEP_INTERVAL_MS` | 1000 | how often expired reservations are swept; 0 disables the sweeper |
/// | `BACKROOM_WATCH_POLL_INTERVAL_MS` | 250 | the least time between two reads of the watched levels by the WatchStock hub (one query for every stream, only after stock changed: the hub follows the event feed and does not poll) |
/// | `BACKROOM_WATCH_STREAMS_PER_CALLER` | 4 | open WatchStock streams per caller (token subject) on this process; the next is RESOURCE_EXHAUSTED `TOO_MANY_STREAMS` |
/// | `BACKROOM_WATCH_STREAMS_PER_ADDRESS` | 16 | open WatchStock streams from one client address (scope `address`) |
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
    /// The least time between two reads, by the WatchStock hub, of the
    /// levels every open stream watches (one query, made only after stock
    /// changed; milliseconds, at least 10).
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
    /// Open WatchStock streams from one client address, whoever the
    /// principals (accounts are free to make; at least 1).
    #[arg(
        long,
        env = "BACKROOM_WATCH_STREAMS_PER_ADDRESS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub watch_streams_per_address: u32,
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
            watch_streams_per_address: 16,
            watch_streams_max: 128,
            service_client_id: None,
            service_client_secret: None,
        }
    }
}

/// Everything the service needs, built once.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The `inventory` schema and the clock "now" comes from.
    pub store: Store,
    /// Verifies bearer tokens (audience `backroom.inventory`).
    pub verifier: Arc<Verifier>,
    /// Sweeper period; `None` disables the sweeper (tests sweep by hand).
    pub sweep_interval: Option<Duration>,
    /// WatchStock's hub: its one poller, subscribers and per-caller cap.
    pub watch: WatchHub,
    /// Stops the background tasks and ends the streams.
    pub shutdown: Shutdown,
    /// The inventory events' feed (and relay, when configured).
    pub events: Events,
}

impl Deps {
    /// Dependencies with `config`'s intervals, stopping on a shutdown
    /// signal of their own (set [`Self::shutdown`] to share one).
    pub fn new(
        config: &InventoryConfig,
        pool: Pool,
        clock: SharedClock,
        verifier: Arc<Verifier>,
    ) -> Self {
        Self {
            events: Events::new(pool.clone(), SERVICE, EventsConfig::default()),
            store: Store::new(pool, clock, DOMAIN),
            verifier,
            sweep_interval: (config.reservation_sweep_interval_ms > 0)
                .then(|| Duration::from_millis(config.reservation_sweep_interval_ms)),
            watch: WatchHub::new(api::watch::WatchConfig {
                poll_interval: Duration::from_millis(config.watch_poll_interval_ms.max(10)),
                streams_per_address: usize::try_from(config.watch_streams_per_address)
                    .unwrap_or(usize::MAX),
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
/// runtime and stop on `deps.shutdown`.
pub fn server(config: ServerConfig, deps: Deps) -> GrpcServer {
    let max = config.max_message_bytes;
    let (pool, clock, shutdown) = (
        deps.store.pool().clone(),
        deps.store.clock().clone(),
        deps.shutdown.clone(),
    );
    if let Some(interval) = deps.sweep_interval {
        tokio::spawn(shutdown.until(sweep_periodically(deps.store.clone(), interval)));
    }
    tokio::spawn(
        deps.watch
            .clone()
            .run(pool.clone(), deps.events.clone(), shutdown.clone()),
    );
    tokio::spawn(
        shutdown.until(backroom_shared::idempotency::purge_periodically(
            pool.clone(),
            clock,
        )),
    );
    let events = deps.events.clone();
    let server = GrpcServer::new(config)
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
        );
    events.serve(server, DOMAIN, &shutdown)
}

/// Sweeps expired reservations every `interval`, forever (spawn it under
/// [`Shutdown::until`]).
async fn sweep_periodically(store: Store, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep_expired(store.pool(), store.now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired reservations swept"),
            Err(err) => tracing::warn!(%err, "sweeping expired reservations failed"),
        }
    }
}

/// The inventory service, as the shared `main` runs it.
#[derive(Debug, Clone, Copy)]
pub struct InventoryService;

impl Service for InventoryService {
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

    /// Refuses to start (before migrating) without the credentials that
    /// read the revocation list.
    fn preflight(cli: &Cli) -> anyhow::Result<()> {
        verifier(&cli.common.auth, &cli.inventory).map(drop)
    }

    async fn build(
        cli: &Cli,
        pool: Pool,
        _listener: &TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<GrpcServer> {
        let verifier = verifier(&cli.common.auth, &cli.inventory)?;
        let deps = Deps {
            shutdown,
            events: Events::new(pool.clone(), SERVICE, cli.common.events.clone()),
            ..Deps::new(&cli.inventory, pool, clock::system(), verifier)
        };
        Ok(server(cli.common.server.clone(), deps))
    }
}
