//! The saga's bookkeeping on `orders`: a lease makes one worker drive an
//! order at a time (across replicas); every transition is guarded by the
//! state it leaves and the lease; a failed round records its backoff; the
//! recovery scan finds what is due.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use tracing::instrument;
use uuid::Uuid;

use super::models::OrderChanges;
use crate::{
    checkout::{order::Progress, saga::State},
    db::schema::payment::{order_lines, orders},
    domain::{Error, OrderId},
    events,
};

fn terminal() -> [&'static str; 3] {
    State::TERMINAL.map(State::as_str)
}

/// Takes (or renews) the lease on an unfinished order for `worker` until
/// `until`. False when another worker holds a live lease or it is finished.
#[instrument(skip_all, fields(order = %id))]
pub fn acquire_lease(
    conn: &mut PgConnection,
    id: OrderId,
    worker: Uuid,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, Error> {
    let taken = diesel::update(
        orders::table
            .find(id.uuid())
            .filter(orders::state.ne_all(terminal()))
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

/// Moves the order from `from` to `to` with `progress`, if `worker` still
/// holds its lease and it is still in `from`; resets the retry counter.
/// Returns whether the transition happened.
#[instrument(skip_all, fields(order = %id, from = %from, to = %to))]
pub fn advance(
    conn: &mut PgConnection,
    id: OrderId,
    worker: Uuid,
    (from, to): (State, State),
    progress: &Progress,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    conn.transaction(|conn| {
        let target = orders::table
            .find(id.uuid())
            .filter(orders::state.eq(from.as_str()))
            .filter(orders::lease_owner.eq(worker));
        let moved = diesel::update(target)
            .set((
                OrderChanges::from(progress),
                orders::state.eq(to.as_str()),
                orders::attempts.eq(0),
                orders::next_attempt_at.eq(now),
                orders::updated_at.eq(now),
            ))
            .execute(conn)?;
        if moved == 1 && to == State::Completed {
            // A CancelOrder came while it was in checkout, too late to
            // compensate: it takes effect as the order completes.
            super::cancellations::begin_requested(conn, id, now)?;
        }
        if moved == 1 {
            for line in &progress.priced_lines {
                diesel::update(order_lines::table.find((id.uuid(), line.position)))
                    .set((
                        order_lines::display_name.eq(&line.display_name),
                        order_lines::unit_price_minor.eq(line.unit_price.map(|m| m.minor())),
                        order_lines::line_total_minor.eq(line.line_total.map(|m| m.minor())),
                        order_lines::discount_minor.eq(line.discount.map(|m| m.minor())),
                    ))
                    .execute(conn)?;
            }
            events::order_settled(conn, id, to, now)?;
        }
        Ok(moved == 1)
    })
}

/// Clears the failure of an order that turned out to be past the pivot
/// (COMPENSATING → CAPTURING).
#[instrument(skip_all, fields(order = %id))]
pub fn clear_failure(
    conn: &mut PgConnection,
    id: OrderId,
    worker: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let moved = diesel::update(
        orders::table
            .find(id.uuid())
            .filter(orders::state.eq(State::Compensating.as_str()))
            .filter(orders::lease_owner.eq(worker)),
    )
    .set((
        orders::state.eq(State::Capturing.as_str()),
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
    id: OrderId,
    worker: Uuid,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::update(
        orders::table
            .find(id.uuid())
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
pub fn release_lease(conn: &mut PgConnection, id: OrderId, worker: Uuid) -> Result<(), Error> {
    diesel::update(
        orders::table
            .find(id.uuid())
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
pub fn due(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderId>, Error> {
    Ok(orders::table
        .filter(orders::state.ne_all(terminal()))
        .filter(orders::next_attempt_at.le(now))
        .filter(
            orders::lease_until
                .is_null()
                .or(orders::lease_until.lt(now)),
        )
        .order(orders::next_attempt_at.asc())
        .limit(limit)
        .select(orders::id)
        .load::<Uuid>(conn)?
        .into_iter()
        .map(OrderId::from_uuid)
        .collect())
}
