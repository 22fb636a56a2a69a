//! The payment binary's own settings: [`PaymentConfig`] (cards, intents,
//! this service's principal) and [`CheckoutConfig`] (the saga and its
//! share of the server). Every flag also reads the environment variable
//! named below; `backroom-payment serve --help` documents them too.
//!
//! [`PaymentConfig`]: `BACKROOM_PAYMENT_PROCESSOR` (required to serve, no
//! default: the card processor, today only `simulator`),
//! `BACKROOM_CARD_FINGERPRINT_KEY` (required to serve, ≥ 32 bytes: the
//! HMAC key of card fingerprints; changing it changes every new
//! fingerprint), `BACKROOM_AUTHORIZATION_TTL_SECS` (default 7 days),
//! `BACKROOM_AUTHORIZATION_SWEEP_INTERVAL_SECS` (default 60; 0 disables the
//! sweeper task), `BACKROOM_SERVICE_CLIENT_ID` (also the principal allowed
//! to act on orders' payments) and `BACKROOM_SERVICE_CLIENT_SECRET`.
//!
//! [`CheckoutConfig`]: `BACKROOM_INVENTORY_ENDPOINT` (required to serve),
//! `BACKROOM_CHECKOUT_LEASE_SECS` (default 30),
//! `BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS` (default 30),
//! `BACKROOM_CHECKOUT_CONCURRENCY_LIMIT` (default a quarter of
//! `BACKROOM_CONCURRENCY_LIMIT`). The payment process always serves
//! CheckoutService: a missing or bad checkout setting is a start-up error,
//! never a server that quietly lacks it.

use backroom_shared::config::{Secret, ServerConfig};

use crate::{
    checkout::saga::{DEFAULT_CAPTURE_MAX_ROUNDS, SagaConfig},
    domain::card::FingerprintKey,
    processor::ProcessorChoice,
};

/// Payment-specific configuration; see the module docs.
#[derive(Debug, Clone, clap::Args)]
pub struct PaymentConfig {
    /// The card processor: `simulator` is the only one built in (test cards,
    /// any other Luhn-valid number approved, no money moved). Required to
    /// serve, with no default: a deployment names its processor explicitly.
    #[arg(long, env = "BACKROOM_PAYMENT_PROCESSOR", value_enum)]
    pub payment_processor: Option<ProcessorChoice>,
    /// HMAC-SHA256 key of card fingerprints, at least 32 bytes. Required to
    /// serve; `migrate` does without it.
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
    /// This service's client id at the account service: its verifier reads
    /// the revocation list with it, and its tokens are the checkout saga's.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_ID")]
    pub service_client_id: Option<String>,
    /// Its secret.
    #[arg(long, env = "BACKROOM_SERVICE_CLIENT_SECRET", hide_env_values = true)]
    pub service_client_secret: Option<Secret>,
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

/// Checkout's configuration; see the module docs.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckoutConfig {
    /// The inventory service, `http://host:port`. Required to serve.
    #[arg(long, env = "BACKROOM_INVENTORY_ENDPOINT")]
    pub inventory_endpoint: Option<String>,
    /// How long a checkout worker's lease on an order lasts (seconds, at
    /// least 1): after a crash, another worker resumes the order this long
    /// after the last renewal.
    #[arg(long, env = "BACKROOM_CHECKOUT_LEASE_SECS", default_value_t = 30)]
    pub checkout_lease_secs: i64,
    /// Rounds of a capture failing transiently after the pivot (backoff
    /// between rounds doubling from 0.4 s to 51.2 s; 30 rounds take about 20
    /// minutes) before the order goes to NEEDS_ATTENTION; at least 1.
    #[arg(
        long,
        env = "BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS",
        default_value_t = DEFAULT_CAPTURE_MAX_ROUNDS
    )]
    pub checkout_capture_max_rounds: i32,
    /// PlaceOrder, GetOrder and ListOrders calls in flight before more are
    /// shed with RESOURCE_EXHAUSTED OVERLOADED. A PlaceOrder waits up to
    /// 30 s for its saga, whose calls to PaymentService take slots of
    /// `BACKROOM_CONCURRENCY_LIMIT` too: 2 × this + 2 must not exceed it, so
    /// a burst of orders never starves PaymentService. Default: a quarter
    /// of `BACKROOM_CONCURRENCY_LIMIT`.
    #[arg(long, env = "BACKROOM_CHECKOUT_CONCURRENCY_LIMIT")]
    pub checkout_concurrency_limit: Option<usize>,
    /// Days after an order's last shipment during which its customer may
    /// ask to return shipped units (RequestReturn); at least 0.
    #[arg(
        long,
        env = "BACKROOM_RETURN_WINDOW_DAYS",
        default_value_t = crate::checkout::returns::DEFAULT_WINDOW_DAYS
    )]
    pub return_window_days: i64,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        Self {
            inventory_endpoint: None,
            checkout_lease_secs: 30,
            checkout_capture_max_rounds: DEFAULT_CAPTURE_MAX_ROUNDS,
            checkout_concurrency_limit: None,
            return_window_days: crate::checkout::returns::DEFAULT_WINDOW_DAYS,
        }
    }
}

impl CheckoutConfig {
    /// The configuration checkout needs to serve with `inventory` as its
    /// inventory endpoint, every other value at its default.
    pub fn new(inventory: impl Into<String>) -> Self {
        Self {
            inventory_endpoint: Some(inventory.into()),
            ..Self::default()
        }
    }

    /// Refuses a configuration checkout cannot serve with, naming the
    /// variable: the payment process never serves without CheckoutService.
    pub fn validate(&self, payment: &PaymentConfig, server: &ServerConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.inventory_endpoint.is_some(),
            "checkout needs BACKROOM_INVENTORY_ENDPOINT (the inventory service it reserves stock at)"
        );
        anyhow::ensure!(
            payment.service_client_id.is_some() && payment.service_client_secret.is_some(),
            "checkout needs BACKROOM_SERVICE_CLIENT_ID and BACKROOM_SERVICE_CLIENT_SECRET (the saga calls the other services as this principal)"
        );
        anyhow::ensure!(
            self.checkout_lease_secs >= 1,
            "BACKROOM_CHECKOUT_LEASE_SECS must be at least 1"
        );
        anyhow::ensure!(
            self.checkout_capture_max_rounds >= 1,
            "BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS must be at least 1"
        );
        anyhow::ensure!(
            (0..=3650).contains(&self.return_window_days),
            "BACKROOM_RETURN_WINDOW_DAYS must be 0–3650"
        );
        self.concurrency_limit(server).map(|_| ())
    }

    /// Checkout's concurrency limit within the server's; see
    /// [`Self::checkout_concurrency_limit`].
    pub fn concurrency_limit(&self, server: &ServerConfig) -> anyhow::Result<usize> {
        let total = server.concurrency_limit;
        let limit = self.checkout_concurrency_limit.unwrap_or(total / 4);
        anyhow::ensure!(
            limit >= 1 && limit.saturating_mul(2).saturating_add(2) <= total,
            "BACKROOM_CHECKOUT_CONCURRENCY_LIMIT is {limit} with BACKROOM_CONCURRENCY_LIMIT {total}: \
             it must be at least 1 and 2 × it + 2 at most BACKROOM_CONCURRENCY_LIMIT, so that \
             orders in flight and their sagas' calls leave PaymentService room"
        );
        Ok(limit)
    }

    /// The saga's settings from this configuration (the rest at their
    /// defaults).
    pub fn saga(&self) -> SagaConfig {
        SagaConfig {
            lease: chrono::Duration::seconds(self.checkout_lease_secs),
            capture_max_rounds: self.checkout_capture_max_rounds,
            return_window: chrono::Duration::days(self.return_window_days),
            ..SagaConfig::default()
        }
    }
}
