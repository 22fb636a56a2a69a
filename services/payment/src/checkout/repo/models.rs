//! The rows of `orders` and `order_lines` and their conversions to and
//! from the order aggregate ([`crate::checkout::order`]).

use std::collections::BTreeMap;

use backroom_shared::{
    catalog::{DiscountCode, Quantity, Sku},
    money::{Currency, Money},
};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use crate::{
    checkout::{
        order::{
            AddressName, CancelRequest, NewOrder, Order, OrderLine, Progress, ReservationName,
        },
        saga::{Failure, State},
    },
    db::schema::payment::{order_lines, orders},
    domain::{CustomerId, Error, IntentId, OrderId, PaymentMethodId},
};

/// An order row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = orders, check_for_backend(diesel::pg::Pg))]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub request_id: Uuid,
    pub fingerprint: Vec<u8>,
    pub shipping_address: String,
    pub shipping_address_snapshot: Option<Vec<u8>>,
    pub payment_method: String,
    pub currency_code: Currency,
    pub subtotal_minor: Option<i64>,
    pub shipping_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub shipping_zone: String,
    pub state: String,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub failure_metadata: Option<String>,
    pub failed_at_state: Option<String>,
    pub payment_intent: Option<String>,
    pub reservation: Option<String>,
    pub attempts: i32,
    pub lease_owner: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub refunded_minor: i64,
    pub refund_claimed_minor: i64,
    pub cancel_request_id: Option<Uuid>,
    pub cancel_fingerprint: Option<Vec<u8>>,
    pub cancel_reason: Option<String>,
    pub discount_codes: Vec<String>,
    pub discount_minor: Option<i64>,
    pub tax_minor: Option<i64>,
    pub quote_snapshot: Option<Vec<u8>>,
}

impl TryFrom<OrderRow> for Order {
    type Error = Error;

    fn try_from(row: OrderRow) -> Result<Self, Error> {
        let money = |minor: Option<i64>| minor.map(|minor| Money::new(row.currency_code, minor));
        let failure = row.failure_reason.map(|reason| Failure {
            reason,
            message: row.failure_message.unwrap_or_default(),
            // Written by the saga from a map; unreadable JSON shows none.
            metadata: row
                .failure_metadata
                .as_deref()
                .and_then(|json| serde_json::from_str::<BTreeMap<String, String>>(json).ok())
                .unwrap_or_default(),
        });
        Ok(Self {
            id: OrderId::from_uuid(row.id),
            customer: CustomerId::from_uuid(row.customer_id),
            request_id: row.request_id,
            fingerprint: row.fingerprint,
            shipping_address: AddressName::from_stored(row.shipping_address),
            shipping_address_snapshot: row.shipping_address_snapshot,
            payment_method: PaymentMethodId::parse("payment_method", &row.payment_method)
                .map_err(|_| Error::corrupt(format!("order {} payment_method", row.id)))?,
            currency: row.currency_code,
            subtotal: money(row.subtotal_minor),
            shipping: money(row.shipping_minor),
            total: money(row.total_minor),
            refunded: Money::new(row.currency_code, row.refunded_minor),
            refund_claimed: Money::new(row.currency_code, row.refund_claimed_minor),
            cancel_request: match (
                row.cancel_request_id,
                row.cancel_fingerprint,
                row.cancel_reason,
            ) {
                (Some(request_id), Some(fingerprint), Some(reason)) => Some(CancelRequest {
                    request_id,
                    fingerprint,
                    reason,
                }),
                _ => None,
            },
            shipping_zone: row.shipping_zone,
            discount_codes: row
                .discount_codes
                .into_iter()
                .map(DiscountCode::from_stored)
                .collect(),
            discount: money(row.discount_minor),
            tax: money(row.tax_minor),
            quote_snapshot: row.quote_snapshot,
            state: State::from_stored(&row.state)?,
            failure,
            failed_at_state: row
                .failed_at_state
                .as_deref()
                .map(State::from_stored)
                .transpose()?,
            payment_intent: row
                .payment_intent
                .as_deref()
                .map(|name| IntentId::parse("payment_intent", name))
                .transpose()
                .map_err(|_| Error::corrupt(format!("order {} payment_intent", row.id)))?,
            reservation: row.reservation.map(ReservationName::from_stored),
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A new order row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = orders)]
pub struct NewOrderRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub request_id: Uuid,
    pub fingerprint: Vec<u8>,
    pub shipping_address: String,
    pub payment_method: String,
    pub currency_code: Currency,
    pub state: String,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub discount_codes: Vec<String>,
}

impl NewOrderRow {
    /// The row of `order`, placed at `now` (PENDING, due at once).
    pub fn new(order: &NewOrder, now: DateTime<Utc>) -> Self {
        Self {
            id: order.id.uuid(),
            customer_id: order.customer.uuid(),
            request_id: order.request_id,
            fingerprint: order.fingerprint.clone(),
            shipping_address: order.shipping_address.as_str().to_owned(),
            payment_method: order.payment_method.name(),
            currency_code: order.currency,
            state: State::Pending.as_str().to_owned(),
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            discount_codes: order
                .discount_codes
                .iter()
                .map(|code| code.as_str().to_owned())
                .collect(),
        }
    }
}

/// An order line.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines, check_for_backend(diesel::pg::Pg))]
pub struct LineRow {
    pub order_id: Uuid,
    pub position: i32,
    pub sku: String,
    pub quantity: i64,
    pub display_name: String,
    pub unit_price_minor: Option<i64>,
    pub line_total_minor: Option<i64>,
    pub shipped: i64,
    pub canceled: i64,
    pub returned: i64,
    pub discount_minor: Option<i64>,
}

impl LineRow {
    /// The rows of a new order's lines, unpriced.
    pub fn unpriced(order: &NewOrder) -> Vec<Self> {
        order
            .lines
            .iter()
            .zip(0..)
            .map(|((sku, quantity), position)| Self {
                order_id: order.id.uuid(),
                position,
                sku: sku.as_str().to_owned(),
                quantity: quantity.get(),
                display_name: String::new(),
                unit_price_minor: None,
                line_total_minor: None,
                shipped: 0,
                canceled: 0,
                returned: 0,
                discount_minor: None,
            })
            .collect()
    }

    /// The line as the domain sees it, its prices in `currency`.
    pub fn into_line(self, currency: Currency) -> OrderLine {
        OrderLine {
            position: self.position,
            sku: Sku::from_stored(self.sku),
            quantity: Quantity::from_stored(self.quantity),
            display_name: self.display_name,
            unit_price: self.unit_price_minor.map(|m| Money::new(currency, m)),
            line_total: self.line_total_minor.map(|m| Money::new(currency, m)),
            shipped: self.shipped,
            canceled: self.canceled,
            returned: self.returned,
            discount: self.discount_minor.map(|m| Money::new(currency, m)),
        }
    }
}

/// What a step changes besides the state (`None`: unchanged).
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = orders)]
pub struct OrderChanges {
    pub shipping_address_snapshot: Option<Vec<u8>>,
    pub subtotal_minor: Option<i64>,
    pub shipping_minor: Option<i64>,
    pub total_minor: Option<i64>,
    pub shipping_zone: Option<String>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub failure_metadata: Option<String>,
    pub failed_at_state: Option<String>,
    pub payment_intent: Option<String>,
    pub reservation: Option<String>,
    pub discount_minor: Option<i64>,
    pub tax_minor: Option<i64>,
    pub quote_snapshot: Option<Vec<u8>>,
}

impl From<&Progress> for OrderChanges {
    fn from(progress: &Progress) -> Self {
        let failure = progress.failure.as_ref();
        Self {
            shipping_address_snapshot: progress.shipping_address_snapshot.clone(),
            subtotal_minor: progress.subtotal.map(Money::minor),
            shipping_minor: progress.shipping.map(Money::minor),
            total_minor: progress.total.map(Money::minor),
            shipping_zone: progress.shipping_zone.clone(),
            failure_reason: failure.map(|(f, _)| f.reason.clone()),
            failure_message: failure.map(|(f, _)| f.message.clone()),
            failure_metadata: failure.map(|(f, _)| {
                // A map of strings always serialises.
                serde_json::to_string(&f.metadata).unwrap_or_else(|_| "{}".into())
            }),
            failed_at_state: failure.map(|(_, state)| state.as_str().to_owned()),
            payment_intent: progress.payment_intent.map(IntentId::name),
            reservation: progress.reservation.as_ref().map(|r| r.as_str().to_owned()),
            discount_minor: progress.discount.map(Money::minor),
            tax_minor: progress.tax.map(Money::minor),
            quote_snapshot: progress.quote_snapshot.clone(),
        }
    }
}
