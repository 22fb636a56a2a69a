//! ReserveStock, CommitReservation and ReleaseReservation (one handler,
//! parameterised by the transition), ShipReservation, UncommitReservation,
//! RestockReservation and WriteOffReservation (one handler, parameterised
//! by the settlement), GetReservation.

use backroom_proto::inventory::v1 as pb;
use backroom_shared::{
    auth::Access,
    catalog::{MAX_LINES, parse_discount_codes},
    clock::to_timestamp,
    errors::Violations,
    idempotency, names,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use super::{InventoryApi, Retryable, caller, mutation, one_violation};
use crate::{
    db::repo,
    domain::{
        Error,
        reservations::{
            RequestedLine, Reservation, ReservationState, ReserveStock, SettleReservation,
            Settlement, Transition, TransitionReservation, Ttl,
        },
        values::{LocationId, OrderId, parse_lines},
    },
};

pub(super) async fn reserve(
    api: &InventoryApi,
    request: Request<pb::ReserveStockRequest>,
) -> Result<Response<pb::Reservation>, Status> {
    let caller = caller(&request, Access::require_service)?;
    let reserve = mutation::<_, ReserveStock>(&caller, request.into_inner())?;
    let reservation = reserve
        .run(api.store(), |conn, cmd, now| {
            Ok(to_proto(&repo::reservations::reserve(conn, cmd, now)?, now))
        })
        .await?;
    Ok(Response::new(reservation))
}

pub(super) async fn commit(
    api: &InventoryApi,
    request: Request<pb::CommitReservationRequest>,
) -> Result<Response<pb::Reservation>, Status> {
    transition(api, request).await
}

pub(super) async fn release(
    api: &InventoryApi,
    request: Request<pb::ReleaseReservationRequest>,
) -> Result<Response<pb::Reservation>, Status> {
    transition(api, request).await
}

/// CommitReservation and ReleaseReservation: the same handler, the
/// transition named by the request.
async fn transition<M>(
    api: &InventoryApi,
    request: Request<M>,
) -> Result<Response<pb::Reservation>, Status>
where
    M: Retryable,
    TransitionReservation: TryFrom<M, Error = Error>,
{
    let caller = caller(&request, Access::require_service)?;
    let change = mutation::<_, TransitionReservation>(&caller, request.into_inner())?;
    let transition = change.cmd.transition;
    let reservation = change
        .run(api.store(), |conn, cmd, now| {
            let reservation =
                repo::reservations::transition(conn, cmd.order_id, cmd.transition, now)?;
            Ok(to_proto(&reservation, now))
        })
        .await?;
    tracing::info!(reservation = %reservation.name, ?transition, "reservation transitioned");
    Ok(Response::new(reservation))
}

/// ShipReservation, UncommitReservation, RestockReservation and
/// WriteOffReservation: the same handler, the settlement named by the
/// request.
pub(super) async fn settle<M>(
    api: &InventoryApi,
    request: Request<M>,
) -> Result<Response<pb::Reservation>, Status>
where
    M: Retryable,
    SettleReservation: TryFrom<M, Error = Error>,
{
    let caller = caller(&request, Access::require_service)?;
    let change = mutation::<_, SettleReservation>(&caller, request.into_inner())?;
    let settlement = change.cmd.settlement;
    let reservation = change
        .run(api.store(), |conn, cmd, now| {
            Ok(to_proto(&repo::reservations::settle(conn, cmd, now)?, now))
        })
        .await?;
    tracing::info!(reservation = %reservation.name, ?settlement, "reservation units settled");
    Ok(Response::new(reservation))
}

pub(super) async fn get(
    api: &InventoryApi,
    request: Request<pb::GetReservationRequest>,
) -> Result<Response<pb::Reservation>, Status> {
    caller(&request, Access::require_admin_or_service)?;
    let order_id =
        OrderId::parse_reservation_name("name", &request.get_ref().name).map_err(one_violation)?;
    let reservation = api
        .store()
        .read(move |conn| repo::reservations::load(conn, order_id, false))
        .await?;
    Ok(Response::new(to_proto(&reservation, api.store().now())))
}

impl Retryable for pb::ReserveStockRequest {
    const METHOD: &'static str = "ReserveStock";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        idempotency::fingerprint(&pb::ReserveStockRequest {
            request_id: String::new(),
            ..self.clone()
        })
    }
}

impl TryFrom<pb::ReserveStockRequest> for ReserveStock {
    type Error = Error;

    fn try_from(req: pb::ReserveStockRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let order_id = violations.check(OrderId::parse("order_id", &req.order_id));
        let lines = parse_lines(
            &mut violations,
            req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
        );
        let locations: Vec<Option<LocationId>> = req
            .lines
            .iter()
            .enumerate()
            .take(MAX_LINES)
            .map(|(i, line)| {
                let field = format!("lines[{i}].location");
                violations
                    .check(LocationId::parse_optional(&field, &line.location))
                    .flatten()
            })
            .collect();
        let ttl = violations.check(Ttl::parse(
            "ttl",
            req.ttl.map(|ttl| (ttl.seconds, ttl.nanos)),
        ));
        let mut discount_codes =
            parse_discount_codes(&mut violations, "discount_codes", &req.discount_codes);
        discount_codes.sort();
        let customer = if req.customer.is_empty() {
            if !discount_codes.is_empty() {
                violations.push("customer", "is required with discount_codes");
            }
            None
        } else {
            violations.check(names::parse_uuid("customer", "accounts", &req.customer))
        };
        let (order_id, ttl) = violations.finish_with((order_id, ttl))?;
        // Without violations every line parsed, in request order, and every
        // location is the line's (`None`: none named).
        let lines = lines
            .into_iter()
            .zip(locations)
            .map(|((sku, quantity), location)| RequestedLine {
                sku,
                quantity,
                location,
            })
            .collect();
        Ok(Self {
            order_id,
            lines,
            ttl,
            discount_codes,
            customer,
        })
    }
}

/// A reservation name in canonical form for fingerprints (as sent when it
/// does not parse: the request is refused anyway).
fn canonical_name(raw: &str) -> String {
    OrderId::parse_reservation_name("name", raw)
        .map_or_else(|_| raw.to_owned(), OrderId::reservation_name)
}

/// Ship, Uncommit, Restock and WriteOff requests name a reservation, its lines and a
/// required request id: the same parsing and the same fingerprint.
macro_rules! settle_request {
    ($request:ty, $method:literal, $settlement:expr) => {
        impl Retryable for $request {
            const METHOD: &'static str = $method;

            fn request_id(&self) -> &str {
                &self.request_id
            }

            fn fingerprint(&self) -> Vec<u8> {
                let name = canonical_name(&self.name);
                idempotency::fingerprint(&Self {
                    name,
                    request_id: String::new(),
                    ..self.clone()
                })
            }
        }

        impl TryFrom<$request> for SettleReservation {
            type Error = Error;

            fn try_from(req: $request) -> Result<Self, Error> {
                let mut violations = Violations::default();
                let order_id = violations.check(OrderId::parse_reservation_name("name", &req.name));
                if req.request_id.is_empty() {
                    violations.push(
                        "request_id",
                        "is required: two calls for the same units are two settlements",
                    );
                }
                let lines = parse_lines(
                    &mut violations,
                    req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
                );
                let order_id = violations.finish_with(order_id)?;
                Ok(Self {
                    order_id,
                    lines,
                    settlement: $settlement,
                })
            }
        }
    };
}

settle_request!(
    pb::ShipReservationRequest,
    "ShipReservation",
    Settlement::Ship
);
settle_request!(
    pb::UncommitReservationRequest,
    "UncommitReservation",
    Settlement::Uncommit
);
settle_request!(
    pb::RestockReservationRequest,
    "RestockReservation",
    Settlement::Restock
);
settle_request!(
    pb::WriteOffReservationRequest,
    "WriteOffReservation",
    Settlement::WriteOff
);

/// Commit and Release requests name a reservation and nothing else: the
/// same parsing, and the same fingerprint (the reservation in canonical
/// form, the request id left out).
macro_rules! transition_request {
    ($request:ty, $method:literal, $transition:expr) => {
        impl Retryable for $request {
            const METHOD: &'static str = $method;

            fn request_id(&self) -> &str {
                &self.request_id
            }

            fn fingerprint(&self) -> Vec<u8> {
                let name = canonical_name(&self.name);
                idempotency::fingerprint(&Self {
                    name,
                    request_id: String::new(),
                })
            }
        }

        impl TryFrom<$request> for TransitionReservation {
            type Error = Error;

            fn try_from(req: $request) -> Result<Self, Error> {
                let order_id =
                    OrderId::parse_reservation_name("name", &req.name).map_err(one_violation)?;
                Ok(Self {
                    order_id,
                    transition: $transition,
                })
            }
        }
    };
}

transition_request!(
    pb::CommitReservationRequest,
    "CommitReservation",
    Transition::Commit
);
transition_request!(
    pb::ReleaseReservationRequest,
    "ReleaseReservation",
    Transition::Release
);

/// The wire form of `reservation` as clients see it at `now` (an ACTIVE
/// one past its expiry is EXPIRED).
pub(crate) fn to_proto(reservation: &Reservation, now: DateTime<Utc>) -> pb::Reservation {
    let state = match reservation.state_at(now) {
        ReservationState::Active => pb::ReservationState::Active,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    };
    pb::Reservation {
        name: reservation.order_id.reservation_name(),
        order_id: reservation.order_id.to_string(),
        lines: reservation
            .lines
            .iter()
            .map(|line| pb::ReservationLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
                location: line.location.as_str().to_owned(),
                shipped_quantity: line.shipped,
                uncommitted_quantity: line.uncommitted,
                restocked_quantity: line.restocked,
                written_off_quantity: line.written_off,
            })
            .collect(),
        state: state as i32,
        expire_time: Some(to_timestamp(reservation.expire_at)),
        create_time: Some(to_timestamp(reservation.created_at)),
        update_time: Some(to_timestamp(reservation.updated_at)),
        discount_codes: reservation
            .discount_codes
            .iter()
            .map(|code| code.as_str().to_owned())
            .collect(),
    }
}
