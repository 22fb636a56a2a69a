//! Account values, parsed at the edge and valid by construction: an
//! [`Email`] is normalised, a [`Password`] meets the policy and never
//! prints, a [`Role`] is one an account may hold.

use std::fmt;

use backroom_shared::errors::FieldViolation;

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
            && local.chars().all(|c| {
                !c.is_whitespace()
                    && !backroom_shared::validate::is_refused_in_text(c)
                    && c != '@'
                    && c != ','
                    && c != '"'
            });
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
        match email {
            Some(email) => Self(raw.to_owned()).not_the_email(field, email),
            None => Ok(Self(raw.to_owned())),
        }
    }

    /// This password, unless it is `email` (the half of the policy that
    /// needs the account: ChangePassword knows the email only after the
    /// request parsed).
    pub fn not_the_email(self, field: &str, email: &Email) -> Result<Self, FieldViolation> {
        if self.0.trim().to_lowercase() == email.as_str() {
            return Err(FieldViolation::new(field, "must not be the email address"));
        }
        Ok(self)
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

backroom_shared::stored_enum!(
    /// A role an account holds, stored as text. (`service` belongs to
    /// service principals, which are configured, never stored.)
    pub Role {
        /// Every account.
        Customer = "customer",
        /// Administrators.
        Admin = "admin",
    }
);

/// Validates a role set for UpdateAccount: known roles, always `customer`,
/// deduplicated, sorted by name.
pub fn parse_roles(field: &str, roles: &[String]) -> Result<Vec<Role>, FieldViolation> {
    let mut parsed: Vec<Role> = Vec::new();
    for name in roles {
        let Some(role) = Role::ALL.iter().copied().find(|r| r.as_str() == name) else {
            return Err(FieldViolation::new(
                field,
                format!("unknown role {name:?}; allowed: customer, admin"),
            ));
        };
        if !parsed.contains(&role) {
            parsed.push(role);
        }
    }
    if !parsed.contains(&Role::Customer) {
        return Err(FieldViolation::new(
            field,
            "every account keeps the customer role",
        ));
    }
    parsed.sort_by_key(|role| role.as_str());
    Ok(parsed)
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
    fn roles_must_be_known_and_keep_customer() {
        assert_eq!(
            parse_roles(
                "roles",
                &["admin".into(), "customer".into(), "admin".into()]
            )
            .unwrap(),
            [Role::Admin, Role::Customer]
        );
        assert!(parse_roles("roles", &["admin".into()]).is_err());
        assert!(parse_roles("roles", &["customer".into(), "service".into()]).is_err());
        // The stored names are the token's role names.
        assert_eq!(
            Role::Customer.as_str(),
            backroom_shared::auth::ROLE_CUSTOMER
        );
        assert_eq!(Role::Admin.as_str(), backroom_shared::auth::ROLE_ADMIN);
    }
}
