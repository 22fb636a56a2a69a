//! The catalogue vocabulary more than one service speaks: a [`Sku`], a line
//! [`Quantity`] and the limits of an order's lines. Inventory owns products;
//! checkout validates the lines of an order with these same rules before it
//! asks inventory, so both refuse the same input the same way.

use std::fmt;

use crate::errors::{FieldViolation, Violations};

/// Most lines in a quote, reservation or order.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;

/// A product's SKU: 1–64 of `A–Z 0–9 - _`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// Checks `raw`; `field` names it in the violation.
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

/// Units of one line: 1–[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// Checks `raw`; `field` names it in the violation.
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

/// ErrorInfo metadata `skus` (and the SKUs of an error message): a
/// comma-separated ascending, de-duplicated list.
pub fn sku_list(skus: &[Sku]) -> String {
    let mut sorted: Vec<&str> = skus.iter().map(Sku::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(",")
}

/// The lines of a quote, reservation, order or shipment, each checked by
/// the rules above and each SKU once; `lines` are (sku, quantity) in
/// request order, at most [`MAX_LINES`] of them read (the caller checks how
/// many there may be). Violations name `lines[i].sku` / `lines[i].quantity`;
/// returns the lines that parsed (all of them when nothing was recorded).
pub fn parse_lines<'a>(
    violations: &mut Violations,
    lines: impl Iterator<Item = (&'a str, i64)>,
) -> Vec<(Sku, Quantity)> {
    let mut parsed: Vec<(Sku, Quantity)> = Vec::new();
    // Every SKU seen, whether or not its quantity parsed: a repeat is named
    // either way.
    let mut seen = std::collections::HashSet::new();
    for (i, (sku, quantity)) in lines.enumerate().take(MAX_LINES) {
        let sku = violations.check(Sku::parse(&format!("lines[{i}].sku"), sku));
        let quantity = violations.check(Quantity::parse(&format!("lines[{i}].quantity"), quantity));
        if let Some(sku) = &sku
            && !seen.insert(sku.clone())
        {
            violations.push(format!("lines[{i}].sku"), "duplicates an earlier line");
            continue;
        }
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            parsed.push((sku, quantity));
        }
    }
    parsed
}

/// Most discount codes one order may give.
pub const MAX_DISCOUNT_CODES: usize = 5;

/// A discount code: 1–32 of `A–Z 0–9 - _`, starting with a letter or digit;
/// lower-case letters are upper-cased (customers type codes as they like).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiscountCode(String);

impl DiscountCode {
    /// Checks `raw` (case-insensitively); `field` names it in the violation.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let upper = raw.to_ascii_uppercase();
        let bytes = upper.as_bytes();
        let ok = (1..=32).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if raw.is_empty() {
            Err(FieldViolation::new(field, "is required"))
        } else if ok {
            Ok(Self(upper))
        } else {
            Err(FieldViolation::new(
                field,
                "must be 1-32 characters of A-Z, 0-9, '-' and '_', starting with a letter or digit",
            ))
        }
    }

    /// Wraps a code read back from the database (checked by its constraint).
    pub fn from_stored(code: String) -> Self {
        Self(code)
    }

    /// The code, upper-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DiscountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The discount codes of an order, quote or reservation at `field`: at most
/// [`MAX_DISCOUNT_CODES`], each valid and given once (case-insensitively);
/// violations name `{field}[i]`. Returns the codes that parsed, in request
/// order.
pub fn parse_discount_codes(
    violations: &mut Violations,
    field: &str,
    raw: &[String],
) -> Vec<DiscountCode> {
    if raw.len() > MAX_DISCOUNT_CODES {
        violations.push(field, format!("at most {MAX_DISCOUNT_CODES} codes"));
    }
    let mut codes: Vec<DiscountCode> = Vec::new();
    for (i, code) in raw.iter().enumerate().take(MAX_DISCOUNT_CODES) {
        let Some(code) = violations.check(DiscountCode::parse(&format!("{field}[{i}]"), code))
        else {
            continue;
        };
        if codes.contains(&code) {
            violations.push(format!("{field}[{i}]"), "duplicates an earlier code");
            continue;
        }
        codes.push(code);
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discount_codes_are_case_insensitive_bounded_and_distinct() {
        assert_eq!(
            DiscountCode::parse("c", "summer-10").unwrap().as_str(),
            "SUMMER-10"
        );
        for bad in ["", "-A", "A B", &"A".repeat(33), "ÄPFEL"] {
            assert!(DiscountCode::parse("c", bad).is_err(), "{bad}");
        }
        let mut violations = Violations::default();
        let codes = parse_discount_codes(
            &mut violations,
            "discount_codes",
            &["a".into(), "A".into(), "b".into()],
        );
        assert_eq!(codes.len(), 2);
        let err = violations.finish().unwrap_err();
        assert_eq!(err[0].field, "discount_codes[1]");
    }

    #[test]
    fn skus_and_quantities_parse_by_one_rule() {
        assert_eq!(Sku::parse("sku", "MUG-1").unwrap().as_str(), "MUG-1");
        for bad in ["", "mug-1", "-MUG", &"A".repeat(65), "MUG 1"] {
            assert_eq!(
                Sku::parse("lines[0].sku", bad).unwrap_err().field,
                "lines[0].sku"
            );
        }
        assert_eq!(Quantity::parse("q", 1).unwrap().get(), 1);
        assert!(Quantity::parse("q", 0).is_err());
        assert!(Quantity::parse("q", MAX_QUANTITY + 1).is_err());
    }
}
