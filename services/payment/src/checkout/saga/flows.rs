//! What the flows after checkout — cancellations, returns, goodwill
//! refunds — share: inventory settling units of the order's reservation,
//! payment refunding part of the order's payment, each call with a request
//! id derived from the flow and the step (a retry or a replay after a crash
//! has no second effect), and the recovery pass that finishes what a crash
//! or an outage left half-way.
//!
//! A step either got its answer (the flow goes on) or did not — no answer
//! yet, or a refusal, logged as an error for an operator (the audit lists
//! flows stuck past their grace) — and then the flow stays where it is for
//! the recovery worker.

use std::future::Future;

use backroom_proto::{inventory::v1 as inventory_pb, payment::v1 as pb};
use backroom_shared::{
    auth::audience,
    catalog::{Quantity, Sku},
    money::Money,
};
use uuid::Uuid;

use super::{
    PENDING_BATCH, PENDING_GRACE, Saga,
    remote::{Reply, derived_request_id, reply},
    state::StepError,
};
use crate::{
    checkout::{
        order::{Order, ReservationName},
        repo::{self, flows::FlowTable},
    },
    domain::{Error, OrderId},
};

/// What inventory does with units of a committed reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settle {
    /// Committed units that will not ship go back to available.
    Uncommit,
    /// Shipped units that came back go back on the shelf.
    Restock,
    /// Shipped units that came back unsellable are written off.
    WriteOff,
}

impl Settle {
    fn step(self) -> &'static str {
        match self {
            Self::Uncommit => "uncommit",
            Self::Restock => "restock",
            Self::WriteOff => "write-off",
        }
    }
}

/// One flow after checkout, as its steps see it: where it is stored, its
/// id (the root of its steps' request ids) and the remote steps it finished.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flow<'a> {
    /// Its table.
    pub table: FlowTable,
    /// Its id.
    pub id: Uuid,
    /// The remote steps it finished before.
    pub done: &'a [String],
}

/// Whether a step got its answer: `false` leaves the flow where it is.
fn answered<T>(
    flow: &'static str,
    step: &str,
    outcome: Result<Result<T, tonic::Status>, StepError>,
) -> Result<bool, Error> {
    match reply(outcome)? {
        Reply::Answered(_) => Ok(true),
        Reply::Refused(status) => {
            tracing::error!(flow, step, code = ?status.code(), status_message = status.message(), "a step after checkout was refused; the flow waits for an operator");
            Ok(false)
        }
        Reply::Unanswered(status) => {
            tracing::warn!(flow, step, code = ?status.code(), "a step after checkout got no answer yet; recovery retries it");
            Ok(false)
        }
    }
}

impl Saga {
    /// Inventory settles `lines` (units per SKU; none: nothing to do) of
    /// `order`'s reservation the `how` way, for the flow `flow_id`.
    pub(super) async fn settle_units(
        &self,
        flow: Flow<'_>,
        order: OrderId,
        how: Settle,
        lines: &[(Sku, Quantity)],
    ) -> Result<bool, Error> {
        if lines.is_empty() || flow.done.iter().any(|step| step == how.step()) {
            return Ok(true);
        }
        if self.crashed_before(how.step()) {
            return Ok(false);
        }
        let name = ReservationName::of(order).as_str().to_owned();
        let lines: Vec<inventory_pb::LineItem> = lines
            .iter()
            .map(|(sku, units)| inventory_pb::LineItem {
                sku: sku.as_str().to_owned(),
                quantity: units.get(),
            })
            .collect();
        let request_id = derived_request_id(flow.id, how.step());
        let inventory = &self.inner.downstream.inventory;
        let outcome = match how {
            Settle::Uncommit => {
                let request = inventory_pb::UncommitReservationRequest {
                    name,
                    lines,
                    request_id,
                };
                self.remote(
                    inventory,
                    audience::INVENTORY,
                    request,
                    |mut c, r| async move { c.uncommit_reservation(r).await },
                )
                .await
            }
            Settle::Restock => {
                let request = inventory_pb::RestockReservationRequest {
                    name,
                    lines,
                    request_id,
                };
                self.remote(
                    inventory,
                    audience::INVENTORY,
                    request,
                    |mut c, r| async move { c.restock_reservation(r).await },
                )
                .await
            }
            Settle::WriteOff => {
                let request = inventory_pb::WriteOffReservationRequest {
                    name,
                    lines,
                    request_id,
                };
                self.remote(
                    inventory,
                    audience::INVENTORY,
                    request,
                    |mut c, r| async move { c.write_off_reservation(r).await },
                )
                .await
            }
        };
        self.record(
            flow,
            how.step(),
            answered(flow.table.flow(), how.step(), outcome)?,
        )
        .await
    }

    /// Records that `flow` finished `step` when it `did`; returns `did`.
    async fn record(&self, flow: Flow<'_>, step: &'static str, did: bool) -> Result<bool, Error> {
        if did {
            let (table, id) = (flow.table, flow.id);
            self.db(move |conn| repo::flows::step_done(conn, table, id, step))
                .await?;
        }
        Ok(did)
    }

    /// Payment refunds `amount` (zero: nothing to do) of `order`'s payment
    /// for the flow `flow_id`.
    pub(super) async fn refund_payment(
        &self,
        flow: Flow<'_>,
        order: &Order,
        amount: Money,
    ) -> Result<bool, Error> {
        if amount.minor() == 0 || flow.done.iter().any(|step| step == "refund") {
            return Ok(true);
        }
        if self.crashed_before("refund") {
            return Ok(false);
        }
        let Some(intent) = order.payment_intent else {
            return Err(Error::corrupt(format!(
                "completed order {} has no payment",
                order.id
            )));
        };
        let refund = pb::CreateRefundRequest {
            parent: intent.name(),
            amount: Some(amount.into()),
            reason: pb::RefundReason::RequestedByCustomer.into(),
            request_id: derived_request_id(flow.id, "refund"),
        };
        let refunded = self
            .remote(
                &self.inner.downstream.payment,
                audience::PAYMENT,
                refund,
                |mut client, request| async move { client.create_refund(request).await },
            )
            .await;
        self.record(
            flow,
            "refund",
            answered(flow.table.flow(), "refund", refunded)?,
        )
        .await
    }

    /// One recovery pass over the flows of `table`: claims those waiting
    /// since before [`PENDING_GRACE`] ago and not tried since (at most
    /// [`PENDING_BATCH`], least recently tried first) and `finish`es each.
    /// Returns how many it picked up.
    pub(super) async fn finish_pending<Fut, T>(
        &self,
        table: FlowTable,
        finish: impl Fn(Uuid, OrderId) -> Fut,
    ) -> Result<usize, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let now = self.now();
        let before = now - PENDING_GRACE;
        let due = self
            .db(move |conn| repo::flows::claim_due(conn, table, now, before, PENDING_BATCH))
            .await?;
        let picked = due.len();
        for (id, order) in due {
            if let Err(err) = finish(id, order).await {
                tracing::warn!(flow = table.flow(), %err, "recovery could not finish a flow after checkout");
            }
        }
        Ok(picked)
    }
}
