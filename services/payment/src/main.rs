//! `backroom-payment`: serve the payment service, or apply its migrations.
//! Thin on purpose: config → telemetry → serve.

use backroom_payment::{
    CheckoutDeps, Cli, Command, DEFAULT_PORT, Deps, MIGRATIONS, SERVICE,
    checkout::saga::SagaConfig, server, server_with_checkout,
};
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
        tracing::error!(error = format!("{err:#}"), "backroom-payment failed");
    }
    telemetry.shutdown();
    result
}

async fn migrate(config: &DbConfig) -> anyhow::Result<()> {
    db::migrate(config, SERVICE, MIGRATIONS).await?;
    Ok(())
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    // Refuse before touching anything: which processor takes real cards is
    // never left to a default, and cards need their fingerprint key.
    cli.payment.processor()?;
    cli.payment.fingerprint_key()?;
    if cli.db.run_migrations {
        migrate(&cli.db).await?;
    }
    let pool = Pool::new(&cli.db, SERVICE);
    let deps = Deps::new(&cli.auth, &cli.payment, pool, clock::system())?;
    let addr = cli.server.listen_addr_or(DEFAULT_PORT);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The saga calls this service's own API over loopback.
    let self_endpoint = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let grpc = match CheckoutDeps::new(
        &cli.auth,
        &cli.payment,
        &deps,
        &self_endpoint,
        SagaConfig {
            lease: chrono::Duration::seconds(cli.payment.checkout_lease_secs.max(1)),
            capture_max_rounds: cli.payment.checkout_capture_max_rounds.max(1),
            ..SagaConfig::default()
        },
    ) {
        Ok(checkout) => server_with_checkout(cli.server.clone(), deps, checkout),
        Err(err) => {
            tracing::warn!(error = %err, "CheckoutService is not served");
            server(cli.server.clone(), deps)
        }
    };
    grpc.serve(listener, shutdown_signal()).await
}
