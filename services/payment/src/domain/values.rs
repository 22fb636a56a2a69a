//! Domain values every resource shares: the bounds of an amount, an
//! intent's description and its metadata. Each `parse` takes the proto
//! field path it reports violations on.

use std::collections::BTreeMap;

use backroom_shared::{
    errors::{FieldViolation, Violations},
    validate::{CARD_NUMBER_IN_TEXT, contains_card_number, no_card_number, no_control_characters},
};

use super::Error;

/// The largest amount of an intent, refund or capture, minor units.
pub use backroom_shared::money::MAX_AMOUNT;

/// The amounts an intent, refund or capture may ask for: 1–[`MAX_AMOUNT`]
/// minor units.
pub const AMOUNTS: std::ops::RangeInclusive<i64> = 1..=MAX_AMOUNT;

/// Maximum description length, characters.
pub const MAX_DESCRIPTION: usize = 1000;
/// Maximum metadata keys.
pub const MAX_METADATA_KEYS: usize = 20;
/// Maximum metadata key length, characters.
pub const MAX_METADATA_KEY: usize = 40;
/// Maximum metadata value length, characters.
pub const MAX_METADATA_VALUE: usize = 500;

/// An intent's free-text description.
pub fn parse_description(field: &str, raw: &str) -> Result<String, FieldViolation> {
    if raw.chars().count() > MAX_DESCRIPTION {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    no_control_characters(field, raw)?;
    no_card_number(field, raw)?;
    Ok(raw.to_owned())
}

/// Caller-defined key/value pairs within the proto's limits, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Checks the limits; every bad key is a violation of `metadata`.
    pub fn parse<'a>(
        field: &str,
        raw: impl IntoIterator<Item = (&'a String, &'a String)>,
        violations: &mut Violations,
    ) -> Option<Self> {
        let map: BTreeMap<String, String> = raw
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut found = Vec::new();
        if map.len() > MAX_METADATA_KEYS {
            found.push(FieldViolation::new(
                field,
                format!("must have at most {MAX_METADATA_KEYS} keys"),
            ));
        }
        for (key, value) in &map {
            let key_len = key.chars().count();
            if key_len == 0 || key_len > MAX_METADATA_KEY {
                found.push(FieldViolation::new(
                    field,
                    format!("keys must be 1–{MAX_METADATA_KEY} characters"),
                ));
            } else if value.chars().count() > MAX_METADATA_VALUE {
                found.push(FieldViolation::new(
                    format!("{field}[{key}]"),
                    format!("must be at most {MAX_METADATA_VALUE} characters"),
                ));
            } else if contains_card_number(key) || contains_card_number(value) {
                found.push(FieldViolation::new(field, CARD_NUMBER_IN_TEXT));
            } else if key
                .chars()
                .chain(value.chars())
                .any(backroom_shared::validate::is_refused_in_text)
            {
                found.push(FieldViolation::new(
                    format!("{field}[{key}]"),
                    backroom_shared::validate::CONTROL_IN_TEXT,
                ));
            }
        }
        let ok = found.is_empty();
        violations.extend(found);
        ok.then_some(Self(map))
    }

    /// Reads back the stored JSON.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        serde_json::from_str(json)
            .map(Self)
            .map_err(|e| Error::Db(backroom_shared::db::DbError::Other(e.into())))
    }

    /// The JSON stored.
    pub fn to_json(&self) -> String {
        // A map of strings always serialises.
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The pairs.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_limits() {
        let ok: BTreeMap<String, String> = [("order".to_owned(), "orders/1".to_owned())].into();
        let mut v = Violations::default();
        assert!(Metadata::parse("metadata", &ok, &mut v).is_some());
        let long_key: BTreeMap<String, String> = [("k".repeat(41), String::new())].into();
        assert!(Metadata::parse("metadata", &long_key, &mut v).is_none());
        let many: BTreeMap<String, String> =
            (0..21).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(Metadata::parse("metadata", &many, &mut v).is_none());
        assert!(v.finish().is_err());
    }
}
