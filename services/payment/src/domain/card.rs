//! Card data as a customer enters it, parsed and checked once at the edge.
//!
//! The PAN and CVC live only in [`CardNumber`] and [`Cvc`], whose `Debug`
//! shows nothing but the brand/last4 (or nothing at all), and which have no
//! `Display`: no `{:?}`, span field or error message can leak them. What is
//! kept is a [`super::payment_methods::PaymentMethod`]: brand, last4,
//! expiry, holder name and a keyed fingerprint.

use std::fmt;

use backroom_shared::{
    config::Secret,
    errors::{FieldViolation, Violations},
    // One Luhn check, in `shared`, next to the card-number guard for free
    // text that every service applies.
    validate::{PAN_DIGITS, luhn_valid, optional_text},
};
use chrono::{DateTime, Datelike as _, Utc};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Card network, derived from the number's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    /// Visa: 4.
    Visa,
    /// Mastercard: 51–55, 2221–2720.
    Mastercard,
    /// American Express: 34, 37.
    Amex,
    /// Discover: 6011, 644–649, 65.
    Discover,
    /// Diners Club: 300–305, 36, 38, 39.
    Diners,
    /// JCB: 3528–3589.
    Jcb,
    /// UnionPay: 62.
    UnionPay,
    /// Any other Luhn-valid number.
    Other,
}

impl Brand {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Diners => "diners",
            Brand::Jcb => "jcb",
            Brand::UnionPay => "unionpay",
            Brand::Other => "other",
        }
    }

    /// Parses a stored code (unknown codes read as [`Brand::Other`]).
    pub fn from_code(code: &str) -> Self {
        match code {
            "visa" => Brand::Visa,
            "mastercard" => Brand::Mastercard,
            "amex" => Brand::Amex,
            "discover" => Brand::Discover,
            "diners" => Brand::Diners,
            "jcb" => Brand::Jcb,
            "unionpay" => Brand::UnionPay,
            _ => Brand::Other,
        }
    }

    fn detect(digits: &str) -> Self {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        let in_range =
            |n: usize, lo: u32, hi: u32| prefix(n).is_some_and(|p| (lo..=hi).contains(&p));
        if digits.starts_with('4') {
            Brand::Visa
        } else if in_range(2, 51, 55) || in_range(4, 2221, 2720) {
            Brand::Mastercard
        } else if in_range(2, 34, 34) || in_range(2, 37, 37) {
            Brand::Amex
        } else if digits.starts_with("6011") || in_range(3, 644, 649) || digits.starts_with("65") {
            Brand::Discover
        } else if in_range(3, 300, 305) || ["36", "38", "39"].iter().any(|p| digits.starts_with(p))
        {
            Brand::Diners
        } else if in_range(4, 3528, 3589) {
            Brand::Jcb
        } else if digits.starts_with("62") {
            Brand::UnionPay
        } else {
            Brand::Other
        }
    }
}

/// A Luhn-valid card number (PAN). Never displayed, logged or stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({:?} ****{})", self.brand(), self.last4())
    }
}

impl CardNumber {
    /// Checks 13–19 ASCII digits ([`PAN_DIGITS`], the lengths the text
    /// guard spots too) and Luhn.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        // The description never echoes the value.
        if !PAN_DIGITS.contains(&raw.len()) || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldViolation::new(field, "must be 13–19 digits"));
        }
        if !luhn_valid(raw) {
            return Err(FieldViolation::new(field, "is not a valid card number"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The network.
    pub fn brand(&self) -> Brand {
        Brand::detect(&self.0)
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }

    /// The digits, for the processor only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A card verification code. Never displayed, logged or stored; checked for
/// shape only (the simulator accepts any).
#[derive(Clone, PartialEq, Eq)]
pub struct Cvc(String);

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

impl Cvc {
    /// 3 digits, 4 for Amex.
    pub fn parse(field: &str, raw: &str, brand: Option<Brand>) -> Result<Self, FieldViolation> {
        let want = if brand == Some(Brand::Amex) { 4 } else { 3 };
        if raw.len() == want && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldViolation::new(
                field,
                format!("must be {want} digits for this card"),
            ))
        }
    }
}

/// An expiry month: the card is valid through its last day (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// 1–12.
    pub month: u32,
    /// Four digits.
    pub year: i32,
}

impl Expiry {
    /// Whether the card is expired at `now`.
    pub fn is_past(self, now: DateTime<Utc>) -> bool {
        (self.year, self.month) < (now.year(), now.month())
    }
}

/// A card as entered in AttachPaymentMethod, valid by construction.
#[derive(Debug, Clone)]
pub struct CardInput {
    /// The PAN (redacted in `Debug`).
    pub number: CardNumber,
    /// The CVC (redacted in `Debug`); checked, then dropped.
    pub cvc: Cvc,
    /// The expiry.
    pub expiry: Expiry,
    /// Name on the card.
    pub holder_name: String,
}

/// Raw card fields as they arrive (borrowed from the request).
#[derive(Clone, Copy)]
pub struct RawCard<'a> {
    /// PAN.
    pub number: &'a str,
    /// Month.
    pub exp_month: i32,
    /// Year.
    pub exp_year: i32,
    /// CVC.
    pub cvc: &'a str,
    /// Holder.
    pub holder_name: &'a str,
}

impl fmt::Debug for RawCard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCard")
            .field("number", &"<redacted>")
            .field("exp_month", &self.exp_month)
            .field("exp_year", &self.exp_year)
            .field("cvc", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Maximum length of a holder name.
pub const MAX_HOLDER_NAME: usize = 200;

impl CardInput {
    /// Parses every field into `violations` (paths under `prefix`, e.g.
    /// `card`). An expired card is reported on `{prefix}.exp_month`.
    pub fn parse(
        prefix: &str,
        raw: RawCard<'_>,
        now: DateTime<Utc>,
        violations: &mut Violations,
    ) -> Option<Self> {
        let number = violations.check(CardNumber::parse(&format!("{prefix}.number"), raw.number));
        let month = match u32::try_from(raw.exp_month) {
            Ok(m @ 1..=12) => Some(m),
            _ => {
                violations.push(format!("{prefix}.exp_month"), "must be 1–12");
                None
            }
        };
        let year = if (2000..=9999).contains(&raw.exp_year) {
            Some(raw.exp_year)
        } else {
            violations.push(format!("{prefix}.exp_year"), "must be a four-digit year");
            None
        };
        let expiry = match (month, year) {
            (Some(month), Some(year)) => {
                let expiry = Expiry { month, year };
                if expiry.is_past(now) {
                    violations.push(format!("{prefix}.exp_month"), EXPIRED);
                    None
                } else {
                    Some(expiry)
                }
            }
            _ => None,
        };
        let cvc = violations.check(Cvc::parse(
            &format!("{prefix}.cvc"),
            raw.cvc,
            number.as_ref().map(CardNumber::brand),
        ));
        let holder_name = violations.check(optional_text(
            &format!("{prefix}.holder_name"),
            raw.holder_name,
            MAX_HOLDER_NAME,
        ));
        Some(Self {
            number: number?,
            cvc: cvc?,
            expiry: expiry?,
            holder_name: holder_name?,
        })
    }
}

/// The violation description of an expired card (the API picks the
/// `EXPIRED_CARD` reason by it).
pub const EXPIRED: &str = "the card has expired";

/// The key of card fingerprints (`BACKROOM_CARD_FINGERPRINT_KEY`).
#[derive(Clone)]
pub struct FingerprintKey(Secret);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// Shortest accepted fingerprint key, bytes.
pub const MIN_FINGERPRINT_KEY_LEN: usize = 32;

impl FingerprintKey {
    /// Wraps a key of at least [`MIN_FINGERPRINT_KEY_LEN`] bytes.
    pub fn new(key: Secret) -> anyhow::Result<Self> {
        anyhow::ensure!(
            key.expose().len() >= MIN_FINGERPRINT_KEY_LEN,
            "BACKROOM_CARD_FINGERPRINT_KEY must be at least {MIN_FINGERPRINT_KEY_LEN} bytes"
        );
        Ok(Self(key))
    }

    /// HMAC-SHA256(key, PAN), lower-case hex: equal for the same number
    /// within a deployment, useless without the key.
    pub fn fingerprint(&self, number: &CardNumber) -> String {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.0.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(number.expose().as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_brands() {
        for (pan, brand) in [
            ("4242424242424242", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("3056930009020004", Brand::Diners),
            ("3566002020360505", Brand::Jcb),
            ("6200000000000005", Brand::UnionPay),
        ] {
            let number = CardNumber::parse("n", pan).unwrap();
            assert_eq!(number.brand(), brand, "{pan}");
        }
        assert!(CardNumber::parse("n", "4242424242424241").is_err());
        assert!(CardNumber::parse("n", "42424242").is_err());
        assert!(CardNumber::parse("n", "4242 4242 4242 4242").is_err());
    }

    #[test]
    fn a_card_number_is_13_to_19_digits_as_the_text_guard_reads_them() {
        // 12 Luhn-valid digits: no network issues them, and the guard
        // would not spot them in a text field either.
        assert!(luhn_valid("424242424242"));
        let refused = CardNumber::parse("n", "424242424242").unwrap_err();
        assert_eq!(refused.description, "must be 13–19 digits");
        assert!(CardNumber::parse("n", "4222222222222").is_ok());
        assert!(CardNumber::parse("n", "42424242424242424242").is_err());
    }

    #[test]
    fn debug_never_shows_the_number_or_cvc() {
        let number = CardNumber::parse("n", "4242424242424242").unwrap();
        let cvc = Cvc::parse("c", "123", Some(Brand::Visa)).unwrap();
        let shown = format!("{number:?} {cvc:?}");
        assert!(!shown.contains("424242424242"), "{shown}");
        assert!(!shown.contains("123"), "{shown}");
        assert!(shown.contains("4242"));
    }

    #[test]
    fn amex_needs_four_digit_cvc() {
        assert!(Cvc::parse("c", "123", Some(Brand::Amex)).is_err());
        assert!(Cvc::parse("c", "1234", Some(Brand::Amex)).is_ok());
        assert!(Cvc::parse("c", "1234", Some(Brand::Visa)).is_err());
    }

    #[test]
    fn a_card_number_in_the_holder_name_is_refused() {
        let mut violations = Violations::default();
        let raw = RawCard {
            number: "4242424242424242",
            exp_month: 12,
            exp_year: 2099,
            cvc: "123",
            holder_name: "Ada ４２４２.４２４２.４２４２.４２４２",
        };
        assert!(CardInput::parse("card", raw, chrono::Utc::now(), &mut violations).is_none());
        let found = violations.finish().unwrap_err();
        assert_eq!(found[0].field, "card.holder_name");
    }

    #[test]
    fn fingerprints_are_keyed() {
        let number = CardNumber::parse("n", "4242424242424242").unwrap();
        let a = FingerprintKey::new(Secret::new("a".repeat(32))).unwrap();
        let b = FingerprintKey::new(Secret::new("b".repeat(32))).unwrap();
        assert_eq!(a.fingerprint(&number), a.fingerprint(&number));
        assert_ne!(a.fingerprint(&number), b.fingerprint(&number));
        assert_eq!(a.fingerprint(&number).len(), 64);
        assert!(FingerprintKey::new(Secret::new("short")).is_err());
    }
}
