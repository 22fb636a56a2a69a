//! Shipments: what of a completed order has left the warehouse, and the
//! rules of shipping it.
//!
//! - Only a COMPLETED order ships (its stock committed, its payment
//!   captured).
//! - A shipment names units per SKU of the order (none: everything left);
//!   no line ships more than it has left — units of SHIPPED and of PENDING
//!   shipments both count, so concurrent shipments cannot claim the same
//!   units ([`plan`]).
//! - A shipment is stored PENDING before inventory ships its units, then
//!   SHIPPED (its units added to the order lines), or FAILED when inventory
//!   refuses definitively (its units free again). One shipment per order
//!   and request id.

use backroom_shared::catalog::{Quantity, Sku};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    order::{Order, OrderLine, take_units},
    saga::State,
};
use crate::domain::{Error, OrderId, ShipmentId};

/// Longest carrier name and tracking number, characters.
pub const MAX_TRACKING_TEXT: usize = 100;

backroom_shared::stored_enum!(
    /// Where a shipment is.
    pub ShipmentState {
        /// Stored; inventory has not confirmed its units left yet.
        Pending = "PENDING",
        /// Its units left the warehouse.
        Shipped = "SHIPPED",
        /// Inventory refused it; it shipped nothing.
        Failed = "FAILED",
    }
);

/// A shipment of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    /// Its id.
    pub id: ShipmentId,
    /// The order it ships.
    pub order_id: OrderId,
    /// The CreateShipment request id that made it.
    pub request_id: Uuid,
    /// That request's fingerprint (a reused id with other parameters is
    /// refused).
    pub fingerprint: Vec<u8>,
    /// Where it is.
    pub state: ShipmentState,
    /// Who carries it.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
    /// Units per SKU, in request order.
    pub lines: Vec<(Sku, Quantity)>,
    /// Why it failed (FAILED only).
    pub failure_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
}

impl Shipment {
    /// `orders/{order}/shipments/{id}`.
    pub fn name(&self) -> String {
        self.id.name_under(self.order_id)
    }
}

/// CreateShipment, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateShipment {
    /// The order.
    pub order_id: OrderId,
    /// Units per SKU; empty: everything the order has left to ship.
    pub lines: Vec<(Sku, Quantity)>,
    /// Who carries it.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
    /// The request id (required).
    pub request_id: Uuid,
    /// The request's fingerprint.
    pub fingerprint: Vec<u8>,
}

/// An order line's fulfilment: every unit, some, or none shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fulfillment {
    /// Nothing shipped.
    Unfulfilled,
    /// Some units shipped, some not.
    PartiallyFulfilled,
    /// Every unit shipped.
    Fulfilled,
    /// Some shipped units are returned or being returned.
    PartiallyReturned,
    /// Every shipped unit is returned or being returned.
    Returned,
}

/// The fulfilment of an order with `lines`: of the units that will ship
/// (ordered and not canceled), how many did — and, once returns came, how
/// many of those are coming back.
pub fn fulfillment(lines: &[OrderLine]) -> Fulfillment {
    let shipped: i64 = lines.iter().map(|l| l.shipped).sum();
    let returned: i64 = lines.iter().map(|l| l.returned).sum();
    let ordered: i64 = lines.iter().map(|l| l.quantity.get() - l.canceled).sum();
    match shipped {
        0 => Fulfillment::Unfulfilled,
        s if returned >= s => Fulfillment::Returned,
        _ if returned > 0 => Fulfillment::PartiallyReturned,
        s if s >= ordered => Fulfillment::Fulfilled,
        _ => Fulfillment::PartiallyFulfilled,
    }
}

/// Units of `line` neither canceled nor claimed by a SHIPPED or PENDING
/// shipment (`claimed`).
pub fn left(line: &OrderLine, claimed: &[(Sku, i64)]) -> i64 {
    let taken: i64 = claimed
        .iter()
        .filter(|(sku, _)| sku == &line.sku)
        .map(|(_, units)| units)
        .sum();
    line.quantity.get() - line.canceled - taken
}

/// The lines a new shipment of `order` takes: `requested` (or, when empty,
/// everything left), each within what its line has left once canceled
/// units and the `claimed` ones (SHIPPED and PENDING shipments) are
/// counted.
pub fn plan(
    order: &Order,
    lines: &[OrderLine],
    claimed: &[(Sku, i64)],
    requested: &[(Sku, Quantity)],
) -> Result<Vec<(Sku, Quantity)>, Error> {
    if order.state != State::Completed {
        return Err(Error::OrderNotShippable(order.state.as_str()));
    }
    take_units(
        lines,
        |line| left(line, claimed),
        requested,
        Error::NothingToShip,
        Error::ShipmentExceedsOrder,
    )
}
