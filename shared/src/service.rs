//! The one `main` of every service binary, and the one shutdown signal.
//!
//! A binary is `fn main() { backroom_shared::service::main::<MyService>() }`:
//! parse the command line (every flag also reads its environment variable),
//! start telemetry, then either apply the migrations (`migrate`, what the
//! Kubernetes Job and initContainer run) or serve: migrate first when
//! `RUN_MIGRATIONS` says so, bind the listen address, let the service build
//! its server, and serve until SIGTERM/SIGINT.
//!
//! [`Shutdown`] is the signal every background task and open stream of a
//! service obeys: it fires when the server starts shutting down, so sweepers
//! stop and streams end (UNAVAILABLE) instead of holding the drain.
//!
//! Layout: [`Command`] and [`CommonConfig`] (what every CLI has),
//! [`Service`] (what a service adds), [`main`] / [`run`], [`Shutdown`].

use std::{future::Future, sync::Arc};

use diesel_migrations::EmbeddedMigrations;
use tokio::net::TcpListener;

use crate::{
    config::{AuthConfig, DbConfig, ServerConfig, TelemetryConfig},
    db::{self, Pool},
    server::{GrpcServer, shutdown_signal},
    telemetry,
};

/// What a service binary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    #[default]
    Serve,
    /// Apply pending migrations to the service's schema, then exit.
    Migrate,
}

/// The settings every service binary reads (flatten it into the CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
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
    /// The JetStream relay and webhooks.
    #[command(flatten)]
    pub events: crate::events::EventsConfig,
}

/// A service's part of its binary: its CLI, schema and server.
pub trait Service {
    /// The command line: [`CommonConfig`] plus the service's own settings.
    type Cli: clap::Parser + Send + Sync + 'static;
    /// The service's name: its schema, its role suffix, its telemetry name.
    const NAME: &'static str;
    /// The port it listens on when `BACKROOM_LISTEN_ADDR` is unset.
    const DEFAULT_PORT: u16;
    /// Its migrations (run after the shared ones).
    const MIGRATIONS: EmbeddedMigrations;

    /// The subcommand the command line chose.
    fn command(cli: &Self::Cli) -> Command;

    /// The common settings inside the command line.
    fn common(cli: &Self::Cli) -> &CommonConfig;

    /// Refuses a configuration that cannot serve, before anything starts
    /// (migrations included). Default: nothing to check.
    fn preflight(cli: &Self::Cli) -> anyhow::Result<()> {
        let _ = cli;
        Ok(())
    }

    /// Builds the server that will serve on `listener`, with its database
    /// `pool`; its background tasks stop on `shutdown`.
    fn build(
        cli: &Self::Cli,
        pool: Pool,
        listener: &TcpListener,
        shutdown: Shutdown,
    ) -> impl Future<Output = anyhow::Result<GrpcServer>> + Send;
}

/// The binary's `main`: a tokio runtime around [`run`].
pub fn main<S: Service>() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run::<S>())
}

/// Parses the command line, starts telemetry, and migrates or serves; see
/// the module docs.
pub async fn run<S: Service>() -> anyhow::Result<()> {
    let cli = <S::Cli as clap::Parser>::parse();
    let common = S::common(&cli);
    let telemetry = telemetry::init(S::NAME, &common.telemetry)?;
    let result = match S::command(&cli) {
        Command::Migrate => migrate::<S>(&common.db).await,
        Command::Serve => serve::<S>(&cli).await,
    };
    if let Err(err) = &result {
        tracing::error!(
            error = format!("{err:#}"),
            service = S::NAME,
            "the service failed"
        );
    }
    telemetry.shutdown();
    result
}

async fn migrate<S: Service>(config: &DbConfig) -> anyhow::Result<()> {
    db::migrate(config, S::NAME, S::MIGRATIONS).await?;
    Ok(())
}

async fn serve<S: Service>(cli: &S::Cli) -> anyhow::Result<()> {
    S::preflight(cli)?;
    let common = S::common(cli);
    if common.db.run_migrations {
        migrate::<S>(&common.db).await?;
    }
    let pool = Pool::new(&common.db, S::NAME);
    let listener = TcpListener::bind(common.server.listen_addr_or(S::DEFAULT_PORT)).await?;
    let shutdown = Shutdown::default();
    let server = S::build(cli, pool, &listener, shutdown.clone()).await?;
    server
        .serve(listener, shutdown.after(shutdown_signal()))
        .await
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

    /// Whether shutdown began.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
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

    /// Runs `task` until it ends or shutdown begins (spawn the result).
    pub fn until<F: Future<Output = ()>>(&self, task: F) -> impl Future<Output = ()> + use<F> {
        let this = self.clone();
        async move {
            tokio::select! {
                () = task => {}
                () = this.triggered() => {}
            }
        }
    }
}
