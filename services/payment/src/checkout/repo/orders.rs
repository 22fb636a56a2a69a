//! Storing an order idempotently and reading orders back.

use backroom_shared::{money::Money, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;

use super::models::{LineRow, NewOrderRow, OrderRow};
use crate::{
    checkout::{
        cancellation::CancelOrder,
        order::{NewOrder, Order, OrderLine},
        saga::State,
    },
    db::schema::payment::{order_lines, orders},
    domain::{CustomerId, Error, OrderId},
    events,
};

/// Inserts the order with its lines at `now`, or — when the customer
/// already used the request id — returns the existing one (same
/// parameters) or refuses. The boolean says whether it was created now.
#[instrument(skip_all, fields(order = %order.id))]
pub fn insert_order(
    conn: &mut PgConnection,
    order: &NewOrder,
    now: DateTime<Utc>,
) -> Result<(Order, bool), Error> {
    conn.transaction(|conn| {
        let inserted = diesel::insert_into(orders::table)
            .values(NewOrderRow::new(order, now))
            .on_conflict((orders::customer_id, orders::request_id))
            .do_nothing()
            .execute(conn)?;
        if inserted == 1 {
            diesel::insert_into(order_lines::table)
                .values(LineRow::unpriced(order))
                .execute(conn)?;
            events::order_placed(conn, order.id, now)?;
            return Ok((load(conn, order.id)?, true));
        }
        // A concurrent twin committed first (the insert waited for it).
        let existing: Order = orders::table
            .filter(orders::customer_id.eq(order.customer.uuid()))
            .filter(orders::request_id.eq(order.request_id))
            .select(OrderRow::as_select())
            .first(conn)?
            .try_into()?;
        if existing.fingerprint != order.fingerprint {
            return Err(Error::OrderRequestIdReused);
        }
        Ok((existing, false))
    })
}

/// The order with `id`, if there is one.
#[instrument(skip_all, fields(order = %id))]
pub fn find(conn: &mut PgConnection, id: OrderId) -> Result<Option<Order>, Error> {
    orders::table
        .find(id.uuid())
        .select(OrderRow::as_select())
        .first(conn)
        .optional()?
        .map(Order::try_from)
        .transpose()
}

/// Locks the order's row until the transaction ends (ORDER_NOT_FOUND if
/// there is none): what changes an order after checkout — its shipments,
/// cancellations, returns and refunds — takes this lock first, so they
/// happen one at a time per order and each sees what the others claimed.
pub fn lock(conn: &mut PgConnection, id: OrderId) -> Result<(), Error> {
    orders::table
        .find(id.uuid())
        .select(orders::id)
        .for_update()
        .first::<uuid::Uuid>(conn)
        .optional()?
        .ok_or(Error::OrderNotFound(id))?;
    Ok(())
}

/// Claims `amount` of the locked order's money for a refund about to be
/// stored (its cancellation, return or goodwill refund): what later
/// refunds may promise shrinks by it.
pub fn claim_refund(
    conn: &mut PgConnection,
    id: OrderId,
    amount: Money,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(orders::table.find(id.uuid()))
        .set((
            orders::refund_claimed_minor.eq(orders::refund_claimed_minor + amount.minor()),
            orders::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Keeps a CancelOrder of the order still in checkout (`cmd`) for the saga
/// to heed; the first such request stays, later ones change nothing. Run
/// it under the order's lock.
pub fn request_cancel(
    conn: &mut PgConnection,
    cmd: &CancelOrder,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(
        orders::table
            .find(cmd.order_id.uuid())
            .filter(orders::cancel_request_id.is_null()),
    )
    .set((
        orders::cancel_request_id.eq(cmd.request_id),
        orders::cancel_fingerprint.eq(&cmd.fingerprint),
        orders::cancel_reason.eq(&cmd.reason),
        orders::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(())
}

/// Marks the order changed at `now` (something of it changed elsewhere: a
/// shipment, a return).
pub fn touch(conn: &mut PgConnection, id: OrderId, now: DateTime<Utc>) -> Result<(), Error> {
    diesel::update(orders::table.find(id.uuid()))
        .set(orders::updated_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// Records that a claimed refund of `amount` was paid back.
pub fn refunded(
    conn: &mut PgConnection,
    id: OrderId,
    amount: Money,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(orders::table.find(id.uuid()))
        .set((
            orders::refunded_minor.eq(orders::refunded_minor + amount.minor()),
            orders::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The order with `id` (ORDER_NOT_FOUND if there is none).
pub fn load(conn: &mut PgConnection, id: OrderId) -> Result<Order, Error> {
    find(conn, id)?.ok_or(Error::OrderNotFound(id))
}

/// The lines of an order, in request order.
#[instrument(skip_all, fields(order = %order.id))]
pub fn lines(conn: &mut PgConnection, order: &Order) -> Result<Vec<OrderLine>, Error> {
    Ok(order_lines::table
        .filter(order_lines::order_id.eq(order.id.uuid()))
        .order(order_lines::position.asc())
        .select(LineRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|row| row.into_line(order.currency))
        .collect())
}

/// The order with `id` and its lines, if there is one.
pub fn find_with_lines(
    conn: &mut PgConnection,
    id: OrderId,
) -> Result<Option<(Order, Vec<OrderLine>)>, Error> {
    let Some(order) = find(conn, id)? else {
        return Ok(None);
    };
    let lines = lines(conn, &order)?;
    Ok(Some((order, lines)))
}

/// A page of orders with their lines, newest first.
#[instrument(skip_all, fields(customer = customer.map(tracing::field::display)))]
pub fn list(
    conn: &mut PgConnection,
    customer: Option<CustomerId>,
    state: Option<State>,
    page: &PageRequest,
    before: Option<OrderId>,
) -> Result<Vec<(Order, Vec<OrderLine>)>, Error> {
    let mut query = orders::table
        .select(OrderRow::as_select())
        .order(orders::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(customer) = customer {
        query = query.filter(orders::customer_id.eq(customer.uuid()));
    }
    if let Some(state) = state {
        query = query.filter(orders::state.eq(state.as_str()));
    }
    if let Some(before) = before {
        query = query.filter(orders::id.lt(before.uuid()));
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| {
            let order = Order::try_from(row)?;
            let lines = lines(conn, &order)?;
            Ok((order, lines))
        })
        .collect()
}
