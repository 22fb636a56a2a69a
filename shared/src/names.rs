//! Resource names (AIP-122): `{collection}/{id}` and nested
//! `{parent}/{id}/{collection}/{id}`, built and parsed one way in every
//! service. Parse errors are field violations naming the request field and
//! the expected shape.

use std::fmt::Display;

use uuid::Uuid;

use crate::errors::FieldViolation;

/// `{collection}/{id}`, e.g. `paymentIntents/0196…`.
pub fn name(collection: &str, id: impl Display) -> String {
    format!("{collection}/{id}")
}

/// `{parent}/{parent_id}/{collection}/{id}`, e.g.
/// `accounts/0196…/addresses/0197…`.
pub fn nested(parent: &str, parent_id: impl Display, collection: &str, id: impl Display) -> String {
    format!("{parent}/{parent_id}/{collection}/{id}")
}

/// Parses `{collection}/{uuid}`.
pub fn parse_uuid(field: &str, collection: &str, raw: &str) -> Result<Uuid, FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    raw.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| FieldViolation::new(field, format!("must be {collection}/{{uuid}}")))
}

/// Parses `{parent}/{uuid}/{collection}/{uuid}` into both ids.
pub fn parse_nested_uuids(
    field: &str,
    parent: &str,
    collection: &str,
    raw: &str,
) -> Result<(Uuid, Uuid), FieldViolation> {
    let bad = || {
        FieldViolation::new(
            field,
            format!("must be {parent}/{{uuid}}/{collection}/{{uuid}}"),
        )
    };
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    let rest = raw
        .strip_prefix(parent)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(bad)?;
    let (outer, inner) = rest
        .split_once(&format!("/{collection}/"))
        .ok_or_else(bad)?;
    Ok((
        Uuid::try_parse(outer).map_err(|_| bad())?,
        Uuid::try_parse(inner).map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_name_the_field() {
        let id = Uuid::now_v7();
        let child = Uuid::now_v7();
        assert_eq!(
            parse_uuid("name", "orders", &name("orders", id)).unwrap(),
            id
        );
        assert_eq!(
            parse_nested_uuids(
                "name",
                "paymentIntents",
                "refunds",
                &nested("paymentIntents", id, "refunds", child)
            )
            .unwrap(),
            (id, child)
        );
        let err = parse_uuid("payment_method", "paymentMethods", "orders/x").unwrap_err();
        assert_eq!(err.field, "payment_method");
        assert_eq!(err.description, "must be paymentMethods/{uuid}");
        assert_eq!(
            parse_uuid("name", "orders", "").unwrap_err().description,
            "is required"
        );
        assert!(
            parse_nested_uuids(
                "name",
                "paymentIntents",
                "refunds",
                &name("paymentIntents", id)
            )
            .is_err()
        );
    }
}
