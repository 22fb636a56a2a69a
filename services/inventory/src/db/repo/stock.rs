//! Stock levels and their movement log: reads, the one way stock moves
//! ([`apply`]), AdjustStock's compare-and-swap, and the movement listing.

use backroom_shared::{catalog::Sku, paging};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _,
    dsl::sql,
    prelude::*,
    sql_types::{BigInt, Bool, Text, Timestamptz},
};
use tracing::instrument;

use super::{Lock, products, reservations::expire_due};
use crate::{
    db::{
        models::{MovementRow, NewMovementRow, NewStockLevelRow, StockLevelRow},
        schema::inventory::{stock_levels, stock_movements},
    },
    domain::{
        Error,
        stock::{
            AdjustStock, Change, LevelKey, ListStockLevels, ListStockMovements, Movement,
            MovementScope, StockLevel,
        },
        values::LocationId,
    },
    events,
};

/// One stock level.
#[instrument(skip_all, fields(level = %key))]
pub fn get(conn: &mut PgConnection, key: &LevelKey) -> Result<StockLevel, Error> {
    find(conn, key)?.ok_or_else(|| Error::StockLevelNotFound(key.clone()))
}

fn find(conn: &mut PgConnection, key: &LevelKey) -> Result<Option<StockLevel>, Error> {
    Ok(stock_levels::table
        .find((key.sku.as_str(), key.location.as_str()))
        .select(StockLevelRow::as_select())
        .first(conn)
        .optional()?
        .map(StockLevel::from))
}

/// A page of stock levels by (sku, location).
#[instrument(skip_all, fields(product = ?list.scope.sku(), location = ?list.location))]
pub fn list(conn: &mut PgConnection, list: &ListStockLevels) -> Result<Vec<StockLevel>, Error> {
    let mut query = stock_levels::table
        .select(StockLevelRow::as_select())
        .order((stock_levels::sku.asc(), stock_levels::location.asc()))
        .limit(list.page.fetch_limit())
        .into_boxed();
    if let Some(sku) = list.scope.sku() {
        products::get(conn, sku)?;
        query = query.filter(stock_levels::sku.eq(sku.as_str().to_owned()));
    }
    if let Some(location) = &list.location {
        query = query.filter(stock_levels::location.eq(location.as_str().to_owned()));
    }
    if let Some(after) = &list.after {
        query = query.filter(
            stock_levels::sku.gt(after.sku.clone()).or(stock_levels::sku
                .eq(after.sku.clone())
                .and(stock_levels::location.gt(after.location.clone()))),
        );
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(StockLevel::from)
        .collect())
}

/// Every level of these SKUs (optionally at one location), by (sku,
/// location).
#[instrument(skip_all, fields(skus = skus.len()))]
pub fn levels_of(
    conn: &mut PgConnection,
    skus: &[Sku],
    location: Option<&LocationId>,
) -> Result<Vec<StockLevel>, Error> {
    let skus: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    let mut query = stock_levels::table
        .filter(stock_levels::sku.eq_any(skus))
        .select(StockLevelRow::as_select())
        .order((stock_levels::sku.asc(), stock_levels::location.asc()))
        .into_boxed();
    if let Some(location) = location {
        query = query.filter(stock_levels::location.eq(location.as_str().to_owned()));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(StockLevel::from)
        .collect())
}

/// Moves stock at one level and appends the movement, in one conditional
/// `UPDATE`: `None` when the level does not exist or the units leaving
/// `available` are not there. The row stays locked until the transaction
/// ends, so the movement's sequence (the new version) is gap-free.
#[instrument(skip_all, fields(level = %key, kind = %change.kind))]
pub fn apply(
    conn: &mut PgConnection,
    key: &LevelKey,
    change: Change<'_>,
    now: DateTime<Utc>,
) -> Result<Option<StockLevel>, Error> {
    let deltas = change.deltas();
    let Some(level) = diesel::update(
        stock_levels::table
            .find((key.sku.as_str(), key.location.as_str()))
            .filter(stock_levels::available.ge(deltas.needs_available())),
    )
    .set((
        stock_levels::available.eq(stock_levels::available + deltas.available),
        stock_levels::reserved.eq(stock_levels::reserved + deltas.reserved),
        stock_levels::committed.eq(stock_levels::committed + deltas.committed),
        stock_levels::version.eq(stock_levels::version + 1),
        stock_levels::updated_at.eq(now),
    ))
    .returning(StockLevelRow::as_returning())
    .get_result(conn)
    .optional()?
    else {
        return Ok(None);
    };
    let level = StockLevel::from(level);
    append(conn, &level, &change, now)?;
    Ok(Some(level))
}

fn append(
    conn: &mut PgConnection,
    level: &StockLevel,
    change: &Change<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    diesel::insert_into(stock_movements::table)
        .values(NewMovementRow::new(level, change, now))
        .execute(conn)?;
    events::stock_moved(conn, level, change, now)
}

/// Compare-and-swap adjustment of one level (see AdjustStock in the proto).
/// Units held by expired reservations are returned first when the
/// adjustment needs them.
#[instrument(skip_all, fields(level = %cmd.key, delta = cmd.delta))]
pub fn adjust(
    conn: &mut PgConnection,
    cmd: &AdjustStock,
    now: DateTime<Utc>,
) -> Result<StockLevel, Error> {
    let key = &cmd.key;
    products::get(conn, &key.sku)?;
    if cmd.creates_level() {
        return create(conn, cmd, now);
    }
    let level = stock_levels::table
        .find((key.sku.as_str(), key.location.as_str()))
        .select(StockLevelRow::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::StockLevelNotFound(key.clone()))?;
    cmd.check_version(level.version)?;
    if let Some(level) = apply(conn, key, cmd.change(), now)? {
        return Ok(level);
    }
    // Short: units held by reservations past their expiry are free already;
    // return them (EXPIRE movements) and try once more.
    if expire_due(
        conn,
        Some(std::slice::from_ref(&key.sku)),
        now,
        Lock::SkipLocked,
    )? > 0
        && let Some(level) = apply(conn, key, cmd.change(), now)?
    {
        return Ok(level);
    }
    let available = find(conn, key)?.map_or(0, |level| level.available);
    Err(cmd.short(available))
}

/// AdjustStock at expected version 0: creates the level with the delta.
fn create(
    conn: &mut PgConnection,
    cmd: &AdjustStock,
    now: DateTime<Utc>,
) -> Result<StockLevel, Error> {
    let key = &cmd.key;
    if cmd.delta < 0 {
        let existing = find(conn, key)?.map(|level| level.version);
        return Err(cmd.refuse_removal_from_new_level(existing));
    }
    // ON CONFLICT: of two concurrent creates, the second sees a version
    // mismatch instead of a unique violation.
    let created = diesel::insert_into(stock_levels::table)
        .values(NewStockLevelRow {
            sku: key.sku.as_str(),
            location: key.location.as_str(),
            available: cmd.delta,
            reserved: 0,
            committed: 0,
            version: 1,
            updated_at: now,
        })
        .on_conflict_do_nothing()
        .returning(StockLevelRow::as_returning())
        .get_result(conn)
        .optional()?;
    let Some(level) = created.map(StockLevel::from) else {
        let current = find(conn, key)?.map_or(0, |level| level.version);
        return Err(Error::VersionMismatch { current });
    };
    append(conn, &level, &cmd.change(), now)?;
    Ok(level)
}

/// A page of movements: for one level by sequence; otherwise by
/// (created_at, sku, location, sequence).
#[instrument(skip_all, fields(parent = ?list.scope, reservation = ?list.reservation))]
pub fn movements(
    conn: &mut PgConnection,
    list: &ListStockMovements,
) -> Result<Vec<Movement>, Error> {
    let mut query = stock_movements::table
        .select(MovementRow::as_select())
        .limit(list.page.fetch_limit())
        .into_boxed();
    match &list.scope {
        MovementScope::All => {}
        MovementScope::Product(sku) => {
            products::get(conn, sku)?;
            query = query.filter(stock_movements::sku.eq(sku.as_str().to_owned()));
        }
        MovementScope::Level(key) => {
            products::get(conn, &key.sku)?;
            get(conn, key)?;
            query = query
                .filter(stock_movements::sku.eq(key.sku.as_str().to_owned()))
                .filter(stock_movements::location.eq(key.location.as_str().to_owned()));
        }
    }
    if let Some(order_id) = list.reservation {
        query = query.filter(stock_movements::order_id.eq(order_id.0));
    }
    if matches!(list.scope, MovementScope::Level(..)) {
        query = query.order(stock_movements::sequence.asc());
        if let Some(after) = &list.after {
            query = query.filter(stock_movements::sequence.gt(after.sequence));
        }
    } else {
        query = query.order((
            stock_movements::created_at.asc(),
            stock_movements::sku.asc(),
            stock_movements::location.asc(),
            stock_movements::sequence.asc(),
        ));
        if let Some(after) = &list.after {
            let created = DateTime::<Utc>::from_timestamp_micros(after.created_micros)
                .ok_or_else(|| Error::Validation(vec![paging::bad_token()]))?;
            query = query.filter(
                sql::<Bool>("(created_at, sku, location, sequence) > (")
                    .bind::<Timestamptz, _>(created)
                    .sql(", ")
                    .bind::<Text, _>(after.sku.clone())
                    .sql(", ")
                    .bind::<Text, _>(after.location.clone())
                    .sql(", ")
                    .bind::<BigInt, _>(after.sequence)
                    .sql(")"),
            );
        }
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| Movement::try_from(row).map_err(Error::from))
        .collect()
}
