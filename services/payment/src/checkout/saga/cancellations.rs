//! Finishing a stored cancellation: inventory returns its units to
//! available (`UncommitReservation`), payment refunds its amount
//! (`CreateRefund` on the order's intent), each with a request id derived
//! from the cancellation and the step, so a retry or a replay after a crash
//! has no second effect; then it is DONE. A cancellation whose calls got
//! no answer (or a refusal) stays PENDING; [`Saga::cancel_pending`] (run by
//! the recovery worker) finishes it.

use diesel::Connection as _;
use tracing::instrument;
use uuid::Uuid;

use super::{
    Saga,
    flows::{Flow, Settle},
};
use crate::{
    checkout::{
        cancellation::{Cancellation, CancellationState},
        repo::{self, flows::FlowTable},
    },
    domain::Error,
};

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
        let flow = Flow {
            table: FlowTable::Cancellation,
            id,
            done: &cancellation.steps_done,
        };
        if !self
            .settle_units(flow, order.id, Settle::Uncommit, &cancellation.lines)
            .await?
            || !self
                .refund_payment(flow, &order, cancellation.refund)
                .await?
            || self.crashed_before("finish")
        {
            return Ok(cancellation);
        }
        let now = self.now();
        let done = self
            .db(move |conn| conn.transaction(|conn| repo::cancellations::finish(conn, id, now)))
            .await?;
        tracing::info!(order = %order.id, refund = %done.refund, "order canceled");
        Ok(done)
    }

    /// Finishes every PENDING cancellation untouched for the pending grace;
    /// returns how many it picked up.
    pub async fn cancel_pending(&self) -> Result<usize, Error> {
        self.finish_pending(FlowTable::Cancellation, |id, _| self.cancel(id))
            .await
    }
}
