//! `backroom-payment`: customers' cards (payment methods), payment intents
//! with Stripe's state machine, refunds, and a double-entry ledger of every
//! money movement, through the processor `BACKROOM_PAYMENT_PROCESSOR` names
//! (built in: the simulator); and CheckoutService, the order saga across
//! the three services, served by the same process.
//!
//! Layout:
//! - [`api`]: the tonic `PaymentService`, the only place proto ⇄ domain
//!   conversions and `Error` → `Status` happen;
//! - [`domain`]: ids, values, cards, payment methods, the intent state
//!   machine, refunds, the ledger's rules, the `Error` enum;
//! - [`db`]: diesel schema, rows, repository functions per aggregate;
//! - [`processor`]: the `Processor` trait, the simulator (test cards) and
//!   [`processor::ProcessorChoice`] (`BACKROOM_PAYMENT_PROCESSOR`);
//! - [`checkout`]: `CheckoutService`, its saga and its tables;
//! - [`expiry`]: the authorization expiry sweeper;
//! - [`config`]: [`PaymentConfig`] and [`CheckoutConfig`];
//! - this module: the command line ([`Cli`]), [`Deps`], [`CheckoutDeps`],
//!   [`server`] and [`server_with_checkout`], and [`PaymentService`], what
//!   the shared service main runs.

pub mod api;
pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod expiry;
pub mod processor;

use std::sync::Arc;

use backroom_proto::{
    account::v1::account_service_client::AccountServiceClient,
    inventory::v1::inventory_service_client::InventoryServiceClient,
    payment::v1::{
        checkout_service_server::CheckoutServiceServer,
        payment_service_client::PaymentServiceClient, payment_service_server::PaymentServiceServer,
    },
};
use backroom_shared::{
    auth::{AuthLayer, ServiceCredentials, Verifier, audience},
    client::{ClientConfig, TracedChannel, channel},
    clock::{self, SharedClock},
    concurrency::ConcurrencyLimit,
    config::{AuthConfig, ServerConfig},
    db::Pool,
    errors::Domain,
    events::{Events, EventsConfig},
    idempotency,
    server::GrpcServer,
    service::{self, CommonConfig, Shutdown},
    store::Store,
};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tokio::net::TcpListener;

pub use backroom_shared::service::Command;
pub use config::{CheckoutConfig, PROCESSOR_REQUIRED, PaymentConfig};
pub use expiry::sweep_expired_authorizations;

use crate::{
    checkout::saga::{Downstream, Saga, SagaConfig},
    domain::card::FingerprintKey,
    processor::{Processor, ProcessorChoice},
};

/// The service's name, schema and role suffix.
pub const SERVICE: &str = "payment";
/// `ErrorInfo.domain` of every error.
pub const DOMAIN: Domain = "backroom.payment";
/// Default gRPC port.
pub const DEFAULT_PORT: u16 = 50053;
/// The service's migrations (run after the shared ones, in schema `payment`).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
/// RPCs callable without a token: none.
pub const PUBLIC_METHODS: [&str; 0] = [];

/// The `backroom-payment` command line: every flag also reads the
/// environment variable named in its help.
#[derive(Debug, clap::Parser)]
#[command(name = "backroom-payment", version, about = "Backroom payment service")]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server, database, telemetry and token settings.
    #[command(flatten)]
    pub common: CommonConfig,
    /// Payment-specific settings.
    #[command(flatten)]
    pub payment: PaymentConfig,
    /// Checkout's settings.
    #[command(flatten)]
    pub checkout: CheckoutConfig,
}

/// The payment service, as the shared service main runs it.
#[derive(Debug)]
pub struct PaymentService;

impl service::Service for PaymentService {
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

    /// Refuses before touching anything: which processor takes real cards
    /// is never left to a default, cards need their fingerprint key, and
    /// checkout needs its settings.
    fn preflight(cli: &Cli) -> anyhow::Result<()> {
        cli.payment.processor()?;
        cli.payment.fingerprint_key()?;
        cli.checkout.validate(&cli.payment, &cli.common.server)
    }

    async fn build(
        cli: &Cli,
        pool: Pool,
        listener: &TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<GrpcServer> {
        let deps = Deps {
            events: Events::new(pool.clone(), SERVICE, cli.common.events.clone()),
            ..Deps::new(&cli.common.auth, &cli.payment, pool, clock::system())?
        };
        // The saga calls this service's own API over loopback.
        let self_endpoint = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let checkout = CheckoutDeps::new(
            &cli.common.auth,
            &cli.payment,
            &cli.checkout,
            &cli.common.server,
            &deps,
            &self_endpoint,
            cli.checkout.saga(),
        )?;
        Ok(server_with_checkout(
            cli.common.server.clone(),
            deps,
            checkout,
            shutdown,
        ))
    }
}

/// Everything the payment API needs, built once.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The `payment` schema and the service clock.
    pub store: Store,
    /// Verifies bearer tokens (audience `backroom.payment`).
    pub verifier: Arc<Verifier>,
    /// The card processor.
    pub processor: Arc<dyn Processor>,
    /// Card fingerprint key.
    pub fingerprint_key: FingerprintKey,
    /// Lifetime of an uncaptured authorization.
    pub authorization_ttl: chrono::Duration,
    /// Sweeper period; `None`: no sweeper task.
    pub sweep_interval: Option<std::time::Duration>,
    /// Client id of this service's own principal
    /// (`BACKROOM_SERVICE_CLIENT_ID`): its service tokens are the checkout
    /// saga's, the only caller that acts on an order's payment. `None`: no
    /// one does.
    pub checkout_principal: Option<String>,
    /// The payment events' feed (and relay, when configured).
    pub events: Events,
}

impl Deps {
    /// Dependencies from configuration with an explicit verifier and
    /// processor (tests pass `Verifier::with_keys` and a shared simulator,
    /// whose book they read). The configuration must still name its
    /// processor.
    pub fn with(
        config: &PaymentConfig,
        pool: Pool,
        clock: SharedClock,
        verifier: Arc<Verifier>,
        processor: Arc<dyn Processor>,
    ) -> anyhow::Result<Self> {
        config.processor()?;
        anyhow::ensure!(
            config.authorization_ttl_secs > 0,
            "BACKROOM_AUTHORIZATION_TTL_SECS must be positive"
        );
        Ok(Self {
            events: Events::new(pool.clone(), SERVICE, EventsConfig::default()),
            store: Store::new(pool, clock, DOMAIN),
            verifier,
            processor,
            fingerprint_key: config.fingerprint_key()?,
            authorization_ttl: chrono::Duration::seconds(config.authorization_ttl_secs),
            sweep_interval: (config.authorization_sweep_interval_secs > 0)
                .then(|| std::time::Duration::from_secs(config.authorization_sweep_interval_secs)),
            checkout_principal: config.service_client_id.clone(),
        })
    }

    /// Production dependencies: tokens verified against the account
    /// service's JWKS and revocation list, the processor
    /// `BACKROOM_PAYMENT_PROCESSOR` names (refused without one; the
    /// simulator is announced with a loud warning).
    pub fn new(
        auth: &AuthConfig,
        config: &PaymentConfig,
        pool: Pool,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let choice = config.processor()?;
        if choice == ProcessorChoice::Simulator {
            tracing::warn!(
                processor = choice.name(),
                "PAYMENTS ARE SIMULATED: BACKROOM_PAYMENT_PROCESSOR=simulator approves any \
                 Luhn-valid card number and moves no money. Development and tests only; never \
                 serve real customers with it"
            );
        }
        let verifier = Verifier::for_service(
            auth,
            audience::PAYMENT,
            config.service_client_id.as_deref(),
            config.service_client_secret.as_ref(),
        )?;
        Self::with(config, pool, clock, verifier, choice.build())
    }

    /// The intent state machine at `now`.
    pub fn engine(&self, now: chrono::DateTime<chrono::Utc>) -> domain::intents::Engine {
        domain::intents::Engine {
            processor: Arc::clone(&self.processor),
            now,
            authorization_ttl: self.authorization_ttl,
        }
    }
}

/// The payment gRPC server: the service, the auth layer, a readiness probe
/// on the database, and the background tasks (request-id purge,
/// authorization expiry sweeper), which stop on `shutdown`.
pub fn server(config: ServerConfig, deps: Deps, shutdown: Shutdown) -> GrpcServer {
    let max = config.max_message_bytes;
    let pool = deps.store.pool().clone();
    tokio::spawn(shutdown.until(idempotency::purge_periodically(
        pool.clone(),
        deps.store.clock().clone(),
    )));
    if let Some(interval) = deps.sweep_interval {
        tokio::spawn(expiry::run_sweeper(
            deps.clone(),
            interval,
            shutdown.clone(),
        ));
    }
    let events = deps.events.clone();
    let server = GrpcServer::new(config)
        .with_layer(AuthLayer::new(
            Arc::clone(&deps.verifier),
            DOMAIN,
            &PUBLIC_METHODS,
        ))
        .with_health_probe(Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.is_healthy().await })
        }))
        .add_service(
            PaymentServiceServer::new(api::PaymentApi::new(deps))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
    events.serve(server, DOMAIN, &shutdown)
}

/// What the checkout saga needs beyond [`Deps`]: the other services, this
/// service's own gRPC API, its credentials as a service principal, and its
/// share of the server's concurrency.
#[derive(Debug, Clone)]
pub struct CheckoutDeps {
    /// The orchestrator.
    pub saga: Saga,
    /// This service's PaymentService, for reading the customer's card.
    pub payment: PaymentServiceClient<TracedChannel>,
    /// CheckoutService calls in flight before more are shed.
    pub concurrency_limit: usize,
}

impl CheckoutDeps {
    /// Builds the saga's clients: account at `auth.account_endpoint`,
    /// inventory at `checkout.inventory_endpoint`, and this service itself
    /// at `self_endpoint`, all with this service's client credentials;
    /// refuses a configuration checkout cannot serve with
    /// ([`CheckoutConfig::validate`]).
    pub fn new(
        auth: &AuthConfig,
        payment: &PaymentConfig,
        checkout: &CheckoutConfig,
        server: &ServerConfig,
        deps: &Deps,
        self_endpoint: &str,
        saga: SagaConfig,
    ) -> anyhow::Result<Self> {
        checkout.validate(payment, server)?;
        let (Some(client_id), Some(secret), Some(inventory)) = (
            &payment.service_client_id,
            &payment.service_client_secret,
            &checkout.inventory_endpoint,
        ) else {
            anyhow::bail!("checkout is not configured (validated above)");
        };
        let account = channel(&ClientConfig::new(auth.account_endpoint.clone()))?;
        let payment_client =
            PaymentServiceClient::new(channel(&ClientConfig::new(self_endpoint.to_owned()))?);
        let downstream = Downstream {
            account: AccountServiceClient::new(account.clone()),
            inventory: InventoryServiceClient::new(channel(&ClientConfig::new(inventory.clone()))?),
            payment: payment_client.clone(),
            credentials: Arc::new(ServiceCredentials::new(
                client_id.clone(),
                secret.clone(),
                account,
            )),
        };
        Ok(Self {
            saga: Saga::new(
                deps.store.clone(),
                downstream,
                SagaConfig {
                    // The margin must leave room to authorize at all.
                    authorization_margin: saga.authorization_margin.min(deps.authorization_ttl / 2),
                    ..saga
                },
            ),
            payment: payment_client,
            concurrency_limit: checkout.concurrency_limit(server)?,
        })
    }
}

/// [`server`] plus `CheckoutService` (behind its own concurrency limit, so
/// a burst of orders waiting for their sagas cannot take every slot the
/// sagas' own PaymentService calls need) and its recovery worker, which
/// stops on `shutdown`.
pub fn server_with_checkout(
    config: ServerConfig,
    deps: Deps,
    checkout: CheckoutDeps,
    shutdown: Shutdown,
) -> GrpcServer {
    let max = config.max_message_bytes;
    let api = checkout::api::CheckoutApi::new(
        checkout.saga.clone(),
        deps.store.clone(),
        checkout.payment,
        checkout.concurrency_limit,
    );
    tokio::spawn(checkout.saga.run_recovery(shutdown.clone()));
    server(config, deps, shutdown).add_service(ConcurrencyLimit::new(
        CheckoutServiceServer::new(api)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        checkout.concurrency_limit,
    ))
}
