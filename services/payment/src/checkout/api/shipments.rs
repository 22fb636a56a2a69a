//! The order's life after checkout — CreateShipment, ListShipments and
//! CancelOrder (of an order in checkout too): parsing, conversion of a
//! shipment, and the handlers.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::Caller, catalog::MAX_LINES, clock::to_timestamp, errors::Violations, idempotency,
    validate::required_text,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{CheckoutApi, order_page, orders::parse_lines};
use crate::{
    api::record,
    checkout::{
        cancellation::{CancelOrder, MAX_REASON},
        order, repo,
        saga::State,
        shipment::{CreateShipment, MAX_TRACKING_TEXT, Shipment, ShipmentState},
    },
    domain::{Error, OrderId},
};

impl TryFrom<pb::CreateShipmentRequest> for CreateShipment {
    type Error = Error;

    fn try_from(req: pb::CreateShipmentRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let order_id = violations.check(OrderId::parse("parent", &req.parent));
        let request_id =
            super::required_request_id(&mut violations, &req.request_id, "CreateShipment");
        if req.lines.len() > MAX_LINES {
            violations.push("lines", format!("must hold at most {MAX_LINES} lines"));
        }
        let lines = parse_lines(&mut violations, &req.lines);
        let carrier = violations.check(required_text("carrier", &req.carrier, MAX_TRACKING_TEXT));
        let tracking_number = violations.check(required_text(
            "tracking_number",
            &req.tracking_number,
            MAX_TRACKING_TEXT,
        ));
        let fingerprint = idempotency::fingerprint(&pb::CreateShipmentRequest {
            request_id: String::new(),
            ..req
        });
        let (order_id, request_id, carrier, tracking_number) =
            violations.finish_with((order_id, request_id, carrier, tracking_number))?;
        Ok(Self {
            order_id,
            lines,
            carrier,
            tracking_number,
            request_id,
            fingerprint,
        })
    }
}

/// The wire form of `shipment`.
pub fn shipment_to_proto(shipment: &Shipment) -> pb::Shipment {
    pb::Shipment {
        name: shipment.name(),
        lines: shipment
            .lines
            .iter()
            .map(|(sku, units)| pb::LineItem {
                sku: sku.as_str().to_owned(),
                quantity: units.get(),
            })
            .collect(),
        carrier: shipment.carrier.clone(),
        tracking_number: shipment.tracking_number.clone(),
        state: match shipment.state {
            ShipmentState::Pending => pb::ShipmentState::Pending,
            ShipmentState::Shipped => pb::ShipmentState::Shipped,
            ShipmentState::Failed => pb::ShipmentState::Failed,
        }
        .into(),
        failure_reason: shipment.failure_reason.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(shipment.created_at)),
        update_time: Some(to_timestamp(shipment.updated_at)),
    }
}

impl CheckoutApi {
    #[instrument(skip_all, fields(order, shipment))]
    pub(super) async fn ship_order(
        &self,
        request: Request<pb::CreateShipmentRequest>,
    ) -> Result<Response<pb::Shipment>, Status> {
        Caller::of(&request)?
            .access()
            .require_admin_or_fulfillment()
            .map_err(Error::from)?;
        let cmd = CreateShipment::try_from(request.into_inner())?;
        record("order", cmd.order_id);
        let slot = self.work_slot()?;
        let stored = self
            .store
            .write(move |conn, now| repo::shipments::begin(conn, &cmd, now))
            .await?;
        record("shipment", stored.id);
        // Shipped on its own task: a caller who gives up does not leave the
        // shipment PENDING until recovery finds it.
        let saga = self.saga.clone();
        let shipment =
            super::detached(slot, async move { Ok(saga.ship(stored.id).await?) }).await?;
        if shipment.state == ShipmentState::Failed {
            return Err(Error::ShipmentFailed(shipment.failure_reason.unwrap_or_default()).into());
        }
        tracing::info!(shipment = %shipment.name(), state = shipment.state.as_str(), "shipment created");
        Ok(Response::new(shipment_to_proto(&shipment)))
    }

    #[instrument(skip_all, fields(order))]
    pub(super) async fn shipments(
        &self,
        request: Request<pb::ListShipmentsRequest>,
    ) -> Result<Response<pb::ListShipmentsResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let req = request.into_inner();
        let (id, page, after) = order_page(&req.parent, req.page_size, &req.page_token)?;
        record("order", id);
        let limit = page.fetch_limit();
        let found = self
            .store
            .read(move |conn| {
                super::visible_to_warehouse(conn, access, id)?;
                repo::shipments::list(conn, id, after, limit)
            })
            .await?;
        let (shipments, next_page_token) = page.finish(found, |s| s.id.to_string());
        Ok(Response::new(pb::ListShipmentsResponse {
            shipments: shipments.iter().map(shipment_to_proto).collect(),
            next_page_token,
        }))
    }
}

impl TryFrom<pb::CancelOrderRequest> for CancelOrder {
    type Error = Error;

    fn try_from(req: pb::CancelOrderRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let order_id = violations.check(OrderId::parse("name", &req.name));
        let request_id =
            super::required_request_id(&mut violations, &req.request_id, "CancelOrder");
        let reason = violations.check(required_text("reason", &req.reason, MAX_REASON));
        let fingerprint = idempotency::fingerprint(&pb::CancelOrderRequest {
            request_id: String::new(),
            ..req
        });
        let (order_id, request_id, reason) =
            violations.finish_with((order_id, request_id, reason))?;
        Ok(Self {
            order_id,
            reason,
            request_id,
            fingerprint,
        })
    }
}

impl CheckoutApi {
    #[instrument(skip_all, fields(order))]
    pub(super) async fn cancel(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = CancelOrder::try_from(request.into_inner())?;
        let id = cmd.order_id;
        record("order", id);
        let slot = self.work_slot()?;
        let stored = self
            .store
            .write(move |conn, now| {
                // Another customer's order does not exist, as far as they
                // know; a service is no canceler.
                repo::orders::lock(conn, id)?;
                let found = repo::orders::find(conn, id)?.map(|order| (order, ()));
                let (order, ()) = order::visible(access, found).ok_or(Error::OrderNotFound(id))?;
                let asked = order
                    .cancel_request
                    .as_ref()
                    .filter(|asked| asked.request_id == cmd.request_id);
                if asked.is_some_and(|asked| asked.fingerprint != cmd.fingerprint) {
                    return Err(Error::CancellationRequestIdReused);
                }
                if !order.state.is_terminal() || (asked.is_some() && order.state == State::Failed) {
                    // Still in checkout (or canceled there by this very
                    // request): the saga heeds it. Before the pivot this
                    // call drives it to compensate now; past it the
                    // saga's own driver (or recovery, at the step's next
                    // attempt) finishes — a flood of cancels must not
                    // spend a capture's retry rounds.
                    repo::orders::request_cancel(conn, &cmd, now)?;
                    return Ok((None, order.state.before_pivot()));
                }
                repo::cancellations::begin(conn, &cmd, now).map(|c| (Some(c), false))
            })
            .await?;
        // Finished on its own task: a caller who gives up does not leave the
        // stock and the money waiting for recovery.
        let saga = self.saga.clone();
        super::detached(slot, async move {
            match stored {
                (Some(cancellation), _) => saga.cancel(cancellation.id).await.map(|_| ()),
                // The saga compensates at its next step; drive it now
                // unless another task or worker does.
                (None, true) => saga.drive(id).await.map(|_| ()),
                (None, false) => Ok(()),
            }
            .map_err(Status::from)
        })
        .await?;
        let (order, lines) = self.load(id).await?;
        Ok(Response::new(super::orders::order_to_proto(&order, &lines)))
    }
}
