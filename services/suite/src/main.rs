//! `backroom`: the all-in-one launcher.
//!
//! `backroom up` runs every Backroom service in one process on 127.0.0.1
//! (account :50051, inventory :50052, payment :50053) against a throwaway
//! Postgres cluster started from the machine's PostgreSQL binaries, or against
//! the server named by `DATABASE_URL`. Each service gets its own schema and
//! two roles, exactly as in production: it migrates as the schema's owner
//! and serves as a runtime role that cannot change the schema. ctrl-c stops everything and removes the
//! throwaway cluster.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use backroom_account::{AccountConfig, Deps, domain::tokens::SigningKeys};
use backroom_shared::{
    clock,
    config::{AuthConfig, DbConfig, Secret, ServerConfig, TelemetryConfig},
    db::{self, Pool},
    local_postgres::PostgresCluster,
    server::{GrpcServer, shutdown_signal},
    service::Shutdown,
    telemetry,
};
use clap::{Parser, Subcommand};
use diesel::connection::SimpleConnection as _;

#[derive(Debug, Parser)]
#[command(
    name = "backroom",
    version,
    about = "Backroom: a commerce backend in three gRPC services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process against a throwaway (or the given) Postgres.
    Up(UpArgs),
    /// Audit a live Backroom database for broken invariants (stock, ledger,
    /// orders, sagas); exits 1 if any.
    Audit(AuditArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Admin URL of a Postgres server to use instead of a throwaway cluster.
    /// Each service's two roles and its schema are created in its database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Address the services listen on.
    #[arg(long, env = "BACKROOM_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the account service; inventory and payment take the next two.
    /// 0: each service gets a free port (printed at start).
    #[arg(long, env = "BACKROOM_BASE_PORT", default_value_t = 50051)]
    base_port: u16,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Admin URL of the database holding the account, inventory and payment schemas.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// An ACTIVE reservation may outlive its expiry by this many seconds.
    #[arg(long, default_value_t = 60)]
    grace_secs: u64,
    /// A saga unfinished for this many seconds counts as stuck.
    #[arg(long, default_value_t = 300)]
    stuck_secs: u64,
    /// With a JetStream relay configured: an event unpublished for this
    /// many seconds is a finding (unset: no relay, not checked).
    #[arg(long)]
    relay_lag_secs: Option<u64>,
}

async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let tolerances = backroom::audit::Tolerances {
        grace: std::time::Duration::from_secs(args.grace_secs),
        stuck_after: std::time::Duration::from_secs(args.stuck_secs),
        relay_lag: args.relay_lag_secs.map(std::time::Duration::from_secs),
    };
    let findings = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&args.database_url)?;
        backroom::audit::audit(&mut conn, tolerances)
    })
    .await??;
    for name in backroom::audit::check_names() {
        eprintln!("checked: {name}");
    }
    if findings.is_empty() {
        eprintln!("all invariants hold");
        return Ok(());
    }
    for finding in &findings {
        println!("VIOLATION {finding}");
    }
    anyhow::bail!("{} invariant violation(s)", findings.len())
}

/// One service of the suite: its name (= schema) and port offset.
#[derive(Debug, Clone, Copy)]
struct Slot {
    service: &'static str,
    port_offset: u16,
}

const SLOTS: [Slot; 3] = [
    Slot {
        service: "account",
        port_offset: 0,
    },
    Slot {
        service: "inventory",
        port_offset: 1,
    },
    Slot {
        service: "payment",
        port_offset: 2,
    },
];

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("backroom: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Audit(args) => audit(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("backroom: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init("backroom", &args.telemetry)?;

    // The cluster (if any) lives until the end of this function: dropping it
    // stops Postgres and removes its directory.
    let (admin_url, cluster) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            eprintln!("starting a throwaway Postgres cluster…");
            let cluster = tokio::task::spawn_blocking(PostgresCluster::start)
                .await?
                .context("no DATABASE_URL given and no throwaway cluster could be started")?;
            let url = cluster.url("backroom");
            let admin = cluster.url("postgres");
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                db::connect(&admin)?.batch_execute("CREATE DATABASE backroom")?;
                Ok(())
            })
            .await??;
            (url, Some(cluster))
        }
    };

    // Provision every service's two roles and its schema, exactly as
    // deployed: each serves as its runtime role and migrates as its
    // migrator. With an external server the roles get fresh random
    // passwords each run; the throwaway cluster trusts loopback connections.
    let external = cluster.is_none();
    let dev = DevSecrets::generate();
    // Bind every listener first: services find each other by address.
    let mut bound = Vec::new();
    for slot in SLOTS {
        let admin_url = admin_url.clone();
        let passwords = if external {
            db::RolePasswords::random()
        } else {
            db::RolePasswords::default()
        };
        let db_config = tokio::task::spawn_blocking(move || {
            db::provision(&admin_url, slot.service, &passwords)
        })
        .await??;
        let port = match args.base_port {
            0 => 0,
            base => base
                .checked_add(slot.port_offset)
                .context("BACKROOM_BASE_PORT too high")?,
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, port))
            .await
            .with_context(|| format!("cannot listen on port {port} for {}", slot.service))?;
        let addr = listener.local_addr()?;
        bound.push((slot, addr, listener, db_config));
    }
    let endpoint = |service: &str| {
        bound
            .iter()
            .find(|(slot, ..)| slot.service == service)
            .map(|(_, addr, ..)| format!("http://{addr}"))
            .unwrap_or_default()
    };
    let auth = AuthConfig {
        account_endpoint: endpoint(backroom_account::SERVICE),
        ..AuthConfig::default()
    };
    let endpoints = Endpoints {
        inventory: endpoint(backroom_inventory::SERVICE),
        payment: endpoint(backroom_payment::SERVICE),
    };
    let mut servers = Vec::new();
    for (slot, addr, listener, db) in bound {
        let built = build(slot, db, &dev, &auth, &endpoints).await?;
        servers.push((slot, addr, listener, built));
    }

    let account = servers
        .first()
        .map(|(_, addr, _, _)| *addr)
        .context("no services")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    eprintln!("\nBackroom is up:");
    for (slot, addr, listener, built) in servers {
        eprintln!("  {:<10} {addr}", slot.service);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let Built { server, on_stop } = built;
            let result = server
                .serve(listener, async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                    if let Some(on_stop) = on_stop {
                        on_stop();
                    }
                })
                .await;
            (slot.service, result)
        });
    }
    let (email, password) = (&dev.admin_email, &dev.admin_password);
    eprintln!("\nBootstrap admin: {email} / {password}");
    eprintln!("\nTry:");
    eprintln!("  grpcurl -plaintext {account} list");
    eprintln!(
        "  grpcurl -plaintext -d '{{\"service\":\"\"}}' {account} grpc.health.v1.Health/Check"
    );
    eprintln!(
        "  grpcurl -plaintext -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}' {account} backroom.account.v1.AccountService/Login"
    );
    eprintln!(
        "\nctrl-c stops everything{}.",
        if external {
            ""
        } else {
            " and removes the throwaway cluster"
        }
    );

    tokio::select! {
        () = shutdown_signal() => {}
        Some(joined) = tasks.join_next() => {
            // A server stopped on its own: report it and stop the rest.
            let (service, result) = joined?;
            tracing::error!(service, ?result, "server stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        let (service, result) = joined?;
        if let Err(err) = result {
            eprintln!("{service}: {err:#}");
        }
    }
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
        eprintln!("throwaway cluster removed");
    }
    telemetry.shutdown();
    Ok(())
}

/// Development credentials generated for one `backroom up` run and shared
/// by the services in this process (in Kubernetes they come from Secrets).
struct DevSecrets {
    signing_keys_pem: String,
    admin_email: String,
    admin_password: String,
    /// The payment service's client secret (its saga calls the others).
    payment_client_secret: String,
    /// The inventory service's client secret (its verifier reads the
    /// revocation list).
    inventory_client_secret: String,
    /// `client_id:secret` pairs of the service principals.
    service_clients: String,
    /// Key of the card fingerprints.
    card_fingerprint_key: String,
}

impl DevSecrets {
    fn generate() -> Self {
        // Fixed by the environment when a tool (the benchmark) needs to act
        // as the payment service; random otherwise.
        let payment_client_secret =
            std::env::var("BACKROOM_PAYMENT_CLIENT_SECRET").unwrap_or_else(|_| random_secret());
        let inventory_client_secret = random_secret();
        Self {
            signing_keys_pem: std::env::var("BACKROOM_JWT_SIGNING_KEYS")
                .unwrap_or_else(|_| SigningKeys::generate_pem()),
            admin_email: std::env::var("BACKROOM_BOOTSTRAP_ADMIN_EMAIL")
                .unwrap_or_else(|_| "admin@backroom.local".into()),
            admin_password: std::env::var("BACKROOM_BOOTSTRAP_ADMIN_PASSWORD")
                .unwrap_or_else(|_| random_secret()),
            service_clients: format!(
                "inventory:{inventory_client_secret},payment:{payment_client_secret}"
            ),
            payment_client_secret,
            inventory_client_secret,
            card_fingerprint_key: format!("{}{}", random_secret(), random_secret()),
        }
    }
}

/// 32 hex characters (128 random bits): as long as a client secret must be.
fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The audiences of the service principals `backroom up` runs (the same as
/// the Kubernetes base config).
const SERVICE_CLIENT_AUDIENCES: &str =
    "payment=backroom.account|backroom.inventory|backroom.payment,inventory=backroom.account";

/// A service ready to serve, and what to tell when it stops.
struct Built {
    server: GrpcServer,
    /// Ends open streams and background tasks (inventory's watchers and
    /// sweeper, payment's sweeper, purge and saga recovery) when shutdown
    /// begins.
    on_stop: Option<Box<dyn FnOnce() + Send>>,
}

/// Builds the server of one slot.
async fn build(
    slot: Slot,
    db: DbConfig,
    dev: &DevSecrets,
    auth: &AuthConfig,
    endpoints: &Endpoints,
) -> anyhow::Result<Built> {
    let config = ServerConfig::default();
    match slot.service {
        backroom_account::SERVICE => {
            db::migrate(&db, backroom_account::SERVICE, backroom_account::MIGRATIONS).await?;
            let mut account = AccountConfig::with_keys(dev.signing_keys_pem.clone());
            account.bootstrap_admin_email = Some(dev.admin_email.clone());
            account.bootstrap_admin_password = Some(Secret::new(dev.admin_password.clone()));
            account.service_clients = Some(Secret::new(dev.service_clients.clone()));
            account.service_client_audiences = Some(SERVICE_CLIENT_AUDIENCES.to_owned());
            let pool = Pool::new(&db, backroom_account::SERVICE);
            let deps = Deps::new(auth, &account, pool, clock::system()).await?;
            backroom_account::bootstrap_admin(&deps, &account).await?;
            let shutdown = deps.shutdown.clone();
            Ok(Built {
                server: backroom_account::server(config, deps),
                on_stop: Some(Box::new(move || shutdown.trigger())),
            })
        }
        backroom_inventory::SERVICE => {
            db::migrate(
                &db,
                backroom_inventory::SERVICE,
                backroom_inventory::MIGRATIONS,
            )
            .await?;
            let pool = Pool::new(&db, backroom_inventory::SERVICE);
            // Tokens are verified against the account service's JWKS, as in
            // production.
            let inventory = backroom_inventory::InventoryConfig {
                service_client_id: Some(backroom_inventory::SERVICE.to_owned()),
                service_client_secret: Some(Secret::new(dev.inventory_client_secret.clone())),
                ..backroom_inventory::InventoryConfig::default()
            };
            let verifier = backroom_inventory::verifier(auth, &inventory)?;
            let deps = backroom_inventory::Deps::new(&inventory, pool, clock::system(), verifier);
            let shutdown = deps.shutdown.clone();
            Ok(Built {
                server: backroom_inventory::server(config, deps),
                on_stop: Some(Box::new(move || shutdown.trigger())),
            })
        }
        backroom_payment::SERVICE => {
            db::migrate(&db, backroom_payment::SERVICE, backroom_payment::MIGRATIONS).await?;
            let pool = Pool::new(&db, backroom_payment::SERVICE);
            // `backroom up` is the local development stack: the simulator,
            // chosen explicitly (and announced with a loud warning).
            let mut payment = backroom_payment::PaymentConfig::new(
                backroom_payment::processor::ProcessorChoice::Simulator,
                dev.card_fingerprint_key.clone(),
            );
            payment.service_client_id = Some(backroom_payment::SERVICE.to_owned());
            payment.service_client_secret = Some(Secret::new(dev.payment_client_secret.clone()));
            let checkout = backroom_payment::CheckoutConfig::new(endpoints.inventory.clone());
            let deps = backroom_payment::Deps::new(auth, &payment, pool, clock::system())?;
            let checkout_deps = backroom_payment::CheckoutDeps::new(
                auth,
                &payment,
                &checkout,
                &config,
                &deps,
                &endpoints.payment,
                checkout.saga(),
            )?;
            let shutdown = Shutdown::default();
            Ok(Built {
                server: backroom_payment::server_with_checkout(
                    config,
                    deps,
                    checkout_deps,
                    shutdown.clone(),
                ),
                on_stop: Some(Box::new(move || shutdown.trigger())),
            })
        }
        other => anyhow::bail!("unknown service {other}"),
    }
}

/// Where each service of this process listens.
#[derive(Debug, Clone)]
struct Endpoints {
    inventory: String,
    payment: String,
}
