//! Reservations: ReserveStock (every line or nothing, idempotent per
//! order), Commit and Release (one code path, parameterised by the
//! [`Transition`]), shipping and uncommitting committed units, expiry (lazy
//! and swept), and the sweep itself.

use backroom_shared::{
    catalog::{DiscountCode, Sku},
    db::{DbError, Pool},
};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _,
    prelude::*,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
use tracing::instrument;
use uuid::Uuid;

use super::{Lock, pricing, products, stock};
use crate::{
    db::{
        models::{self, ReservationLineRow, ReservationRow},
        schema::inventory::{reservation_lines, reservations, stock_levels},
    },
    domain::{
        Error,
        products::require_active,
        reservations::{
            Ending, RequestedLine, Reservation, ReservationLine, ReservationState, ReserveStock,
            SettleReservation, Settlement, Step, Transition, require_every_line,
        },
        stock::{Change, LevelKey, MovementKind},
        values::{LocationId, OrderId},
    },
    events,
};

/// Reservations expired per transaction by the sweeper and lazy expiry.
pub const EXPIRY_BATCH: i64 = 200;

/// Reserves every line or nothing (see ReserveStock in the proto).
/// Idempotent per order id.
#[instrument(skip_all, fields(order = %cmd.order_id, lines = cmd.lines.len()))]
pub fn reserve(
    conn: &mut PgConnection,
    cmd: &ReserveStock,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    // The header first: a concurrent call for the same order waits on its
    // primary key, then finds the committed reservation (or inserts its own
    // if the first rolled back), instead of both taking stock.
    let inserted = diesel::insert_into(reservations::table)
        .values(ReservationRow {
            order_id: cmd.order_id.0,
            state: ReservationState::Active.as_str().to_owned(),
            expire_at: cmd.expire_at(now),
            created_at: now,
            updated_at: now,
        })
        .on_conflict_do_nothing()
        .execute(conn)?;
    if inserted == 0 {
        let existing = load(conn, cmd.order_id, true)?;
        if !cmd.matches(&existing) {
            return Err(Error::OrderIdReused);
        }
        return if existing.is_due(now) {
            end(conn, existing, Ending::Expire, now)
        } else {
            Ok(existing)
        };
    }
    let skus: Vec<&Sku> = cmd.lines.iter().map(|line| &line.sku).collect();
    require_active(&products::require(conn, &skus)?)?;
    let mut short = Vec::new();
    let mut rows = Vec::with_capacity(cmd.lines.len());
    for (position, line) in cmd.lines_in_lock_order() {
        match reserve_line(conn, cmd.order_id, line, now)? {
            Some(location) => {
                let reserved = ReservationLine {
                    sku: line.sku.clone(),
                    location,
                    quantity: line.quantity,
                    shipped: 0,
                    uncommitted: 0,
                    restocked: 0,
                    written_off: 0,
                };
                rows.push(ReservationLineRow::new(cmd.order_id, position, &reserved));
            }
            // Keep going: the error names every short line. The caller's
            // transaction rolls back whatever was taken.
            None => short.push(line.sku.clone()),
        }
    }
    require_every_line(short)?;
    diesel::insert_into(reservation_lines::table)
        .values(&rows)
        .execute(conn)?;
    if !cmd.discount_codes.is_empty() {
        // The codes after the levels: one lock order for everyone.
        let customer = cmd
            .customer
            .ok_or_else(|| Error::field("customer", "is required with discount_codes"))?;
        pricing::redeem(conn, cmd.order_id, customer, &cmd.discount_codes, now)?;
    }
    let made = load(conn, cmd.order_id, false)?;
    events::reservation_made(conn, &made, now)?;
    Ok(made)
}

/// Takes one line's units; the location taken, or `None` when short.
fn reserve_line(
    conn: &mut PgConnection,
    order_id: OrderId,
    line: &RequestedLine,
    now: DateTime<Utc>,
) -> Result<Option<LocationId>, Error> {
    if let Some(location) = take(conn, order_id, line, now)? {
        return Ok(Some(location));
    }
    // Units held by reservations past their expiry are free already: return
    // them (EXPIRE movements) and try once more. Only on this slow path, so
    // the common case stays one UPDATE per line.
    if expire_due(
        conn,
        Some(std::slice::from_ref(&line.sku)),
        now,
        Lock::SkipLocked,
    )? > 0
    {
        return take(conn, order_id, line, now);
    }
    Ok(None)
}

fn take(
    conn: &mut PgConnection,
    order_id: OrderId,
    line: &RequestedLine,
    now: DateTime<Utc>,
) -> Result<Option<LocationId>, Error> {
    let units = line.quantity.get();
    let change = Change::of_reservation(MovementKind::Reserve, units, order_id);
    let at = |location: LocationId| LevelKey {
        sku: line.sku.clone(),
        location,
    };
    if let Some(location) = &line.location {
        return Ok(stock::apply(conn, &at(location.clone()), change, now)?.map(|l| l.key.location));
    }
    // The location with the most available units (ties: lowest id) that
    // covers the whole line. A concurrent reservation may drain it between
    // the pick and the conditional UPDATE; then pick again.
    for _ in 0..5 {
        let candidate: Option<String> = stock_levels::table
            .filter(stock_levels::sku.eq(line.sku.as_str()))
            .filter(stock_levels::available.ge(units))
            .order((stock_levels::available.desc(), stock_levels::location.asc()))
            .select(stock_levels::location)
            .first(conn)
            .optional()?;
        let Some(location) = candidate else {
            return Ok(None);
        };
        let key = at(LocationId::from_stored(location));
        if let Some(level) = stock::apply(conn, &key, change, now)? {
            return Ok(Some(level.key.location));
        }
    }
    Ok(None)
}

/// The reservation of `order_id` (locked when `for_update`).
#[instrument(skip_all, fields(order = %order_id))]
pub fn load(
    conn: &mut PgConnection,
    order_id: OrderId,
    for_update: bool,
) -> Result<Reservation, Error> {
    let query = reservations::table
        .find(order_id.0)
        .select(ReservationRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    let row = row.ok_or(Error::ReservationNotFound(order_id))?;
    let lines = reservation_lines::table
        .filter(reservation_lines::order_id.eq(order_id.0))
        .select(ReservationLineRow::as_select())
        .load(conn)?;
    let codes = pricing::codes_of(conn, order_id)?;
    Ok(models::reservation(row, lines, codes)?)
}

/// Commits or releases a reservation, as [`Transition::decide`] rules
/// (idempotent by state).
#[instrument(skip_all, fields(order = %order_id, transition = ?transition))]
pub fn transition(
    conn: &mut PgConnection,
    order_id: OrderId,
    transition: Transition,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    let reservation = load(conn, order_id, true)?;
    match transition.decide(&reservation, now)? {
        Step::Unchanged => Ok(reservation),
        Step::End(ending) => end(conn, reservation, ending, now),
    }
}

/// Ships or uncommits units of a committed reservation's lines (see
/// ShipReservation and UncommitReservation in the proto): the reservation
/// row is locked first, so concurrent calls on the same lines serialise and
/// together never settle more than a line holds; each line is a SHIP or
/// UNCOMMIT movement at its location.
#[instrument(skip_all, fields(order = %cmd.order_id, settlement = ?cmd.settlement))]
pub fn settle(
    conn: &mut PgConnection,
    cmd: &SettleReservation,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    let reservation = load(conn, cmd.order_id, true)?;
    for (line, units) in cmd.check(&reservation)? {
        // A write-off moves no part of the level: its note keeps the count.
        let note = match cmd.settlement {
            Settlement::WriteOff => format!("{units} returned units written off"),
            _ => String::new(),
        };
        let change = Change {
            note: &note,
            ..Change::of_reservation(cmd.settlement.movement(), units, cmd.order_id)
        };
        let level = line.level();
        stock::apply(conn, &level, change, now)?.ok_or_else(|| {
            // The line's foreign key guarantees the level exists.
            Error::Db(DbError::Other(anyhow::anyhow!(
                "stock level {level} of a reservation line is missing"
            )))
        })?;
        let row = reservation_lines::table.find((cmd.order_id.0, line.sku.as_str()));
        match cmd.settlement {
            Settlement::Ship => diesel::update(row)
                .set(reservation_lines::shipped.eq(reservation_lines::shipped + units))
                .execute(conn)?,
            Settlement::Uncommit => diesel::update(row)
                .set(reservation_lines::uncommitted.eq(reservation_lines::uncommitted + units))
                .execute(conn)?,
            Settlement::Restock => diesel::update(row)
                .set(reservation_lines::restocked.eq(reservation_lines::restocked + units))
                .execute(conn)?,
            Settlement::WriteOff => diesel::update(row)
                .set(reservation_lines::written_off.eq(reservation_lines::written_off + units))
                .execute(conn)?,
        };
    }
    diesel::update(reservations::table.find(cmd.order_id.0))
        .set(reservations::updated_at.eq(now))
        .execute(conn)?;
    let settled = load(conn, cmd.order_id, false)?;
    // Every unit uncommitted, none shipped: the order was canceled before
    // anything left, so its discount codes' uses come back.
    if cmd.settlement == Settlement::Uncommit
        && settled
            .lines
            .iter()
            .all(|line| line.uncommitted == line.quantity.get())
    {
        pricing::give_back(conn, &[cmd.order_id.0])?;
    }
    Ok(settled)
}

/// Ends a locked ACTIVE reservation, moving its units.
fn end(
    conn: &mut PgConnection,
    mut reservation: Reservation,
    ending: Ending,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    for line in reservation.lines_in_lock_order() {
        move_held(conn, reservation.order_id, line, ending.movement(), now)?;
    }
    if ending != Ending::Commit {
        pricing::give_back(conn, &[reservation.order_id.0])?;
    }
    let state = ending.state();
    diesel::update(reservations::table.find(reservation.order_id.0))
        .set((
            reservations::state.eq(state.as_str()),
            reservations::updated_at.eq(now),
        ))
        .execute(conn)?;
    reservation.state = state;
    reservation.updated_at = now;
    events::reservation_ended(conn, &reservation, ending, now)?;
    Ok(reservation)
}

/// Moves the units a line holds (COMMIT, RELEASE or EXPIRE).
fn move_held(
    conn: &mut PgConnection,
    order_id: OrderId,
    line: &ReservationLine,
    kind: MovementKind,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let change = Change::of_reservation(kind, line.quantity.get(), order_id);
    let level = line.level();
    stock::apply(conn, &level, change, now)?
        .map(|_| ())
        .ok_or_else(|| {
            // The line's foreign key guarantees the level exists.
            Error::Db(DbError::Other(anyhow::anyhow!(
                "stock level {level} of a reservation line is missing"
            )))
        })
}

#[derive(QueryableByName)]
struct DueReservation {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    order_id: Uuid,
}

/// Expires up to [`EXPIRY_BATCH`] ACTIVE reservations past their expiry at
/// `now` — all of them, or only those holding one of `skus` — returning
/// their units with EXPIRE movements. Returns how many it expired. Safe to
/// run concurrently anywhere: each reservation is expired exactly once.
#[instrument(skip_all, fields(skus = ?skus))]
pub fn expire_due(
    conn: &mut PgConnection,
    skus: Option<&[Sku]>,
    now: DateTime<Utc>,
    lock: Lock,
) -> Result<usize, Error> {
    expire(conn, skus, None, now, lock)
}

/// Like [`expire_due`], for the reservations holding a use of `code`.
pub fn expire_due_holding(
    conn: &mut PgConnection,
    code: &DiscountCode,
    now: DateTime<Utc>,
    lock: Lock,
) -> Result<usize, Error> {
    expire(conn, None, Some(code), now, lock)
}

fn expire(
    conn: &mut PgConnection,
    skus: Option<&[Sku]>,
    code: Option<&DiscountCode>,
    now: DateTime<Utc>,
    lock: Lock,
) -> Result<usize, Error> {
    let locking = match lock {
        Lock::Wait => "FOR UPDATE",
        Lock::SkipLocked => "FOR UPDATE SKIP LOCKED",
    };
    let skus: Option<Vec<&str>> = skus.map(|skus| skus.iter().map(Sku::as_str).collect());
    let due: Vec<DueReservation> = diesel::sql_query(format!(
        "SELECT r.order_id FROM reservations r \
         WHERE r.state = 'ACTIVE' AND r.expire_at <= $1 \
           AND ($2::text[] IS NULL OR EXISTS ( \
               SELECT 1 FROM reservation_lines l WHERE l.order_id = r.order_id AND l.sku = ANY($2))) \
           AND ($4::text IS NULL OR EXISTS ( \
               SELECT 1 FROM discount_redemptions d \
                WHERE d.order_id = r.order_id AND d.code = $4 AND NOT d.returned)) \
         ORDER BY r.order_id LIMIT $3 {locking}"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<Array<Text>>, _>(skus)
    .bind::<BigInt, _>(EXPIRY_BATCH)
    .bind::<Nullable<Text>, _>(code.map(DiscountCode::as_str))
    .load(conn)?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = due.iter().map(|d| d.order_id).collect();
    diesel::update(reservations::table.filter(reservations::order_id.eq_any(&ids)))
        .set((
            reservations::state.eq(Ending::Expire.state().as_str()),
            reservations::updated_at.eq(now),
        ))
        .execute(conn)?;
    // Every line of every reservation in (sku, location) order: the same
    // lock order as reservations take.
    let lines: Vec<ReservationLineRow> = reservation_lines::table
        .filter(reservation_lines::order_id.eq_any(&ids))
        .select(ReservationLineRow::as_select())
        .order((
            reservation_lines::sku.asc(),
            reservation_lines::location.asc(),
            reservation_lines::order_id.asc(),
        ))
        .load(conn)?;
    for row in lines {
        let order_id = OrderId(row.order_id);
        let line = ReservationLine::from(row);
        move_held(conn, order_id, &line, Ending::Expire.movement(), now)?;
    }
    pricing::give_back(conn, &ids)?;
    for id in &ids {
        let expired = load(conn, OrderId(*id), false)?;
        events::reservation_ended(conn, &expired, Ending::Expire, now)?;
    }
    tracing::info!(expired = ids.len(), "reservations expired");
    Ok(ids.len())
}

/// Expires every ACTIVE reservation past its expiry at `now`, returning its
/// units (EXPIRE movements); returns how many it expired. Idempotent and
/// safe to run on several replicas at once (`FOR UPDATE SKIP LOCKED`).
#[instrument(skip_all, fields(due_by = %now))]
pub async fn sweep_expired(pool: &Pool, now: DateTime<Utc>) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let expired = pool
            .transaction(move |conn| {
                expire_due(conn, None, now, Lock::SkipLocked).map_err(|err| match err {
                    Error::Db(err) => err,
                    other => DbError::Other(anyhow::anyhow!("{other}")),
                })
            })
            .await?;
        total += expired;
        if i64::try_from(expired).unwrap_or(i64::MAX) < EXPIRY_BATCH {
            return Ok(total);
        }
    }
}
