//! The checkout saga (see the module docs of [`super`] and checkout.proto).
//!
//! One call of [`Saga::drive`] takes an order's lease and runs its steps
//! until the order is terminal, a step must wait (a dependency is down: the
//! attempt is recorded with a backoff and the lease given up), or — in test
//! builds with the `fault-injection` feature — a planted crash stops it.
//!
//! Before the pivot (CommitReservation) every failure compensates: release
//! the reservation, cancel the payment intent, then FAILED with the reason.
//! Right before the pivot the saga re-reads the order's payment and commits
//! only against a live authorization of the whole total that is not about
//! to expire ([`SagaConfig::authorization_margin`]); otherwise the order
//! fails with AUTHORIZATION_LOST. From the pivot on, the saga only moves
//! forward: capture is retried with backoff while it fails transiently, for
//! at most [`SagaConfig::capture_max_rounds`] rounds; a capture the payment
//! service refuses definitively (the authorization is gone or expired), or
//! one still failing after those rounds, sends the order to NEEDS_ATTENTION:
//! terminal for the saga and the recovery worker, loudly logged, reported by
//! `backroom audit`, for an operator to resolve. Never an endless retry.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    common::v1::Money,
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{self as pb, payment_service_client::PaymentServiceClient},
};
use backroom_shared::{
    auth::{ServiceCredentials, audience},
    client::{TracedChannel, retry_idempotent},
    clock::SharedClock,
    db::Pool,
    errors::reason_of,
};
use chrono::{DateTime, Utc};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::{Code, Status};
use tracing::instrument;
use uuid::Uuid;

use super::repo::{self, LineRow, OrderChanges, OrderError, OrderRow};

/// An order's saga state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Checking account and address, quoting.
    Pending,
    /// Reserving stock.
    Reserving,
    /// Creating and confirming the payment intent.
    Authorizing,
    /// Committing the reservation: the pivot.
    Committing,
    /// Capturing the payment.
    Capturing,
    /// Done.
    Completed,
    /// Undoing what was done before the pivot.
    Compensating,
    /// Undone.
    Failed,
    /// Stock committed but the payment cannot be captured: waits for an
    /// operator (terminal for the saga).
    NeedsAttention,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Reserving => "RESERVING",
            State::Authorizing => "AUTHORIZING",
            State::Committing => "COMMITTING",
            State::Capturing => "CAPTURING",
            State::Completed => "COMPLETED",
            State::Compensating => "COMPENSATING",
            State::Failed => "FAILED",
            State::NeedsAttention => "NEEDS_ATTENTION",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "PENDING" => State::Pending,
            "RESERVING" => State::Reserving,
            "AUTHORIZING" => State::Authorizing,
            "COMMITTING" => State::Committing,
            "CAPTURING" => State::Capturing,
            "COMPLETED" => State::Completed,
            "COMPENSATING" => State::Compensating,
            "FAILED" => State::Failed,
            "NEEDS_ATTENTION" => State::NeedsAttention,
            _ => return None,
        })
    }

    /// COMPLETED, FAILED or NEEDS_ATTENTION: no saga worker moves it on.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Completed | State::Failed | State::NeedsAttention
        )
    }

    /// Whether the pivot has not happened yet (failures compensate).
    fn before_pivot(self) -> bool {
        matches!(
            self,
            State::Pending | State::Reserving | State::Authorizing | State::Committing
        )
    }

    /// The proto enum.
    pub fn to_proto(self) -> pb::OrderState {
        match self {
            State::Pending => pb::OrderState::Pending,
            State::Reserving => pb::OrderState::Reserving,
            State::Authorizing => pb::OrderState::Authorizing,
            State::Committing => pb::OrderState::Committing,
            State::Capturing => pb::OrderState::Capturing,
            State::Completed => pb::OrderState::Completed,
            State::Compensating => pb::OrderState::Compensating,
            State::Failed => pb::OrderState::Failed,
            State::NeedsAttention => pb::OrderState::NeedsAttention,
        }
    }
}

/// Why an order failed, machine-readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The failing step's ErrorInfo reason.
    pub reason: String,
    /// Safe to show to the customer.
    pub message: String,
    /// The failing step's ErrorInfo metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Failure {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// A business failure from a downstream status: its reason and metadata.
    fn from_status(status: &Status, fallback: &str) -> Self {
        use tonic_types::StatusExt as _;
        let details = status.get_error_details();
        let info = details.error_info();
        Self {
            reason: info.map_or_else(|| fallback.to_owned(), |i| i.reason.clone()),
            message: status.message().to_owned(),
            metadata: info
                .map(|i| {
                    i.metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How a step ended, when it did not advance the order.
#[derive(Debug)]
enum StepError {
    /// A definitive answer that fails the order (compensate).
    Business(Failure),
    /// After the pivot: the payment cannot be captured (NEEDS_ATTENTION).
    Attention(Failure),
    /// A dependency is down or overloaded: try again later.
    Transient(Status),
    /// Our own database failed: stop; the recovery worker tries again.
    Local(OrderError),
    /// A planted crash (test builds): stop right here, lease held.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    Crashed,
}

impl From<OrderError> for StepError {
    fn from(err: OrderError) -> Self {
        StepError::Local(err)
    }
}

/// Where a planted crash stops the saga.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Before the step of this state runs.
    Before(State),
    /// After this state's remote call succeeded, before the next state is
    /// stored.
    AfterCall(State),
}

/// Where one [`Saga::drive`] left the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driven {
    /// COMPLETED, FAILED or NEEDS_ATTENTION.
    Terminal,
    /// A step must wait for a retry (a dependency is down).
    Waiting,
    /// Another worker holds the lease.
    Elsewhere,
    /// A planted crash stopped this worker (test builds).
    Crashed,
}

/// The clients the saga calls.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The account service.
    pub account: AccountServiceClient<TracedChannel>,
    /// The inventory service.
    pub inventory: InventoryServiceClient<TracedChannel>,
    /// This service's PaymentService, through its gRPC API.
    pub payment: PaymentServiceClient<TracedChannel>,
    /// This service's own credentials (role service).
    pub credentials: Arc<ServiceCredentials>,
}

/// The saga's knobs.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// TTL of the stock reservation.
    pub reservation_ttl: Duration,
    /// How long a worker's lease lasts without renewal.
    pub lease: chrono::Duration,
    /// Attempts of one remote call before the step counts as failed once.
    pub call_attempts: usize,
    /// Failed rounds of a step before the pivot before the order fails with
    /// DEPENDENCY_UNAVAILABLE.
    pub max_rounds: i32,
    /// Rounds of a capture failing transiently (each `call_attempts` calls,
    /// backoff between rounds doubling from 0.4 s to 51.2 s) before the order
    /// goes to NEEDS_ATTENTION with CAPTURE_RETRIES_EXHAUSTED
    /// (`BACKROOM_CHECKOUT_CAPTURE_MAX_ROUNDS`).
    pub capture_max_rounds: i32,
    /// How often the recovery worker scans for due orders.
    pub recovery_interval: Duration,
    /// Longest PlaceOrder waits for a terminal state.
    pub place_order_wait: Duration,
    /// Stock is committed only against an authorization that stays valid at
    /// least this much longer (time to commit and capture). Capped at half
    /// the authorization lifetime by [`crate::CheckoutDeps::new`].
    pub authorization_margin: chrono::Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(15 * 60),
            lease: chrono::Duration::seconds(30),
            call_attempts: 3,
            max_rounds: 5,
            capture_max_rounds: DEFAULT_CAPTURE_MAX_ROUNDS,
            recovery_interval: Duration::from_secs(1),
            place_order_wait: Duration::from_secs(30),
            authorization_margin: chrono::Duration::minutes(10),
        }
    }
}

/// Default of [`SagaConfig::capture_max_rounds`]: 30 rounds, the backoff
/// between them doubling from 0.4 s to 51.2 s, keep trying for about 20
/// minutes.
pub const DEFAULT_CAPTURE_MAX_ROUNDS: i32 = 30;

/// Whether a refused capture is definitive: the payment service looked at
/// the intent and said no (gone, expired, not capturable, unknown). Anything
/// else may pass and is retried, boundedly.
fn capture_refused(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::NotFound
            | Code::InvalidArgument
            | Code::OutOfRange
            | Code::AlreadyExists
    )
}

/// The order's failure when the payment service definitively refused to
/// capture `intent`: CAPTURE_REFUSED, with the refusal's reason (`refusal`)
/// and metadata.
fn capture_refusal(status: &Status, intent: String) -> Failure {
    let refusal = reason_of(status).unwrap_or_else(|| format!("{:?}", status.code()));
    let mut failure = Failure::from_status(status, &refusal);
    failure.metadata.insert("refusal".to_owned(), refusal);
    failure.metadata.insert("payment_intent".to_owned(), intent);
    failure.reason = "CAPTURE_REFUSED".to_owned();
    failure.message = format!("the payment cannot be captured: {}", status.message());
    failure
}

/// The orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Saga {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    clock: SharedClock,
    downstream: Downstream,
    config: SagaConfig,
    /// This worker's lease identity.
    worker: Uuid,
    #[cfg(feature = "fault-injection")]
    fault: std::sync::Mutex<Option<Fault>>,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("worker", &self.inner.worker)
            .finish_non_exhaustive()
    }
}

/// A request id derived from the order and the step: stable across retries
/// and crashes, so every downstream effect happens once.
pub fn step_request_id(order: Uuid, step: &str) -> String {
    let digest = Sha256::digest([order.as_bytes().as_slice(), step.as_bytes()].concat());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn money(currency: &str, amount_minor: i64) -> Money {
    Money {
        currency_code: currency.to_owned(),
        amount_minor,
    }
}

/// Codes that mean the call did not get a definitive answer.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
    ) || reason_of(status).as_deref() == Some("PROCESSOR_ERROR")
}

impl Saga {
    /// A saga worker.
    pub fn new(pool: Pool, clock: SharedClock, downstream: Downstream, config: SagaConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                clock,
                downstream,
                config,
                worker: Uuid::now_v7(),
                #[cfg(feature = "fault-injection")]
                fault: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The saga's config.
    pub fn config(&self) -> &SagaConfig {
        &self.inner.config
    }

    /// Plants a crash: the next drive stops at `fault`, keeping its lease,
    /// as if the process had died there.
    #[cfg(feature = "fault-injection")]
    pub fn plant_fault(&self, fault: Fault) {
        *self.inner.fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
    }

    #[cfg(feature = "fault-injection")]
    fn fault(&self, point: Fault) -> Result<(), StepError> {
        let mut planted = self.inner.fault.lock().unwrap_or_else(|e| e.into_inner());
        if *planted == Some(point) {
            *planted = None;
            tracing::warn!(?point, "planted fault: the saga stops here");
            return Err(StepError::Crashed);
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    #[allow(clippy::unused_self)]
    fn fault_before(&self, _state: State) -> Result<(), StepError> {
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn fault_before(&self, state: State) -> Result<(), StepError> {
        self.fault(Fault::Before(state))
    }

    #[cfg(not(feature = "fault-injection"))]
    #[allow(clippy::unused_self)]
    fn fault_after_call(&self, _state: State) -> Result<(), StepError> {
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn fault_after_call(&self, state: State) -> Result<(), StepError> {
        self.fault(Fault::AfterCall(state))
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut diesel::PgConnection) -> Result<T, OrderError> + Send + 'static,
    ) -> Result<T, OrderError> {
        self.inner.pool.run(work).await
    }

    /// Drives the order until it is terminal or must wait; see the module
    /// docs. Errors only when our own database fails.
    #[instrument(skip(self), fields(worker = %self.inner.worker))]
    pub async fn drive(&self, order_id: Uuid) -> Result<Driven, OrderError> {
        let worker = self.inner.worker;
        loop {
            let order = self.db(move |conn| repo::load(conn, order_id)).await?;
            let Some(state) = State::parse(&order.state) else {
                tracing::error!(state = order.state, "unknown order state");
                return Ok(Driven::Waiting);
            };
            if state.is_terminal() {
                self.db(move |conn| repo::release_lease(conn, order_id, worker))
                    .await?;
                return Ok(Driven::Terminal);
            }
            let now = self.now();
            let until = now + self.inner.config.lease;
            if !self
                .db(move |conn| repo::acquire_lease(conn, order_id, worker, now, until))
                .await?
            {
                tracing::debug!("another worker drives this order");
                return Ok(Driven::Elsewhere);
            }
            let outcome = match self.fault_before(state) {
                Ok(()) => self.step(state, &order).await,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) => {}
                Err(StepError::Business(failure)) => {
                    self.begin_compensation(&order, state, failure).await?
                }
                Err(StepError::Attention(failure)) => {
                    self.needs_attention(&order, state, failure).await?
                }
                Err(StepError::Transient(status)) => {
                    let attempts = order.attempts + 1;
                    if state.before_pivot() && attempts >= self.inner.config.max_rounds {
                        let failure = Failure::new(
                            "DEPENDENCY_UNAVAILABLE",
                            format!("a service stayed unavailable: {}", status.message()),
                        );
                        self.begin_compensation(&order, state, failure).await?;
                        continue;
                    }
                    if state == State::Capturing && attempts >= self.inner.config.capture_max_rounds
                    {
                        let mut failure = Failure::new(
                            "CAPTURE_RETRIES_EXHAUSTED",
                            format!(
                                "the payment could not be captured in {attempts} rounds: {}",
                                status.message()
                            ),
                        );
                        failure.metadata.extend([
                            ("rounds".to_owned(), attempts.to_string()),
                            ("last_code".to_owned(), format!("{:?}", status.code())),
                            (
                                "last_reason".to_owned(),
                                reason_of(&status).unwrap_or_default(),
                            ),
                            (
                                "payment_intent".to_owned(),
                                order.payment_intent.clone().unwrap_or_default(),
                            ),
                        ]);
                        self.needs_attention(&order, state, failure).await?;
                        continue;
                    }
                    // Exponential backoff between rounds, capped at a minute.
                    let backoff = chrono::Duration::milliseconds(200_i64 << attempts.clamp(0, 8))
                        .min(chrono::Duration::minutes(1));
                    let now = self.now();
                    tracing::warn!(code = ?status.code(), status_message = status.message(), attempts, "saga step failed transiently; retrying later");
                    self.db(move |conn| {
                        repo::record_retry(conn, order_id, worker, attempts, now + backoff, now)
                    })
                    .await?;
                    return Ok(Driven::Waiting);
                }
                Err(StepError::Local(err)) => return Err(err),
                Err(StepError::Crashed) => return Ok(Driven::Crashed),
            }
        }
    }

    async fn begin_compensation(
        &self,
        order: &OrderRow,
        state: State,
        failure: Failure,
    ) -> Result<(), OrderError> {
        tracing::info!(
            reason = failure.reason,
            from = state.as_str(),
            "order failed; compensating"
        );
        let changes = OrderChanges {
            failure_reason: Some(failure.reason),
            failure_message: Some(failure.message),
            failure_metadata: Some(
                serde_json::to_string(&failure.metadata).unwrap_or_else(|_| "{}".into()),
            ),
            failed_at_state: Some(state.as_str().to_owned()),
            ..OrderChanges::default()
        };
        self.transition(order.id, state, State::Compensating, changes, Vec::new())
            .await
    }

    /// After the pivot, when the payment cannot be captured: the order stops
    /// in NEEDS_ATTENTION with why, and says so as loudly as a log can.
    async fn needs_attention(
        &self,
        order: &OrderRow,
        state: State,
        failure: Failure,
    ) -> Result<(), OrderError> {
        tracing::error!(
            order = %order.id,
            payment_intent = order.payment_intent.as_deref().unwrap_or_default(),
            reason = failure.reason,
            detail = failure.message,
            from = state.as_str(),
            "ORDER NEEDS ATTENTION: its stock is committed but its payment cannot be captured; \
             the saga stops here and an operator must resolve it"
        );
        let changes = OrderChanges {
            failure_reason: Some(failure.reason),
            failure_message: Some(failure.message),
            failure_metadata: Some(
                serde_json::to_string(&failure.metadata).unwrap_or_else(|_| "{}".into()),
            ),
            failed_at_state: Some(state.as_str().to_owned()),
            ..OrderChanges::default()
        };
        self.transition(order.id, state, State::NeedsAttention, changes, Vec::new())
            .await
    }

    async fn transition(
        &self,
        order_id: Uuid,
        from: State,
        to: State,
        changes: OrderChanges,
        priced_lines: Vec<LineRow>,
    ) -> Result<(), OrderError> {
        let worker = self.inner.worker;
        let now = self.now();
        let moved = self
            .db(move |conn| {
                repo::advance(
                    conn,
                    order_id,
                    worker,
                    from.as_str(),
                    to.as_str(),
                    &changes,
                    &priced_lines,
                    now,
                )
            })
            .await?;
        if moved {
            tracing::info!(from = from.as_str(), to = to.as_str(), "order advanced");
        } else {
            tracing::warn!(
                from = from.as_str(),
                to = to.as_str(),
                "order moved on elsewhere"
            );
        }
        Ok(())
    }

    async fn step(&self, state: State, order: &OrderRow) -> Result<(), StepError> {
        match state {
            State::Pending => self.check_and_quote(order).await,
            State::Reserving => self.reserve(order).await,
            State::Authorizing => self.authorize(order).await,
            State::Committing => self.commit(order).await,
            State::Capturing => self.capture(order).await,
            State::Compensating => self.compensate(order).await,
            State::Completed | State::Failed | State::NeedsAttention => Ok(()),
        }
    }

    /// A request with the service's token for `audience`.
    async fn authorized<T>(&self, audience: &str, message: T) -> Result<tonic::Request<T>, Status> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(10));
        self.inner
            .downstream
            .credentials
            .authorize(audience, request)
            .await
    }

    /// Runs an idempotent remote call with bounded retries; transient
    /// failures left over become [`StepError::Transient`], definitive ones are
    /// returned for the step to judge.
    async fn call<T, F, Fut>(&self, call: F) -> Result<Result<T, Status>, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        match retry_idempotent(self.inner.config.call_attempts, call).await {
            Ok(value) => Ok(Ok(value)),
            Err(status) if is_transient(&status) => Err(StepError::Transient(status)),
            Err(status) => Ok(Err(status)),
        }
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn check_and_quote(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        let customer = format!("accounts/{}", order.customer_id);
        let account = self
            .call(|| {
                let mut client = downstream.account.clone();
                let name = customer.clone();
                async move {
                    let request = self
                        .authorized(audience::ACCOUNT, account_pb::GetAccountRequest { name })
                        .await?;
                    client
                        .get_account(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
            .map_err(|status| {
                StepError::Business(Failure::from_status(&status, "ACCOUNT_NOT_FOUND"))
            })?;
        if account.state != account_pb::AccountState::Active as i32 {
            return Err(StepError::Business(Failure::new(
                "ACCOUNT_DISABLED",
                "the account is disabled",
            )));
        }
        let address = self
            .call(|| {
                let mut client = downstream.account.clone();
                let name = order.shipping_address.clone();
                async move {
                    let request = self
                        .authorized(audience::ACCOUNT, account_pb::GetAddressRequest { name })
                        .await?;
                    client
                        .get_address(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
            .map_err(|status| {
                StepError::Business(Failure::from_status(&status, "ADDRESS_NOT_FOUND"))
            })?;
        let lines = self
            .db({
                let id = order.id;
                move |conn| repo::lines(conn, id)
            })
            .await?;
        let quote = self
            .call(|| {
                let mut client = downstream.inventory.clone();
                let message = inventory_pb::QuoteOrderRequest {
                    lines: lines
                        .iter()
                        .map(|l| inventory_pb::LineItem {
                            sku: l.sku.clone(),
                            quantity: l.quantity,
                        })
                        .collect(),
                    destination_country_code: address.country_code.clone(),
                    destination_postal_code: address.postal_code.clone(),
                    currency_code: order.currency_code.clone(),
                };
                async move {
                    let request = self.authorized(audience::INVENTORY, message).await?;
                    client
                        .quote_order(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
            .map_err(|status| StepError::Business(Failure::from_status(&status, "QUOTE_FAILED")))?;
        self.fault_after_call(State::Pending)?;
        let amount = |m: &Option<Money>| m.as_ref().map(|m| m.amount_minor);
        let priced: Vec<LineRow> = lines
            .iter()
            .map(|line| {
                let quoted = quote.lines.iter().find(|q| q.sku == line.sku);
                LineRow {
                    display_name: quoted.map(|q| q.display_name.clone()).unwrap_or_default(),
                    unit_price_minor: quoted.and_then(|q| amount(&q.unit_price)),
                    line_total_minor: quoted.and_then(|q| amount(&q.line_total)),
                    ..line.clone()
                }
            })
            .collect();
        let changes = OrderChanges {
            shipping_address_snapshot: Some(address.encode_to_vec()),
            subtotal_minor: amount(&quote.subtotal),
            shipping_minor: amount(&quote.shipping),
            total_minor: amount(&quote.total),
            shipping_zone: Some(quote.shipping_zone.clone()),
            ..OrderChanges::default()
        };
        self.transition(order.id, State::Pending, State::Reserving, changes, priced)
            .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn reserve(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        let lines = self
            .db({
                let id = order.id;
                move |conn| repo::lines(conn, id)
            })
            .await?;
        let ttl =
            prost_types::Duration::try_from(self.inner.config.reservation_ttl).unwrap_or_default();
        let reservation = self
            .call(|| {
                let mut client = downstream.inventory.clone();
                let message = inventory_pb::ReserveStockRequest {
                    order_id: order.id.to_string(),
                    lines: lines
                        .iter()
                        .map(|l| inventory_pb::ReservationLine {
                            sku: l.sku.clone(),
                            quantity: l.quantity,
                            location: String::new(),
                        })
                        .collect(),
                    ttl: Some(ttl),
                    request_id: step_request_id(order.id, "reserve"),
                };
                async move {
                    let request = self.authorized(audience::INVENTORY, message).await?;
                    client
                        .reserve_stock(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
            .map_err(|status| {
                StepError::Business(Failure::from_status(&status, "INSUFFICIENT_STOCK"))
            })?;
        self.fault_after_call(State::Reserving)?;
        let changes = OrderChanges {
            reservation: Some(reservation.name),
            ..OrderChanges::default()
        };
        self.transition(
            order.id,
            State::Reserving,
            State::Authorizing,
            changes,
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn authorize(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        // The intent is created first and remembered, then confirmed: a
        // crash in between leaves an intent we know about and can cancel.
        let intent = match &order.payment_intent {
            Some(intent) => intent.clone(),
            None => {
                let total = order.total_minor.unwrap_or(0);
                let created = self
                    .call(|| {
                        let mut client = downstream.payment.clone();
                        let message = pb::CreatePaymentIntentRequest {
                            customer: format!("accounts/{}", order.customer_id),
                            amount: Some(money(&order.currency_code, total)),
                            capture_method: pb::CaptureMethod::Manual as i32,
                            payment_method: order.payment_method.clone(),
                            confirm: false,
                            description: format!("order {}", order.id),
                            metadata: [("order".to_owned(), format!("orders/{}", order.id))].into(),
                            request_id: step_request_id(order.id, "create-intent"),
                            // The order's payment: only this saga may act on it.
                            order: format!("orders/{}", order.id),
                        };
                        async move {
                            let request = self.authorized(audience::PAYMENT, message).await?;
                            client
                                .create_payment_intent(request)
                                .await
                                .map(tonic::Response::into_inner)
                        }
                    })
                    .await?
                    .map_err(|status| {
                        StepError::Business(Failure::from_status(&status, "PAYMENT_FAILED"))
                    })?;
                let name = created.name.clone();
                let worker = self.inner.worker;
                let id = order.id;
                let now = self.now();
                let stored = name.clone();
                self.db(move |conn| {
                    repo::advance(
                        conn,
                        id,
                        worker,
                        State::Authorizing.as_str(),
                        State::Authorizing.as_str(),
                        &OrderChanges {
                            payment_intent: Some(stored),
                            ..OrderChanges::default()
                        },
                        &[],
                        now,
                    )
                })
                .await?;
                name
            }
        };
        let confirmed = self
            .call(|| {
                let mut client = downstream.payment.clone();
                let message = pb::ConfirmPaymentIntentRequest {
                    name: intent.clone(),
                    payment_method: String::new(),
                    request_id: step_request_id(order.id, "confirm"),
                };
                async move {
                    let request = self.authorized(audience::PAYMENT, message).await?;
                    client
                        .confirm_payment_intent(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?
            .map_err(|status| {
                StepError::Business(Failure::from_status(&status, "PAYMENT_FAILED"))
            })?;
        if confirmed.status != pb::PaymentIntentStatus::RequiresCapture as i32 {
            return Err(StepError::Business(Failure::new(
                "PAYMENT_FAILED",
                "the payment was not authorized",
            )));
        }
        self.fault_after_call(State::Authorizing)?;
        self.transition(
            order.id,
            State::Authorizing,
            State::Committing,
            OrderChanges::default(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// Right before the pivot: the order's payment, read again, must be a live
    /// authorization (REQUIRES_CAPTURE) of the whole total that does not
    /// expire within the margin. Anything else — voided, captured, partly
    /// capturable, expiring — fails the order (compensation releases the
    /// stock and cancels what is left): stock is never committed without a
    /// payment the saga can capture.
    async fn check_authorization(&self, order: &OrderRow) -> Result<(), StepError> {
        let lost = |cause: &str, status: &str, intent: &str| {
            tracing::warn!(
                cause,
                status,
                payment_intent = intent,
                "the order's authorization is gone before the pivot; failing the order"
            );
            StepError::Business(Failure {
                reason: "AUTHORIZATION_LOST".to_owned(),
                message: "the payment authorization is no longer valid; the order was not \
                          committed and nothing was charged"
                    .to_owned(),
                metadata: [
                    ("cause".to_owned(), cause.to_owned()),
                    ("status".to_owned(), status.to_owned()),
                    ("payment_intent".to_owned(), intent.to_owned()),
                ]
                .into(),
            })
        };
        let Some(name) = order.payment_intent.clone() else {
            return Err(lost("missing", "", ""));
        };
        let intent = match self.read_intent(&name).await? {
            Ok(intent) => intent,
            Err(status) => {
                return Err(lost(
                    "unreadable",
                    &reason_of(&status).unwrap_or_else(|| format!("{:?}", status.code())),
                    &name,
                ));
            }
        };
        let status = pb::PaymentIntentStatus::try_from(intent.status)
            .unwrap_or(pb::PaymentIntentStatus::Unspecified);
        let whole = Some(money(&order.currency_code, order.total_minor.unwrap_or(0)));
        let good_until = self.now() + self.inner.config.authorization_margin;
        let expires = intent
            .authorization_expire_time
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?));
        let cause = if status != pb::PaymentIntentStatus::RequiresCapture {
            "not_authorized"
        } else if intent.amount_capturable != whole {
            "amount"
        } else if expires.is_none_or(|expires| expires <= good_until) {
            "expiring"
        } else {
            return Ok(());
        };
        Err(lost(cause, status.as_str_name(), &name))
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn commit(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        self.check_authorization(order).await?;
        let name = order
            .reservation
            .clone()
            .unwrap_or_else(|| format!("reservations/{}", order.id));
        self.call(|| {
            let mut client = downstream.inventory.clone();
            let message = inventory_pb::CommitReservationRequest {
                name: name.clone(),
                request_id: step_request_id(order.id, "commit"),
            };
            async move {
                let request = self.authorized(audience::INVENTORY, message).await?;
                client
                    .commit_reservation(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await?
        .map_err(|status| {
            StepError::Business(Failure::from_status(&status, "RESERVATION_EXPIRED"))
        })?;
        self.fault_after_call(State::Committing)?;
        self.transition(
            order.id,
            State::Committing,
            State::Capturing,
            OrderChanges::default(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn capture(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        let Some(intent) = order.payment_intent.clone() else {
            return Err(StepError::Attention(Failure::new(
                "CAPTURE_REFUSED",
                "the order has no payment intent to capture",
            )));
        };
        let captured = self
            .call(|| {
                let mut client = downstream.payment.clone();
                let message = pb::CapturePaymentIntentRequest {
                    name: intent.clone(),
                    amount_to_capture: None,
                    request_id: step_request_id(order.id, "capture"),
                };
                async move {
                    let request = self.authorized(audience::PAYMENT, message).await?;
                    client
                        .capture_payment_intent(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        match captured {
            Ok(_) => {}
            // Definitive: unless the payment was captured after all (an
            // earlier capture whose answer and request id were lost), the
            // order needs attention now; retrying cannot help.
            Err(status) if capture_refused(&status) => {
                if self.captured(order, &intent).await? {
                    tracing::warn!("capture refused but the payment is captured: completing");
                } else {
                    return Err(StepError::Attention(capture_refusal(&status, intent)));
                }
            }
            // Refused for a reason that may pass (a token, a fault on our
            // side): retried like an outage, boundedly.
            Err(status) => {
                tracing::error!(code = ?status.code(), status_message = status.message(), "capture refused after the pivot; retrying");
                return Err(StepError::Transient(status));
            }
        }
        self.fault_after_call(State::Capturing)?;
        self.transition(
            order.id,
            State::Capturing,
            State::Completed,
            OrderChanges::default(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// The payment intent `name`, read through PaymentService with the
    /// service's token (transient failures: [`StepError::Transient`]).
    async fn read_intent(
        &self,
        name: &str,
    ) -> Result<Result<pb::PaymentIntent, Status>, StepError> {
        let downstream = &self.inner.downstream;
        self.call(|| {
            let mut client = downstream.payment.clone();
            let message = pb::GetPaymentIntentRequest {
                name: name.to_owned(),
            };
            async move {
                let request = self.authorized(audience::PAYMENT, message).await?;
                client
                    .get_payment_intent(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Whether the order's payment already holds its whole total, captured.
    async fn captured(&self, order: &OrderRow, intent: &str) -> Result<bool, StepError> {
        Ok(self.read_intent(intent).await?.is_ok_and(|paid| {
            paid.status == pb::PaymentIntentStatus::Succeeded as i32
                && paid.amount_received
                    == Some(money(&order.currency_code, order.total_minor.unwrap_or(0)))
        }))
    }

    #[instrument(skip_all, fields(order = %order.id))]
    async fn compensate(&self, order: &OrderRow) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        // A failure while still PENDING happened before any reservation was
        // asked for: there is nothing to release (and inventory may be the
        // very service that is down).
        let reserve_attempted = order.failed_at_state.as_deref() != Some(State::Pending.as_str());
        let reservation = order
            .reservation
            .clone()
            .unwrap_or_else(|| format!("reservations/{}", order.id));
        let released = if reserve_attempted {
            self.call(|| {
                let mut client = downstream.inventory.clone();
                let message = inventory_pb::ReleaseReservationRequest {
                    name: reservation.clone(),
                    request_id: step_request_id(order.id, "release"),
                };
                async move {
                    let request = self.authorized(audience::INVENTORY, message).await?;
                    client.release_reservation(request).await.map(|_| ())
                }
            })
            .await?
        } else {
            Ok(())
        };
        if let Err(status) = &released {
            match reason_of(status).as_deref() {
                // The commit went through after all (its answer was lost):
                // the pivot is behind us, so finish the order instead.
                Some("RESERVATION_COMMITTED") => {
                    tracing::warn!(
                        "reservation already committed: completing instead of compensating"
                    );
                    let (id, worker, now) = (order.id, self.inner.worker, self.now());
                    self.db(move |conn| repo::clear_failure(conn, id, worker, now))
                        .await?;
                    return Ok(());
                }
                // Never reserved, already expired or released: nothing held.
                _ if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {}
                _ => return Err(StepError::Transient(status.clone())),
            }
        }
        if let Some(intent) = order.payment_intent.clone() {
            let canceled = self
                .call(|| {
                    let mut client = downstream.payment.clone();
                    let message = pb::CancelPaymentIntentRequest {
                        name: intent.clone(),
                        cancellation_reason: pb::CancellationReason::OrderFailed as i32,
                        request_id: step_request_id(order.id, "cancel"),
                    };
                    async move {
                        let request = self.authorized(audience::PAYMENT, message).await?;
                        client
                            .cancel_payment_intent(request)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await?;
            if let Err(status) = canceled {
                // Already canceled is fine; anything else must be retried
                // (an authorization must never stay open).
                if status.code() != Code::FailedPrecondition {
                    return Err(StepError::Transient(status));
                }
                tracing::info!(
                    status_message = status.message(),
                    "payment intent not cancelable (already final)"
                );
            }
        }
        self.fault_after_call(State::Compensating)?;
        self.transition(
            order.id,
            State::Compensating,
            State::Failed,
            OrderChanges::default(),
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// One recovery pass: drives every due, unleased, unfinished order.
    /// Returns how many it picked up.
    pub async fn recover_due(&self) -> Result<usize, OrderError> {
        let now = self.now();
        let due = self.db(move |conn| repo::due_orders(conn, now, 50)).await?;
        for id in &due {
            if let Err(err) = self.drive(*id).await {
                tracing::warn!(order = %id, %err, "recovery could not drive the order");
            }
        }
        Ok(due.len())
    }

    /// Runs [`Self::recover_due`] forever, every `recovery_interval`.
    pub async fn run_recovery(self) {
        let mut tick = tokio::time::interval(self.inner.config.recovery_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.recover_due().await {
                Ok(0) => {}
                Ok(picked) => tracing::info!(picked, "recovery pass"),
                Err(err) => tracing::warn!(%err, "recovery pass failed"),
            }
        }
    }
}
