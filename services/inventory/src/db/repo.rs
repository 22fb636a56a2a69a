//! Repository functions: each takes a connection (the caller owns the
//! transaction) and the current time from the service clock. Every call is
//! instrumented.
//!
//! Concurrency rules, relied on by the tests:
//! - stock only moves through [`apply_movement`]: one conditional `UPDATE`
//!   (`available >= n` where units leave `available`) that bumps the level's
//!   version, plus the movement with that version as its sequence — so the
//!   log has no gaps and never disagrees with the level, and no interleaving
//!   can oversell;
//! - a transaction touching several levels locks them in (sku, location)
//!   order, so concurrent multi-line reservations cannot deadlock each other;
//! - expiry locks reservations `FOR UPDATE SKIP LOCKED`, so any number of
//!   sweepers (replicas) and lazy expirers run at once, each reservation's
//!   units returned exactly once.

use std::collections::{BTreeMap, BTreeSet};

use backroom_shared::{db::DbError, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _,
    dsl::sql,
    prelude::*,
    sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz},
};
use tracing::instrument;
use uuid::Uuid;

use super::{
    models::{
        MovementRow, NewStockLevelRow, ProductRow, Reservation, ReservationLineRow, ReservationRow,
        ShippingRateRow, ShippingZone, StockLevelRow,
    },
    schema::inventory::{
        products, reservation_lines, reservations, shipping_rates, shipping_zone_countries,
        shipping_zones, stock_levels, stock_movements,
    },
};
use crate::domain::{
    Error, LocationId, MinorUnits, MovementKind, MovementScope, OrderId, ProductScope, Quantity,
    ReservationState, Sku,
    shipping::{Band, band_for, zone_for},
    stock_level_name,
};

/// Reservations expired per transaction by the sweeper and lazy expiry.
pub const EXPIRY_BATCH: i64 = 200;

// ---------------------------------------------------------------- products

/// Inserts a product; a taken SKU is [`Error::ProductAlreadyExists`].
#[instrument(skip_all, fields(sku = %row.sku))]
pub fn insert_product(conn: &mut PgConnection, row: &ProductRow) -> Result<ProductRow, Error> {
    diesel::insert_into(products::table)
        .values(row)
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::ProductAlreadyExists(row.sku.clone()),
            other => Error::Db(other),
        })
}

/// The product with `sku`.
#[instrument(skip_all, fields(sku = %sku))]
pub fn get_product(conn: &mut PgConnection, sku: &Sku) -> Result<ProductRow, Error> {
    get_product_row(conn, sku, false)
}

fn get_product_row(
    conn: &mut PgConnection,
    sku: &Sku,
    for_update: bool,
) -> Result<ProductRow, Error> {
    let query = products::table
        .find(sku.as_str())
        .select(ProductRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    row.ok_or_else(|| Error::ProductNotFound(vec![sku.to_string()]))
}

/// The products with these SKUs (those that exist).
#[instrument(skip_all, fields(count = skus.len()))]
pub fn products_by_sku(conn: &mut PgConnection, skus: &[&str]) -> Result<Vec<ProductRow>, Error> {
    Ok(products::table
        .filter(products::sku.eq_any(skus))
        .select(ProductRow::as_select())
        .load(conn)?)
}

/// Fails with [`Error::ProductNotFound`] naming every SKU that does not exist.
pub fn require_products(conn: &mut PgConnection, skus: &[&str]) -> Result<Vec<ProductRow>, Error> {
    let found = products_by_sku(conn, skus)?;
    let missing: Vec<String> = skus
        .iter()
        .filter(|sku| !found.iter().any(|p| p.sku == **sku))
        .map(|sku| (*sku).to_owned())
        .collect();
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(Error::ProductNotFound(sorted(missing)))
    }
}

/// Filters of ListProducts.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// Only active (`Some(true)`) or inactive (`Some(false)`) products.
    pub active: Option<bool>,
    /// Case-insensitive substring of display_name or description.
    pub query: Option<String>,
}

/// A page of products by SKU.
#[instrument(skip_all)]
pub fn list_products(
    conn: &mut PgConnection,
    filter: &ProductFilter,
    page: &PageRequest,
) -> Result<Vec<ProductRow>, Error> {
    let mut query = products::table
        .select(ProductRow::as_select())
        .order(products::sku.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = &page.after {
        query = query.filter(products::sku.gt(after.clone()));
    }
    if let Some(active) = filter.active {
        query = query.filter(products::active.eq(active));
    }
    if let Some(text) = &filter.query {
        let pattern = format!("%{}%", escape_like(text));
        query = query.filter(
            products::display_name
                .ilike(pattern.clone())
                .or(products::description.ilike(pattern)),
        );
    }
    Ok(query.load(conn)?)
}

/// LIKE metacharacters in user text match themselves.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The changes of an UpdateProduct.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New unit price (currency, minor units).
    pub unit_price: Option<(String, i64)>,
    /// New unit weight.
    pub weight_grams: Option<i64>,
    /// New active flag.
    pub active: Option<bool>,
}

/// Applies `changes` if the product is at `expected_version` (when given).
#[instrument(skip_all, fields(sku = %sku))]
pub fn update_product(
    conn: &mut PgConnection,
    sku: &Sku,
    expected_version: Option<i64>,
    changes: ProductChanges,
    now: DateTime<Utc>,
) -> Result<ProductRow, Error> {
    let current = get_product_row(conn, sku, true)?;
    if expected_version.is_some_and(|v| v != current.version) {
        return Err(Error::EtagMismatch);
    }
    let (currency_code, price_minor) = changes
        .unit_price
        .unwrap_or((current.currency_code, current.price_minor));
    Ok(diesel::update(products::table.find(sku.as_str()))
        .set((
            products::display_name.eq(changes.display_name.unwrap_or(current.display_name)),
            products::description.eq(changes.description.unwrap_or(current.description)),
            products::currency_code.eq(currency_code),
            products::price_minor.eq(price_minor),
            products::weight_grams.eq(changes.weight_grams.unwrap_or(current.weight_grams)),
            products::active.eq(changes.active.unwrap_or(current.active)),
            products::version.eq(products::version + 1),
            products::updated_at.eq(now),
        ))
        .returning(ProductRow::as_returning())
        .get_result(conn)?)
}

// ------------------------------------------------------------------- stock

/// One stock level.
#[instrument(skip_all, fields(sku = %sku, location = %location))]
pub fn get_level(
    conn: &mut PgConnection,
    sku: &Sku,
    location: &LocationId,
) -> Result<StockLevelRow, Error> {
    stock_levels::table
        .find((sku.as_str(), location.as_str()))
        .select(StockLevelRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::StockLevelNotFound(stock_level_name(sku.as_str(), location.as_str())))
}

/// A page of stock levels by (sku, location); `after` is the last
/// (sku, location) of the previous page.
#[instrument(skip_all)]
pub fn list_levels(
    conn: &mut PgConnection,
    scope: &ProductScope,
    location: Option<&LocationId>,
    page: &PageRequest,
    after: Option<(String, String)>,
) -> Result<Vec<StockLevelRow>, Error> {
    if let ProductScope::One(sku) = scope {
        get_product(conn, sku)?;
    }
    let mut query = stock_levels::table
        .select(StockLevelRow::as_select())
        .order((stock_levels::sku.asc(), stock_levels::location.asc()))
        .limit(page.fetch_limit())
        .into_boxed();
    if let ProductScope::One(sku) = scope {
        query = query.filter(stock_levels::sku.eq(sku.as_str().to_owned()));
    }
    if let Some(location) = location {
        query = query.filter(stock_levels::location.eq(location.as_str().to_owned()));
    }
    if let Some((sku, location)) = after {
        query = query.filter(
            stock_levels::sku.gt(sku.clone()).or(stock_levels::sku
                .eq(sku)
                .and(stock_levels::location.gt(location))),
        );
    }
    Ok(query.load(conn)?)
}

/// Every level of these SKUs (optionally at one location), by (sku, location).
#[instrument(skip_all, fields(count = skus.len()))]
pub fn levels_of(
    conn: &mut PgConnection,
    skus: &[String],
    location: Option<&LocationId>,
) -> Result<Vec<StockLevelRow>, Error> {
    let mut query = stock_levels::table
        .filter(stock_levels::sku.eq_any(skus))
        .select(StockLevelRow::as_select())
        .order((stock_levels::sku.asc(), stock_levels::location.asc()))
        .into_boxed();
    if let Some(location) = location {
        query = query.filter(stock_levels::location.eq(location.as_str().to_owned()));
    }
    Ok(query.load(conn)?)
}

/// What moves, for [`apply_movement`].
#[derive(Debug, Clone, Copy)]
pub struct Movement<'a> {
    /// The cause.
    pub kind: MovementKind,
    /// Units (ADJUSTMENT: the signed delta; otherwise > 0).
    pub units: i64,
    /// The reservation, for every kind but ADJUSTMENT.
    pub order_id: Option<Uuid>,
    /// ADJUSTMENT: the reason (proto enum value).
    pub reason: i16,
    /// ADJUSTMENT: the note.
    pub note: &'a str,
}

/// Moves stock at one level and appends the movement, in one conditional
/// `UPDATE`: `None` when the level does not exist or the units leaving
/// `available` are not there. The row stays locked until the transaction
/// ends, so the movement's sequence (the new version) is gap-free.
#[instrument(skip_all, fields(sku, location, kind = movement.kind.as_str()))]
pub fn apply_movement(
    conn: &mut PgConnection,
    sku: &str,
    location: &str,
    movement: Movement<'_>,
    now: DateTime<Utc>,
) -> Result<Option<StockLevelRow>, Error> {
    let (d_available, d_reserved, d_committed) = movement.kind.deltas(movement.units);
    let needed = (-d_available).max(0);
    let Some(level) = diesel::update(
        stock_levels::table
            .find((sku, location))
            .filter(stock_levels::available.ge(needed)),
    )
    .set((
        stock_levels::available.eq(stock_levels::available + d_available),
        stock_levels::reserved.eq(stock_levels::reserved + d_reserved),
        stock_levels::committed.eq(stock_levels::committed + d_committed),
        stock_levels::version.eq(stock_levels::version + 1),
        stock_levels::updated_at.eq(now),
    ))
    .returning(StockLevelRow::as_returning())
    .get_result(conn)
    .optional()?
    else {
        return Ok(None);
    };
    append_movement(conn, &level, movement, now)?;
    Ok(Some(level))
}

fn append_movement(
    conn: &mut PgConnection,
    level: &StockLevelRow,
    movement: Movement<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let (d_available, d_reserved, d_committed) = movement.kind.deltas(movement.units);
    diesel::insert_into(stock_movements::table)
        .values(MovementRow {
            sku: level.sku.clone(),
            location: level.location.clone(),
            sequence: level.version,
            kind: movement.kind.as_str().to_owned(),
            delta_on_hand: d_available + d_reserved + d_committed,
            delta_available: d_available,
            delta_reserved: d_reserved,
            delta_committed: d_committed,
            reason: movement.reason,
            note: movement.note.to_owned(),
            order_id: movement.order_id,
            created_at: now,
        })
        .execute(conn)?;
    Ok(())
}

/// An AdjustStock command, validated.
#[derive(Debug, Clone)]
pub struct Adjustment {
    /// The product.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// Units added (> 0) or removed (< 0).
    pub delta: i64,
    /// The reason (proto enum value, not UNSPECIFIED).
    pub reason: i16,
    /// The audit note.
    pub note: String,
    /// The version the caller read; 0 creates the level.
    pub expected_version: i64,
}

/// Compare-and-swap adjustment of one level (see AdjustStock in the proto).
/// Units held by expired reservations are returned first when the
/// adjustment needs them.
#[instrument(skip_all, fields(sku = %cmd.sku, location = %cmd.location, delta = cmd.delta))]
pub fn adjust_stock(
    conn: &mut PgConnection,
    cmd: &Adjustment,
    now: DateTime<Utc>,
) -> Result<StockLevelRow, Error> {
    let (sku, location) = (cmd.sku.as_str(), cmd.location.as_str());
    get_product(conn, &cmd.sku)?;
    let movement = Movement {
        kind: MovementKind::Adjustment,
        units: cmd.delta,
        order_id: None,
        reason: cmd.reason,
        note: &cmd.note,
    };
    let short = |available: i64| Error::InsufficientStock {
        skus: vec![sku.to_owned()],
        available: Some(available),
    };
    if cmd.expected_version == 0 {
        if cmd.delta < 0 {
            // A new level starts empty: removing units would go below zero.
            // An existing level is a version mismatch, reported first.
            let current = current_version(conn, sku, location)?;
            return Err(match current {
                Some(current) => Error::VersionMismatch { current },
                None => short(0),
            });
        }
        // ON CONFLICT: of two concurrent creates, the second sees a version
        // mismatch instead of a unique violation.
        let created = diesel::insert_into(stock_levels::table)
            .values(NewStockLevelRow {
                sku,
                location,
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
        let Some(level) = created else {
            let current = current_version(conn, sku, location)?.unwrap_or(0);
            return Err(Error::VersionMismatch { current });
        };
        append_movement(conn, &level, movement, now)?;
        return Ok(level);
    }
    let level = stock_levels::table
        .find((sku, location))
        .select(StockLevelRow::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::StockLevelNotFound(stock_level_name(sku, location)))?;
    if level.version != cmd.expected_version {
        return Err(Error::VersionMismatch {
            current: level.version,
        });
    }
    if let Some(level) = apply_movement(conn, sku, location, movement, now)? {
        return Ok(level);
    }
    // Short: units held by reservations past their expiry are free already;
    // return them (EXPIRE movements) and try once more.
    if expire_due(conn, Some(&[sku.to_owned()]), now, Lock::SkipLocked)? > 0
        && let Some(level) = apply_movement(conn, sku, location, movement, now)?
    {
        return Ok(level);
    }
    let available = current_level(conn, sku, location)?.map_or(0, |l| l.available);
    Err(short(available))
}

fn current_version(
    conn: &mut PgConnection,
    sku: &str,
    location: &str,
) -> Result<Option<i64>, Error> {
    Ok(current_level(conn, sku, location)?.map(|l| l.version))
}

fn current_level(
    conn: &mut PgConnection,
    sku: &str,
    location: &str,
) -> Result<Option<StockLevelRow>, Error> {
    Ok(stock_levels::table
        .find((sku, location))
        .select(StockLevelRow::as_select())
        .first(conn)
        .optional()?)
}

/// The sort key of a movement in a wildcard listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementKey {
    /// `created_at` in microseconds since the epoch.
    pub created_micros: i64,
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location: String,
    /// The sequence.
    pub sequence: i64,
}

impl MovementKey {
    /// The key of `row`.
    pub fn of(row: &MovementRow) -> Self {
        Self {
            created_micros: row.created_at.timestamp_micros(),
            sku: row.sku.clone(),
            location: row.location.clone(),
            sequence: row.sequence,
        }
    }

    /// `micros/sku/location/sequence` (no part contains '/').
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.created_micros, self.sku, self.location, self.sequence
        )
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.split('/');
        let key = Self {
            created_micros: parts.next()?.parse().ok()?,
            sku: parts.next()?.to_owned(),
            location: parts.next()?.to_owned(),
            sequence: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

/// A page of movements: for one level by sequence; otherwise by
/// (created_at, sku, location, sequence).
#[instrument(skip_all)]
pub fn list_movements(
    conn: &mut PgConnection,
    scope: &MovementScope,
    order_id: Option<OrderId>,
    page: &PageRequest,
    after: Option<MovementKey>,
) -> Result<Vec<MovementRow>, Error> {
    let mut query = stock_movements::table
        .select(MovementRow::as_select())
        .limit(page.fetch_limit())
        .into_boxed();
    match scope {
        MovementScope::All => {}
        MovementScope::Product(sku) => {
            get_product(conn, sku)?;
            query = query.filter(stock_movements::sku.eq(sku.as_str().to_owned()));
        }
        MovementScope::Level(sku, location) => {
            get_product(conn, sku)?;
            get_level(conn, sku, location)?;
            query = query
                .filter(stock_movements::sku.eq(sku.as_str().to_owned()))
                .filter(stock_movements::location.eq(location.as_str().to_owned()));
        }
    }
    if let Some(order_id) = order_id {
        query = query.filter(stock_movements::order_id.eq(order_id.0));
    }
    if matches!(scope, MovementScope::Level(..)) {
        query = query.order(stock_movements::sequence.asc());
        if let Some(after) = after {
            query = query.filter(stock_movements::sequence.gt(after.sequence));
        }
    } else {
        query = query.order((
            stock_movements::created_at.asc(),
            stock_movements::sku.asc(),
            stock_movements::location.asc(),
            stock_movements::sequence.asc(),
        ));
        if let Some(after) = after {
            let created = DateTime::<Utc>::from_timestamp_micros(after.created_micros)
                .ok_or_else(|| Error::field("page_token", "is not a token this API issued"))?;
            query = query.filter(
                sql::<Bool>("(created_at, sku, location, sequence) > (")
                    .bind::<Timestamptz, _>(created)
                    .sql(", ")
                    .bind::<Text, _>(after.sku)
                    .sql(", ")
                    .bind::<Text, _>(after.location)
                    .sql(", ")
                    .bind::<BigInt, _>(after.sequence)
                    .sql(")"),
            );
        }
    }
    Ok(query.load(conn)?)
}

// ------------------------------------------------------------ reservations

/// One requested line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveLine {
    /// The SKU.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
    /// The location, or `None` to let the server pick.
    pub location: Option<LocationId>,
}

/// How expiry treats reservations another transaction has locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Wait for them.
    Wait,
    /// Leave them to whoever holds them (sweepers, reads).
    SkipLocked,
}

/// Reserves every line or nothing (see ReserveStock in the proto).
/// Idempotent per order id.
#[instrument(skip_all, fields(order_id = %order_id, lines = lines.len()))]
pub fn reserve(
    conn: &mut PgConnection,
    order_id: OrderId,
    lines: &[ReserveLine],
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    // The header first: a concurrent call for the same order waits on its
    // primary key, then finds the committed reservation (or inserts its own
    // if the first rolled back), instead of both taking stock.
    let inserted = diesel::insert_into(reservations::table)
        .values(ReservationRow {
            order_id: order_id.0,
            state: ReservationState::Active.as_str().to_owned(),
            expire_at: now + ttl,
            created_at: now,
            updated_at: now,
        })
        .on_conflict_do_nothing()
        .execute(conn)?;
    if inserted == 0 {
        let existing = load_reservation(conn, order_id, true)?;
        if !same_lines(&existing.lines, lines) {
            return Err(Error::OrderIdReused);
        }
        return expire_if_due(conn, existing, now);
    }
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let products = require_products(conn, &skus)?;
    let inactive: Vec<String> = products
        .iter()
        .filter(|p| !p.active)
        .map(|p| p.sku.clone())
        .collect();
    if !inactive.is_empty() {
        return Err(Error::ProductInactive(sorted(inactive)));
    }
    // Lock levels in SKU order (SKUs are distinct): no two reservations
    // wait for each other's rows in opposite orders.
    let mut order: Vec<(usize, &ReserveLine)> = lines.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.sku.cmp(&b.1.sku));
    let mut short = Vec::new();
    let mut rows = Vec::with_capacity(lines.len());
    for (position, line) in order {
        match reserve_line(conn, order_id, line, now)? {
            Some(location) => rows.push(ReservationLineRow {
                order_id: order_id.0,
                // At most MAX_LINES lines.
                position: i32::try_from(position).unwrap_or(i32::MAX),
                sku: line.sku.as_str().to_owned(),
                location,
                quantity: line.quantity.get(),
            }),
            // Keep going: the error names every short line. The caller's
            // transaction rolls back whatever was taken.
            None => short.push(line.sku.as_str().to_owned()),
        }
    }
    if !short.is_empty() {
        return Err(Error::InsufficientStock {
            skus: sorted(short),
            available: None,
        });
    }
    diesel::insert_into(reservation_lines::table)
        .values(&rows)
        .execute(conn)?;
    load_reservation(conn, order_id, false)
}

/// Takes one line's units; the location taken, or `None` when short.
fn reserve_line(
    conn: &mut PgConnection,
    order_id: OrderId,
    line: &ReserveLine,
    now: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    if let Some(location) = take(conn, order_id, line, now)? {
        return Ok(Some(location));
    }
    // Units held by reservations past their expiry are free already: return
    // them (EXPIRE movements) and try once more. Only on this slow path, so
    // the common case stays one UPDATE per line.
    if expire_due(
        conn,
        Some(&[line.sku.as_str().to_owned()]),
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
    line: &ReserveLine,
    now: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    let units = line.quantity.get();
    let movement = Movement {
        kind: MovementKind::Reserve,
        units,
        order_id: Some(order_id.0),
        reason: 0,
        note: "",
    };
    let sku = line.sku.as_str();
    if let Some(location) = &line.location {
        return Ok(apply_movement(conn, sku, location.as_str(), movement, now)?.map(|l| l.location));
    }
    // The location with the most available units (ties: lowest id) that
    // covers the whole line. A concurrent reservation may drain it between
    // the pick and the conditional UPDATE; then pick again.
    for _ in 0..5 {
        let candidate: Option<String> = stock_levels::table
            .filter(stock_levels::sku.eq(sku))
            .filter(stock_levels::available.ge(units))
            .order((stock_levels::available.desc(), stock_levels::location.asc()))
            .select(stock_levels::location)
            .first(conn)
            .optional()?;
        let Some(location) = candidate else {
            return Ok(None);
        };
        if let Some(level) = apply_movement(conn, sku, &location, movement, now)? {
            return Ok(Some(level.location));
        }
    }
    Ok(None)
}

/// Whether stored lines answer a repeated request: the same SKUs and
/// quantities, and the same location wherever the request names one.
fn same_lines(stored: &[ReservationLineRow], requested: &[ReserveLine]) -> bool {
    if stored.len() != requested.len() {
        return false;
    }
    let stored: BTreeMap<&str, &ReservationLineRow> =
        stored.iter().map(|l| (l.sku.as_str(), l)).collect();
    requested.iter().all(|r| {
        stored.get(r.sku.as_str()).is_some_and(|s| {
            s.quantity == r.quantity.get()
                && r.location.as_ref().is_none_or(|l| l.as_str() == s.location)
        })
    })
}

/// The reservation of `order_id` (locked when `for_update`).
#[instrument(skip_all, fields(order_id = %order_id))]
pub fn load_reservation(
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
    let row = row.ok_or_else(|| Error::ReservationNotFound(order_id.reservation_name()))?;
    let lines = reservation_lines::table
        .filter(reservation_lines::order_id.eq(order_id.0))
        .select(ReservationLineRow::as_select())
        .load(conn)?;
    Ok(Reservation::from_rows(row, lines))
}

/// Commits a reservation (idempotent by state).
#[instrument(skip_all, fields(order_id = %order_id))]
pub fn commit(
    conn: &mut PgConnection,
    order_id: OrderId,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    let reservation = load_reservation(conn, order_id, true)?;
    match reservation.state_at(now) {
        ReservationState::Committed => Ok(reservation),
        ReservationState::Released => Err(Error::ReservationReleased),
        ReservationState::Expired => Err(Error::ReservationExpired),
        ReservationState::Active => finish(conn, reservation, ReservationState::Committed, now),
    }
}

/// Releases a reservation (idempotent by state; an expired one is returned
/// as EXPIRED, its units given back if the sweeper has not yet).
#[instrument(skip_all, fields(order_id = %order_id))]
pub fn release(
    conn: &mut PgConnection,
    order_id: OrderId,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    let reservation = load_reservation(conn, order_id, true)?;
    match reservation.state {
        ReservationState::Committed => Err(Error::ReservationCommitted),
        ReservationState::Released | ReservationState::Expired => Ok(reservation),
        ReservationState::Active => expire_if_due(conn, reservation, now).and_then(|r| {
            if r.state == ReservationState::Active {
                finish(conn, r, ReservationState::Released, now)
            } else {
                Ok(r)
            }
        }),
    }
}

/// Expires a locked ACTIVE reservation if it is past its expiry.
fn expire_if_due(
    conn: &mut PgConnection,
    reservation: Reservation,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    if reservation.state == ReservationState::Active && reservation.expire_at <= now {
        finish(conn, reservation, ReservationState::Expired, now)
    } else {
        Ok(reservation)
    }
}

/// Moves a locked ACTIVE reservation to `to`, moving its units.
fn finish(
    conn: &mut PgConnection,
    mut reservation: Reservation,
    to: ReservationState,
    now: DateTime<Utc>,
) -> Result<Reservation, Error> {
    let kind = match to {
        ReservationState::Committed => MovementKind::Commit,
        ReservationState::Released => MovementKind::Release,
        ReservationState::Expired | ReservationState::Active => MovementKind::Expire,
    };
    let mut lines = reservation.lines.clone();
    lines.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    for line in &lines {
        move_held(conn, line, kind, now)?;
    }
    diesel::update(reservations::table.find(reservation.order_id.0))
        .set((
            reservations::state.eq(to.as_str()),
            reservations::updated_at.eq(now),
        ))
        .execute(conn)?;
    reservation.state = to;
    reservation.updated_at = now;
    Ok(reservation)
}

/// Moves the units a line holds (COMMIT, RELEASE or EXPIRE).
fn move_held(
    conn: &mut PgConnection,
    line: &ReservationLineRow,
    kind: MovementKind,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let movement = Movement {
        kind,
        units: line.quantity,
        order_id: Some(line.order_id),
        reason: 0,
        note: "",
    };
    apply_movement(conn, &line.sku, &line.location, movement, now)?
        .map(|_| ())
        .ok_or_else(|| {
            // The line's foreign key guarantees the level exists.
            Error::Db(DbError::Other(anyhow::anyhow!(
                "stock level {}/{} of a reservation line is missing",
                line.sku,
                line.location
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
#[instrument(skip_all)]
pub fn expire_due(
    conn: &mut PgConnection,
    skus: Option<&[String]>,
    now: DateTime<Utc>,
    lock: Lock,
) -> Result<usize, Error> {
    let locking = match lock {
        Lock::Wait => "FOR UPDATE",
        Lock::SkipLocked => "FOR UPDATE SKIP LOCKED",
    };
    let due: Vec<DueReservation> = diesel::sql_query(format!(
        "SELECT r.order_id FROM reservations r \
         WHERE r.state = 'ACTIVE' AND r.expire_at <= $1 \
           AND ($2::text[] IS NULL OR EXISTS ( \
               SELECT 1 FROM reservation_lines l WHERE l.order_id = r.order_id AND l.sku = ANY($2))) \
         ORDER BY r.order_id LIMIT $3 {locking}"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<Array<Text>>, _>(skus)
    .bind::<BigInt, _>(EXPIRY_BATCH)
    .load(conn)?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = due.iter().map(|d| d.order_id).collect();
    diesel::update(reservations::table.filter(reservations::order_id.eq_any(&ids)))
        .set((
            reservations::state.eq(ReservationState::Expired.as_str()),
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
    for line in &lines {
        move_held(conn, line, MovementKind::Expire, now)?;
    }
    tracing::info!(expired = ids.len(), "reservations expired");
    Ok(ids.len())
}

// ------------------------------------------------------------------ quotes

/// One requested line of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLineRequest {
    /// The SKU.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The SKU.
    pub sku: String,
    /// The product's display name.
    pub display_name: String,
    /// Units.
    pub quantity: i64,
    /// Price of one unit.
    pub unit_price: MinorUnits,
    /// unit price × quantity.
    pub line_total: MinorUnits,
    /// unit weight × quantity.
    pub weight_grams: i64,
}

/// A priced order, every amount in `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedOrder {
    /// The currency.
    pub currency: String,
    /// Lines in request order.
    pub lines: Vec<PricedLine>,
    /// Σ line totals.
    pub subtotal: MinorUnits,
    /// The shipping price.
    pub shipping: MinorUnits,
    /// The zone priced.
    pub zone: String,
    /// Σ line weights.
    pub total_weight_grams: i64,
    /// subtotal + shipping.
    pub total: MinorUnits,
}

/// Prices an order (see QuoteOrder in the proto).
#[instrument(skip_all, fields(lines = lines.len(), country = country_code, currency = currency_code))]
pub fn quote(
    conn: &mut PgConnection,
    lines: &[QuoteLineRequest],
    country_code: &str,
    currency_code: &str,
) -> Result<PricedOrder, Error> {
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let products = require_products(conn, &skus)?;
    let by_sku: BTreeMap<&str, &ProductRow> =
        products.iter().map(|p| (p.sku.as_str(), p)).collect();
    let inactive: Vec<String> = products
        .iter()
        .filter(|p| !p.active)
        .map(|p| p.sku.clone())
        .collect();
    if !inactive.is_empty() {
        return Err(Error::ProductInactive(sorted(inactive)));
    }
    let other_currency: Vec<String> = products
        .iter()
        .filter(|p| p.currency_code != currency_code)
        .map(|p| p.sku.clone())
        .collect();
    if !other_currency.is_empty() {
        return Err(Error::CurrencyMismatch(sorted(other_currency)));
    }
    let overflow = |i: usize| {
        Error::field(
            &format!("lines[{i}].quantity"),
            "the order's amount or weight is too large",
        )
    };
    let mut priced = Vec::with_capacity(lines.len());
    let mut subtotal = MinorUnits(0);
    let mut total_weight_grams: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        let product = by_sku
            .get(line.sku.as_str())
            .ok_or_else(|| Error::ProductNotFound(vec![line.sku.to_string()]))?;
        let unit_price = MinorUnits(product.price_minor);
        let line_total = unit_price
            .checked_mul(line.quantity)
            .ok_or_else(|| overflow(i))?;
        let weight_grams = product
            .weight_grams
            .checked_mul(line.quantity.get())
            .ok_or_else(|| overflow(i))?;
        subtotal = subtotal
            .checked_add(line_total)
            .ok_or_else(|| overflow(i))?;
        total_weight_grams = total_weight_grams
            .checked_add(weight_grams)
            .ok_or_else(|| overflow(i))?;
        priced.push(PricedLine {
            sku: product.sku.clone(),
            display_name: product.display_name.clone(),
            quantity: line.quantity.get(),
            unit_price,
            line_total,
            weight_grams,
        });
    }
    let no_rule = || Error::NoShippingRule {
        country_code: country_code.to_owned(),
        currency_code: currency_code.to_owned(),
        total_weight_grams,
    };
    let assignments: Vec<(String, String)> = shipping_zone_countries::table
        .filter(shipping_zone_countries::country_code.eq_any([country_code, "*"]))
        .select((
            shipping_zone_countries::country_code,
            shipping_zone_countries::zone,
        ))
        .load(conn)?;
    let zone = zone_for(country_code, &assignments)
        .ok_or_else(no_rule)?
        .to_owned();
    let bands: Vec<Band> = shipping_rates::table
        .filter(shipping_rates::zone.eq(&zone))
        .filter(shipping_rates::currency_code.eq(currency_code))
        .select((
            shipping_rates::max_weight_grams,
            shipping_rates::price_minor,
        ))
        .load::<(i64, i64)>(conn)?
        .into_iter()
        .map(|(max_weight_grams, price)| Band {
            max_weight_grams,
            price: MinorUnits(price),
        })
        .collect();
    let shipping = band_for(total_weight_grams, &bands)
        .ok_or_else(no_rule)?
        .price;
    let total = subtotal
        .checked_add(shipping)
        .ok_or_else(|| overflow(lines.len().saturating_sub(1)))?;
    Ok(PricedOrder {
        currency: currency_code.to_owned(),
        lines: priced,
        subtotal,
        shipping,
        zone,
        total_weight_grams,
        total,
    })
}

/// A page of shipping zones by id, with their countries and bands.
#[instrument(skip_all)]
pub fn list_shipping_zones(
    conn: &mut PgConnection,
    page: &PageRequest,
) -> Result<Vec<ShippingZone>, Error> {
    let mut query = shipping_zones::table
        .select((shipping_zones::zone, shipping_zones::display_name))
        .order(shipping_zones::zone.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = &page.after {
        query = query.filter(shipping_zones::zone.gt(after.clone()));
    }
    let zones: Vec<(String, String)> = query.load(conn)?;
    let ids: Vec<&str> = zones.iter().map(|(z, _)| z.as_str()).collect();
    let countries: Vec<(String, String)> = shipping_zone_countries::table
        .filter(shipping_zone_countries::zone.eq_any(&ids))
        .select((
            shipping_zone_countries::zone,
            shipping_zone_countries::country_code,
        ))
        .order(shipping_zone_countries::country_code.asc())
        .load(conn)?;
    let rates: Vec<ShippingRateRow> = shipping_rates::table
        .filter(shipping_rates::zone.eq_any(&ids))
        .select(ShippingRateRow::as_select())
        .order((
            shipping_rates::currency_code.asc(),
            shipping_rates::max_weight_grams.asc(),
        ))
        .load(conn)?;
    Ok(zones
        .into_iter()
        .map(|(zone, display_name)| ShippingZone {
            country_codes: countries
                .iter()
                .filter(|(z, _)| *z == zone)
                .map(|(_, c)| c.clone())
                .collect(),
            rates: rates.iter().filter(|r| r.zone == zone).cloned().collect(),
            zone,
            display_name,
        })
        .collect())
}

/// Ascending and de-duplicated.
fn sorted(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
