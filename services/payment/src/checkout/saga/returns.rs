//! Finishing a received return: inventory puts its restocked units back on
//! the shelf (`RestockReservation`) and records its written-off ones
//! (`WriteOffReservation`), payment refunds it (`CreateRefund` on the
//! order's intent), each with a request id derived from the return and the
//! step, so a retry or a replay after a crash has no second effect; then
//! it is RECEIVED. One whose calls got no answer stays RECEIVING;
//! [`Saga::receive_pending`] (run by the recovery worker) finishes it.

use backroom_shared::catalog::{Quantity, Sku};
use diesel::Connection as _;
use tracing::instrument;

use super::{
    Saga,
    flows::{Flow, Settle},
};
use crate::{
    checkout::{
        repo::{self, flows::FlowTable},
        returns::{Return, ReturnLine, ReturnState},
    },
    domain::{Error, OrderId, ReturnId},
};

/// Units per SKU of `lines` that `part` picks (restocked or written off).
fn units(lines: &[ReturnLine], part: fn(&ReturnLine) -> i64) -> Vec<(Sku, Quantity)> {
    lines
        .iter()
        .filter_map(|line| {
            Quantity::parse("lines", part(line))
                .ok()
                .map(|units| (line.sku.clone(), units))
        })
        .collect()
}

impl Saga {
    /// Takes the units of return `id` back at inventory and refunds it if
    /// it is RECEIVING, and marks it RECEIVED once both are done; returns
    /// it as it is then. Errors only when our database fails.
    #[instrument(skip_all, fields(order = %order_id, r#return = %id))]
    pub async fn receive(&self, order_id: OrderId, id: ReturnId) -> Result<Return, Error> {
        let ret = self
            .db(move |conn| repo::returns::load(conn, order_id, id))
            .await?;
        if ret.state != ReturnState::Receiving {
            return Ok(ret);
        }
        let order = self
            .db(move |conn| repo::orders::load(conn, order_id))
            .await?;
        let restock = units(&ret.lines, |line| line.restocked);
        let write_off = units(&ret.lines, |line| line.written_off);
        let refund = ret
            .refund
            .unwrap_or_else(|| backroom_shared::money::Money::zero(order.currency));
        let flow = Flow {
            table: FlowTable::Return,
            id: id.uuid(),
            done: &ret.steps_done,
        };
        if !self
            .settle_units(flow, order_id, Settle::Restock, &restock)
            .await?
            || !self
                .settle_units(flow, order_id, Settle::WriteOff, &write_off)
                .await?
            || !self.refund_payment(flow, &order, refund).await?
            || self.crashed_before("finish")
        {
            return Ok(ret);
        }
        let now = self.now();
        let done = self
            .db(move |conn| conn.transaction(|conn| repo::returns::finish(conn, order_id, id, now)))
            .await?;
        tracing::info!(%refund, "return received and refunded");
        Ok(done)
    }

    /// Finishes every RECEIVING return untouched for the pending grace;
    /// returns how many it picked up.
    pub async fn receive_pending(&self) -> Result<usize, Error> {
        self.finish_pending(FlowTable::Return, |id, order| {
            self.receive(order, ReturnId::from_uuid(id))
        })
        .await
    }
}
