//! The payment domain: the rules of every resource this service owns, in
//! types that are valid by construction, and the service's one [`Error`]
//! enum (checkout's too: one service, one mapping to a status, in
//! `crate::api`).
//!
//! Layout:
//! - [`ids`]: typed ids and names of the resources;
//! - [`values`]: amount bounds, descriptions, metadata;
//! - [`card`]: card data as entered (PAN/CVC never stored or logged),
//!   brands, fingerprints;
//! - [`payment_methods`]: a vaulted card and who may see or use it;
//! - [`intents`]: the payment intent and its state machine (confirm,
//!   capture, cancel, refund, expiry), and the order-owned-intent rule;
//! - [`refunds`]: a refund of captured money;
//! - [`ledger`]: the chart of accounts, journal kinds and their postings.

pub mod card;
pub mod ids;
pub mod intents;
pub mod ledger;
pub mod payment_methods;
pub mod refunds;
pub mod values;

use backroom_shared::{auth::AccessDenied, db::DbError, errors::FieldViolation, money::Money};

pub use ids::{
    CustomerId, IntentId, JournalId, LedgerCode, OrderId, PaymentMethodId, RefundId, ReturnId,
    ShipmentId,
};
pub use intents::IntentStatus;

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
}

/// Code stored in `last_payment_error` for a processor failure.
pub const PROCESSOR_ERROR: &str = "PROCESSOR_ERROR";

/// Everything a payment or checkout operation can fail with. Mapped to a
/// gRPC status in exactly one place (`impl From<Error> for Status` in
/// `crate::api`), exhaustively.
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
    /// The caller lacks the role or ownership the call requires.
    #[error(transparent)]
    AccessDenied(#[from] AccessDenied),
    /// The customer already has the maximum number of payment methods.
    #[error("payment method limit reached")]
    PaymentMethodLimitReached,
    /// No such (attached) payment method, or one the caller may not see.
    #[error("payment method {0} not found")]
    PaymentMethodNotFound(PaymentMethodId),
    /// No such payment intent, or one the caller may not see.
    #[error("payment intent {0} not found")]
    PaymentIntentNotFound(IntentId),
    /// No such refund, or one the caller may not see.
    #[error("refund {refund} of {intent} not found")]
    RefundNotFound {
        /// Its intent.
        intent: IntentId,
        /// The refund.
        refund: RefundId,
    },
    /// No such ledger account.
    #[error("ledger account {0} not found")]
    LedgerAccountNotFound(LedgerCode),
    /// No such journal.
    #[error("journal {0} not found")]
    JournalNotFound(JournalId),
    /// No such order, or another customer's.
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    /// PlaceOrder: the customer used the request id for an order with other
    /// parameters.
    #[error("request id reused for another order")]
    OrderRequestIdReused,
    /// CreateShipment: only a COMPLETED order ships (the saga state it is
    /// in, as the proto names it).
    #[error("order is {0}, not completed")]
    OrderNotShippable(&'static str),
    /// CreateShipment: these lines would ship more than they have left
    /// unshipped, or are not lines of the order (ascending).
    #[error("shipment exceeds the order: {0:?}")]
    ShipmentExceedsOrder(Vec<backroom_shared::catalog::Sku>),
    /// CreateShipment without lines when every unit has shipped or is
    /// shipping.
    #[error("nothing left to ship")]
    NothingToShip,
    /// CancelOrder of an order that is not COMPLETED.
    #[error("order is {0}, not completed")]
    OrderNotCancelable(&'static str),
    /// CancelOrder when every unit has shipped, is shipping or is
    /// canceled.
    #[error("nothing left to cancel")]
    NothingToCancel,
    /// RequestReturn: only a COMPLETED order is returned.
    #[error("order is {0}, not completed")]
    OrderNotReturnable(&'static str),
    /// RequestReturn: these lines would return more than they shipped and
    /// have not returned yet, or are not lines of the order (ascending).
    #[error("return exceeds what shipped: {0:?}")]
    ReturnExceedsShipped(Vec<backroom_shared::catalog::Sku>),
    /// RequestReturn without lines when nothing shipped is left to return.
    #[error("nothing left to return")]
    NothingToReturn,
    /// RequestReturn after the return window of the order's last shipment.
    #[error("the return window closed at {closed_at}")]
    ReturnWindowClosed {
        /// When it closed.
        closed_at: chrono::DateTime<chrono::Utc>,
    },
    /// No such return of the order, or the order is another customer's.
    #[error("return {id} of {order} not found")]
    ReturnNotFound {
        /// The order.
        order: OrderId,
        /// The return.
        id: ReturnId,
    },
    /// RequestReturn: the request id was used for another return.
    #[error("request id reused for another return")]
    ReturnRequestIdReused,
    /// ReceiveReturn of a return received before with other decisions.
    #[error("the return was already received with other decisions")]
    ReturnAlreadyReceived,
    /// ReceiveReturn: the decisions do not cover exactly the return's
    /// lines with their units (the SKUs, ascending).
    #[error("the receipt does not match the return: {0:?}")]
    ReceiptMismatch(Vec<backroom_shared::catalog::Sku>),
    /// RefundOrder of an order that is not COMPLETED.
    #[error("order is {0}, not completed")]
    OrderNotRefundable(&'static str),
    /// RefundOrder: the request id was used for another refund.
    #[error("request id reused for another refund")]
    OrderRefundRequestIdReused,
    /// CancelOrder: the request id was used for another cancellation.
    #[error("request id reused for another cancellation")]
    CancellationRequestIdReused,
    /// CreateShipment: the request id was used for another shipment of the
    /// order.
    #[error("request id reused for another shipment")]
    ShipmentRequestIdReused,
    /// CreateShipment: inventory refused the shipment definitively (the
    /// shipment is FAILED with this reason).
    #[error("the shipment failed: {0}")]
    ShipmentFailed(String),
    /// The intent is an order's payment: only checkout acts on it.
    #[error("payment intent {intent} is managed by order {order}")]
    ManagedByOrder {
        /// The order.
        order: OrderId,
        /// Its payment.
        intent: IntentId,
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
        capturable: Money,
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
        refundable: Money,
    },
    /// The processor declined the card.
    #[error("card declined ({kind:?})")]
    Declined {
        /// Why.
        kind: DeclineKind,
        /// The intent.
        intent: IntentId,
    },
    /// The processor failed; retryable.
    #[error("processor error")]
    ProcessorUnavailable {
        /// The intent, when the failed call was for one (not for
        /// tokenizing a card).
        intent: Option<IntentId>,
    },
    /// A database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

backroom_shared::domain_error_conversions!(Error);

impl Error {
    /// A single-field validation error.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Validation(vec![FieldViolation::new(field, description)])
    }

    /// Stored data the code cannot read: corruption, reported as INTERNAL.
    pub fn corrupt(what: impl std::fmt::Display) -> Self {
        Error::Db(DbError::Other(anyhow::anyhow!(
            "corrupt stored data: {what}"
        )))
    }
}

/// `self + other` (or `−`), checked: overflow or a currency mismatch is the
/// caller's bad amount (INVALID_ARGUMENT on `amount`), never a wrap.
pub(crate) fn checked(value: Option<Money>) -> Result<Money, Error> {
    value.ok_or_else(|| Error::field("amount", "the amount overflows"))
}
