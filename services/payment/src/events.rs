//! What the payment service tells other services: the domain events of
//! `backroom/payment/v1/events.proto`, recorded with
//! [`backroom_shared::events::record`] in the transaction of the change
//! (repositories call these on their connection).
//!
//! - payment intents (subject: the intent): `PaymentIntentAuthorized`,
//!   `PaymentIntentCaptured` (both, in that order, for an automatic
//!   capture), `PaymentIntentCanceled`; `RefundSucceeded`;
//! - orders (subject: the order): `OrderPlaced`, `OrderCompleted`,
//!   `OrderFailed`, `OrderShipped`, `OrderCanceled`, `OrderReturnRequested`,
//!   `OrderReturnReceived`, `OrderRefunded`.
//!
//! No payload holds card data: an intent names its payment method.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    events::{NewEvent, record},
    money::Money,
};
use chrono::{DateTime, Utc};
use diesel::PgConnection;

use crate::{
    api::{intent_to_proto, refund_to_proto},
    checkout::{
        api::{order_to_proto, return_to_proto, shipment_to_proto},
        repo::orders,
        returns::Return,
        saga::State,
        shipment::Shipment,
    },
    domain::{
        Error, OrderId,
        intents::{Intent, IntentStatus},
        refunds::Refund,
    },
};

/// `intent` was saved after being in `before`: its authorization, capture
/// or cancellation, if the status moved to one.
pub fn intent_changed(
    conn: &mut PgConnection,
    before: IntentStatus,
    intent: &Intent,
) -> Result<(), Error> {
    if before == intent.status {
        return Ok(());
    }
    let subject = intent.id.name();
    let wire = || Some(intent_to_proto(intent));
    let authorized = || {
        NewEvent::new(
            subject.clone(),
            &pb::PaymentIntentAuthorized {
                payment_intent: wire(),
            },
        )
    };
    let events = match intent.status {
        IntentStatus::RequiresCapture => vec![authorized()],
        IntentStatus::Succeeded => {
            let captured = NewEvent::new(
                subject.clone(),
                &pb::PaymentIntentCaptured {
                    payment_intent: wire(),
                },
            );
            if before == IntentStatus::RequiresCapture {
                vec![captured]
            } else {
                vec![authorized(), captured]
            }
        }
        IntentStatus::Canceled => vec![NewEvent::new(
            subject.clone(),
            &pb::PaymentIntentCanceled {
                payment_intent: wire(),
            },
        )],
        _ => Vec::new(),
    };
    Ok(record(conn, intent.updated_at, events)?)
}

/// A refund went through.
pub fn refund_succeeded(conn: &mut PgConnection, refund: &Refund) -> Result<(), Error> {
    let payload = pb::RefundSucceeded {
        refund: Some(refund_to_proto(refund)),
    };
    Ok(record(
        conn,
        refund.created_at,
        [NewEvent::new(refund.intent.name(), &payload)],
    )?)
}

/// The order `id` as it is now, on the wire.
fn order(conn: &mut PgConnection, id: OrderId) -> Result<pb::Order, Error> {
    let order = orders::load(conn, id)?;
    let lines = orders::lines(conn, &order)?;
    Ok(order_to_proto(&order, &lines))
}

/// PlaceOrder stored a new order.
pub fn order_placed(conn: &mut PgConnection, id: OrderId, now: DateTime<Utc>) -> Result<(), Error> {
    let payload = pb::OrderPlaced {
        order: Some(order(conn, id)?),
    };
    Ok(record(conn, now, [NewEvent::new(id.name(), &payload)])?)
}

/// Checkout moved the order to `to`: its completion or failure.
pub fn order_settled(
    conn: &mut PgConnection,
    id: OrderId,
    to: State,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let event = match to {
        State::Completed => NewEvent::new(
            id.name(),
            &pb::OrderCompleted {
                order: Some(order(conn, id)?),
            },
        ),
        State::Failed => NewEvent::new(
            id.name(),
            &pb::OrderFailed {
                order: Some(order(conn, id)?),
            },
        ),
        _ => return Ok(()),
    };
    Ok(record(conn, now, [event])?)
}

/// A shipment of the order left.
pub fn order_shipped(
    conn: &mut PgConnection,
    shipment: &Shipment,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let id = shipment.order_id;
    let payload = pb::OrderShipped {
        order: Some(order(conn, id)?),
        shipment: Some(shipment_to_proto(shipment)),
    };
    Ok(record(conn, now, [NewEvent::new(id.name(), &payload)])?)
}

/// A cancellation of the order finished, refunding `refunded`.
pub fn order_canceled(
    conn: &mut PgConnection,
    id: OrderId,
    refunded: Money,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::OrderCanceled {
        order: Some(order(conn, id)?),
        refunded: Some(refunded.into()),
    };
    Ok(record(conn, now, [NewEvent::new(id.name(), &payload)])?)
}

/// A return of the order was requested.
pub fn return_requested(
    conn: &mut PgConnection,
    ret: &Return,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::OrderReturnRequested {
        order: ret.order_id.name(),
        r#return: Some(return_to_proto(ret)),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(ret.order_id.name(), &payload)],
    )?)
}

/// A return of the order was received (and refunded).
pub fn return_received(
    conn: &mut PgConnection,
    ret: &Return,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::OrderReturnReceived {
        order: Some(order(conn, ret.order_id)?),
        r#return: Some(return_to_proto(ret)),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(ret.order_id.name(), &payload)],
    )?)
}

/// An admin's refund of the order went through.
pub fn order_refunded(
    conn: &mut PgConnection,
    id: OrderId,
    amount: Money,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::OrderRefunded {
        order: Some(order(conn, id)?),
        amount: Some(amount.into()),
        reason: reason.to_owned(),
    };
    Ok(record(conn, now, [NewEvent::new(id.name(), &payload)])?)
}
