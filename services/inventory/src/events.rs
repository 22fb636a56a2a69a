//! What inventory tells other services: the domain events of
//! `backroom/inventory/v1/events.proto`, recorded with
//! [`backroom_shared::events::record`] in the transaction of the change
//! (repositories call these functions on their connection).
//!
//! - every stock movement: `StockLevelChanged` (subject: the level);
//! - products: `ProductCreated`, `ProductUpdated` (subject: the product);
//! - reservations: `ReservationMade`, `ReservationCommitted`,
//!   `ReservationReleased`, `ReservationExpired` (subject: the reservation).

use backroom_proto::inventory::v1 as pb;
use backroom_shared::events::{NewEvent, record};
use chrono::{DateTime, Utc};
use diesel::PgConnection;

use crate::{
    api::reservation_to_proto,
    domain::{
        Error,
        products::Product,
        reservations::{Ending, Reservation},
        stock::{Change, Movement, StockLevel},
    },
};

/// A product entered the catalogue.
pub fn product_created(
    conn: &mut PgConnection,
    product: &Product,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::ProductCreated {
        product: Some(product.clone().into()),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(product.name(), &payload)],
    )?)
}

/// A product changed.
pub fn product_updated(
    conn: &mut PgConnection,
    product: &Product,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::ProductUpdated {
        product: Some(product.clone().into()),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(product.name(), &payload)],
    )?)
}

/// `change` moved `level` (already at its new version).
pub fn stock_moved(
    conn: &mut PgConnection,
    level: &StockLevel,
    change: &Change<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let movement = Movement {
        key: level.key.clone(),
        sequence: level.version,
        kind: change.kind,
        deltas: change.deltas(),
        reason: change.reason,
        note: change.note.to_owned(),
        order_id: change.order_id,
        created_at: now,
    };
    let payload = pb::StockLevelChanged {
        level: Some(level.into()),
        movement: Some((&movement).into()),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(level.key.name(), &payload)],
    )?)
}

/// A reservation was made.
pub fn reservation_made(
    conn: &mut PgConnection,
    reservation: &Reservation,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let payload = pb::ReservationMade {
        reservation: Some(reservation_to_proto(reservation, now)),
    };
    Ok(record(
        conn,
        now,
        [NewEvent::new(
            reservation.order_id.reservation_name(),
            &payload,
        )],
    )?)
}

/// A reservation ended as `ending` says.
pub fn reservation_ended(
    conn: &mut PgConnection,
    reservation: &Reservation,
    ending: Ending,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let subject = reservation.order_id.reservation_name();
    let wire = Some(reservation_to_proto(reservation, now));
    let event = match ending {
        Ending::Commit => NewEvent::new(subject, &pb::ReservationCommitted { reservation: wire }),
        Ending::Release => NewEvent::new(subject, &pb::ReservationReleased { reservation: wire }),
        Ending::Expire => NewEvent::new(subject, &pb::ReservationExpired { reservation: wire }),
    };
    Ok(record(conn, now, [event])?)
}
