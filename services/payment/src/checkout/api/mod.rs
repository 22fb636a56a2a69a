//! The tonic `CheckoutService`: PlaceOrder stores the order (idempotently
//! per customer and request id) and drives its saga until it is terminal or
//! the caller's patience ends; GetOrder and ListOrders read orders back.
//! Errors are the service's one `Error`, mapped to a status by
//! `crate::api`.
//!
//! Layout: this module (the service impl that delegates, what the handlers
//! share), `orders` (parsing, conversion, the handlers), `shipments`
//! (CreateShipment, ListShipments, CancelOrder) and `returns`
//! (RequestReturn, ReceiveReturn, ListReturns, RefundOrder): the order's
//! life after checkout.

mod orders;
mod returns;
mod shipments;

pub(crate) use orders::order_to_proto;
pub(crate) use returns::return_to_proto;
pub(crate) use shipments::shipment_to_proto;

use backroom_proto::payment::v1::{
    self as pb, checkout_service_server::CheckoutService,
    payment_service_client::PaymentServiceClient,
};
use std::sync::Arc;

use backroom_shared::{
    client::TracedChannel,
    errors::{FieldViolation, Violations},
    store::Store,
};
use std::future::Future;
use uuid::Uuid;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::saga::Saga;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct CheckoutApi {
    saga: Saga,
    store: Store,
    payment: PaymentServiceClient<TracedChannel>,
    /// Sagas driven for a PlaceOrder, whether or not its caller still
    /// waits: a caller who gives up must not park its order (and the stock
    /// it reserved) until the recovery worker's lease runs out, so the
    /// first drive runs on its own task — and there are at most this many.
    drives: Arc<Semaphore>,
}

impl CheckoutApi {
    /// The API over `saga` and the payment schema's `store`, reading
    /// payment methods through `payment` (the caller's own token is
    /// forwarded: it proves the card is theirs), driving at most
    /// `max_drives` sagas at once.
    pub fn new(
        saga: Saga,
        store: Store,
        payment: PaymentServiceClient<TracedChannel>,
        max_drives: usize,
    ) -> Self {
        Self {
            saga,
            store,
            payment,
            drives: Arc::new(Semaphore::new(max_drives.max(1))),
        }
    }
}

#[tonic::async_trait]
impl CheckoutService for CheckoutApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        self.place(request).await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        self.order(request).await
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        self.orders(request).await
    }

    async fn create_shipment(
        &self,
        request: Request<pb::CreateShipmentRequest>,
    ) -> Result<Response<pb::Shipment>, Status> {
        self.ship_order(request).await
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        self.cancel(request).await
    }

    async fn list_shipments(
        &self,
        request: Request<pb::ListShipmentsRequest>,
    ) -> Result<Response<pb::ListShipmentsResponse>, Status> {
        self.shipments(request).await
    }

    async fn request_return(
        &self,
        request: Request<pb::RequestReturnRequest>,
    ) -> Result<Response<pb::Return>, Status> {
        CheckoutApi::request_return(self, request).await
    }

    async fn receive_return(
        &self,
        request: Request<pb::ReceiveReturnRequest>,
    ) -> Result<Response<pb::Return>, Status> {
        CheckoutApi::receive_return(self, request).await
    }

    async fn list_returns(
        &self,
        request: Request<pb::ListReturnsRequest>,
    ) -> Result<Response<pb::ListReturnsResponse>, Status> {
        self.returns(request).await
    }

    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        CheckoutApi::refund_order(self, request).await
    }
}

/// The request id a mutation of `method` requires, recording a violation
/// when it is missing or not a UUID.
fn required_request_id(violations: &mut Violations, raw: &str, method: &str) -> Option<Uuid> {
    if raw.is_empty() {
        violations.push("request_id", format!("is required for {method}"));
        return None;
    }
    violations.check(
        Uuid::try_parse(raw).map_err(|_| FieldViolation::new("request_id", "must be a UUID")),
    )
}

/// A page of what an order has (its shipments, its returns): the parent
/// order, the page and the last item of the previous page.
fn order_page(
    parent: &str,
    page_size: i32,
    page_token: &str,
) -> Result<
    (
        crate::domain::OrderId,
        backroom_shared::paging::PageRequest,
        Option<Uuid>,
    ),
    crate::domain::Error,
> {
    let mut violations = Violations::default();
    let id = violations.check(crate::domain::OrderId::parse("parent", parent));
    let page = backroom_shared::paging::page(&mut violations, page_size, page_token, &[parent]);
    let after = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
    Ok(violations.finish_with((id, page, after))?)
}

/// ORDER_NOT_FOUND unless the caller may see order `id`'s shipments and
/// returns: its customer, an admin or a warehouse (a service principal with
/// role fulfillment). Anyone else learns nothing, not even that it exists.
fn visible_to_warehouse(
    conn: &mut diesel::PgConnection,
    access: backroom_shared::auth::Access,
    id: crate::domain::OrderId,
) -> Result<(), crate::domain::Error> {
    let found = super::repo::orders::find(conn, id)?;
    backroom_shared::auth::Access {
        service: access.fulfillment,
        ..access
    }
    .sees(found, |order| order.customer.uuid())
    .map(|_| ())
    .ok_or(crate::domain::Error::OrderNotFound(id))
}

impl CheckoutApi {
    /// A slot for work that must finish whether or not its caller still
    /// waits — a saga's first drive, a shipment, a cancellation — taken
    /// before anything is stored: at most the checkout limit of them, and
    /// past it the call is OVERLOADED instead of queueing work for nobody.
    fn work_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.drives
            .clone()
            .try_acquire_owned()
            .map_err(|_| backroom_shared::concurrency::overloaded(crate::DOMAIN))
    }
}

/// Runs `work` on its own task, holding `slot` until it ends, in the
/// caller's span: a caller who gives up (its deadline, a hang-up) does not
/// stop it half-way. Returns its result to a caller who still waits.
async fn detached<T: Send + 'static>(
    slot: OwnedSemaphorePermit,
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(
        async move {
            let _slot = slot;
            work.await
        }
        .instrument(tracing::Span::current()),
    )
    .await
    .map_err(|err| {
        Status::from(crate::domain::Error::Db(
            backroom_shared::db::DbError::Other(anyhow::anyhow!("checkout task: {err}")),
        ))
    })?
}
