//! Goodwill refunds: storing one PENDING (idempotently per order and
//! request id, its amount claimed on the order under the order's row lock),
//! marking it DONE (the order's refunded amount grows), and the recovery
//! scan.

use backroom_shared::money::Money;
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::orders;
use crate::{
    checkout::refund::{self, OrderRefund, OrderRefundState, RefundOrder},
    db::schema::payment::order_refunds,
    domain::{Error, OrderId},
    events,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_refunds, check_for_backend(diesel::pg::Pg))]
struct OrderRefundRow {
    id: Uuid,
    order_id: Uuid,
    request_id: Uuid,
    fingerprint: Vec<u8>,
    state: String,
    reason: String,
    amount_minor: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    steps_done: Vec<String>,
}

fn parse(conn: &mut PgConnection, row: OrderRefundRow) -> Result<OrderRefund, Error> {
    let order = orders::load(conn, OrderId::from_uuid(row.order_id))?;
    Ok(OrderRefund {
        id: row.id,
        order_id: order.id,
        request_id: row.request_id,
        fingerprint: row.fingerprint,
        state: OrderRefundState::from_stored(&row.state)?,
        reason: row.reason,
        amount: Money::new(order.currency, row.amount_minor),
        steps_done: row.steps_done,
    })
}

/// Stores the PENDING refund `cmd` asks for — its amount claimed on the
/// order — or returns the one the order already has under its request id
/// (same parameters) or refuses. Run it in a transaction.
#[instrument(skip_all, fields(order = %cmd.order_id))]
pub fn begin(
    conn: &mut PgConnection,
    cmd: &RefundOrder,
    now: DateTime<Utc>,
) -> Result<OrderRefund, Error> {
    orders::lock(conn, cmd.order_id)?;
    let existing = order_refunds::table
        .filter(order_refunds::order_id.eq(cmd.order_id.uuid()))
        .filter(order_refunds::request_id.eq(cmd.request_id))
        .select(OrderRefundRow::as_select())
        .first(conn)
        .optional()?;
    if let Some(existing) = existing {
        if existing.fingerprint != cmd.fingerprint {
            return Err(Error::OrderRefundRequestIdReused);
        }
        return parse(conn, existing);
    }
    let order = orders::load(conn, cmd.order_id)?;
    refund::check(&order, cmd.amount)?;
    let id = Uuid::now_v7();
    diesel::insert_into(order_refunds::table)
        .values(OrderRefundRow {
            id,
            order_id: order.id.uuid(),
            request_id: cmd.request_id,
            fingerprint: cmd.fingerprint.clone(),
            state: OrderRefundState::Pending.as_str().to_owned(),
            reason: cmd.reason.clone(),
            amount_minor: cmd.amount.minor(),
            created_at: now,
            updated_at: now,
            steps_done: Vec::new(),
        })
        .execute(conn)?;
    orders::claim_refund(conn, order.id, cmd.amount, now)?;
    tracing::info!(refund = %id, amount = %cmd.amount, "goodwill refund stored");
    load(conn, id)
}

/// The refund `id`.
pub fn load(conn: &mut PgConnection, id: Uuid) -> Result<OrderRefund, Error> {
    let row = order_refunds::table
        .find(id)
        .select(OrderRefundRow::as_select())
        .first(conn)?;
    parse(conn, row)
}

/// Marks a PENDING refund DONE and adds it to the order's refunded amount;
/// no effect on one already DONE. Run it in a transaction.
#[instrument(skip_all, fields(refund = %id))]
pub fn finish(conn: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<OrderRefund, Error> {
    let order: Uuid = order_refunds::table
        .find(id)
        .select(order_refunds::order_id)
        .first(conn)?;
    orders::lock(conn, OrderId::from_uuid(order))?;
    let state: String = order_refunds::table
        .find(id)
        .select(order_refunds::state)
        .for_update()
        .first(conn)?;
    let refund = load(conn, id)?;
    if OrderRefundState::from_stored(&state)? != OrderRefundState::Pending {
        return Ok(refund);
    }
    diesel::update(order_refunds::table.find(id))
        .set((
            order_refunds::state.eq(OrderRefundState::Done.as_str()),
            order_refunds::updated_at.eq(now),
        ))
        .execute(conn)?;
    orders::refunded(conn, refund.order_id, refund.amount, now)?;
    events::order_refunded(conn, refund.order_id, refund.amount, &refund.reason, now)?;
    load(conn, id)
}
