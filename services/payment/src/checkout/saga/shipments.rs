//! Shipping a stored shipment: inventory ships its units
//! (`ShipReservation`, request id = the shipment's id, so a retry or a
//! replay after a crash ships them once), then the shipment is SHIPPED —
//! or FAILED when inventory refuses definitively. A shipment whose call
//! got no definitive answer stays PENDING; [`Saga::ship_pending`] (run by
//! the recovery worker) finishes it.

use backroom_proto::inventory::v1 as inventory_pb;
use backroom_shared::{auth::audience, errors::reason_of};
use diesel::Connection as _;
use tracing::instrument;

use super::{
    Saga,
    remote::{Reply, reply},
};
use crate::{
    checkout::{
        order::ReservationName,
        repo,
        shipment::{Shipment, ShipmentState},
    },
    domain::{Error, ShipmentId},
};

impl Saga {
    /// Ships `id` at inventory if it is PENDING and records the outcome;
    /// returns the shipment as it is then (still PENDING when inventory
    /// gave no definitive answer). Errors only when our database fails.
    #[instrument(skip_all, fields(shipment = %id))]
    pub async fn ship(&self, id: ShipmentId) -> Result<Shipment, Error> {
        let shipment = self.db(move |conn| repo::shipments::load(conn, id)).await?;
        if shipment.state != ShipmentState::Pending {
            return Ok(shipment);
        }
        let request = inventory_pb::ShipReservationRequest {
            name: ReservationName::of(shipment.order_id).as_str().to_owned(),
            lines: shipment
                .lines
                .iter()
                .map(|(sku, units)| inventory_pb::LineItem {
                    sku: sku.as_str().to_owned(),
                    quantity: units.get(),
                })
                .collect(),
            request_id: id.to_string(),
        };
        let outcome = self
            .remote(
                &self.inner.downstream.inventory,
                audience::INVENTORY,
                request,
                |mut client, request| async move { client.ship_reservation(request).await },
            )
            .await;
        let now = self.now();
        match reply(outcome)? {
            Reply::Answered(_) => {
                self.db(move |conn| conn.transaction(|conn| repo::shipments::finish(conn, id, now)))
                    .await
            }
            Reply::Refused(status) => {
                let reason = reason_of(&status).unwrap_or_else(|| format!("{:?}", status.code()));
                tracing::warn!(%reason, message = status.message(), "inventory refused a shipment");
                self.db(move |conn| repo::shipments::fail(conn, id, &reason, now))
                    .await
            }
            Reply::Unanswered(status) => {
                tracing::warn!(code = ?status.code(), "shipment not confirmed yet; it stays pending");
                self.db(move |conn| repo::shipments::load(conn, id)).await
            }
        }
    }

    /// Ships every PENDING shipment untouched for the pending grace (a
    /// crash or an outage left it); returns how many it picked up.
    pub async fn ship_pending(&self) -> Result<usize, Error> {
        self.finish_pending(repo::flows::FlowTable::Shipment, |id, _| {
            self.ship(ShipmentId::from_uuid(id))
        })
        .await
    }
}
