//! Account values, parsed at the edge and valid by construction: an
//! [`Email`] is normalised, a [`Password`] meets the policy and never prints,
//! an [`AccountRef`] is a well-formed resource name.

use std::fmt;

use backroom_shared::{
    auth::{ROLE_ADMIN, ROLE_CUSTOMER},
    errors::{FieldViolation, Violations},
};
use uuid::Uuid;

/// A normalised email address: trimmed, lower-cased, at most 254 bytes, one
/// `@` with a non-empty local part and a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Normalises and checks `raw`; `field` names it in the violation.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        let email = raw.trim().to_lowercase();
        let invalid = |why: &str| Err(FieldViolation::new(field, why));
        if email.is_empty() {
            return invalid("is required");
        }
        if email.len() > 254 {
            return invalid("must be at most 254 characters");
        }
        let Some((local, domain)) = email.split_once('@') else {
            return invalid("must be an email address (no @)");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '@' && c != ',' && c != '"');
        if !local_ok || !domain_ok {
            return invalid("must be an email address");
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an address read back from the database (already normalised by
    /// the CHECK constraint).
    pub fn from_stored(email: String) -> Self {
        Self(email)
    }
}

/// A password that meets the policy: 10–128 characters, not the email. Its
/// `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (bounds hashing cost).
pub const MAX_PASSWORD_CHARS: usize = 128;

impl Password {
    /// Checks `raw` against the policy for an account with `email`.
    pub fn parse(field: &str, raw: &str, email: Option<&Email>) -> Result<Self, FieldViolation> {
        let chars = raw.chars().count();
        if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            return Err(FieldViolation::new(
                field,
                format!("must be {MIN_PASSWORD_CHARS}–{MAX_PASSWORD_CHARS} characters"),
            ));
        }
        if email.is_some_and(|email| raw.trim().to_lowercase() == email.as_str()) {
            return Err(FieldViolation::new(field, "must not be the email address"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A password as presented at login: only bounded in length (the policy
    /// applies when it is set, not when it is checked).
    pub fn presented(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        if raw.chars().count() > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password bytes, for hashing only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

pub use backroom_shared::validate::{optional_text, required_text};

/// Longest display name.
pub const MAX_DISPLAY_NAME: usize = 100;

pub use backroom_shared::auth::AccountRef;

/// `accounts/{id}`.
pub fn account_name(id: Uuid) -> String {
    format!("accounts/{id}")
}

/// `accounts/{account}/addresses/{address}`.
pub fn address_name(account: Uuid, address: Uuid) -> String {
    format!("accounts/{account}/addresses/{address}")
}

/// Parses `accounts/{a}/addresses/{b}` (`accounts/me/...` allowed).
pub fn parse_address_name(field: &str, name: &str) -> Result<(AccountRef, Uuid), FieldViolation> {
    let bad = || FieldViolation::new(field, "must be accounts/{account}/addresses/{uuid}");
    if name.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    let (account, address) = name.split_once("/addresses/").ok_or_else(bad)?;
    let account = AccountRef::parse(field, account).map_err(|_| bad())?;
    let address = Uuid::try_parse(address).map_err(|_| bad())?;
    Ok((account, address))
}

/// The etag of a row version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Roles an admin may grant.
pub const ASSIGNABLE_ROLES: [&str; 2] = [ROLE_CUSTOMER, ROLE_ADMIN];

/// Validates a role set for UpdateAccount: known roles, always `customer`,
/// deduplicated, sorted.
pub fn parse_roles(field: &str, roles: &[String]) -> Result<Vec<String>, FieldViolation> {
    let mut parsed: Vec<String> = Vec::new();
    for role in roles {
        if !ASSIGNABLE_ROLES.contains(&role.as_str()) {
            return Err(FieldViolation::new(
                field,
                format!("unknown role {role:?}; allowed: customer, admin"),
            ));
        }
        if !parsed.contains(role) {
            parsed.push(role.clone());
        }
    }
    if !parsed.iter().any(|r| r == ROLE_CUSTOMER) {
        return Err(FieldViolation::new(
            field,
            "every account keeps the customer role",
        ));
    }
    parsed.sort();
    Ok(parsed)
}

/// Most addresses one account may keep.
pub const MAX_ADDRESSES: i64 = 20;

/// A new shipping address, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAddress {
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

impl NewAddress {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            Email::parse("email", "  Ada@Example.COM ")
                .unwrap()
                .as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@exa..mple.com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse("email", &format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn the_password_policy_is_10_to_128_characters_and_not_the_email() {
        let email = Email::parse("email", "ada@example.com").unwrap();
        assert!(Password::parse("password", "short", Some(&email)).is_err());
        assert!(Password::parse("password", &"x".repeat(129), Some(&email)).is_err());
        assert!(Password::parse("password", "ADA@example.com", Some(&email)).is_err());
        assert!(Password::parse("password", "correct horse", Some(&email)).is_ok());
        // Characters, not bytes: ten multi-byte characters pass.
        assert!(Password::parse("password", "ééééééééé1", Some(&email)).is_ok());
        assert!(
            !format!("{:?}", Password::parse("p", "correct horse", None).unwrap())
                .contains("horse")
        );
    }

    #[test]
    fn names_parse_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(
            AccountRef::parse("name", &format!("accounts/{id}")).unwrap(),
            AccountRef::Id(id)
        );
        assert_eq!(
            AccountRef::parse("name", "accounts/me").unwrap(),
            AccountRef::Me
        );
        assert!(AccountRef::parse("name", "accounts/123").is_err());
        assert!(AccountRef::parse("name", "users/me").is_err());
        let address = Uuid::now_v7();
        let (account, parsed) = parse_address_name("name", &address_name(id, address)).unwrap();
        assert_eq!((account, parsed), (AccountRef::Id(id), address));
        assert!(parse_address_name("name", "accounts/me/addresses/x").is_err());
    }

    #[test]
    fn roles_must_be_known_and_keep_customer() {
        assert_eq!(
            parse_roles(
                "roles",
                &["admin".into(), "customer".into(), "admin".into()]
            )
            .unwrap(),
            ["admin", "customer"]
        );
        assert!(parse_roles("roles", &["admin".into()]).is_err());
        assert!(parse_roles("roles", &["customer".into(), "service".into()]).is_err());
    }
}
