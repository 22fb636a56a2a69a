//! `backroom-payment`: customers' cards (payment methods), payment intents
//! with Stripe's state machine, refunds, and a double-entry ledger of every
//! money movement, through the processor `BACKROOM_PAYMENT_PROCESSOR` names
//! (built in: the simulator).
//!
//! Layout:
//! - [`api`]: the tonic `PaymentService` impl, the only place proto ⇄ domain
//!   conversions and `Error` → `Status` happen;
//! - [`domain`]: values, card handling (PAN/CVC never stored or logged), the
//!   `Error` enum;
//! - [`intents`]: the payment-intent state machine;
//! - [`processor`]: the `Processor` trait, the simulator (test cards) and
//!   [`processor::ProcessorChoice`] (`BACKROOM_PAYMENT_PROCESSOR`);
//! - [`ledger`]: chart of accounts, postings, [`ledger::audit`];
//! - [`db`]: diesel schema, rows, repository functions;
//! - [`PaymentConfig`], [`Deps`], [`server`], [`sweep_expired_authorizations`]:
//!   how `main` and `backroom up` build and run it.
//!
//! - [`checkout`]: `CheckoutService`, the order saga across the three
//!   services, served by the same process.

pub mod api;
pub mod checkout;
pub mod db;
pub mod domain;
pub mod intents;
pub mod ledger;
pub mod processor;

use std::sync::Arc;

use backroom_proto::payment::v1::payment_service_server::PaymentServiceServer;
use backroom_shared::{
    auth::{AuthLayer, Verifier, audience},
    client::ClientConfig,
    clock::SharedClock,
    config::{AuthConfig, DbConfig, Secret, ServerConfig, TelemetryConfig},
    db::Pool,
    errors::Domain,
    idempotency,
    server::GrpcServer,
};
use chrono::{DateTime, Utc};
use diesel::Connection as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::{
    domain::{CancellationReason, Error, card::FingerprintKey},
    intents::Engine,
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
    /// Payment-specific settings.
    #[command(flatten)]
    pub payment: PaymentConfig,
}

/// Subcommands of `backroom-payment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending migrations to the `payment` schema, then exit.
    Migrate,
}

/// Payment-specific configuration.
///
/// Environment: `BACKROOM_PAYMENT_PROCESSOR` (required to serve, no
/// default: the card processor, today only `simulator`),
/// `BACKROOM_CARD_FINGERPRINT_KEY` (required to serve, ≥ 32 bytes: the
/// HMAC key of card fingerprints; changing it changes every new
/// fingerprint), `BACKROOM_AUTHORIZATION_TTL_SECS` (default 7 days),
/// `BACKROOM_AUTHORIZATION_SWEEP_INTERVAL_SECS` (default 60; 0 disables the
/// sweeper task), and, for the checkout saga: `BACKROOM_SERVICE_CLIENT_ID`
/// (also the principal allowed to act on orders' payments),
/// `BACKROOM_SERVICE_CLIENT_SECRET`, `BACKROOM_INVENTORY_ENDPOINT`,
/// `BACKROOM_CHECKOUT_LEASE_SECS` (default 30),
/// `BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS` (default 30).
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentConfig {
    /// The card processor: `simulator` is the only one built in (test cards,
    /// any other Luhn-valid number approved, no money moved). Required to
    /// serve, with no default: a deployment names its processor explicitly.
    #[arg(long, env = "BACKROOM_PAYMENT_PROCESSOR", value_enum)]
    pub payment_processor: Option<ProcessorChoice>,
    /// HMAC-SHA256 key of card fingerprints, at least 32 bytes. Required to
    /// serve; `migrate` does without it (its containers get the database URL
    /// only).
    #[arg(long, env = "BACKROOM_CARD_FINGERPRINT_KEY", hide_env_values = true)]
    pub card_fingerprint_key: Option<Secret>,
    /// How long an uncaptured authorization lives, seconds.
    #[arg(long, env = "BACKROOM_AUTHORIZATION_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub authorization_ttl_secs: i64,
    /// How often the expiry sweeper runs, seconds (0: never).
    #[arg(
        long,
        env = "BACKROOM_AUTHORIZATION_SWEEP_INTERVAL_SECS",
        default_value_t = 60
    )]
    pub authorization_sweep_interval_secs: u64,
    /// This service's client id at the account service (checkout).
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_ID")]
    pub service_client_id: Option<String>,
    /// Its secret (checkout).
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_SECRET", hide_env_values = true)]
    pub service_client_secret: Option<Secret>,
    /// The inventory service, `http://host:port` (checkout).
    #[arg(long, env = "BACKROOM_INVENTORY_ENDPOINT")]
    pub inventory_endpoint: Option<String>,
    /// How long a checkout worker's lease on an order lasts (seconds): after
    /// a crash, another worker resumes the order this long after the last
    /// renewal.
    #[arg(long, env = "BACKROOM_CHECKOUT_LEASE_SECS", default_value_t = 30)]
    pub checkout_lease_secs: i64,
    /// Rounds of a capture failing transiently after the pivot (backoff
    /// between rounds doubling from 0.4 s to 51.2 s; 30 rounds take about 20
    /// minutes) before the order goes to NEEDS_ATTENTION; at least 1.
    #[arg(
        long,
        env = "BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS",
        default_value_t = checkout::saga::DEFAULT_CAPTURE_MAX_ROUNDS
    )]
    pub checkout_capture_max_rounds: i32,
}

/// Why the payment service will not serve without a processor choice.
pub const PROCESSOR_REQUIRED: &str = "BACKROOM_PAYMENT_PROCESSOR (--payment-processor) is not set: \
name the card processor explicitly. The only one built in is `simulator`, which approves any \
Luhn-valid card number and moves no money (development and tests only); there is no default so \
that no deployment runs it by accident";

impl PaymentConfig {
    /// A config with an explicit `processor`, `card_fingerprint_key` and
    /// every other value at its default.
    pub fn new(processor: ProcessorChoice, card_fingerprint_key: impl Into<String>) -> Self {
        Self {
            payment_processor: Some(processor),
            card_fingerprint_key: Some(Secret::new(card_fingerprint_key)),
            authorization_ttl_secs: 7 * 24 * 3600,
            authorization_sweep_interval_secs: 60,
            service_client_id: None,
            service_client_secret: None,
            inventory_endpoint: None,
            checkout_lease_secs: 30,
            checkout_capture_max_rounds: checkout::saga::DEFAULT_CAPTURE_MAX_ROUNDS,
        }
    }

    /// The card fingerprint key; an error naming the variable when it is
    /// missing or too short.
    pub fn fingerprint_key(&self) -> anyhow::Result<FingerprintKey> {
        FingerprintKey::new(
            self.card_fingerprint_key.clone().ok_or_else(|| {
                anyhow::anyhow!("BACKROOM_CARD_FINGERPRINT_KEY is required to serve")
            })?,
        )
    }

    /// The processor chosen; an error naming the variable when there is
    /// none.
    pub fn processor(&self) -> anyhow::Result<ProcessorChoice> {
        self.payment_processor
            .ok_or_else(|| anyhow::anyhow!(PROCESSOR_REQUIRED))
    }
}

/// Everything the service needs, built once.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The pool of the `payment` schema.
    pub pool: Pool,
    /// Where "now" comes from.
    pub clock: SharedClock,
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
    /// one does (and checkout is not served).
    pub checkout_principal: Option<String>,
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
            pool,
            clock,
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
}

/// The payment gRPC server: the service, the auth layer, a readiness probe
/// on the database, and the background tasks (request-id purge,
/// authorization expiry sweeper).
pub fn server(config: ServerConfig, deps: Deps) -> GrpcServer {
    let max = config.max_message_bytes;
    let pool = deps.pool.clone();
    tokio::spawn(idempotency::purge_periodically(
        deps.pool.clone(),
        deps.clock.clone(),
    ));
    if let Some(interval) = deps.sweep_interval {
        tokio::spawn(run_sweeper(deps.clone(), interval));
    }
    GrpcServer::new(config)
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
        )
}

/// What the checkout saga needs beyond [`Deps`]: the other services, this
/// service's own gRPC API, and its credentials as a service principal.
#[derive(Debug, Clone)]
pub struct CheckoutDeps {
    /// The orchestrator.
    pub saga: checkout::saga::Saga,
    /// This service's PaymentService, for reading the customer's card.
    pub payment: backroom_proto::payment::v1::payment_service_client::PaymentServiceClient<
        backroom_shared::client::TracedChannel,
    >,
}

impl CheckoutDeps {
    /// Builds the saga's clients: account at `auth.account_endpoint`,
    /// inventory at `config.inventory_endpoint`, and this service itself at
    /// `self_endpoint`, all with this service's client credentials.
    pub fn new(
        auth: &AuthConfig,
        config: &PaymentConfig,
        deps: &Deps,
        self_endpoint: &str,
        saga: checkout::saga::SagaConfig,
    ) -> anyhow::Result<Self> {
        use backroom_proto::{
            account::v1::account_service_client::AccountServiceClient,
            inventory::v1::inventory_service_client::InventoryServiceClient,
            payment::v1::payment_service_client::PaymentServiceClient,
        };
        use backroom_shared::{auth::ServiceCredentials, client::channel};
        let (Some(client_id), Some(secret), Some(inventory)) = (
            &config.service_client_id,
            &config.service_client_secret,
            &config.inventory_endpoint,
        ) else {
            anyhow::bail!(
                "checkout needs BACKROOM_SERVICE_CLIENT_ID, BACKROOM_SERVICE_CLIENT_SECRET and BACKROOM_INVENTORY_ENDPOINT"
            );
        };
        let account = channel(&ClientConfig::new(auth.account_endpoint.clone()))?;
        let payment =
            PaymentServiceClient::new(channel(&ClientConfig::new(self_endpoint.to_owned()))?);
        let downstream = checkout::saga::Downstream {
            account: AccountServiceClient::new(account.clone()),
            inventory: InventoryServiceClient::new(channel(&ClientConfig::new(inventory.clone()))?),
            payment: payment.clone(),
            credentials: Arc::new(ServiceCredentials::new(
                client_id.clone(),
                secret.clone(),
                account,
            )),
        };
        Ok(Self {
            saga: checkout::saga::Saga::new(
                deps.pool.clone(),
                deps.clock.clone(),
                downstream,
                checkout::saga::SagaConfig {
                    // The margin must leave room to authorize at all.
                    authorization_margin: saga.authorization_margin.min(deps.authorization_ttl / 2),
                    ..saga
                },
            ),
            payment,
        })
    }
}

/// [`server`] plus `CheckoutService` and its recovery worker.
pub fn server_with_checkout(
    config: ServerConfig,
    deps: Deps,
    checkout: CheckoutDeps,
) -> GrpcServer {
    use backroom_proto::payment::v1::checkout_service_server::CheckoutServiceServer;
    let max = config.max_message_bytes;
    let api = checkout::api::CheckoutApi::new(
        checkout.saga.clone(),
        deps.pool.clone(),
        deps.clock.clone(),
        checkout.payment,
    );
    tokio::spawn(checkout.saga.run_recovery());
    server(config, deps).add_service(
        CheckoutServiceServer::new(api)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
}

/// How many expired authorizations one sweeper transaction handles.
const SWEEP_BATCH: i64 = 100;

/// Cancels every intent whose uncaptured authorization expired at `now`
/// (reason AUTHORIZATION_EXPIRED), voiding it at the processor and posting
/// the RELEASE journal. Safe on several replicas at once (rows are taken
/// `FOR UPDATE SKIP LOCKED`) and harmless to repeat. Returns how many it
/// canceled.
#[tracing::instrument(skip_all)]
pub async fn sweep_expired_authorizations(
    deps: &Deps,
    now: DateTime<Utc>,
) -> Result<usize, tonic::Status> {
    let mut total = 0;
    loop {
        let processor = Arc::clone(&deps.processor);
        let ttl = deps.authorization_ttl;
        let (canceled, full) = deps
            .pool
            .run(move |conn| {
                conn.transaction::<_, Error, _>(|conn| {
                    let engine = Engine {
                        processor: processor.as_ref(),
                        now,
                        authorization_ttl: ttl,
                    };
                    let expired = db::repo::lock_expired_authorizations(conn, now, SWEEP_BATCH)?;
                    let full = i64::try_from(expired.len()).unwrap_or(i64::MAX) >= SWEEP_BATCH;
                    let mut canceled = 0;
                    for intent in expired {
                        let name = domain::payment_intent_name(intent.id);
                        match engine.cancel(conn, intent, CancellationReason::AuthorizationExpired)
                        {
                            Ok(_) => canceled += 1,
                            // The processor is down: the next sweep retries.
                            Err(Error::ProcessorUnavailable { .. }) => {
                                tracing::warn!(payment_intent = %name, "void failed; will retry");
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    Ok((canceled, full))
                })
            })
            .await
            .map_err(api::status)?;
        total += canceled;
        if !full || canceled == 0 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(canceled = total, "expired authorizations canceled");
    }
    Ok(total)
}

async fn run_sweeper(deps: Deps, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = deps.clock.now();
        if let Err(err) = sweep_expired_authorizations(&deps, now).await {
            tracing::warn!(%err, "authorization sweep failed");
        }
    }
}
