//! The order aggregate: an order with its lines, the names of the other
//! services' resources it refers to, the commands of CheckoutService, and
//! who may see an order.

use backroom_shared::{
    auth::{Access, AccessDenied, AccountRef, required},
    catalog::{DiscountCode, Quantity, Sku},
    money::{Currency, Money, proportion},
    paging::PageRequest,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::saga::{Failure, State};
use crate::domain::{CustomerId, Error, IntentId, OrderId, PaymentMethodId};

/// A shipping address of the account service,
/// `accounts/{customer}/addresses/{id}` (checked at PlaceOrder to be the
/// ordering customer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressName(String);

impl AddressName {
    /// The address `id` of `customer`.
    pub fn of(customer: CustomerId, id: Uuid) -> Self {
        Self(backroom_shared::names::nested(
            CustomerId::COLLECTION,
            customer,
            "addresses",
            id,
        ))
    }

    /// A name read back from the order's row.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock reservation of the inventory service, `reservations/{order}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationName(String);

impl ReservationName {
    /// The name inventory gives an order's reservation.
    pub fn of(order: OrderId) -> Self {
        Self(backroom_shared::names::name("reservations", order))
    }

    /// A name inventory returned, or read back from the order's row.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order. Amounts are set once it is quoted, in its currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Its id.
    pub id: OrderId,
    /// Who buys.
    pub customer: CustomerId,
    /// The customer's request id (one order per customer and id).
    pub request_id: Uuid,
    /// The fingerprint of the placing request (a reused id with other
    /// parameters is refused).
    pub fingerprint: Vec<u8>,
    /// Where it ships.
    pub shipping_address: AddressName,
    /// The address as it was when quoted: an encoded
    /// `backroom.account.v1.Address`, opaque here.
    pub shipping_address_snapshot: Option<Vec<u8>>,
    /// The card it is paid with.
    pub payment_method: PaymentMethodId,
    /// The currency of every amount.
    pub currency: Currency,
    /// Σ line totals.
    pub subtotal: Option<Money>,
    /// Shipping cost.
    pub shipping: Option<Money>,
    /// What the customer pays.
    pub total: Option<Money>,
    /// The shipping zone quoted.
    pub shipping_zone: String,
    /// Where the saga is.
    pub state: State,
    /// Why it failed (FAILED, COMPENSATING, NEEDS_ATTENTION).
    pub failure: Option<Failure>,
    /// The state it failed in.
    pub failed_at_state: Option<State>,
    /// Its payment, once created.
    pub payment_intent: Option<IntentId>,
    /// Its stock reservation, once made.
    pub reservation: Option<ReservationName>,
    /// Failed rounds of the current step.
    pub attempts: i32,
    /// When a worker may try the current step again.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// What its refunds paid back so far (done cancellations, received
    /// returns, goodwill refunds).
    pub refunded: Money,
    /// What its refunds have promised, paid back or not yet: no new refund
    /// goes past `total - refund_claimed`.
    pub refund_claimed: Money,
    /// A CancelOrder that came while it was still in checkout.
    pub cancel_request: Option<CancelRequest>,
    /// The discount codes asked for, in request order.
    pub discount_codes: Vec<DiscountCode>,
    /// Σ discounts.
    pub discount: Option<Money>,
    /// The VAT `total` contains.
    pub tax: Option<Money>,
    /// The quote as priced: an encoded `backroom.inventory.v1.Quote` (tax
    /// lines, discounts), opaque here.
    pub quote_snapshot: Option<Vec<u8>>,
}

/// A CancelOrder of an order still in checkout: before the pivot the saga
/// compensates; past it, the order completes and this becomes its
/// cancellation in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// The CancelOrder request id.
    pub request_id: Uuid,
    /// Its fingerprint.
    pub fingerprint: Vec<u8>,
    /// Why.
    pub reason: String,
}

impl Order {
    /// The total, zero before the quote.
    pub fn total_or_zero(&self) -> Money {
        self.total.unwrap_or_else(|| Money::zero(self.currency))
    }

    /// What refunds may still promise: the captured total (COMPLETED
    /// orders only; nothing otherwise) less what they promised already.
    pub fn refundable(&self) -> Money {
        if self.state != State::Completed {
            return Money::zero(self.currency);
        }
        Money::new(
            self.currency,
            (self.total_or_zero().minor() - self.refund_claimed.minor()).max(0),
        )
    }

    /// The reservation, by the name inventory gives it even before the
    /// saga stored it.
    pub fn reservation_or_default(&self) -> ReservationName {
        self.reservation
            .clone()
            .unwrap_or_else(|| ReservationName::of(self.id))
    }
}

/// One line of an order; prices are set once it is quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// Its position in the request.
    pub position: i32,
    /// What.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// The product's name at quote time.
    pub display_name: String,
    /// One unit's price at quote time.
    pub unit_price: Option<Money>,
    /// `unit_price × quantity`.
    pub line_total: Option<Money>,
    /// Units shipped so far (SHIPPED shipments).
    pub shipped: i64,
    /// Units canceled (they will not ship); `shipped + canceled ≤
    /// quantity`.
    pub canceled: i64,
    /// Shipped units returns have asked for; `returned ≤ shipped`.
    pub returned: i64,
    /// Its share of the order's discount.
    pub discount: Option<Money>,
}

impl OrderLine {
    /// What `units` of the line are refunded at: their share of what the
    /// line was paid, `round-half-up((line_total − discount) × units /
    /// quantity)`; `None` before the quote.
    pub fn refund_for(&self, units: Quantity) -> Option<Money> {
        let total = self.line_total?;
        let paid = total.checked_sub(
            self.discount
                .unwrap_or_else(|| Money::zero(total.currency())),
        )?;
        Some(Money::new(
            total.currency(),
            proportion(paid.minor(), units.get(), self.quantity.get()),
        ))
    }
}

/// The units a flow after checkout takes of an order's `lines`: those
/// `requested` or, when none are, every line's `open` units; no line beyond
/// its `open` ones. `nothing` when nothing is open; `exceeding` names the
/// lines asked beyond (or not of the order), ascending.
pub fn take_units(
    lines: &[OrderLine],
    open: impl Fn(&OrderLine) -> i64,
    requested: &[(Sku, Quantity)],
    nothing: Error,
    exceeding: fn(Vec<Sku>) -> Error,
) -> Result<Vec<(Sku, Quantity)>, Error> {
    if requested.is_empty() {
        let everything: Vec<(Sku, Quantity)> = lines
            .iter()
            .filter_map(|line| {
                Quantity::parse("lines", open(line))
                    .ok()
                    .map(|units| (line.sku.clone(), units))
            })
            .collect();
        if everything.is_empty() {
            return Err(nothing);
        }
        return Ok(everything);
    }
    let mut beyond: Vec<Sku> = requested
        .iter()
        .filter(|(sku, units)| {
            lines
                .iter()
                .find(|line| &line.sku == sku)
                .is_none_or(|line| units.get() > open(line))
        })
        .map(|(sku, _)| sku.clone())
        .collect();
    if !beyond.is_empty() {
        beyond.sort();
        return Err(exceeding(beyond));
    }
    Ok(requested.to_vec())
}

/// A new order, as PlaceOrder stores it.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Its id.
    pub id: OrderId,
    /// Who buys.
    pub customer: CustomerId,
    /// The customer's request id.
    pub request_id: Uuid,
    /// The placing request's fingerprint.
    pub fingerprint: Vec<u8>,
    /// Where it ships.
    pub shipping_address: AddressName,
    /// The card.
    pub payment_method: PaymentMethodId,
    /// The currency.
    pub currency: Currency,
    /// The lines, unpriced.
    pub lines: Vec<(Sku, Quantity)>,
    /// The discount codes asked for.
    pub discount_codes: Vec<DiscountCode>,
}

/// What a saga step changes besides the state (unset: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The address as quoted (encoded `backroom.account.v1.Address`).
    pub shipping_address_snapshot: Option<Vec<u8>>,
    /// Σ line totals.
    pub subtotal: Option<Money>,
    /// Shipping cost.
    pub shipping: Option<Money>,
    /// What the customer pays.
    pub total: Option<Money>,
    /// The shipping zone quoted.
    pub shipping_zone: Option<String>,
    /// Why and where the order failed.
    pub failure: Option<(Failure, State)>,
    /// Its payment.
    pub payment_intent: Option<IntentId>,
    /// Its reservation.
    pub reservation: Option<ReservationName>,
    /// The lines, priced.
    pub priced_lines: Vec<OrderLine>,
    /// Σ discounts.
    pub discount: Option<Money>,
    /// The VAT the total contains.
    pub tax: Option<Money>,
    /// The quote as priced (encoded `backroom.inventory.v1.Quote`).
    pub quote_snapshot: Option<Vec<u8>>,
}

/// PlaceOrder, parsed. The shipping address is checked against the
/// customer once `accounts/me` is resolved.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// Who buys (`accounts/me`: the caller).
    pub customer: AccountRef,
    /// The required request id.
    pub request_id: Uuid,
    /// 1–`MAX_LINES` lines of distinct SKUs.
    pub lines: Vec<(Sku, Quantity)>,
    /// The card.
    pub payment_method: PaymentMethodId,
    /// The shipping address as named in the request.
    pub shipping_address: String,
    /// The currency of every amount.
    pub currency: Currency,
    /// Distinct discount codes, in request order.
    pub discount_codes: Vec<DiscountCode>,
}

/// GetOrder, parsed.
#[derive(Debug, Clone, Copy)]
pub struct GetOrder {
    /// The order.
    pub id: OrderId,
}

/// ListOrders, parsed.
#[derive(Debug, Clone)]
pub struct ListOrders {
    /// Whose orders.
    pub customer: Option<AccountRef>,
    /// Only orders in this state.
    pub state: Option<State>,
    /// Which page.
    pub page: PageRequest,
    /// The last order of the previous page (newest first).
    pub before: Option<OrderId>,
}

/// Orders are their customer's and admins' (services read none): `found`
/// if the caller may see it, else `None`, exactly as for a missing one.
pub fn visible<T>(access: Access, found: Option<(Order, T)>) -> Option<(Order, T)> {
    Access {
        service: false,
        ..access
    }
    .sees(found, |(order, _)| order.customer.uuid())
}

/// Whose orders a listing shows: admins see everyone's (or the customer's
/// they name); anyone else only their own.
pub fn listed_customer(
    access: Access,
    named: Option<CustomerId>,
) -> Result<Option<CustomerId>, AccessDenied> {
    if access.admin {
        return Ok(named);
    }
    let denied = AccessDenied {
        required: required::OWNER_OR_ADMIN,
    };
    let own = access.account.map(CustomerId::from_uuid).ok_or(denied)?;
    if named.is_some_and(|customer| customer != own) {
        return Err(denied);
    }
    Ok(Some(own))
}

/// The order as a whole, beside the saga's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// In checkout, or completed with units still to ship.
    Open,
    /// Every unit shipped or canceled, at least one shipped.
    Completed,
    /// Every unit canceled, or checkout failed.
    Canceled,
}

/// The order's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Nothing authorized or taken.
    Unpaid,
    /// Authorized, not captured.
    Authorized,
    /// Captured, nothing refunded.
    Paid,
    /// Part of the capture refunded.
    PartiallyRefunded,
    /// All of it refunded.
    Refunded,
}

impl Order {
    /// Its status, from the saga's state and what of `lines` shipped or
    /// was canceled.
    pub fn status(&self, lines: &[OrderLine]) -> OrderStatus {
        match self.state {
            State::Failed => OrderStatus::Canceled,
            State::Completed => {
                let settled = lines
                    .iter()
                    .all(|l| l.shipped + l.canceled >= l.quantity.get());
                let shipped = lines.iter().any(|l| l.shipped > 0);
                match (settled, shipped) {
                    (false, _) => OrderStatus::Open,
                    (true, true) => OrderStatus::Completed,
                    (true, false) => OrderStatus::Canceled,
                }
            }
            _ => OrderStatus::Open,
        }
    }

    /// Where its money is.
    pub fn payment_status(&self) -> PaymentStatus {
        match self.state {
            State::Pending | State::Reserving | State::Failed => PaymentStatus::Unpaid,
            State::Authorizing
            | State::Committing
            | State::Capturing
            | State::Compensating
            | State::NeedsAttention => PaymentStatus::Authorized,
            State::Completed if self.refunded.minor() == 0 => PaymentStatus::Paid,
            State::Completed if self.refunded.minor() >= self.total_or_zero().minor() => {
                PaymentStatus::Refunded
            }
            State::Completed => PaymentStatus::PartiallyRefunded,
        }
    }
}
