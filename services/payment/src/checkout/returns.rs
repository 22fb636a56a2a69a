//! Returns: shipped units that come back, and the money that goes with
//! them.
//!
//! - The customer (or an admin) asks for a return of shipped units of a
//!   COMPLETED order within the return window, counted from the order's
//!   last shipment ([`plan_request`]). The units count as returned on the
//!   order's lines at once, under the order's row lock: no two returns take
//!   the same shipped unit. The return is REQUESTED.
//! - A warehouse principal receives it and decides, for each of its lines,
//!   how many units go back on the shelf and how many are written off
//!   ([`decide`], [`receipt`]); the refund is every received unit at its order
//!   price, capped at what the order may still refund, claimed on the order
//!   in the same transaction. The return is RECEIVING.
//! - Inventory takes the units back (RestockReservation, WriteOffReservation),
//!   payment refunds, then it is RECEIVED; the recovery worker finishes one
//!   a crash left RECEIVING. A second receipt is a no-op: the same
//!   decisions return the return as it is, others are refused.

use backroom_shared::{
    catalog::{Quantity, Sku},
    money::Money,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    order::{Order, OrderLine, take_units},
    saga::State,
};
use crate::domain::{Error, OrderId, ReturnId};

/// Longest return note, characters.
pub const MAX_NOTE: usize = 500;

/// Days a return may be asked for after an order's last shipment, by
/// default (`BACKROOM_RETURN_WINDOW_DAYS`).
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

backroom_shared::stored_enum!(
    /// Where a return is.
    pub ReturnState {
        /// Asked for; its units are claimed, the goods not back yet.
        Requested = "REQUESTED",
        /// Received and decided; stock and money not back yet.
        Receiving = "RECEIVING",
        /// Stock taken back and money refunded.
        Received = "RECEIVED",
    }
);

backroom_shared::stored_enum!(
    /// Why the customer sends it back.
    pub ReturnReason {
        /// Arrived damaged.
        Damaged = "DAMAGED",
        /// Does not work.
        Defective = "DEFECTIVE",
        /// Not what was ordered.
        WrongItem = "WRONG_ITEM",
        /// Not as the product page said.
        NotAsDescribed = "NOT_AS_DESCRIBED",
        /// The customer changed their mind.
        NoLongerNeeded = "NO_LONGER_NEEDED",
        /// Anything else (the note says).
        Other = "OTHER",
    }
);

/// One line of a return: units of a SKU, and once received what became of
/// them (`restocked + written_off` is 0 before, `quantity` after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnLine {
    /// What.
    pub sku: Sku,
    /// How many come back.
    pub quantity: Quantity,
    /// Back on the shelf.
    pub restocked: i64,
    /// Written off.
    pub written_off: i64,
}

/// A return of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    /// Its id.
    pub id: ReturnId,
    /// The order.
    pub order_id: OrderId,
    /// The RequestReturn request id that made it.
    pub request_id: Uuid,
    /// That request's fingerprint.
    pub fingerprint: Vec<u8>,
    /// Where it is.
    pub state: ReturnState,
    /// Why.
    pub reason: ReturnReason,
    /// The customer's words (may be empty).
    pub note: String,
    /// Its lines, in request order.
    pub lines: Vec<ReturnLine>,
    /// What goes back to the customer (set once received).
    pub refund: Option<Money>,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was RECEIVED.
    pub received_at: Option<DateTime<Utc>>,
    /// The remote steps its receipt finished (`restock`, `write-off`,
    /// `refund`).
    pub steps_done: Vec<String>,
}

impl Return {
    /// `orders/{order}/returns/{id}`.
    pub fn name(&self) -> String {
        self.id.name_under(self.order_id)
    }
}

/// RequestReturn, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestReturn {
    /// The order.
    pub order_id: OrderId,
    /// Units per SKU; empty: every shipped unit not yet returned.
    pub lines: Vec<(Sku, Quantity)>,
    /// Why.
    pub reason: ReturnReason,
    /// The customer's words.
    pub note: String,
    /// The request id (required).
    pub request_id: Uuid,
    /// The request's fingerprint.
    pub fingerprint: Vec<u8>,
}

/// What becomes of one line's units on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// The line.
    pub sku: Sku,
    /// Back on the shelf.
    pub restock: i64,
    /// Written off.
    pub write_off: i64,
}

/// ReceiveReturn, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveReturn {
    /// The order.
    pub order_id: OrderId,
    /// The return.
    pub id: ReturnId,
    /// One per line of the return; empty: every unit restocked.
    pub dispositions: Vec<Disposition>,
}

/// The lines a new return of `order` takes at `now`: `requested` (or, when
/// empty, every shipped unit not returned yet), each within what its line
/// shipped and has not returned; only within `window` of the order's last
/// shipment (`last_shipped`).
pub fn plan_request(
    order: &Order,
    lines: &[OrderLine],
    last_shipped: Option<DateTime<Utc>>,
    window: chrono::Duration,
    now: DateTime<Utc>,
    requested: &[(Sku, Quantity)],
) -> Result<Vec<(Sku, Quantity)>, Error> {
    if order.state != State::Completed {
        return Err(Error::OrderNotReturnable(order.state.as_str()));
    }
    let Some(last_shipped) = last_shipped else {
        return Err(Error::NothingToReturn);
    };
    let closed_at = last_shipped + window;
    if now > closed_at {
        return Err(Error::ReturnWindowClosed { closed_at });
    }
    take_units(
        lines,
        |line| line.shipped - line.returned,
        requested,
        Error::NothingToReturn,
        Error::ReturnExceedsShipped,
    )
}

/// A receipt, decided: each line of the return with what becomes of its
/// units, and the refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The return's lines, decided.
    pub lines: Vec<ReturnLine>,
    /// Every unit at its order price, capped at what the order may still
    /// refund.
    pub refund: Money,
}

/// The lines of `ret` decided by `dispositions` (empty: everything
/// restocked): each line of the return exactly once, restock + write-off =
/// its units. The same decisions give the same lines, however they were
/// spelled: a second receipt compares them with what was stored.
pub fn decide(ret: &Return, dispositions: &[Disposition]) -> Result<Vec<ReturnLine>, Error> {
    let mut mismatched: Vec<Sku> = dispositions
        .iter()
        .filter(|d| {
            ret.lines
                .iter()
                .find(|line| line.sku == d.sku)
                .is_none_or(|line| d.restock + d.write_off != line.quantity.get())
        })
        .map(|d| d.sku.clone())
        .collect();
    if !dispositions.is_empty() {
        mismatched.extend(
            ret.lines
                .iter()
                .filter(|line| !dispositions.iter().any(|d| d.sku == line.sku))
                .map(|line| line.sku.clone()),
        );
    }
    if !mismatched.is_empty() {
        mismatched.sort();
        mismatched.dedup();
        return Err(Error::ReceiptMismatch(mismatched));
    }
    Ok(ret
        .lines
        .iter()
        .map(|line| {
            let (restocked, written_off) = dispositions
                .iter()
                .find(|d| d.sku == line.sku)
                .map_or((line.quantity.get(), 0), |d| (d.restock, d.write_off));
            ReturnLine {
                restocked,
                written_off,
                ..line.clone()
            }
        })
        .collect())
}

/// The receipt of `decided` lines of a return of `order`: the refund is
/// every unit at its order `lines`' price, capped at
/// [`Order::refundable`].
pub fn receipt(
    order: &Order,
    lines: &[OrderLine],
    decided: Vec<ReturnLine>,
) -> Result<Receipt, Error> {
    let mut refund = Money::zero(order.currency);
    for line in &decided {
        let price = lines
            .iter()
            .find(|l| l.sku == line.sku)
            .and_then(|l| l.refund_for(line.quantity))
            .ok_or_else(|| Error::corrupt(format!("order {} line {} price", order.id, line.sku)))?;
        refund = refund
            .checked_add(price)
            .ok_or_else(|| Error::corrupt(format!("order {} refund", order.id)))?;
    }
    let refundable = order.refundable();
    if refund.minor() > refundable.minor() {
        refund = refundable;
    }
    Ok(Receipt {
        lines: decided,
        refund,
    })
}
