//! `backroom-inventory`: serve the inventory service, or apply its
//! migrations. Thin on purpose: config → telemetry → serve.

use backroom_inventory::{Cli, Command, DEFAULT_PORT, Deps, MIGRATIONS, SERVICE, server, verifier};
use backroom_shared::{
    clock,
    config::DbConfig,
    db::{self, Pool},
    server::shutdown_signal,
    telemetry,
};
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(SERVICE, &cli.telemetry)?;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(&cli.db).await,
        Command::Serve => serve(&cli).await,
    };
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "backroom-inventory failed");
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
    let deps = Deps::new(
        &cli.inventory,
        pool,
        clock::system(),
        verifier(&cli.auth, &cli.inventory)?,
    );
    let shutdown = deps.shutdown.after(shutdown_signal());
    let addr = cli.server.listen_addr_or(DEFAULT_PORT);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    server(cli.server.clone(), deps)
        .serve(listener, shutdown)
        .await
}
