//! The `orders` and `order_lines` tables: inserting an order idempotently,
//! leases, guarded state transitions, the recovery scan and listings.

use backroom_shared::paging::PageRequest;
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use crate::db::schema::payment::{order_lines, orders};

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request id was used for an order with other parameters.
    #[error("request id reused with other parameters")]
    RequestIdReused,
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] backroom_shared::db::DbError),
}

impl From<diesel::result::Error> for OrderError {
    fn from(err: diesel::result::Error) -> Self {
        OrderError::Db(err.into())
    }
}

/// An order row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub request_id: Uuid,
    pub fingerprint: Vec<u8>,
    pub shipping_address: String,
    pub shipping_address_snapshot: Option<Vec<u8>>,
    pub payment_method: String,
    pub currency_code: String,
    pub subtotal_minor: Option<i64>,
    pub shipping_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub shipping_zone: String,
    pub state: String,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub failure_metadata: Option<String>,
    pub failed_at_state: Option<String>,
    pub payment_intent: Option<String>,
    pub reservation: Option<String>,
    pub attempts: i32,
    pub lease_owner: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new order.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = orders)]
pub struct NewOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub request_id: Uuid,
    pub fingerprint: Vec<u8>,
    pub shipping_address: String,
    pub payment_method: String,
    pub currency_code: String,
    pub state: String,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An order line.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines, check_for_backend(diesel::pg::Pg))]
pub struct LineRow {
    pub order_id: Uuid,
    pub position: i32,
    pub sku: String,
    pub quantity: i64,
    pub display_name: String,
    pub unit_price_minor: Option<i64>,
    pub line_total_minor: Option<i64>,
}

/// Terminal states: no worker ever touches these again (NEEDS_ATTENTION
/// waits for an operator).
pub const TERMINAL: [&str; 3] = ["COMPLETED", "FAILED", "NEEDS_ATTENTION"];

/// Inserts the order with its lines, or — when the customer already used
/// the request id — returns the existing one (same parameters) or refuses.
/// The boolean says whether it was created now.
#[instrument(skip_all, fields(order = %order.id))]
pub fn insert_order(
    conn: &mut PgConnection,
    order: &NewOrder,
    lines: &[LineRow],
) -> Result<(OrderRow, bool), OrderError> {
    conn.transaction(|conn| {
        let inserted = diesel::insert_into(orders::table)
            .values(order)
            .on_conflict((orders::customer_id, orders::request_id))
            .do_nothing()
            .execute(conn)?;
        if inserted == 1 {
            diesel::insert_into(order_lines::table)
                .values(lines)
                .execute(conn)?;
            return Ok((load(conn, order.id)?, true));
        }
        // A concurrent twin committed first (the insert waited for it).
        let existing = orders::table
            .filter(orders::customer_id.eq(order.customer_id))
            .filter(orders::request_id.eq(order.request_id))
            .select(OrderRow::as_select())
            .first(conn)?;
        if existing.fingerprint != order.fingerprint {
            return Err(OrderError::RequestIdReused);
        }
        Ok((existing, false))
    })
}

/// The order with `id`.
#[instrument(skip_all, fields(order = %id))]
pub fn load(conn: &mut PgConnection, id: Uuid) -> Result<OrderRow, OrderError> {
    orders::table
        .find(id)
        .select(OrderRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(OrderError::NotFound)
}

/// The lines of an order, in request order.
#[instrument(skip_all, fields(order = %id))]
pub fn lines(conn: &mut PgConnection, id: Uuid) -> Result<Vec<LineRow>, OrderError> {
    Ok(order_lines::table
        .filter(order_lines::order_id.eq(id))
        .order(order_lines::position.asc())
        .select(LineRow::as_select())
        .load(conn)?)
}

/// Takes (or renews) the lease on an unfinished order for `worker` until
/// `until`. False when another worker holds a live lease or it is finished.
#[instrument(skip_all, fields(order = %id))]
pub fn acquire_lease(
    conn: &mut PgConnection,
    id: Uuid,
    worker: Uuid,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, OrderError> {
    let taken = diesel::update(
        orders::table
            .find(id)
            .filter(orders::state.ne_all(TERMINAL))
            .filter(
                orders::lease_until
                    .is_null()
                    .or(orders::lease_until.lt(now))
                    .or(orders::lease_owner.eq(worker)),
            ),
    )
    .set((
        orders::lease_owner.eq(worker),
        orders::lease_until.eq(until),
    ))
    .execute(conn)?;
    Ok(taken == 1)
}

/// What a step changes besides the state.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = orders)]
pub struct OrderChanges {
    pub shipping_address_snapshot: Option<Vec<u8>>,
    pub subtotal_minor: Option<i64>,
    pub shipping_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub shipping_zone: Option<String>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub failure_metadata: Option<String>,
    pub failed_at_state: Option<String>,
    pub payment_intent: Option<String>,
    pub reservation: Option<String>,
}

/// Moves the order from `from` to `to` with `changes`, if `worker` still
/// holds its lease and it is still in `from`; resets the retry counter.
/// Returns whether the transition happened.
#[instrument(skip_all, fields(order = %id, from, to))]
#[allow(clippy::too_many_arguments)]
pub fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    worker: Uuid,
    from: &str,
    to: &str,
    changes: &OrderChanges,
    priced_lines: &[LineRow],
    now: DateTime<Utc>,
) -> Result<bool, OrderError> {
    conn.transaction(|conn| {
        let target = orders::table
            .find(id)
            .filter(orders::state.eq(from))
            .filter(orders::lease_owner.eq(worker));
        let moved = diesel::update(target)
            .set((
                changes,
                orders::state.eq(to),
                orders::attempts.eq(0),
                orders::next_attempt_at.eq(now),
                orders::updated_at.eq(now),
            ))
            .execute(conn)?;
        if moved == 1 {
            for line in priced_lines {
                diesel::update(order_lines::table.find((line.order_id, line.position)))
                    .set((
                        order_lines::display_name.eq(&line.display_name),
                        order_lines::unit_price_minor.eq(line.unit_price_minor),
                        order_lines::line_total_minor.eq(line.line_total_minor),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(moved == 1)
    })
}

/// Clears the failure of an order that turned out to be past the pivot.
#[instrument(skip_all, fields(order = %id))]
pub fn clear_failure(
    conn: &mut PgConnection,
    id: Uuid,
    worker: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, OrderError> {
    let moved = diesel::update(
        orders::table
            .find(id)
            .filter(orders::state.eq("COMPENSATING"))
            .filter(orders::lease_owner.eq(worker)),
    )
    .set((
        orders::state.eq("CAPTURING"),
        orders::failure_reason.eq(None::<String>),
        orders::failure_message.eq(None::<String>),
        orders::failure_metadata.eq(None::<String>),
        orders::failed_at_state.eq(None::<String>),
        orders::attempts.eq(0),
        orders::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(moved == 1)
}

/// Records a failed attempt of the current step and when to try again,
/// and gives up the lease so any worker may retry then.
#[instrument(skip_all, fields(order = %id))]
pub fn record_retry(
    conn: &mut PgConnection,
    id: Uuid,
    worker: Uuid,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), OrderError> {
    diesel::update(
        orders::table
            .find(id)
            .filter(orders::lease_owner.eq(worker)),
    )
    .set((
        orders::attempts.eq(attempts),
        orders::next_attempt_at.eq(next_attempt_at),
        orders::lease_owner.eq(None::<Uuid>),
        orders::lease_until.eq(None::<DateTime<Utc>>),
        orders::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(())
}

/// Gives up the lease (the order is terminal or paused).
#[instrument(skip_all, fields(order = %id))]
pub fn release_lease(conn: &mut PgConnection, id: Uuid, worker: Uuid) -> Result<(), OrderError> {
    diesel::update(
        orders::table
            .find(id)
            .filter(orders::lease_owner.eq(worker)),
    )
    .set((
        orders::lease_owner.eq(None::<Uuid>),
        orders::lease_until.eq(None::<DateTime<Utc>>),
    ))
    .execute(conn)?;
    Ok(())
}

/// Unfinished orders that are due and not leased: the recovery scan.
#[instrument(skip_all)]
pub fn due_orders(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, OrderError> {
    Ok(orders::table
        .filter(orders::state.ne_all(TERMINAL))
        .filter(orders::next_attempt_at.le(now))
        .filter(
            orders::lease_until
                .is_null()
                .or(orders::lease_until.lt(now)),
        )
        .order(orders::next_attempt_at.asc())
        .limit(limit)
        .select(orders::id)
        .load(conn)?)
}

/// A page of orders, newest first.
#[instrument(skip_all)]
pub fn list_orders(
    conn: &mut PgConnection,
    customer: Option<Uuid>,
    state: Option<&str>,
    page: &PageRequest,
    before: Option<Uuid>,
) -> Result<Vec<OrderRow>, OrderError> {
    let mut query = orders::table
        .select(OrderRow::as_select())
        .order(orders::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(customer) = customer {
        query = query.filter(orders::customer_id.eq(customer));
    }
    if let Some(state) = state {
        query = query.filter(orders::state.eq(state.to_owned()));
    }
    if let Some(before) = before {
        query = query.filter(orders::id.lt(before));
    }
    Ok(query.load(conn)?)
}
