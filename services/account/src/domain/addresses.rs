//! Shipping addresses: a [`PostalAddress`] is valid by construction, an
//! [`Address`] is one an account keeps (at most [`MAX_ADDRESSES`]).

use backroom_shared::errors::Violations;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{optional_text, required_text};

/// Most addresses one account may keep.
pub const MAX_ADDRESSES: i64 = 20;

/// A shipping address an account keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address's id.
    pub id: Uuid,
    /// The account it belongs to.
    pub account_id: Uuid,
    /// Where parcels go.
    pub postal: PostalAddress,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Where parcels go, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostalAddress {
    /// Who receives the parcel.
    pub recipient: String,
    /// Street and number.
    pub line1: String,
    /// Apartment, floor, c/o.
    pub line2: String,
    /// City.
    pub city: String,
    /// State or region.
    pub region: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO-3166-1 alpha-2.
    pub country_code: String,
}

/// The raw fields of an address in a request.
#[derive(Debug, Clone, Copy)]
pub struct AddressFields<'a> {
    /// Recipient.
    pub recipient: &'a str,
    /// Line 1.
    pub line1: &'a str,
    /// Line 2.
    pub line2: &'a str,
    /// City.
    pub city: &'a str,
    /// Region.
    pub region: &'a str,
    /// Postal code.
    pub postal_code: &'a str,
    /// Country code.
    pub country_code: &'a str,
}

impl PostalAddress {
    /// Validates every field, naming each under `prefix` (e.g. `address.city`).
    pub fn parse(
        prefix: &str,
        raw: AddressFields<'_>,
        violations: &mut Violations,
    ) -> Option<Self> {
        let f = |name: &str| format!("{prefix}.{name}");
        let recipient = violations.check(required_text(&f("recipient"), raw.recipient, 200));
        let line1 = violations.check(required_text(&f("line1"), raw.line1, 200));
        let line2 = violations.check(optional_text(&f("line2"), raw.line2, 200));
        let city = violations.check(required_text(&f("city"), raw.city, 100));
        let region = violations.check(optional_text(&f("region"), raw.region, 100));
        let postal_code = violations.check(optional_text(&f("postal_code"), raw.postal_code, 20));
        let country = raw.country_code.trim();
        let country_code = if country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())
        {
            Some(country.to_owned())
        } else {
            violations.push(
                f("country_code"),
                "must be an ISO-3166-1 alpha-2 code like \"DE\"",
            );
            None
        };
        Some(Self {
            recipient: recipient?,
            line1: line1?,
            line2: line2?,
            city: city?,
            region: region?,
            postal_code: postal_code?,
            country_code: country_code?,
        })
    }
}
