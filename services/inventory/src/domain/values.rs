//! Inventory values, parsed at the edge and valid by construction: SKUs,
//! location ids, currencies, money, quantities, order ids, resource names.
//! Every parser takes the request field path it reports violations under.

use std::fmt;

use backroom_shared::errors::FieldViolation;
use uuid::Uuid;

/// Most lines in a quote or reservation.
pub const MAX_LINES: usize = 100;
/// Most SKUs one WatchStock may follow.
pub const MAX_WATCHED_SKUS: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;
/// Longest display name, characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description, characters.
pub const MAX_DESCRIPTION: usize = 5_000;
/// Heaviest unit, grams.
pub const MAX_WEIGHT_GRAMS: i64 = 1_000_000;
/// Longest AdjustStock note, characters.
pub const MAX_NOTE: usize = 500;
/// Longest ListProducts query, characters.
pub const MAX_QUERY: usize = 100;
/// Longest destination postal code, characters.
pub const MAX_POSTAL_CODE: usize = 20;
/// Shortest reservation hold.
pub const MIN_TTL: chrono::Duration = chrono::Duration::seconds(1);
/// Longest reservation hold.
pub const MAX_TTL: chrono::Duration = chrono::Duration::hours(1);
/// Hold when the request names none.
pub const DEFAULT_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// ISO-4217 codes the service prices in. A short allow-list on purpose: an
/// unknown code is far more often a typo than a new currency.
pub const CURRENCIES: [&str; 12] = [
    "AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "JPY", "NOK", "PLN", "SEK", "USD",
];

/// A product's SKU: 1–64 of `A–Z 0–9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let bytes = raw.as_bytes();
        let ok = (1..=64).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if raw.is_empty() {
            Err(FieldViolation::new(field, "is required"))
        } else if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                "must be 1-64 characters of A-Z, 0-9, '-' and '_', starting with a letter or digit",
            ))
        }
    }

    /// Wraps a SKU read back from the database (checked by its constraint).
    pub fn from_stored(sku: String) -> Self {
        Self(sku)
    }

    /// The SKU.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A location id: 1–63 of `a–z 0–9 -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocationId(String);

impl LocationId {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let bytes = raw.as_bytes();
        let ok = (1..=63).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if raw.is_empty() {
            Err(FieldViolation::new(field, "is required"))
        } else if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            ))
        }
    }

    /// The location id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO-4217 code from [`CURRENCIES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CurrencyCode(String);

impl CurrencyCode {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            Err(FieldViolation::new(field, "is required"))
        } else if CURRENCIES.contains(&raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                format!(
                    "must be an ISO-4217 code this service prices in: {}",
                    CURRENCIES.join(", ")
                ),
            ))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount in a currency's minor unit (cents, yen, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinorUnits(pub i64);

impl MinorUnits {
    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self × quantity`, `None` on overflow.
    pub fn checked_mul(self, quantity: Quantity) -> Option<Self> {
        self.0.checked_mul(quantity.get()).map(Self)
    }
}

/// A non-negative amount of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// The currency.
    pub currency: CurrencyCode,
    /// The amount, >= 0.
    pub amount: MinorUnits,
}

impl Price {
    /// Checks a Money's parts; `field` is the Money's path.
    pub fn parse(
        field: &str,
        currency_code: &str,
        amount_minor: i64,
    ) -> Result<Self, Vec<FieldViolation>> {
        let currency = CurrencyCode::parse(&format!("{field}.currency_code"), currency_code);
        let amount = if amount_minor < 0 {
            Err(FieldViolation::new(
                format!("{field}.amount_minor"),
                "must not be negative",
            ))
        } else {
            Ok(MinorUnits(amount_minor))
        };
        match (currency, amount) {
            (Ok(currency), Ok(amount)) => Ok(Self { currency, amount }),
            (currency, amount) => Err(currency.err().into_iter().chain(amount.err()).collect()),
        }
    }
}

/// Units of one line: 1–[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i64);

impl Quantity {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: i64) -> Result<Self, FieldViolation> {
        if (1..=MAX_QUANTITY).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(FieldViolation::new(
                field,
                format!("must be between 1 and {MAX_QUANTITY}"),
            ))
        }
    }

    /// Wraps a quantity read back from the database (checked by its
    /// constraint).
    pub fn from_stored(raw: i64) -> Self {
        Self(raw)
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO-3166-1 alpha-2 country code (two upper-case letters).
pub fn parse_country_code(field: &str, raw: &str) -> Result<String, FieldViolation> {
    if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err(FieldViolation::new(
            field,
            "must be an ISO-3166-1 alpha-2 code, e.g. DE",
        ))
    }
}

pub use backroom_shared::validate::{optional_text, required_text};

/// A unit weight in grams: 0–[`MAX_WEIGHT_GRAMS`].
pub fn parse_weight(field: &str, raw: i64) -> Result<i64, FieldViolation> {
    if (0..=MAX_WEIGHT_GRAMS).contains(&raw) {
        Ok(raw)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_WEIGHT_GRAMS}"),
        ))
    }
}

/// An order id: any UUID, kept in canonical hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| FieldViolation::new(field, "must be a UUID"))
    }

    /// `reservations/{order_id}`.
    pub fn reservation_name(self) -> String {
        format!("reservations/{}", self.0)
    }

    /// Parses `reservations/{order_id}`.
    pub fn parse_reservation_name(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let Some(id) = raw.strip_prefix("reservations/") else {
            return Err(FieldViolation::new(
                field,
                "must be reservations/{order_id}",
            ));
        };
        Self::parse(field, id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `products/{sku}`.
pub fn product_name(sku: &str) -> String {
    format!("products/{sku}")
}

/// `products/{sku}/stockLevels/{location}`.
pub fn stock_level_name(sku: &str, location: &str) -> String {
    format!("products/{sku}/stockLevels/{location}")
}

/// Parses `products/{sku}`.
pub fn parse_product_name(field: &str, raw: &str) -> Result<Sku, FieldViolation> {
    match raw.strip_prefix("products/") {
        Some(sku) if !sku.contains('/') => Sku::parse(field, sku),
        _ => Err(FieldViolation::new(field, "must be products/{sku}")),
    }
}

/// Parses `products/{sku}/stockLevels/{location}`.
pub fn parse_stock_level_name(field: &str, raw: &str) -> Result<(Sku, LocationId), FieldViolation> {
    let bad = || FieldViolation::new(field, "must be products/{sku}/stockLevels/{location}");
    let rest = raw.strip_prefix("products/").ok_or_else(bad)?;
    let (sku, location) = rest.split_once("/stockLevels/").ok_or_else(bad)?;
    if location.contains('/') {
        return Err(bad());
    }
    Ok((Sku::parse(field, sku)?, LocationId::parse(field, location)?))
}

/// Which products a list covers: one, or every (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductScope {
    /// `products/-`.
    All,
    /// `products/{sku}`.
    One(Sku),
}

/// Parses `products/{sku}` or `products/-`.
pub fn parse_product_parent(field: &str, raw: &str) -> Result<ProductScope, FieldViolation> {
    if raw == "products/-" {
        Ok(ProductScope::All)
    } else {
        parse_product_name(field, raw)
            .map(ProductScope::One)
            .map_err(|_| FieldViolation::new(field, "must be products/{sku} or products/-"))
    }
}

/// Which movements a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovementScope {
    /// `products/-/stockLevels/-`.
    All,
    /// `products/{sku}/stockLevels/-`.
    Product(Sku),
    /// `products/{sku}/stockLevels/{location}`.
    Level(Sku, LocationId),
}

/// Parses a ListStockMovements parent.
pub fn parse_movement_parent(field: &str, raw: &str) -> Result<MovementScope, FieldViolation> {
    let bad = || {
        FieldViolation::new(
            field,
            "must be products/{sku}/stockLevels/{location}, products/{sku}/stockLevels/- or products/-/stockLevels/-",
        )
    };
    if raw == "products/-/stockLevels/-" {
        return Ok(MovementScope::All);
    }
    let rest = raw.strip_prefix("products/").ok_or_else(bad)?;
    let (sku, location) = rest.split_once("/stockLevels/").ok_or_else(bad)?;
    let sku = Sku::parse(field, sku).map_err(|_| bad())?;
    if location == "-" {
        return Ok(MovementScope::Product(sku));
    }
    let location = LocationId::parse(field, location).map_err(|_| bad())?;
    Ok(MovementScope::Level(sku, location))
}

/// The etag of a product version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version in an etag this API issued.
pub fn parse_etag(field: &str, raw: &str) -> Result<i64, FieldViolation> {
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| FieldViolation::new(field, "is not an etag this API issued"))
}

/// A reservation's lifecycle state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Holding stock until its expiry.
    Active,
    /// Sold (terminal).
    Committed,
    /// Given back by a release (terminal).
    Released,
    /// Given back on expiry (terminal).
    Expired,
}

impl ReservationState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Committed => "COMMITTED",
            Self::Released => "RELEASED",
            Self::Expired => "EXPIRED",
        }
    }

    /// Reads the stored spelling (the CHECK constraint admits only these).
    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "COMMITTED" => Self::Committed,
            "RELEASED" => Self::Released,
            "EXPIRED" => Self::Expired,
            _ => Self::Active,
        }
    }
}

/// What caused a stock movement, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// AdjustStock.
    Adjustment,
    /// available → reserved.
    Reserve,
    /// reserved → available (release).
    Release,
    /// reserved → committed.
    Commit,
    /// reserved → available (expiry).
    Expire,
}

impl MovementKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adjustment => "ADJUSTMENT",
            Self::Reserve => "RESERVE",
            Self::Release => "RELEASE",
            Self::Commit => "COMMIT",
            Self::Expire => "EXPIRE",
        }
    }

    /// Reads the stored spelling (the CHECK constraint admits only these).
    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "RESERVE" => Self::Reserve,
            "RELEASE" => Self::Release,
            "COMMIT" => Self::Commit,
            "EXPIRE" => Self::Expire,
            _ => Self::Adjustment,
        }
    }

    /// The change of (available, reserved, committed) for `units`.
    pub fn deltas(self, units: i64) -> (i64, i64, i64) {
        match self {
            Self::Adjustment => (units, 0, 0),
            Self::Reserve => (-units, units, 0),
            Self::Release | Self::Expire => (units, -units, 0),
            Self::Commit => (0, -units, units),
        }
    }
}

/// A comma-separated ascending, de-duplicated list (ErrorInfo `skus`).
pub fn sku_list(skus: &[String]) -> String {
    let mut sorted = skus.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_follow_the_documented_alphabet() {
        assert!(Sku::parse("sku", "A").is_ok());
        assert!(Sku::parse("sku", "TSHIRT-RED_XL-01").is_ok());
        assert!(Sku::parse("sku", &"A".repeat(64)).is_ok());
        for bad in ["", "-A", "_A", "a", "A B", "A/B", "Ä", &"A".repeat(65)] {
            assert_eq!(Sku::parse("sku", bad).unwrap_err().field, "sku", "{bad:?}");
        }
    }

    #[test]
    fn locations_follow_the_documented_alphabet() {
        assert!(LocationId::parse("l", "main").is_ok());
        assert!(LocationId::parse("l", "berlin-2").is_ok());
        for bad in ["", "-a", "Main", "a_b", &"a".repeat(64)] {
            assert!(LocationId::parse("l", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_parse_and_format_symmetrically() {
        let (sku, location) =
            parse_stock_level_name("n", &stock_level_name("A-1", "main")).unwrap();
        assert_eq!((sku.as_str(), location.as_str()), ("A-1", "main"));
        assert!(parse_stock_level_name("n", "products/A/stockLevels/main/x").is_err());
        assert_eq!(
            parse_product_name("n", &product_name("A"))
                .unwrap()
                .as_str(),
            "A"
        );
        assert!(parse_product_name("n", "products/A/x").is_err());
        assert_eq!(
            parse_movement_parent("p", "products/A/stockLevels/-").unwrap(),
            MovementScope::Product(Sku::parse("s", "A").unwrap())
        );
        assert_eq!(
            parse_movement_parent("p", "products/-/stockLevels/-").unwrap(),
            MovementScope::All
        );
        assert!(parse_movement_parent("p", "products/-/stockLevels/main").is_err());
    }

    #[test]
    fn money_rejects_unknown_currencies_and_negative_amounts_naming_both() {
        let err = Price::parse("unit_price", "XXX", -1).unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["unit_price.currency_code", "unit_price.amount_minor"]
        );
        assert!(Price::parse("p", "eur", 1).is_err());
        assert!(Price::parse("p", "EUR", 0).is_ok());
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let q = Quantity::parse("q", 10_000).unwrap();
        assert_eq!(MinorUnits(i64::MAX).checked_mul(q), None);
        assert_eq!(MinorUnits(i64::MAX).checked_add(MinorUnits(1)), None);
        assert_eq!(MinorUnits(5).checked_mul(q), Some(MinorUnits(50_000)));
    }

    #[test]
    fn movement_deltas_keep_on_hand_balanced() {
        for kind in [
            MovementKind::Adjustment,
            MovementKind::Reserve,
            MovementKind::Release,
            MovementKind::Commit,
            MovementKind::Expire,
        ] {
            assert_eq!(MovementKind::from_stored(kind.as_str()), kind);
            let (a, r, c) = kind.deltas(3);
            let on_hand = if kind == MovementKind::Adjustment {
                3
            } else {
                0
            };
            assert_eq!(a + r + c, on_hand);
        }
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag("e", &etag(7)).unwrap(), 7);
        assert!(parse_etag("e", "7").is_err());
    }
}
