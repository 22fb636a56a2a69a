//! Finishing a stored cancellation: inventory returns its units to
//! available (`UncommitReservation`), payment refunds its amount
//! (`CreateRefund` on the order's intent), each with a request id derived
//! from the cancellation and the step, so a retry or a replay after a crash
//! has no second effect; then it is DONE. A cancellation whose calls got
//! no answer (or a refusal, logged as an error: the audit lists it) stays
//! PENDING; [`Saga::cancel_pending`] (run by the recovery worker) finishes
//! it.

use backroom_proto::{inventory::v1 as inventory_pb, payment::v1 as pb};
use backroom_shared::auth::audience;
use diesel::Connection as _;
use tracing::instrument;
use uuid::Uuid;

use super::{
    PENDING_BATCH, PENDING_GRACE, Saga,
    remote::{Reply, derived_request_id, reply},
    state::StepError,
};
use crate::{
    checkout::{
        cancellation::{Cancellation, CancellationState},
        order::ReservationName,
        repo,
    },
    domain::Error,
};

/// Whether a step got its answer: `false` leaves the cancellation PENDING.
fn answered<T>(
    step: &str,
    outcome: Result<Result<T, tonic::Status>, StepError>,
) -> Result<bool, Error> {
    match reply(outcome)? {
        Reply::Answered(_) => Ok(true),
        Reply::Refused(status) => {
            tracing::error!(step, code = ?status.code(), status_message = status.message(), "a cancellation step was refused; it stays pending for an operator");
            Ok(false)
        }
        Reply::Unanswered(status) => {
            tracing::warn!(step, code = ?status.code(), "a cancellation step got no answer yet; it stays pending");
            Ok(false)
        }
    }
}

impl Saga {
    /// Returns the stock and the money of cancellation `id` if it is
    /// PENDING, and marks it DONE once both are back; returns it as it is
    /// then. Errors only when our database fails.
    #[instrument(skip_all, fields(cancellation = %id))]
    pub async fn cancel(&self, id: Uuid) -> Result<Cancellation, Error> {
        let cancellation = self
            .db(move |conn| repo::cancellations::load(conn, id))
            .await?;
        if cancellation.state != CancellationState::Pending {
            return Ok(cancellation);
        }
        let order_id = cancellation.order_id;
        let order = self
            .db(move |conn| repo::orders::load(conn, order_id))
            .await?;
        let uncommit = inventory_pb::UncommitReservationRequest {
            name: ReservationName::of(order.id).as_str().to_owned(),
            lines: cancellation
                .lines
                .iter()
                .map(|(sku, units)| inventory_pb::LineItem {
                    sku: sku.as_str().to_owned(),
                    quantity: units.get(),
                })
                .collect(),
            request_id: derived_request_id(id, "uncommit"),
        };
        let returned = self
            .remote(
                &self.inner.downstream.inventory,
                audience::INVENTORY,
                uncommit,
                |mut client, request| async move { client.uncommit_reservation(request).await },
            )
            .await;
        if !answered("uncommit", returned)? {
            return Ok(cancellation);
        }
        if cancellation.refund.minor() > 0 {
            let Some(intent) = order.payment_intent else {
                return Err(Error::corrupt(format!(
                    "completed order {} has no payment",
                    order.id
                )));
            };
            let refund = pb::CreateRefundRequest {
                parent: intent.name(),
                amount: Some(cancellation.refund.into()),
                reason: pb::RefundReason::RequestedByCustomer.into(),
                request_id: derived_request_id(id, "refund"),
            };
            let refunded = self
                .remote(
                    &self.inner.downstream.payment,
                    audience::PAYMENT,
                    refund,
                    |mut client, request| async move { client.create_refund(request).await },
                )
                .await;
            if !answered("refund", refunded)? {
                return Ok(cancellation);
            }
        }
        let now = self.now();
        let done = self
            .db(move |conn| conn.transaction(|conn| repo::cancellations::finish(conn, id, now)))
            .await?;
        tracing::info!(order = %order.id, refund = %done.refund, "order canceled");
        Ok(done)
    }

    /// Finishes every PENDING cancellation untouched for
    /// [`PENDING_GRACE`]; returns how many it picked up.
    pub async fn cancel_pending(&self) -> Result<usize, Error> {
        let before = self.now() - PENDING_GRACE;
        let due = self
            .db(move |conn| repo::cancellations::pending_before(conn, before, PENDING_BATCH))
            .await?;
        for id in &due {
            if let Err(err) = self.cancel(*id).await {
                tracing::warn!(cancellation = %id, %err, "recovery could not finish the cancellation");
            }
        }
        Ok(due.len())
    }
}
