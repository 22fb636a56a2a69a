//! Finishing a goodwill refund: payment refunds it (`CreateRefund` on the
//! order's intent, request id derived from the refund, so a retry or a
//! replay after a crash refunds once); then it is DONE. One whose call got
//! no answer stays PENDING; [`Saga::refund_pending`] (run by the recovery
//! worker) finishes it.

use diesel::Connection as _;
use tracing::instrument;
use uuid::Uuid;

use super::{Saga, flows::Flow};
use crate::{
    checkout::{
        refund::{OrderRefund, OrderRefundState},
        repo::{self, flows::FlowTable},
    },
    domain::Error,
};

impl Saga {
    /// Refunds goodwill refund `id` if it is PENDING and marks it DONE;
    /// returns it as it is then. Errors only when our database fails.
    #[instrument(skip_all, fields(refund = %id))]
    pub async fn refund(&self, id: Uuid) -> Result<OrderRefund, Error> {
        let refund = self.db(move |conn| repo::refunds::load(conn, id)).await?;
        if refund.state != OrderRefundState::Pending {
            return Ok(refund);
        }
        let order_id = refund.order_id;
        let order = self
            .db(move |conn| repo::orders::load(conn, order_id))
            .await?;
        let flow = Flow {
            table: FlowTable::Refund,
            id,
            done: &refund.steps_done,
        };
        if !self.refund_payment(flow, &order, refund.amount).await? || self.crashed_before("finish")
        {
            return Ok(refund);
        }
        let now = self.now();
        let done = self
            .db(move |conn| conn.transaction(|conn| repo::refunds::finish(conn, id, now)))
            .await?;
        tracing::info!(order = %order.id, amount = %done.amount, "goodwill refund made");
        Ok(done)
    }

    /// Finishes every PENDING goodwill refund untouched for the pending
    /// grace; returns how many it picked up.
    pub async fn refund_pending(&self) -> Result<usize, Error> {
        self.finish_pending(FlowTable::Refund, |id, _| self.refund(id))
            .await
    }
}
