//! Goodwill refunds: an admin gives part of a completed order's money back,
//! with a reason, through the order — never more than it may still refund
//! ([`super::order::Order::refundable`]: the captured total less what its
//! cancellations, returns and refunds promised). The amount is claimed on
//! the order under its row lock when the refund is stored PENDING, so
//! concurrent refunds cannot promise more than was captured; payment
//! refunds it (CreateRefund on the order's intent, request id derived from
//! the refund), then it is DONE. One refund per order and request id.

use backroom_shared::money::Money;
use uuid::Uuid;

use super::{order::Order, saga::State};
use crate::domain::{Error, OrderId};

/// Longest refund reason, characters.
pub const MAX_REASON: usize = 500;

backroom_shared::stored_enum!(
    /// Where a goodwill refund is.
    pub OrderRefundState {
        /// Stored and claimed on the order; the money not back yet.
        Pending = "PENDING",
        /// Refunded.
        Done = "DONE",
    }
);

/// A goodwill refund of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRefund {
    /// Its id.
    pub id: Uuid,
    /// The order.
    pub order_id: OrderId,
    /// The RefundOrder request id that made it.
    pub request_id: Uuid,
    /// That request's fingerprint.
    pub fingerprint: Vec<u8>,
    /// Where it is.
    pub state: OrderRefundState,
    /// Why, in the admin's words.
    pub reason: String,
    /// How much.
    pub amount: Money,
    /// The remote steps it finished (`refund`).
    pub steps_done: Vec<String>,
}

/// RefundOrder, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    /// The order.
    pub order_id: OrderId,
    /// How much (positive).
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// The request id (required).
    pub request_id: Uuid,
    /// The request's fingerprint.
    pub fingerprint: Vec<u8>,
}

/// Whether `order` may be refunded `amount`: it is COMPLETED, the amount is
/// in its currency and within what it may still refund.
pub fn check(order: &Order, amount: Money) -> Result<(), Error> {
    if order.state != State::Completed {
        return Err(Error::OrderNotRefundable(order.state.as_str()));
    }
    if amount.currency() != order.currency {
        return Err(Error::CurrencyMismatch { field: "amount" });
    }
    let refundable = order.refundable();
    if amount.minor() > refundable.minor() {
        return Err(Error::RefundExceedsCaptured { refundable });
    }
    Ok(())
}
