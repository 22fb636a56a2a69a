//! Cancellations: storing one PENDING (idempotently per order and request
//! id, its units canceled at once under the order's row lock), marking it
//! DONE (the order's refunded amount grows), and the recovery scan.

use backroom_shared::{
    catalog::{Quantity, Sku},
    money::Money,
};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::{orders, shipments::claimed};
use crate::{
    checkout::cancellation::{self, CancelOrder, Cancellation, CancellationState},
    db::schema::payment::{cancellation_lines, cancellations, order_lines},
    domain::{Error, OrderId},
    events,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cancellations, check_for_backend(diesel::pg::Pg))]
struct CancellationRow {
    id: Uuid,
    order_id: Uuid,
    request_id: Uuid,
    fingerprint: Vec<u8>,
    state: String,
    reason: String,
    refund_minor: i64,
    refunds_shipping: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    steps_done: Vec<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = cancellation_lines, check_for_backend(diesel::pg::Pg))]
struct CancellationLineRow {
    cancellation_id: Uuid,
    position: i32,
    sku: String,
    quantity: i64,
}

fn with_lines(conn: &mut PgConnection, row: CancellationRow) -> Result<Cancellation, Error> {
    let order = orders::load(conn, OrderId::from_uuid(row.order_id))?;
    let lines = cancellation_lines::table
        .filter(cancellation_lines::cancellation_id.eq(row.id))
        .order(cancellation_lines::position.asc())
        .select(CancellationLineRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|line| {
            (
                Sku::from_stored(line.sku),
                Quantity::from_stored(line.quantity),
            )
        })
        .collect();
    Ok(Cancellation {
        id: row.id,
        order_id: order.id,
        request_id: row.request_id,
        fingerprint: row.fingerprint,
        state: CancellationState::from_stored(&row.state)?,
        reason: row.reason,
        refund: Money::new(order.currency, row.refund_minor),
        refunds_shipping: row.refunds_shipping,
        lines,
        created_at: row.created_at,
        updated_at: row.updated_at,
        steps_done: row.steps_done,
    })
}

/// Stores the PENDING cancellation `cmd` asks for — its units canceled on
/// the order's lines at once — or returns the one the order already has
/// under its request id (same parameters) or refuses. The order's row is
/// locked first, as shipments lock it: each unit ships or is canceled,
/// never both. Run it in a transaction (`Store::write`).
#[instrument(skip_all, fields(order = %cmd.order_id))]
pub fn begin(
    conn: &mut PgConnection,
    cmd: &CancelOrder,
    now: DateTime<Utc>,
) -> Result<Cancellation, Error> {
    orders::lock(conn, cmd.order_id)?;
    let existing = cancellations::table
        .filter(cancellations::order_id.eq(cmd.order_id.uuid()))
        .filter(cancellations::request_id.eq(cmd.request_id))
        .select(CancellationRow::as_select())
        .first(conn)
        .optional()?;
    if let Some(existing) = existing {
        if existing.fingerprint != cmd.fingerprint {
            return Err(Error::CancellationRequestIdReused);
        }
        return with_lines(conn, existing);
    }
    let order = orders::load(conn, cmd.order_id)?;
    let lines = orders::lines(conn, &order)?;
    let cancellation::Planned {
        lines: canceled,
        refund,
        refunds_shipping,
    } = cancellation::plan(&order, &lines, &claimed(conn, order.id)?)?;
    let id = Uuid::now_v7();
    diesel::insert_into(cancellations::table)
        .values(CancellationRow {
            id,
            order_id: order.id.uuid(),
            request_id: cmd.request_id,
            fingerprint: cmd.fingerprint.clone(),
            state: CancellationState::Pending.as_str().to_owned(),
            reason: cmd.reason.clone(),
            refund_minor: refund.minor(),
            refunds_shipping,
            created_at: now,
            updated_at: now,
            steps_done: Vec::new(),
        })
        .execute(conn)?;
    let rows: Vec<CancellationLineRow> = canceled
        .iter()
        .zip(0..)
        .map(|((sku, units), position)| CancellationLineRow {
            cancellation_id: id,
            position,
            sku: sku.as_str().to_owned(),
            quantity: units.get(),
        })
        .collect();
    diesel::insert_into(cancellation_lines::table)
        .values(&rows)
        .execute(conn)?;
    for (sku, units) in &canceled {
        diesel::update(
            order_lines::table
                .filter(order_lines::order_id.eq(order.id.uuid()))
                .filter(order_lines::sku.eq(sku.as_str())),
        )
        .set(order_lines::canceled.eq(order_lines::canceled + units.get()))
        .execute(conn)?;
    }
    orders::claim_refund(conn, order.id, refund, now)?;
    tracing::info!(cancellation = %id, lines = rows.len(), refund = %refund, "cancellation stored");
    load(conn, id)
}

/// Turns the CancelOrder an order got while in checkout into its
/// cancellation, now that it completed (in the transaction that completes
/// it): the whole order is canceled as CancelOrder would have. No effect on
/// an order without one.
pub fn begin_requested(
    conn: &mut PgConnection,
    order: OrderId,
    now: DateTime<Utc>,
) -> Result<Option<Cancellation>, Error> {
    let Some(request) = orders::load(conn, order)?.cancel_request else {
        return Ok(None);
    };
    let cmd = CancelOrder {
        order_id: order,
        reason: request.reason,
        request_id: request.request_id,
        fingerprint: request.fingerprint,
    };
    begin(conn, &cmd, now).map(Some)
}

/// The cancellation `order` got under `request_id`, if any.
pub fn find_by_request(
    conn: &mut PgConnection,
    order: OrderId,
    request_id: Uuid,
) -> Result<Option<Uuid>, Error> {
    Ok(cancellations::table
        .filter(cancellations::order_id.eq(order.uuid()))
        .filter(cancellations::request_id.eq(request_id))
        .select(cancellations::id)
        .first(conn)
        .optional()?)
}

/// The cancellation `id`.
pub fn load(conn: &mut PgConnection, id: Uuid) -> Result<Cancellation, Error> {
    let row = cancellations::table
        .find(id)
        .select(CancellationRow::as_select())
        .first(conn)?;
    with_lines(conn, row)
}

/// Marks a PENDING cancellation DONE (its stock is back and its refund
/// made) and adds its refund to the order's; no effect on one already
/// DONE. Run it in a transaction.
#[instrument(skip_all, fields(cancellation = %id))]
pub fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Cancellation, Error> {
    let order: Uuid = cancellations::table
        .find(id)
        .select(cancellations::order_id)
        .first(conn)?;
    orders::lock(conn, OrderId::from_uuid(order))?;
    let state: String = cancellations::table
        .find(id)
        .select(cancellations::state)
        .for_update()
        .first(conn)?;
    let cancellation = load(conn, id)?;
    if CancellationState::from_stored(&state)? != CancellationState::Pending {
        return Ok(cancellation);
    }
    diesel::update(cancellations::table.find(id))
        .set((
            cancellations::state.eq(CancellationState::Done.as_str()),
            cancellations::updated_at.eq(now),
        ))
        .execute(conn)?;
    orders::refunded(conn, cancellation.order_id, cancellation.refund, now)?;
    events::order_canceled(conn, cancellation.order_id, cancellation.refund, now)?;
    load(conn, id)
}
