//! Shipments: storing one PENDING (idempotently per order and request id,
//! its units claimed under the order's row lock), marking it SHIPPED (its
//! units added to the order's lines) or FAILED, and reading them back.

use backroom_shared::catalog::{Quantity, Sku};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::orders;
use crate::{
    checkout::shipment::{self, CreateShipment, Shipment, ShipmentState},
    db::schema::payment::{order_lines, shipment_lines, shipments},
    domain::{Error, OrderId, ShipmentId},
    events,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = shipments, check_for_backend(diesel::pg::Pg))]
struct ShipmentRow {
    id: Uuid,
    order_id: Uuid,
    request_id: Uuid,
    fingerprint: Vec<u8>,
    state: String,
    carrier: String,
    tracking_number: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = shipment_lines, check_for_backend(diesel::pg::Pg))]
struct ShipmentLineRow {
    shipment_id: Uuid,
    position: i32,
    sku: String,
    quantity: i64,
}

fn with_lines(conn: &mut PgConnection, row: ShipmentRow) -> Result<Shipment, Error> {
    let lines = shipment_lines::table
        .filter(shipment_lines::shipment_id.eq(row.id))
        .order(shipment_lines::position.asc())
        .select(ShipmentLineRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|line| {
            (
                Sku::from_stored(line.sku),
                Quantity::from_stored(line.quantity),
            )
        })
        .collect();
    Ok(Shipment {
        id: ShipmentId::from_uuid(row.id),
        order_id: OrderId::from_uuid(row.order_id),
        request_id: row.request_id,
        fingerprint: row.fingerprint,
        state: ShipmentState::from_stored(&row.state)?,
        carrier: row.carrier,
        tracking_number: row.tracking_number,
        lines,
        failure_reason: row.failure_reason,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Units of each SKU that SHIPPED and PENDING shipments of `order` claim.
pub(super) fn claimed(conn: &mut PgConnection, order: OrderId) -> Result<Vec<(Sku, i64)>, Error> {
    let rows: Vec<(String, i64)> = shipment_lines::table
        .inner_join(shipments::table)
        .filter(shipments::order_id.eq(order.uuid()))
        .filter(shipments::state.ne(ShipmentState::Failed.as_str()))
        .select((shipment_lines::sku, shipment_lines::quantity))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(sku, units)| (Sku::from_stored(sku), units))
        .collect())
}

/// When the last SHIPPED shipment of `order` shipped, if any has.
pub(super) fn last_shipped_at(
    conn: &mut PgConnection,
    order: OrderId,
) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(shipments::table
        .filter(shipments::order_id.eq(order.uuid()))
        .filter(shipments::state.eq(ShipmentState::Shipped.as_str()))
        .select(diesel::dsl::max(shipments::updated_at))
        .first(conn)?)
}

/// Stores the PENDING shipment `cmd` asks for, or returns the one the order
/// already has under its request id (same parameters) or refuses. The
/// order's row is locked first: concurrent shipments of one order plan one
/// after the other, each seeing the units the others claimed. Run it in a
/// transaction (`Store::write`).
#[instrument(skip_all, fields(order = %cmd.order_id))]
pub fn begin(
    conn: &mut PgConnection,
    cmd: &CreateShipment,
    now: DateTime<Utc>,
) -> Result<Shipment, Error> {
    orders::lock(conn, cmd.order_id)?;
    let existing = shipments::table
        .filter(shipments::order_id.eq(cmd.order_id.uuid()))
        .filter(shipments::request_id.eq(cmd.request_id))
        .select(ShipmentRow::as_select())
        .first(conn)
        .optional()?;
    if let Some(existing) = existing {
        if existing.fingerprint != cmd.fingerprint {
            return Err(Error::ShipmentRequestIdReused);
        }
        return with_lines(conn, existing);
    }
    let order = orders::load(conn, cmd.order_id)?;
    let lines = orders::lines(conn, &order)?;
    let planned = shipment::plan(&order, &lines, &claimed(conn, order.id)?, &cmd.lines)?;
    let id = ShipmentId::generate();
    diesel::insert_into(shipments::table)
        .values(ShipmentRow {
            id: id.uuid(),
            order_id: order.id.uuid(),
            request_id: cmd.request_id,
            fingerprint: cmd.fingerprint.clone(),
            state: ShipmentState::Pending.as_str().to_owned(),
            carrier: cmd.carrier.clone(),
            tracking_number: cmd.tracking_number.clone(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
        })
        .execute(conn)?;
    let rows: Vec<ShipmentLineRow> = planned
        .iter()
        .zip(0..)
        .map(|((sku, units), position)| ShipmentLineRow {
            shipment_id: id.uuid(),
            position,
            sku: sku.as_str().to_owned(),
            quantity: units.get(),
        })
        .collect();
    diesel::insert_into(shipment_lines::table)
        .values(&rows)
        .execute(conn)?;
    tracing::info!(shipment = %id, lines = rows.len(), "shipment stored");
    load(conn, id)
}

/// The shipment `id`.
pub fn load(conn: &mut PgConnection, id: ShipmentId) -> Result<Shipment, Error> {
    let row = shipments::table
        .find(id.uuid())
        .select(ShipmentRow::as_select())
        .first(conn)?;
    with_lines(conn, row)
}

/// Marks a PENDING shipment SHIPPED and adds its units to the order's
/// lines; a shipment no longer PENDING is returned as it is (a second
/// finish, e.g. by recovery, has no effect). Run it in a transaction.
#[instrument(skip_all, fields(shipment = %id))]
pub fn finish(
    conn: &mut PgConnection,
    id: ShipmentId,
    now: DateTime<Utc>,
) -> Result<Shipment, Error> {
    // The order's lock first, as every change of an order after checkout
    // takes it: one lock order, no deadlock with a racing cancel or return.
    let order: Uuid = shipments::table
        .find(id.uuid())
        .select(shipments::order_id)
        .first(conn)?;
    orders::lock(conn, OrderId::from_uuid(order))?;
    let locked: String = shipments::table
        .find(id.uuid())
        .select(shipments::state)
        .for_update()
        .first(conn)?;
    let shipment = load(conn, id)?;
    if ShipmentState::from_stored(&locked)? != ShipmentState::Pending {
        return Ok(shipment);
    }
    for (sku, units) in &shipment.lines {
        diesel::update(
            order_lines::table
                .filter(order_lines::order_id.eq(shipment.order_id.uuid()))
                .filter(order_lines::sku.eq(sku.as_str())),
        )
        .set(order_lines::shipped.eq(order_lines::shipped + units.get()))
        .execute(conn)?;
    }
    diesel::update(shipments::table.find(id.uuid()))
        .set((
            shipments::state.eq(ShipmentState::Shipped.as_str()),
            shipments::updated_at.eq(now),
        ))
        .execute(conn)?;
    orders::touch(conn, shipment.order_id, now)?;
    let shipped = load(conn, id)?;
    events::order_shipped(conn, &shipped, now)?;
    Ok(shipped)
}

/// Marks a PENDING shipment FAILED with `reason`: it ships nothing and its
/// units are free to ship again. No effect on a shipment no longer PENDING.
#[instrument(skip_all, fields(shipment = %id))]
pub fn fail(
    conn: &mut PgConnection,
    id: ShipmentId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Shipment, Error> {
    diesel::update(
        shipments::table
            .find(id.uuid())
            .filter(shipments::state.eq(ShipmentState::Pending.as_str())),
    )
    .set((
        shipments::state.eq(ShipmentState::Failed.as_str()),
        shipments::failure_reason.eq(reason),
        shipments::updated_at.eq(now),
    ))
    .execute(conn)?;
    load(conn, id)
}

/// A page of `order`'s shipments, oldest first: after the shipment
/// `after` (the previous page's last), at most `limit` rows.
#[instrument(skip_all, fields(order = %order))]
pub fn list(
    conn: &mut PgConnection,
    order: OrderId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Shipment>, Error> {
    let mut query = shipments::table
        .filter(shipments::order_id.eq(order.uuid()))
        .order(shipments::id.asc())
        .limit(limit)
        .select(ShipmentRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(shipments::id.gt(after));
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| with_lines(conn, row))
        .collect()
}
