//! Inventory values, parsed at the edge and valid by construction: location
//! ids, country codes, order ids, the lines of a quote or reservation, and
//! the resource names (AIP-122) built from them. SKUs, line quantities and
//! the line limits are the shared catalogue's ([`backroom_shared::catalog`]),
//! money is [`backroom_shared::money`]. Every parser takes the request field
//! path it reports violations under.

use std::fmt;

use backroom_shared::{
    catalog::{MAX_LINES, Quantity, Sku},
    errors::{FieldViolation, Violations},
    names,
};
use uuid::Uuid;

/// The collection of products (`products/{sku}`).
pub const PRODUCTS: &str = "products";
/// The collection of a product's stock levels
/// (`products/{sku}/stockLevels/{location}`).
pub const STOCK_LEVELS: &str = "stockLevels";
/// The collection of a level's movements
/// (`…/stockLevels/{location}/stockMovements/{sequence}`).
pub const STOCK_MOVEMENTS: &str = "stockMovements";
/// The collection of reservations (`reservations/{order_id}`).
pub const RESERVATIONS: &str = "reservations";
/// The collection of shipping zones (`shippingZones/{zone}`).
pub const SHIPPING_ZONES: &str = "shippingZones";

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

    /// `raw` if it names a location, else `None` (an empty optional field).
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Self>, FieldViolation> {
        if raw.is_empty() {
            Ok(None)
        } else {
            Self::parse(field, raw).map(Some)
        }
    }

    /// Wraps a location read back from the database (checked by its
    /// constraint).
    pub fn from_stored(location: String) -> Self {
        Self(location)
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

/// An ISO-3166-1 alpha-2 country code (two upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CountryCode(String);

impl CountryCode {
    /// Checks `raw`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                "must be an ISO-3166-1 alpha-2 code, e.g. DE",
            ))
        }
    }

    /// Wraps a code read back from the database (checked by its
    /// constraint).
    pub fn from_stored(code: String) -> Self {
        Self(code)
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An order id: any UUID, kept in canonical hyphenated form. It is also the
/// id of the order's reservation (`reservations/{order_id}`).
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
        names::name(RESERVATIONS, self.0)
    }

    /// Parses `reservations/{order_id}`.
    pub fn parse_reservation_name(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        names::parse_uuid(field, RESERVATIONS, raw).map(Self)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `products/{sku}`.
pub fn product_name(sku: &Sku) -> String {
    names::name(PRODUCTS, sku)
}

/// Parses `products/{sku}`.
pub fn parse_product_name(field: &str, raw: &str) -> Result<Sku, FieldViolation> {
    match raw
        .strip_prefix(PRODUCTS)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(sku) if !sku.contains('/') => Sku::parse(field, sku),
        _ => Err(FieldViolation::new(field, "must be products/{sku}")),
    }
}

/// Parses the lines of a quote or reservation: 1–[`MAX_LINES`], distinct
/// SKUs, quantities in range; `lines` are (sku, quantity) in request order.
/// Returns the lines that parsed (all of them when nothing was recorded).
pub fn parse_lines<'a>(
    violations: &mut Violations,
    lines: impl ExactSizeIterator<Item = (&'a str, i64)>,
) -> Vec<(Sku, Quantity)> {
    let count = lines.len();
    if count == 0 {
        violations.push("lines", "at least one line is required");
    } else if count > MAX_LINES {
        violations.push("lines", format!("at most {MAX_LINES} lines"));
        return Vec::new();
    }
    backroom_shared::catalog::parse_lines(violations, lines)
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
        use crate::domain::stock::{LevelKey, MovementScope};
        let key = LevelKey::parse("n", "products/A-1/stockLevels/main").unwrap();
        assert_eq!((key.sku.as_str(), key.location.as_str()), ("A-1", "main"));
        assert_eq!(LevelKey::parse("n", &key.name()).unwrap(), key);
        assert!(LevelKey::parse("n", "products/A/stockLevels/main/x").is_err());
        let sku = Sku::parse("s", "A").unwrap();
        assert_eq!(
            parse_product_name("n", &product_name(&sku))
                .unwrap()
                .as_str(),
            "A"
        );
        assert!(parse_product_name("n", "products/A/x").is_err());
        assert_eq!(
            MovementScope::parse("p", "products/A/stockLevels/-").unwrap(),
            MovementScope::Product(sku)
        );
        assert_eq!(
            MovementScope::parse("p", "products/-/stockLevels/-").unwrap(),
            MovementScope::All
        );
        assert!(MovementScope::parse("p", "products/-/stockLevels/main").is_err());
        let order = OrderId(Uuid::now_v7());
        assert_eq!(
            OrderId::parse_reservation_name("n", &order.reservation_name()).unwrap(),
            order
        );
        assert_eq!(
            OrderId::parse_reservation_name("name", "orders/x")
                .unwrap_err()
                .field,
            "name"
        );
    }
}
