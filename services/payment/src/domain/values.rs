//! Domain values: money, resource names, metadata and the enums of the
//! payment-intent state machine. Each `parse` takes the proto field path it
//! reports violations on.

use std::collections::BTreeMap;

use backroom_shared::{
    errors::{FieldViolation, Violations},
    validate::{CARD_NUMBER_IN_TEXT, contains_card_number, no_card_number, no_control_characters},
};
use uuid::Uuid;

use super::Error;

/// ISO-4217 currencies the service accepts, with their minor-unit exponent
/// (documentation only: every amount is already in minor units).
pub const CURRENCIES: [&str; 20] = [
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "INR", "JPY",
    "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "USD",
];

/// The largest amount of an intent, refund or capture, minor units.
pub const MAX_AMOUNT: i64 = 99_999_999;

/// A known ISO-4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency(&'static str);

impl Currency {
    /// Accepts a code from [`CURRENCIES`].
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        CURRENCIES
            .iter()
            .find(|c| **c == raw)
            .map(|c| Self(c))
            .ok_or_else(|| {
                FieldViolation::new(field, "must be a supported ISO-4217 code, e.g. EUR")
            })
    }

    /// Reads a stored code (checked by the database).
    pub fn stored(raw: &str) -> Result<Self, Error> {
        Self::parse("currency", raw).map_err(|v| {
            Error::Db(backroom_shared::db::DbError::Other(anyhow::anyhow!(
                "stored currency {raw:?}: {}",
                v.description
            )))
        })
    }

    /// The code.
    pub fn code(self) -> &'static str {
        self.0
    }
}

/// A positive amount of 1..=[`MAX_AMOUNT`] minor units in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// The currency.
    pub currency: Currency,
    /// Minor units, 1..=MAX_AMOUNT.
    pub minor: i64,
}

impl Amount {
    /// Parses a proto Money at `field` (`amount` → `amount.amount_minor`,
    /// `amount.currency_code`).
    pub fn parse(
        field: &str,
        currency_code: &str,
        amount_minor: i64,
        violations: &mut Violations,
    ) -> Option<Self> {
        let currency = violations.check(Currency::parse(
            &format!("{field}.currency_code"),
            currency_code,
        ));
        if !(1..=MAX_AMOUNT).contains(&amount_minor) {
            violations.push(
                format!("{field}.amount_minor"),
                format!("must be 1–{MAX_AMOUNT} minor units"),
            );
            return None;
        }
        Some(Self {
            currency: currency?,
            minor: amount_minor,
        })
    }
}

pub use backroom_shared::auth::AccountRef;

/// Parses `{collection}/{uuid}`.
pub fn parse_name(field: &str, collection: &str, name: &str) -> Result<Uuid, FieldViolation> {
    if name.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    name.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| FieldViolation::new(field, format!("must be {collection}/{{uuid}}")))
}

/// `paymentMethods/{id}`.
pub fn payment_method_name(id: Uuid) -> String {
    format!("paymentMethods/{id}")
}

/// `paymentIntents/{id}`.
pub fn payment_intent_name(id: Uuid) -> String {
    format!("paymentIntents/{id}")
}

/// `orders/{id}`.
pub fn order_name(id: Uuid) -> String {
    format!("orders/{id}")
}

/// `paymentIntents/{intent}/refunds/{id}`.
pub fn refund_name(intent: Uuid, id: Uuid) -> String {
    format!("paymentIntents/{intent}/refunds/{id}")
}

/// `journals/{id}`.
pub fn journal_name(id: Uuid) -> String {
    format!("journals/{id}")
}

/// `ledgerAccounts/{code}`.
pub fn ledger_account_name(code: &str) -> String {
    format!("ledgerAccounts/{code}")
}

/// Parses `paymentIntents/{intent}/refunds/{refund}`.
pub fn parse_refund_name(field: &str, name: &str) -> Result<(Uuid, Uuid), FieldViolation> {
    let bad = || FieldViolation::new(field, "must be paymentIntents/{uuid}/refunds/{uuid}");
    if name.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    let rest = name.strip_prefix("paymentIntents/").ok_or_else(bad)?;
    let (intent, refund) = rest.split_once("/refunds/").ok_or_else(bad)?;
    Ok((
        Uuid::try_parse(intent).map_err(|_| bad())?,
        Uuid::try_parse(refund).map_err(|_| bad())?,
    ))
}

/// Parses `ledgerAccounts/{code}` (the code's existence is the database's
/// business).
pub fn parse_ledger_account_name(field: &str, name: &str) -> Result<String, FieldViolation> {
    match name.strip_prefix("ledgerAccounts/") {
        Some(code)
            if !code.is_empty()
                && code.len() <= 64
                && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            Ok(code.to_owned())
        }
        _ if name.is_empty() => Err(FieldViolation::new(field, "is required")),
        _ => Err(FieldViolation::new(field, "must be ledgerAccounts/{code}")),
    }
}

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
            } else if key.chars().chain(value.chars()).any(char::is_control) {
                found.push(FieldViolation::new(
                    format!("{field}[{key}]"),
                    "must not contain control characters",
                ));
            } else if contains_card_number(key) || contains_card_number(value) {
                found.push(FieldViolation::new(field, CARD_NUMBER_IN_TEXT));
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

macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The code stored in the database.
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            /// Parses a stored code.
            pub fn from_code(code: &str) -> Result<Self, Error> {
                match code {
                    $($code => Ok($name::$variant),)+
                    other => Err(Error::Db(backroom_shared::db::DbError::Other(anyhow::anyhow!(
                        concat!("unknown ", stringify!($name), " {:?}"), other
                    )))),
                }
            }
        }
    };
}

code_enum!(
    /// Stripe's payment-intent states.
    IntentStatus {
        /// Needs a payment method.
        RequiresPaymentMethod = "requires_payment_method",
        /// Ready to confirm.
        RequiresConfirmation = "requires_confirmation",
        /// The processor call is in flight.
        Processing = "processing",
        /// Authorized; waiting for capture.
        RequiresCapture = "requires_capture",
        /// Captured (terminal).
        Succeeded = "succeeded",
        /// Canceled (terminal).
        Canceled = "canceled",
    }
);

impl IntentStatus {
    /// Whether ConfirmPaymentIntent may run.
    pub fn can_confirm(self) -> bool {
        matches!(
            self,
            Self::RequiresPaymentMethod | Self::RequiresConfirmation
        )
    }

    /// Whether CancelPaymentIntent may run.
    pub fn can_cancel(self) -> bool {
        matches!(
            self,
            Self::RequiresPaymentMethod | Self::RequiresConfirmation | Self::RequiresCapture
        )
    }
}

code_enum!(
    /// When the authorized amount is captured.
    CaptureMethod {
        /// At once.
        Automatic = "automatic",
        /// By CapturePaymentIntent.
        Manual = "manual",
    }
);

code_enum!(
    /// Why an intent was canceled.
    CancellationReason {
        /// None given.
        Unspecified = "unspecified",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
        /// A duplicate.
        Duplicate = "duplicate",
        /// Suspected fraud.
        Fraudulent = "fraudulent",
        /// The customer went away.
        Abandoned = "abandoned",
        /// The authorization expired (system only).
        AuthorizationExpired = "authorization_expired",
        /// The checkout saga compensated (role service only).
        OrderFailed = "order_failed",
    }
);

code_enum!(
    /// Why money was refunded.
    RefundReason {
        /// None given.
        Unspecified = "unspecified",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
        /// A duplicate payment.
        Duplicate = "duplicate",
        /// Fraud.
        Fraudulent = "fraudulent",
    }
);

code_enum!(
    /// Outcome of a refund.
    RefundStatus {
        /// Money returned.
        Succeeded = "succeeded",
        /// Definitively refused.
        Failed = "failed",
    }
);

code_enum!(
    /// Which money movement a journal records.
    JournalKind {
        /// An authorization hold.
        AuthorizationHold = "authorization_hold",
        /// A capture.
        Capture = "capture",
        /// A released hold.
        Release = "release",
        /// A refund.
        Refund = "refund",
    }
);

code_enum!(
    /// Side of a ledger entry.
    Direction {
        /// Debit.
        Debit = "debit",
        /// Credit.
        Credit = "credit",
    }
);

code_enum!(
    /// Accounting class of a ledger account.
    LedgerKind {
        /// Debit-normal.
        Asset = "asset",
        /// Credit-normal.
        Liability = "liability",
        /// Credit-normal.
        Equity = "equity",
        /// Credit-normal.
        Revenue = "revenue",
        /// Debit-normal.
        Expense = "expense",
    }
);

impl LedgerKind {
    /// Whether the balance is Σ debits − Σ credits.
    pub fn debit_normal(self) -> bool {
        matches!(self, Self::Asset | Self::Expense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_currencies() {
        let mut v = Violations::default();
        assert!(Amount::parse("amount", "EUR", 100, &mut v).is_some());
        assert!(Amount::parse("amount", "XXX", 100, &mut v).is_none());
        assert!(Amount::parse("amount", "EUR", 0, &mut v).is_none());
        assert!(Amount::parse("amount", "EUR", MAX_AMOUNT + 1, &mut v).is_none());
        let fields: Vec<_> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(
            fields,
            [
                "amount.currency_code",
                "amount.amount_minor",
                "amount.amount_minor"
            ]
        );
    }

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

    #[test]
    fn names_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_name("name", "paymentIntents", &payment_intent_name(id)).unwrap(),
            id
        );
        assert!(parse_name("name", "paymentIntents", &payment_method_name(id)).is_err());
        let refund = Uuid::now_v7();
        assert_eq!(
            parse_refund_name("name", &refund_name(id, refund)).unwrap(),
            (id, refund)
        );
    }
}
