//! The payment domain: values that are valid by construction, the intent
//! state machine's vocabulary and the service's one [`Error`] enum.
//!
//! Layout: [`card`] (PAN/CVC handling, brands, fingerprints), [`values`]
//! (money, names, metadata, enums of the state machine).

pub mod card;
pub mod values;

use backroom_shared::{db::DbError, errors::FieldViolation};
use uuid::Uuid;

pub use values::*;

/// Why the processor declined an authorization (a definitive outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineKind {
    /// Generic issuer decline: `CARD_DECLINED` / `generic_decline`.
    Generic,
    /// `INSUFFICIENT_FUNDS` / `insufficient_funds`.
    InsufficientFunds,
    /// `EXPIRED_CARD` / `expired_card`.
    ExpiredCard,
}

impl DeclineKind {
    /// The ErrorInfo reason and `PaymentError.code`.
    pub fn reason(self) -> &'static str {
        match self {
            DeclineKind::Generic => "CARD_DECLINED",
            DeclineKind::InsufficientFunds => "INSUFFICIENT_FUNDS",
            DeclineKind::ExpiredCard => "EXPIRED_CARD",
        }
    }

    /// The processor's finer code.
    pub fn decline_code(self) -> &'static str {
        match self {
            DeclineKind::Generic => "generic_decline",
            DeclineKind::InsufficientFunds => "insufficient_funds",
            DeclineKind::ExpiredCard => "expired_card",
        }
    }

    /// A message safe to show the customer.
    pub fn message(self) -> &'static str {
        match self {
            DeclineKind::Generic => "the card was declined",
            DeclineKind::InsufficientFunds => "the card has insufficient funds",
            DeclineKind::ExpiredCard => "the card has expired",
        }
    }

    /// Reads back a stored `PaymentError.code`.
    pub fn from_reason(reason: &str) -> Option<Self> {
        [Self::Generic, Self::InsufficientFunds, Self::ExpiredCard]
            .into_iter()
            .find(|k| k.reason() == reason)
    }
}

/// Code stored in `last_payment_error` for a processor failure.
pub const PROCESSOR_ERROR: &str = "PROCESSOR_ERROR";

/// Everything a payment operation can fail with. Mapped to a gRPC status in
/// exactly one place (`api.rs`), exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, one violation per field.
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldViolation>),
    /// AttachPaymentMethod: the card number is malformed or fails Luhn (plus
    /// any other violations found at the same time).
    #[error("invalid card number")]
    InvalidCardNumber(Vec<FieldViolation>),
    /// AttachPaymentMethod: the card's expiry has passed.
    #[error("expired card")]
    ExpiredCardInput(Vec<FieldViolation>),
    /// The caller lacks the role or ownership; `required` names it.
    #[error("access denied: requires {0}")]
    AccessDenied(&'static str),
    /// The customer already has the maximum number of payment methods.
    #[error("payment method limit reached")]
    PaymentMethodLimitReached,
    /// No such (attached) payment method.
    #[error("{0} not found")]
    PaymentMethodNotFound(String),
    /// No such payment intent.
    #[error("{0} not found")]
    PaymentIntentNotFound(String),
    /// No such refund.
    #[error("{0} not found")]
    RefundNotFound(String),
    /// No such ledger account.
    #[error("{0} not found")]
    LedgerAccountNotFound(String),
    /// No such journal.
    #[error("{0} not found")]
    JournalNotFound(String),
    /// No such order (CreatePaymentIntent for an order).
    #[error("{0} not found")]
    OrderNotFound(String),
    /// The intent is an order's payment: only checkout acts on it.
    #[error("{intent} is managed by {order}")]
    ManagedByOrder {
        /// `orders/{id}`.
        order: String,
        /// `paymentIntents/{id}`.
        intent: String,
    },
    /// Confirmation without a payment method.
    #[error("payment method required")]
    PaymentMethodRequired,
    /// The transition is not allowed from the current state.
    #[error("not allowed in state {0:?}")]
    InvalidState(IntentStatus),
    /// Capture after the authorization expired.
    #[error("authorization expired")]
    AuthorizationExpired,
    /// Capture of more than is capturable.
    #[error("amount exceeds capturable {capturable}")]
    AmountExceedsCapturable {
        /// What could be captured.
        capturable: i64,
    },
    /// A Money in another currency than the intent's.
    #[error("currency mismatch on {field}")]
    CurrencyMismatch {
        /// The offending field.
        field: &'static str,
    },
    /// A refund larger than what is left.
    #[error("refund exceeds captured; {refundable} refundable")]
    RefundExceedsCaptured {
        /// What is left to refund.
        refundable: i64,
    },
    /// The processor declined the card.
    #[error("card declined ({kind:?})")]
    Declined {
        /// Why.
        kind: DeclineKind,
        /// The intent's name.
        intent: String,
    },
    /// The processor failed; retryable.
    #[error("processor error")]
    ProcessorUnavailable {
        /// The intent's name.
        intent: String,
    },
    /// A database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Error::Db(err.into())
    }
}

impl From<FieldViolation> for Error {
    fn from(violation: FieldViolation) -> Self {
        Error::Validation(vec![violation])
    }
}

impl Error {
    /// A single-field validation error.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Validation(vec![FieldViolation::new(field, description)])
    }
}

/// The `accounts/{id}` name of a customer.
pub fn account_name(id: Uuid) -> String {
    format!("accounts/{id}")
}
