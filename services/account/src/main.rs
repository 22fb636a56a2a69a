//! `backroom-account`: serve the account service, or apply its migrations.
//! Thin on purpose: config → telemetry → serve.

use backroom_account::{
    AccountConfig, DEFAULT_PORT, Deps, MIGRATIONS, SERVICE, bootstrap_admin, server,
};
use backroom_shared::{
    clock,
    config::{AuthConfig, DbConfig, ServerConfig, TelemetryConfig},
    db::{self, Pool},
    server::shutdown_signal,
    telemetry,
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "backroom-account", version, about = "Backroom account service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    db: DbConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
    #[command(flatten)]
    auth: AuthConfig,
    #[command(flatten)]
    account: AccountConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending migrations to the `account` schema, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(SERVICE, &cli.telemetry)?;
    let result = match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Migrate => migrate(&cli.db).await,
        Command::Serve => serve(&cli).await,
    };
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "backroom-account failed");
    }
    telemetry.shutdown();
    result
}

async fn migrate(config: &DbConfig) -> anyhow::Result<()> {
    db::migrate(config, SERVICE, MIGRATIONS).await?;
    Ok(())
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    if cli.db.run_migrations {
        migrate(&cli.db).await?;
    }
    let pool = Pool::new(&cli.db, SERVICE);
    let deps = Deps::new(&cli.auth, &cli.account, pool, clock::system()).await?;
    bootstrap_admin(&deps, &cli.account).await?;
    let addr = cli.server.listen_addr_or(DEFAULT_PORT);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    server(cli.server.clone(), deps)
        .serve(listener, shutdown_signal())
        .await
}
