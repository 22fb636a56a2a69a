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
//!
//! Layout: this module (the orchestrator: leases, the drive loop, state
//! transitions, planted faults), `state` (states, failures, how a step
//! ends), `remote` (the one way the saga calls another service: with its
//! service token, a derived request id and bounded retries), `steps` (one
//! function per forward step), `compensation` (undoing before the pivot,
//! NEEDS_ATTENTION after it), `recovery` (the worker that resumes what a
//! crash left half-done).

mod cancellations;
mod compensation;
mod flows;
mod recovery;
mod refunds;
mod remote;
mod returns;
mod shipments;
mod state;
mod steps;

/// A shipment, cancellation, return or refund left half-way this long (a
/// crash, an outage, a caller who gave up) is the recovery worker's to
/// finish.
const PENDING_GRACE: chrono::Duration = chrono::Duration::seconds(10);

/// Most pending shipments (and, separately, cancellations, returns and
/// refunds) one recovery pass picks up.
const PENDING_BATCH: i64 = 50;

use std::{sync::Arc, time::Duration};

use backroom_proto::{
    account::v1::account_service_client::AccountServiceClient,
    inventory::v1::inventory_service_client::InventoryServiceClient,
    payment::v1::payment_service_client::PaymentServiceClient,
};
use backroom_shared::{
    auth::ServiceCredentials, client::TracedChannel, errors::reason_of, store::Store,
};
use chrono::{DateTime, Utc};
use tracing::instrument;
use uuid::Uuid;

pub use remote::step_request_id;
use state::StepError;
pub use state::{Failure, State};

use super::{
    order::{Order, Progress},
    repo,
};
use crate::domain::{Error, OrderId};

/// Where a planted crash stops the saga.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Before the step of this state runs.
    Before(State),
    /// After this state's remote call succeeded, before the next state is
    /// stored.
    AfterCall(State),
    /// In a flow after checkout (a cancellation, a return, a refund),
    /// before this step: `uncommit`, `restock`, `write-off`, `refund` (its
    /// remote calls) or `finish` (recording it done). The flow stays where
    /// it was, as if the process had died there.
    BeforeFlowStep(&'static str),
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
    /// How long after an order's last shipment its customer may ask for a
    /// return (`BACKROOM_RETURN_WINDOW_DAYS`).
    pub return_window: chrono::Duration,
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
            return_window: chrono::Duration::days(super::returns::DEFAULT_WINDOW_DAYS),
        }
    }
}

/// Default of [`SagaConfig::capture_max_rounds`]: 30 rounds, the backoff
/// between them doubling from 0.4 s to 51.2 s, keep trying for about 20
/// minutes.
pub const DEFAULT_CAPTURE_MAX_ROUNDS: i32 = 30;

/// The orchestrator; cheap to clone.
#[derive(Clone)]
pub struct Saga {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    downstream: Downstream,
    config: SagaConfig,
    /// This worker's lease identity.
    worker: Uuid,
    /// Orders a task of this process drives right now. The lease keeps
    /// other processes out; this keeps a second task of this one out (a
    /// CancelOrder or a PlaceOrder replay while the first drive runs), which
    /// the lease would let in under the same worker id.
    driving: std::sync::Mutex<std::collections::HashSet<OrderId>>,
    #[cfg(feature = "fault-injection")]
    fault: std::sync::Mutex<Option<Fault>>,
}

/// One task's drive of an order in this process; ends when dropped.
struct Driving<'a> {
    inner: &'a Inner,
    order: OrderId,
}

impl<'a> Driving<'a> {
    /// The drive of `order`, unless a task of this process has one.
    fn start(inner: &'a Inner, order: OrderId) -> Option<Self> {
        let inserted = inner
            .driving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(order);
        // Built only when inserted: dropping one removes the order.
        inserted.then(|| Self { inner, order })
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.order);
    }
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("worker", &self.inner.worker)
            .finish_non_exhaustive()
    }
}

impl Saga {
    /// A saga worker over the payment schema's `store`.
    pub fn new(store: Store, downstream: Downstream, config: SagaConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                downstream,
                config,
                worker: Uuid::now_v7(),
                driving: std::sync::Mutex::default(),
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
    #[expect(clippy::unused_self, reason = "the same call as with planted faults")]
    fn fault_before(&self, _state: State) -> Result<(), StepError> {
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn fault_before(&self, state: State) -> Result<(), StepError> {
        self.fault(Fault::Before(state))
    }

    #[cfg(not(feature = "fault-injection"))]
    #[expect(clippy::unused_self, reason = "the same call as with planted faults")]
    fn crashed_before(&self, _step: &'static str) -> bool {
        false
    }

    /// Whether a planted crash stops a flow after checkout before `step`.
    #[cfg(feature = "fault-injection")]
    fn crashed_before(&self, step: &'static str) -> bool {
        self.fault(Fault::BeforeFlowStep(step)).is_err()
    }

    #[cfg(not(feature = "fault-injection"))]
    #[expect(clippy::unused_self, reason = "the same call as with planted faults")]
    fn fault_after_call(&self, _state: State) -> Result<(), StepError> {
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn fault_after_call(&self, state: State) -> Result<(), StepError> {
        self.fault(Fault::AfterCall(state))
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.store.now()
    }

    /// Runs `work` on the payment schema. The saga keeps its own errors
    /// (not statuses): they end a drive, and the caller decides.
    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut diesel::PgConnection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.inner.store.pool().run(work).await
    }

    /// Drives the order until it is terminal or must wait; see the module
    /// docs. Errors only when our own database fails.
    #[instrument(skip_all, fields(order = %order_id, worker = %self.inner.worker))]
    pub async fn drive(&self, order_id: OrderId) -> Result<Driven, Error> {
        let Some(_driving) = Driving::start(&self.inner, order_id) else {
            tracing::debug!("another task of this process drives this order");
            return Ok(Driven::Elsewhere);
        };
        let worker = self.inner.worker;
        loop {
            let order = self
                .db(move |conn| repo::orders::load(conn, order_id))
                .await?;
            let state = order.state;
            if state.is_terminal() {
                self.db(move |conn| repo::leases::release_lease(conn, order_id, worker))
                    .await?;
                self.cancel_requested(&order).await?;
                return Ok(Driven::Terminal);
            }
            let now = self.now();
            let until = now + self.inner.config.lease;
            if !self
                .db(move |conn| repo::leases::acquire_lease(conn, order_id, worker, now, until))
                .await?
            {
                tracing::debug!("another worker drives this order");
                return Ok(Driven::Elsewhere);
            }
            let outcome = if state.before_pivot() && order.cancel_request.is_some() {
                // CancelOrder while in checkout: undo it like any failure.
                Err(StepError::Business(Failure::new(
                    "ORDER_CANCELED",
                    "the order was canceled before it completed",
                )))
            } else {
                match self.fault_before(state) {
                    Ok(()) => self.step(&order).await,
                    Err(err) => Err(err),
                }
            };
            match outcome {
                Ok(()) => {}
                Err(StepError::Business(failure)) => {
                    self.begin_compensation(&order, failure).await?;
                }
                Err(StepError::Attention(failure)) => {
                    self.needs_attention(&order, failure).await?;
                }
                Err(StepError::Transient(status)) => {
                    let attempts = order.attempts + 1;
                    if state.before_pivot() && attempts >= self.inner.config.max_rounds {
                        let failure = Failure::new(
                            "DEPENDENCY_UNAVAILABLE",
                            format!("a service stayed unavailable: {}", status.message()),
                        );
                        self.begin_compensation(&order, failure).await?;
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
                                order
                                    .payment_intent
                                    .map(crate::domain::IntentId::name)
                                    .unwrap_or_default(),
                            ),
                        ]);
                        self.needs_attention(&order, failure).await?;
                        continue;
                    }
                    // Exponential backoff between rounds, capped at a minute.
                    let backoff = chrono::Duration::milliseconds(200_i64 << attempts.clamp(0, 8))
                        .min(chrono::Duration::minutes(1));
                    let now = self.now();
                    tracing::warn!(code = ?status.code(), status_message = status.message(), attempts, "saga step failed transiently; retrying later");
                    self.db(move |conn| {
                        repo::leases::record_retry(
                            conn,
                            order_id,
                            worker,
                            attempts,
                            now + backoff,
                            now,
                        )
                    })
                    .await?;
                    return Ok(Driven::Waiting);
                }
                Err(StepError::Local(err)) => return Err(err),
                Err(StepError::Crashed) => return Ok(Driven::Crashed),
            }
        }
    }

    /// Moves the order from `from` to `to` with `progress`, if this worker
    /// still holds it there; whether it did.
    async fn transition(
        &self,
        order: OrderId,
        (from, to): (State, State),
        progress: Progress,
    ) -> Result<bool, Error> {
        let worker = self.inner.worker;
        let now = self.now();
        let moved = self
            .db(move |conn| repo::leases::advance(conn, order, worker, (from, to), &progress, now))
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
        Ok(moved)
    }

    /// Finishes the cancellation a CancelOrder during checkout became when
    /// `order` completed (stored as it completed), if it has one.
    async fn cancel_requested(&self, order: &Order) -> Result<(), Error> {
        let (Some(request), State::Completed) = (&order.cancel_request, order.state) else {
            return Ok(());
        };
        let (id, request_id) = (order.id, request.request_id);
        let found = self
            .db(move |conn| repo::cancellations::find_by_request(conn, id, request_id))
            .await?;
        if let Some(cancellation) = found {
            self.cancel(cancellation).await?;
        }
        Ok(())
    }

    async fn step(&self, order: &Order) -> Result<(), StepError> {
        match order.state {
            State::Pending => self.check_and_quote(order).await,
            State::Reserving => self.reserve(order).await,
            State::Authorizing => self.authorize(order).await,
            State::Committing => self.commit(order).await,
            State::Capturing => self.capture(order).await,
            State::Compensating => self.compensate(order).await,
            State::Completed | State::Failed | State::NeedsAttention => Ok(()),
        }
    }
}
