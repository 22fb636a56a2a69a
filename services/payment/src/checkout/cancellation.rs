//! Cancellations: what of a completed order will not ship, and the money
//! that goes back.
//!
//! - Only a COMPLETED order is canceled this way (one still in checkout
//!   ends COMPLETED or FAILED within its PlaceOrder's wait).
//! - A cancellation takes everything the order has left: units neither
//!   shipped, shipping (PENDING) nor canceled before ([`plan`]). They count
//!   as canceled the moment it is stored, under the order's row lock, so a
//!   shipment racing it finds them taken: each unit ships or is canceled,
//!   never both.
//! - Its refund is the canceled units at their order price, plus the
//!   shipping when nothing of the order has shipped or is shipping: then
//!   the whole order is canceled and the customer gets everything back —
//!   capped at what the order may still refund (goodwill refunds may have
//!   given some back already), and claimed on the order when it is stored.
//! - It is stored PENDING, inventory returns the units' stock, payment
//!   refunds, then it is DONE; the recovery worker finishes one a crash
//!   left PENDING. One cancellation per order and request id.

use backroom_shared::{
    catalog::{Quantity, Sku},
    money::Money,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    order::{Order, OrderLine},
    saga::State,
    shipment::left,
};
use crate::domain::{Error, OrderId};

/// Longest cancellation reason, characters.
pub const MAX_REASON: usize = 500;

backroom_shared::stored_enum!(
    /// Where a cancellation is.
    pub CancellationState {
        /// Stored; its units are canceled, stock and money not back yet.
        Pending = "PENDING",
        /// Stock returned and money refunded.
        Done = "DONE",
    }
);

/// A cancellation of what an order had left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    /// Its id.
    pub id: Uuid,
    /// The order.
    pub order_id: OrderId,
    /// The CancelOrder request id that made it.
    pub request_id: Uuid,
    /// That request's fingerprint.
    pub fingerprint: Vec<u8>,
    /// Where it is.
    pub state: CancellationState,
    /// Why, in the canceler's words.
    pub reason: String,
    /// What goes back to the customer.
    pub refund: Money,
    /// Whether the refund includes the shipping.
    pub refunds_shipping: bool,
    /// Units per SKU canceled.
    pub lines: Vec<(Sku, Quantity)>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// The remote steps it finished (`uncommit`, `refund`).
    pub steps_done: Vec<String>,
}

/// CancelOrder, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOrder {
    /// The order.
    pub order_id: OrderId,
    /// Why.
    pub reason: String,
    /// The request id (required).
    pub request_id: Uuid,
    /// The request's fingerprint.
    pub fingerprint: Vec<u8>,
}

/// What a cancellation takes and gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Units per SKU canceled.
    pub lines: Vec<(Sku, Quantity)>,
    /// What goes back to the customer.
    pub refund: Money,
    /// Whether `refund` includes the shipping (nothing ships at all).
    pub refunds_shipping: bool,
}

/// What a cancellation of `order` takes and refunds: every unit left
/// (`claimed`: the units of SHIPPED and PENDING shipments), at its line's
/// price, and the shipping when nothing shipped or is shipping.
pub fn plan(order: &Order, lines: &[OrderLine], claimed: &[(Sku, i64)]) -> Result<Planned, Error> {
    if order.state != State::Completed {
        return Err(Error::OrderNotCancelable(order.state.as_str()));
    }
    let mut canceled = Vec::new();
    let mut refund = Money::zero(order.currency);
    for line in lines {
        let Ok(units) = Quantity::parse("lines", left(line, claimed)) else {
            continue;
        };
        let price = line
            .refund_for(units)
            .ok_or_else(|| Error::corrupt(format!("order {} line {} price", order.id, line.sku)))?;
        refund = refund
            .checked_add(price)
            .ok_or_else(|| Error::corrupt(format!("order {} refund", order.id)))?;
        canceled.push((line.sku.clone(), units));
    }
    if canceled.is_empty() {
        return Err(Error::NothingToCancel);
    }
    let nothing_ships = claimed.iter().all(|(_, units)| *units == 0)
        && lines
            .iter()
            .all(|line| line.shipped == 0 && line.canceled == 0);
    if nothing_ships && let Some(shipping) = order.shipping {
        refund = refund
            .checked_add(shipping)
            .ok_or_else(|| Error::corrupt(format!("order {} refund", order.id)))?;
    }
    // Returns and goodwill refunds may have promised part of the money.
    let refundable = order.refundable();
    if refund.minor() > refundable.minor() {
        refund = refundable;
    }
    Ok(Planned {
        lines: canceled,
        refund,
        refunds_shipping: nothing_ships,
    })
}
