//! Stock: a level per (sku, location) and the movements that change it.
//!
//! The identity of a level: `on_hand = available + reserved + committed`,
//! every part non-negative (the database's CHECKs and generated `on_hand`
//! are the backstop). Units only ever move by a [`MovementKind`]'s
//! [`Deltas`], each movement appended to the level's log with the level's new
//! version as its sequence, so replaying the log reproduces the level.

use std::fmt;

use backroom_shared::{
    catalog::Sku, errors::FieldViolation, names, paging::PageRequest, stored::UnknownStoredValue,
};
use chrono::{DateTime, Utc};

use super::{
    Error,
    products::ProductScope,
    values::{LocationId, OrderId, PRODUCTS, STOCK_LEVELS, STOCK_MOVEMENTS},
};

/// Longest AdjustStock note, characters.
pub const MAX_NOTE: usize = 500;
/// Most SKUs one WatchStock may follow.
pub const MAX_WATCHED_SKUS: usize = 100;

/// Which level: a product at a location.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LevelKey {
    /// The product.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
}

impl LevelKey {
    /// `products/{sku}/stockLevels/{location}`.
    pub fn name(&self) -> String {
        names::nested(PRODUCTS, &self.sku, STOCK_LEVELS, &self.location)
    }

    /// Parses `products/{sku}/stockLevels/{location}`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let bad = || FieldViolation::new(field, "must be products/{sku}/stockLevels/{location}");
        let rest = raw.strip_prefix("products/").ok_or_else(bad)?;
        let (sku, location) = rest.split_once("/stockLevels/").ok_or_else(bad)?;
        if location.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            sku: Sku::parse(field, sku)?,
            location: LocationId::parse(field, location)?,
        })
    }
}

impl fmt::Display for LevelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The units of one product at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    /// Which level.
    pub key: LevelKey,
    /// Units free to reserve.
    pub available: i64,
    /// Units held by ACTIVE reservations.
    pub reserved: i64,
    /// Units sold (committed reservations), still in the building.
    pub committed: i64,
    /// The sequence of the level's latest movement.
    pub version: i64,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

impl StockLevel {
    /// Units in the building: available + reserved + committed.
    pub fn on_hand(&self) -> i64 {
        self.available + self.reserved + self.committed
    }
}

backroom_shared::stored_enum!(
    /// What caused a stock movement, as stored.
    pub MovementKind {
        /// AdjustStock.
        Adjustment = "ADJUSTMENT",
        /// available → reserved.
        Reserve = "RESERVE",
        /// reserved → available (release).
        Release = "RELEASE",
        /// reserved → committed.
        Commit = "COMMIT",
        /// reserved → available (expiry).
        Expire = "EXPIRE",
        /// committed → gone: shipped units leave on_hand.
        Ship = "SHIP",
        /// committed → available: units that will not ship (the order
        /// canceled them).
        Uncommit = "UNCOMMIT",
        /// shipped → available: returned units back on the shelf.
        Return = "RETURN",
        /// Returned units written off: they never re-enter on_hand (no
        /// part changes; the movement's note says how many).
        Damaged = "DAMAGED",
    }
);

impl MovementKind {
    /// The change of the level's parts when `units` move this way
    /// (ADJUSTMENT: `units` is the signed delta; otherwise `units > 0`).
    pub fn deltas(self, units: i64) -> Deltas {
        let (available, reserved, committed) = match self {
            Self::Adjustment => (units, 0, 0),
            Self::Reserve => (-units, units, 0),
            Self::Release | Self::Expire => (units, -units, 0),
            Self::Commit => (0, -units, units),
            Self::Ship => (0, 0, -units),
            Self::Uncommit => (units, 0, -units),
            Self::Return => (units, 0, 0),
            Self::Damaged => (0, 0, 0),
        };
        Deltas {
            available,
            reserved,
            committed,
        }
    }
}

/// How one movement changes a level's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deltas {
    /// Change of available.
    pub available: i64,
    /// Change of reserved.
    pub reserved: i64,
    /// Change of committed.
    pub committed: i64,
}

impl Deltas {
    /// Change of on_hand (non-zero only for adjustments, shipments and
    /// restocked returns).
    pub fn on_hand(self) -> i64 {
        self.available + self.reserved + self.committed
    }

    /// Units that must be available for the movement: those it takes out
    /// of `available`.
    pub fn needs_available(self) -> i64 {
        (-self.available).max(0)
    }
}

/// Why an admin adjusted stock; stored as its number (`smallint`, the
/// proto's `StockAdjustmentReason` numbering, 0 for movements that are not
/// adjustments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustmentReason {
    /// Received from a supplier (delta > 0).
    Received,
    /// Damaged and written off (delta < 0).
    Damaged,
    /// Lost or stolen (delta < 0).
    Lost,
    /// A physical count (either sign).
    CycleCount,
    /// Returned by a customer, sellable (delta > 0).
    Returned,
    /// Fixing an earlier mistake (either sign).
    Correction,
}

impl AdjustmentReason {
    /// Every reason.
    pub const ALL: [Self; 6] = [
        Self::Received,
        Self::Damaged,
        Self::Lost,
        Self::CycleCount,
        Self::Returned,
        Self::Correction,
    ];

    /// The stored number.
    pub fn code(self) -> i16 {
        match self {
            Self::Received => 1,
            Self::Damaged => 2,
            Self::Lost => 3,
            Self::CycleCount => 4,
            Self::Returned => 5,
            Self::Correction => 6,
        }
    }

    /// Reads a stored number: 0 is no reason (not an adjustment); a number
    /// no reason has is an error.
    pub fn from_stored(code: i16) -> Result<Option<Self>, UnknownStoredValue> {
        if code == 0 {
            return Ok(None);
        }
        Self::ALL
            .into_iter()
            .find(|reason| reason.code() == code)
            .map(Some)
            .ok_or_else(|| UnknownStoredValue {
                kind: "AdjustmentReason",
                text: code.to_string(),
            })
    }
}

/// AdjustStock: a compare-and-swap change of one level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustStock {
    /// The level.
    pub key: LevelKey,
    /// Units added (> 0) or removed (< 0).
    pub delta: i64,
    /// Why.
    pub reason: AdjustmentReason,
    /// The audit note.
    pub note: String,
    /// The version the caller read; 0 creates the level.
    pub expected_version: i64,
}

/// The most units one AdjustStock may add or remove: a billion, far past
/// any real delivery or write-off, and far inside the counters' range.
pub const MAX_ADJUSTMENT: i64 = 1_000_000_000;

impl AdjustStock {
    /// Checks a delta against its reason (`field` is the delta's): never
    /// zero, at most [`MAX_ADJUSTMENT`] units either way, and of the sign
    /// the reason implies.
    pub fn check_delta(
        field: &str,
        delta: i64,
        reason: Option<AdjustmentReason>,
    ) -> Result<(), FieldViolation> {
        use AdjustmentReason::{Damaged, Lost, Received, Returned};
        match reason {
            _ if delta == 0 => Err(FieldViolation::new(field, "must not be zero")),
            _ if !(-MAX_ADJUSTMENT..=MAX_ADJUSTMENT).contains(&delta) => Err(FieldViolation::new(
                field,
                format!("must be between -{MAX_ADJUSTMENT} and {MAX_ADJUSTMENT}"),
            )),
            Some(Received | Returned) if delta < 0 => Err(FieldViolation::new(
                field,
                "must be positive for this reason",
            )),
            Some(Damaged | Lost) if delta > 0 => Err(FieldViolation::new(
                field,
                "must be negative for this reason",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the adjustment creates its level (expected version 0).
    pub fn creates_level(&self) -> bool {
        self.expected_version == 0
    }

    /// Why a create that removes units fails: a level that exists is at
    /// another version (reported first); a new level starts empty, so
    /// removing units would go below zero.
    pub fn refuse_removal_from_new_level(&self, existing_version: Option<i64>) -> Error {
        match existing_version {
            Some(current) => Error::VersionMismatch { current },
            None => self.short(0),
        }
    }

    /// VERSION_MISMATCH unless the level is at the version the caller read.
    pub fn check_version(&self, current: i64) -> Result<(), Error> {
        if current == self.expected_version {
            Ok(())
        } else {
            Err(Error::VersionMismatch { current })
        }
    }

    /// INSUFFICIENT_STOCK of this level, which has `available` units.
    pub fn short(&self, available: i64) -> Error {
        Error::InsufficientStock {
            skus: vec![self.key.sku.clone()],
            available: Some(available),
        }
    }

    /// The movement this adjustment appends.
    pub fn change(&self) -> Change<'_> {
        Change {
            kind: MovementKind::Adjustment,
            units: self.delta,
            order_id: None,
            reason: Some(self.reason),
            note: &self.note,
        }
    }
}

/// A movement about to be applied to a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// The cause.
    pub kind: MovementKind,
    /// Units (ADJUSTMENT: the signed delta; otherwise > 0).
    pub units: i64,
    /// The reservation, for every kind but ADJUSTMENT.
    pub order_id: Option<OrderId>,
    /// ADJUSTMENT: the reason.
    pub reason: Option<AdjustmentReason>,
    /// ADJUSTMENT: the note.
    pub note: &'a str,
}

impl Change<'static> {
    /// `units` of a reservation's line moving `kind`.
    pub fn of_reservation(kind: MovementKind, units: i64, order_id: OrderId) -> Self {
        Self {
            kind,
            units,
            order_id: Some(order_id),
            reason: None,
            note: "",
        }
    }
}

impl Change<'_> {
    /// How the level's parts change.
    pub fn deltas(&self) -> Deltas {
        self.kind.deltas(self.units)
    }
}

/// One entry of a level's append-only log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// The level.
    pub key: LevelKey,
    /// The level's version after it.
    pub sequence: i64,
    /// The cause.
    pub kind: MovementKind,
    /// How the level's parts changed.
    pub deltas: Deltas,
    /// ADJUSTMENT: why.
    pub reason: Option<AdjustmentReason>,
    /// ADJUSTMENT: the note.
    pub note: String,
    /// The reservation, for every kind but ADJUSTMENT.
    pub order_id: Option<OrderId>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl Movement {
    /// `products/{sku}/stockLevels/{location}/stockMovements/{sequence}`.
    pub fn name(&self) -> String {
        format!("{}/{STOCK_MOVEMENTS}/{}", self.key.name(), self.sequence)
    }
}

/// ListStockLevels.
#[derive(Debug, Clone)]
pub struct ListStockLevels {
    /// Which products.
    pub scope: ProductScope,
    /// Only this location.
    pub location: Option<LocationId>,
    /// Which page.
    pub page: PageRequest,
    /// The last level of the previous page.
    pub after: Option<LevelCursor>,
}

/// The sort key of a level in a listing: (sku, location) as issued in the
/// page token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelCursor {
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location: String,
}

impl LevelCursor {
    /// The cursor of `level`.
    pub fn of(level: &StockLevel) -> Self {
        Self {
            sku: level.key.sku.as_str().to_owned(),
            location: level.key.location.as_str().to_owned(),
        }
    }

    /// `sku/location` (neither contains '/').
    pub fn encode(&self) -> String {
        format!("{}/{}", self.sku, self.location)
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(raw: &str) -> Option<Self> {
        raw.split_once('/').map(|(sku, location)| Self {
            sku: sku.to_owned(),
            location: location.to_owned(),
        })
    }
}

/// ListStockMovements.
#[derive(Debug, Clone)]
pub struct ListStockMovements {
    /// Which levels.
    pub scope: MovementScope,
    /// Only the movements of this reservation.
    pub reservation: Option<OrderId>,
    /// Which page.
    pub page: PageRequest,
    /// The last movement of the previous page.
    pub after: Option<MovementCursor>,
}

/// Which movements a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovementScope {
    /// `products/-/stockLevels/-`.
    All,
    /// `products/{sku}/stockLevels/-`.
    Product(Sku),
    /// `products/{sku}/stockLevels/{location}`.
    Level(LevelKey),
}

impl MovementScope {
    /// Parses a ListStockMovements parent.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let bad = || {
            FieldViolation::new(
                field,
                "must be products/{sku}/stockLevels/{location}, products/{sku}/stockLevels/- or products/-/stockLevels/-",
            )
        };
        if raw == "products/-/stockLevels/-" {
            return Ok(Self::All);
        }
        let rest = raw.strip_prefix("products/").ok_or_else(bad)?;
        let (sku, location) = rest.split_once("/stockLevels/").ok_or_else(bad)?;
        let sku = Sku::parse(field, sku).map_err(|_| bad())?;
        if location == "-" {
            return Ok(Self::Product(sku));
        }
        let location = LocationId::parse(field, location).map_err(|_| bad())?;
        Ok(Self::Level(LevelKey { sku, location }))
    }
}

/// The sort key of a movement in a listing, as issued in the page token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementCursor {
    /// `created_at` in microseconds since the epoch.
    pub created_micros: i64,
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location: String,
    /// The sequence.
    pub sequence: i64,
}

impl MovementCursor {
    /// The cursor of `movement`.
    pub fn of(movement: &Movement) -> Self {
        Self {
            created_micros: movement.created_at.timestamp_micros(),
            sku: movement.key.sku.as_str().to_owned(),
            location: movement.key.location.as_str().to_owned(),
            sequence: movement.sequence,
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
        let cursor = Self {
            created_micros: parts.next()?.parse().ok()?,
            sku: parts.next()?.to_owned(),
            location: parts.next()?.to_owned(),
            sequence: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// WatchStock: the levels of these SKUs, at one location or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchStock {
    /// 1–[`MAX_WATCHED_SKUS`] distinct SKUs.
    pub skus: Vec<Sku>,
    /// Only this location.
    pub location: Option<LocationId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movement_deltas_keep_on_hand_balanced() {
        for kind in MovementKind::ALL.iter().copied() {
            assert_eq!(MovementKind::from_stored(kind.as_str()), Ok(kind));
            let deltas = kind.deltas(3);
            let on_hand = match kind {
                MovementKind::Adjustment => 3,
                MovementKind::Ship => -3,
                MovementKind::Return => 3,
                _ => 0,
            };
            assert_eq!(
                deltas.available + deltas.reserved + deltas.committed,
                on_hand
            );
            assert_eq!(deltas.on_hand(), on_hand);
        }
        assert!(MovementKind::from_stored("SHIPPED").is_err());
    }

    #[test]
    fn a_delta_is_bounded_so_the_counters_never_overflow() {
        // i64::MAX once answered INTERNAL "bigint out of range".
        for delta in [i64::MAX, i64::MIN, MAX_ADJUSTMENT + 1, -MAX_ADJUSTMENT - 1] {
            let refused = AdjustStock::check_delta("delta", delta, None).unwrap_err();
            assert!(refused.description.contains("between"), "{refused:?}");
        }
        assert!(AdjustStock::check_delta("delta", MAX_ADJUSTMENT, None).is_ok());
        assert!(AdjustStock::check_delta("delta", -MAX_ADJUSTMENT, None).is_ok());
    }

    #[test]
    fn adjustment_reasons_round_trip_through_their_stored_numbers() {
        for reason in AdjustmentReason::ALL {
            assert_eq!(
                AdjustmentReason::from_stored(reason.code()),
                Ok(Some(reason))
            );
        }
        assert_eq!(AdjustmentReason::from_stored(0), Ok(None));
        assert!(AdjustmentReason::from_stored(7).is_err());
    }
}
