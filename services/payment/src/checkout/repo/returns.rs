//! Returns: storing one REQUESTED (idempotently per order and request id,
//! its units claimed on the order's lines under the order's row lock),
//! receiving it (RECEIVING, its refund claimed on the order), marking it
//! RECEIVED (the order's refunded amount grows), listing them and the
//! recovery scan.

use backroom_shared::{
    catalog::{Quantity, Sku},
    money::Money,
};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::{orders, shipments::last_shipped_at};
use crate::{
    checkout::returns::{
        self, ReceiveReturn, RequestReturn, Return, ReturnLine, ReturnReason, ReturnState,
    },
    db::schema::payment::{order_lines, return_lines, returns as returns_table},
    domain::{Error, OrderId, ReturnId},
    events,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = returns_table, check_for_backend(diesel::pg::Pg))]
struct ReturnRow {
    id: Uuid,
    order_id: Uuid,
    request_id: Uuid,
    fingerprint: Vec<u8>,
    state: String,
    reason: String,
    note: String,
    refund_minor: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    received_at: Option<DateTime<Utc>>,
    steps_done: Vec<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = return_lines, check_for_backend(diesel::pg::Pg))]
struct ReturnLineRow {
    return_id: Uuid,
    position: i32,
    sku: String,
    quantity: i64,
    restocked: i64,
    written_off: i64,
}

fn with_lines(conn: &mut PgConnection, row: ReturnRow) -> Result<Return, Error> {
    let order = orders::load(conn, OrderId::from_uuid(row.order_id))?;
    let lines = return_lines::table
        .filter(return_lines::return_id.eq(row.id))
        .order(return_lines::position.asc())
        .select(ReturnLineRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|line| ReturnLine {
            sku: Sku::from_stored(line.sku),
            quantity: Quantity::from_stored(line.quantity),
            restocked: line.restocked,
            written_off: line.written_off,
        })
        .collect();
    Ok(Return {
        id: ReturnId::from_uuid(row.id),
        order_id: order.id,
        request_id: row.request_id,
        fingerprint: row.fingerprint,
        state: ReturnState::from_stored(&row.state)?,
        reason: ReturnReason::from_stored(&row.reason)?,
        note: row.note,
        lines,
        refund: row
            .refund_minor
            .map(|minor| Money::new(order.currency, minor)),
        created_at: row.created_at,
        updated_at: row.updated_at,
        received_at: row.received_at,
        steps_done: row.steps_done,
    })
}

/// Stores the REQUESTED return `cmd` asks for — its units returned on the
/// order's lines at once — or returns the one the order already has under
/// its request id (same parameters) or refuses. The order's row is locked
/// first: concurrent returns plan one after the other. Run it in a
/// transaction (`Store::write`).
#[instrument(skip_all, fields(order = %cmd.order_id))]
pub fn request(
    conn: &mut PgConnection,
    cmd: &RequestReturn,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Return, Error> {
    orders::lock(conn, cmd.order_id)?;
    let existing = returns_table::table
        .filter(returns_table::order_id.eq(cmd.order_id.uuid()))
        .filter(returns_table::request_id.eq(cmd.request_id))
        .select(ReturnRow::as_select())
        .first(conn)
        .optional()?;
    if let Some(existing) = existing {
        if existing.fingerprint != cmd.fingerprint {
            return Err(Error::ReturnRequestIdReused);
        }
        return with_lines(conn, existing);
    }
    let order = orders::load(conn, cmd.order_id)?;
    let lines = orders::lines(conn, &order)?;
    let last_shipped = last_shipped_at(conn, order.id)?;
    let planned = returns::plan_request(&order, &lines, last_shipped, window, now, &cmd.lines)?;
    let id = ReturnId::generate();
    diesel::insert_into(returns_table::table)
        .values(ReturnRow {
            id: id.uuid(),
            order_id: order.id.uuid(),
            request_id: cmd.request_id,
            fingerprint: cmd.fingerprint.clone(),
            state: ReturnState::Requested.as_str().to_owned(),
            reason: cmd.reason.as_str().to_owned(),
            note: cmd.note.clone(),
            refund_minor: None,
            created_at: now,
            updated_at: now,
            received_at: None,
            steps_done: Vec::new(),
        })
        .execute(conn)?;
    let rows: Vec<ReturnLineRow> = planned
        .iter()
        .zip(0..)
        .map(|((sku, units), position)| ReturnLineRow {
            return_id: id.uuid(),
            position,
            sku: sku.as_str().to_owned(),
            quantity: units.get(),
            restocked: 0,
            written_off: 0,
        })
        .collect();
    diesel::insert_into(return_lines::table)
        .values(&rows)
        .execute(conn)?;
    for (sku, units) in &planned {
        diesel::update(
            order_lines::table
                .filter(order_lines::order_id.eq(order.id.uuid()))
                .filter(order_lines::sku.eq(sku.as_str())),
        )
        .set(order_lines::returned.eq(order_lines::returned + units.get()))
        .execute(conn)?;
    }
    orders::touch(conn, order.id, now)?;
    tracing::info!(r#return = %id, lines = rows.len(), "return requested");
    let requested = load(conn, order.id, id)?;
    events::return_requested(conn, &requested, now)?;
    Ok(requested)
}

/// The return `id` of `order` (RETURN_NOT_FOUND if it has none such).
pub fn load(conn: &mut PgConnection, order: OrderId, id: ReturnId) -> Result<Return, Error> {
    let row = returns_table::table
        .find(id.uuid())
        .filter(returns_table::order_id.eq(order.uuid()))
        .select(ReturnRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::ReturnNotFound { order, id })?;
    with_lines(conn, row)
}

/// Receives the REQUESTED return `cmd` names with its decisions: its lines
/// decided, its refund claimed on the order (under the order's row lock),
/// RECEIVING. A return received before is returned as it is when the
/// decisions are the same (a retry, a second receipt), refused when they
/// differ. Run it in a transaction.
#[instrument(skip_all, fields(order = %cmd.order_id, r#return = %cmd.id))]
pub fn receive(
    conn: &mut PgConnection,
    cmd: &ReceiveReturn,
    now: DateTime<Utc>,
) -> Result<Return, Error> {
    orders::lock(conn, cmd.order_id)?;
    let ret = load(conn, cmd.order_id, cmd.id)?;
    let decided = returns::decide(&ret, &cmd.dispositions)?;
    if ret.state != ReturnState::Requested {
        if decided != ret.lines {
            return Err(Error::ReturnAlreadyReceived);
        }
        return Ok(ret);
    }
    let order = orders::load(conn, cmd.order_id)?;
    let lines = orders::lines(conn, &order)?;
    let receipt = returns::receipt(&order, &lines, decided)?;
    for line in &receipt.lines {
        diesel::update(
            return_lines::table.filter(
                return_lines::return_id
                    .eq(ret.id.uuid())
                    .and(return_lines::sku.eq(line.sku.as_str())),
            ),
        )
        .set((
            return_lines::restocked.eq(line.restocked),
            return_lines::written_off.eq(line.written_off),
        ))
        .execute(conn)?;
    }
    diesel::update(returns_table::table.find(ret.id.uuid()))
        .set((
            returns_table::state.eq(ReturnState::Receiving.as_str()),
            returns_table::refund_minor.eq(receipt.refund.minor()),
            returns_table::updated_at.eq(now),
        ))
        .execute(conn)?;
    orders::claim_refund(conn, order.id, receipt.refund, now)?;
    tracing::info!(refund = %receipt.refund, "return received");
    load(conn, cmd.order_id, cmd.id)
}

/// Marks a RECEIVING return RECEIVED (its units are back at inventory and
/// its refund made) and adds its refund to the order's; no effect on one
/// in another state. Run it in a transaction.
#[instrument(skip_all, fields(r#return = %id))]
pub fn finish(
    conn: &mut PgConnection,
    order: OrderId,
    id: ReturnId,
    now: DateTime<Utc>,
) -> Result<Return, Error> {
    orders::lock(conn, order)?;
    let state: String = returns_table::table
        .find(id.uuid())
        .select(returns_table::state)
        .for_update()
        .first(conn)?;
    let ret = load(conn, order, id)?;
    if ReturnState::from_stored(&state)? != ReturnState::Receiving {
        return Ok(ret);
    }
    diesel::update(returns_table::table.find(id.uuid()))
        .set((
            returns_table::state.eq(ReturnState::Received.as_str()),
            returns_table::updated_at.eq(now),
            returns_table::received_at.eq(now),
        ))
        .execute(conn)?;
    if let Some(refund) = ret.refund {
        orders::refunded(conn, order, refund, now)?;
    }
    let received = load(conn, order, id)?;
    events::return_received(conn, &received, now)?;
    Ok(received)
}

/// A page of `order`'s returns, oldest first: after the return `after`
/// (the previous page's last), at most `limit` rows.
#[instrument(skip_all, fields(order = %order))]
pub fn list(
    conn: &mut PgConnection,
    order: OrderId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Return>, Error> {
    let mut query = returns_table::table
        .filter(returns_table::order_id.eq(order.uuid()))
        .order(returns_table::id.asc())
        .limit(limit)
        .select(ReturnRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(returns_table::id.gt(after));
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| with_lines(conn, row))
        .collect()
}
