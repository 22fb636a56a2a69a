//! When an order cannot go on: before the pivot it compensates — the
//! reservation is released and the payment canceled (ORDER_FAILED), then
//! FAILED; after the pivot it stops in NEEDS_ATTENTION for an operator.

use backroom_proto::{inventory::v1 as inventory_pb, payment::v1 as pb};
use backroom_shared::{auth::audience, errors::reason_of};
use tonic::Code;
use tracing::instrument;

use super::{
    Saga, State,
    remote::step_request_id,
    state::{Failure, StepError},
};
use crate::{
    checkout::{
        order::{Order, Progress},
        repo,
    },
    domain::{Error, IntentId},
};

impl Saga {
    /// The order failed in its current state: COMPENSATING, with why.
    pub(super) async fn begin_compensation(
        &self,
        order: &Order,
        failure: Failure,
    ) -> Result<(), Error> {
        tracing::info!(
            reason = failure.reason,
            from = order.state.as_str(),
            "order failed; compensating"
        );
        let progress = Progress {
            failure: Some((failure, order.state)),
            ..Progress::default()
        };
        self.transition(order.id, (order.state, State::Compensating), progress)
            .await
            .map(drop)
    }

    /// After the pivot, when the payment cannot be captured: the order stops
    /// in NEEDS_ATTENTION with why, and says so as loudly as a log can.
    pub(super) async fn needs_attention(
        &self,
        order: &Order,
        failure: Failure,
    ) -> Result<(), Error> {
        tracing::error!(
            order = %order.id,
            payment_intent = order.payment_intent.map(IntentId::name).unwrap_or_default(),
            reason = failure.reason,
            detail = failure.message,
            from = order.state.as_str(),
            "ORDER NEEDS ATTENTION: its stock is committed but its payment cannot be captured; \
             the saga stops here and an operator must resolve it"
        );
        let progress = Progress {
            failure: Some((failure, order.state)),
            ..Progress::default()
        };
        self.transition(order.id, (order.state, State::NeedsAttention), progress)
            .await
            .map(drop)
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn compensate(&self, order: &Order) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        // A failure while still PENDING happened before any reservation was
        // asked for: there is nothing to release (and inventory may be the
        // very service that is down).
        let reserve_attempted = order.failed_at_state != Some(State::Pending);
        let released = if reserve_attempted {
            self.remote(
                &downstream.inventory,
                audience::INVENTORY,
                inventory_pb::ReleaseReservationRequest {
                    name: order.reservation_or_default().as_str().to_owned(),
                    request_id: step_request_id(order.id, "release"),
                },
                |mut client, request| async move { client.release_reservation(request).await },
            )
            .await?
            .map(|_| ())
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
                    self.db(move |conn| repo::leases::clear_failure(conn, id, worker, now))
                        .await?;
                    return Ok(());
                }
                // Never reserved, already expired or released: nothing held.
                _ if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {}
                _ => return Err(StepError::Transient(status.clone())),
            }
        }
        if let Some(intent) = order.payment_intent {
            let canceled = self
                .remote(
                    &downstream.payment,
                    audience::PAYMENT,
                    pb::CancelPaymentIntentRequest {
                        name: intent.name(),
                        cancellation_reason: pb::CancellationReason::OrderFailed as i32,
                        request_id: step_request_id(order.id, "cancel"),
                    },
                    |mut client, request| async move {
                        client.cancel_payment_intent(request).await
                    },
                )
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
            (State::Compensating, State::Failed),
            Progress::default(),
        )
        .await?;
        Ok(())
    }
}
