//! PlaceOrder, GetOrder and ListOrders: parsing (SKUs and quantities by
//! the catalogue's rules, the same inventory applies), conversion of an
//! order and its lines, and the handlers.

use std::time::Duration;

use backroom_proto::{
    account::v1::Address,
    inventory::v1 as inventory_pb,
    payment::v1::{self as pb},
};
use backroom_shared::{
    auth::{AccountRef, Caller},
    catalog::{MAX_LINES, Quantity, Sku, parse_discount_codes},
    clock::to_timestamp,
    errors::Violations,
    idempotency,
    money::Currency,
    paging::page,
};
use prost::Message as _;
use tonic::{Code, Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use super::CheckoutApi;
use crate::api::record;
use crate::{
    checkout::{
        order::{
            self, AddressName, GetOrder, ListOrders, NewOrder, Order, OrderLine, OrderStatus,
            PaymentStatus, PlaceOrder,
        },
        repo,
        saga::{Driven, State},
        shipment::{self, Fulfillment},
    },
    domain::{CustomerId, Error, OrderId, PaymentMethodId, intents::resolve_customer},
};

/// The lines of a PlaceOrder or CreateShipment, by the catalogue's rules
/// (the caller checks how many there may be).
pub(super) fn parse_lines(
    violations: &mut Violations,
    raw: &[pb::LineItem],
) -> Vec<(Sku, Quantity)> {
    backroom_shared::catalog::parse_lines(
        violations,
        raw.iter().map(|l| (l.sku.as_str(), l.quantity)),
    )
}

impl TryFrom<&pb::PlaceOrderRequest> for PlaceOrder {
    type Error = Error;

    fn try_from(req: &pb::PlaceOrderRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let request_id = super::required_request_id(&mut violations, &req.request_id, "PlaceOrder");
        if req.lines.is_empty() || req.lines.len() > MAX_LINES {
            violations.push("lines", format!("must hold 1–{MAX_LINES} lines"));
        }
        let lines = parse_lines(&mut violations, &req.lines);
        let payment_method = violations.check(PaymentMethodId::parse(
            "payment_method",
            &req.payment_method,
        ));
        let currency = violations.check(Currency::parse("currency_code", &req.currency_code));
        let discount_codes =
            parse_discount_codes(&mut violations, "discount_codes", &req.discount_codes);
        let (customer, request_id, payment_method, currency) =
            violations.finish_with((customer, request_id, payment_method, currency))?;
        Ok(Self {
            customer,
            request_id,
            lines,
            payment_method,
            shipping_address: req.shipping_address.clone(),
            currency,
            discount_codes,
        })
    }
}

impl TryFrom<pb::GetOrderRequest> for GetOrder {
    type Error = Error;

    fn try_from(req: pb::GetOrderRequest) -> Result<Self, Error> {
        Ok(Self {
            id: OrderId::parse("name", &req.name)?,
        })
    }
}

impl TryFrom<pb::ListOrdersRequest> for ListOrders {
    type Error = Error;

    fn try_from(req: pb::ListOrdersRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = if req.customer.is_empty() {
            Some(None)
        } else {
            violations
                .check(AccountRef::parse("customer", &req.customer))
                .map(Some)
        };
        let state = match pb::OrderState::try_from(req.state) {
            Ok(state) => Some(state_from_proto(state)),
            Err(_) => {
                violations.push("state", "unknown state");
                None
            }
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.customer, &req.state.to_string()],
        );
        let before = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
        let (customer, state, page, before) =
            violations.finish_with((customer, state, page, before))?;
        Ok(Self {
            customer,
            state,
            page,
            before: before.map(OrderId::from_uuid),
        })
    }
}

/// The shipping address must be the customer's:
/// `accounts/{customer}/addresses/{id}`, or `accounts/me/addresses/{id}`
/// when the customer is the caller.
fn shipping_address(
    raw: &str,
    customer: CustomerId,
    caller: &Caller,
) -> Result<AddressName, Error> {
    raw.strip_prefix(&format!("{}/addresses/", customer.name()))
        .or_else(|| {
            raw.strip_prefix("accounts/me/addresses/")
                .filter(|_| caller.account_id() == Some(customer.uuid()))
        })
        .and_then(|id| Uuid::try_parse(id).ok())
        .map(|id| AddressName::of(customer, id))
        .ok_or_else(|| {
            Error::field(
                "shipping_address",
                "must be accounts/{customer}/addresses/{uuid} of the ordering customer",
            )
        })
}

fn state_to_proto(state: State) -> pb::OrderState {
    match state {
        State::Pending => pb::OrderState::Pending,
        State::Reserving => pb::OrderState::Reserving,
        State::Authorizing => pb::OrderState::Authorizing,
        State::Committing => pb::OrderState::Committing,
        State::Capturing => pb::OrderState::Capturing,
        State::Completed => pb::OrderState::Completed,
        State::Compensating => pb::OrderState::Compensating,
        State::Failed => pb::OrderState::Failed,
        State::NeedsAttention => pb::OrderState::NeedsAttention,
    }
}

fn state_from_proto(state: pb::OrderState) -> Option<State> {
    match state {
        pb::OrderState::Unspecified => None,
        pb::OrderState::Pending => Some(State::Pending),
        pb::OrderState::Reserving => Some(State::Reserving),
        pb::OrderState::Authorizing => Some(State::Authorizing),
        pb::OrderState::Committing => Some(State::Committing),
        pb::OrderState::Capturing => Some(State::Capturing),
        pb::OrderState::Completed => Some(State::Completed),
        pb::OrderState::Compensating => Some(State::Compensating),
        pb::OrderState::Failed => Some(State::Failed),
        pb::OrderState::NeedsAttention => Some(State::NeedsAttention),
    }
}

/// An order and its lines as the proto resource; its tax lines and
/// discounts, and each line's VAT, come from the quote it was placed at.
pub fn order_to_proto(order: &Order, lines: &[OrderLine]) -> pb::Order {
    let quote = order
        .quote_snapshot
        .as_deref()
        .and_then(|bytes| inventory_pb::Quote::decode(bytes).ok())
        .unwrap_or_default();
    pb::Order {
        name: order.id.name(),
        customer: order.customer.name(),
        lines: lines
            .iter()
            .map(|line| {
                let quoted = quote.lines.iter().find(|q| q.sku == line.sku.as_str());
                pb::OrderLine {
                    sku: line.sku.as_str().to_owned(),
                    display_name: line.display_name.clone(),
                    quantity: line.quantity.get(),
                    unit_price: line.unit_price.map(Into::into),
                    line_total: line.line_total.map(Into::into),
                    shipped_quantity: line.shipped,
                    canceled_quantity: line.canceled,
                    returned_quantity: line.returned,
                    discount: line.discount.map(Into::into),
                    tax: quoted.and_then(|q| q.tax.clone()),
                    tax_rate_basis_points: quoted.map_or(0, |q| q.tax_rate_basis_points),
                    tax_category: quoted.map_or(0, |q| q.tax_category),
                }
            })
            .collect(),
        discount_codes: order
            .discount_codes
            .iter()
            .map(|code| code.as_str().to_owned())
            .collect(),
        discount: order.discount.map(Into::into),
        tax: order.tax.map(Into::into),
        shipping_tax: quote.shipping_tax.clone(),
        tax_lines: quote.tax_lines.clone(),
        discounts: quote.discounts.clone(),
        shipping_address: order.shipping_address.as_str().to_owned(),
        shipping_address_snapshot: order
            .shipping_address_snapshot
            .as_deref()
            .and_then(|bytes| Address::decode(bytes).ok()),
        payment_method: order.payment_method.name(),
        currency_code: order.currency.code().to_owned(),
        subtotal: order.subtotal.map(Into::into),
        shipping: order.shipping.map(Into::into),
        total: order.total.map(Into::into),
        shipping_zone: order.shipping_zone.clone(),
        state: state_to_proto(order.state).into(),
        failure: order.failure.as_ref().map(|failure| pb::OrderFailure {
            reason: failure.reason.clone(),
            message: failure.message.clone(),
            metadata: failure.metadata.clone().into_iter().collect(),
        }),
        payment_intent: order
            .payment_intent
            .map(crate::domain::IntentId::name)
            .unwrap_or_default(),
        reservation: order
            .reservation
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        create_time: Some(to_timestamp(order.created_at)),
        update_time: Some(to_timestamp(order.updated_at)),
        fulfillment_status: match shipment::fulfillment(lines) {
            Fulfillment::Unfulfilled => pb::FulfillmentStatus::Unfulfilled,
            Fulfillment::PartiallyFulfilled => pb::FulfillmentStatus::PartiallyFulfilled,
            Fulfillment::Fulfilled => pb::FulfillmentStatus::Fulfilled,
            Fulfillment::PartiallyReturned => pb::FulfillmentStatus::PartiallyReturned,
            Fulfillment::Returned => pb::FulfillmentStatus::Returned,
        }
        .into(),
        status: match order.status(lines) {
            OrderStatus::Open => pb::OrderStatus::Open,
            OrderStatus::Completed => pb::OrderStatus::Completed,
            OrderStatus::Canceled => pb::OrderStatus::Canceled,
        }
        .into(),
        payment_status: match order.payment_status() {
            PaymentStatus::Unpaid => pb::PaymentStatus::Unpaid,
            PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
            PaymentStatus::Paid => pb::PaymentStatus::Paid,
            PaymentStatus::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        }
        .into(),
        refunded: Some(order.refunded.into()),
        cancel_requested: order.cancel_request.is_some() && !order.state.is_terminal(),
    }
}

impl CheckoutApi {
    pub(super) async fn load(&self, id: OrderId) -> Result<(Order, Vec<OrderLine>), Status> {
        self.store
            .read(move |conn| {
                repo::orders::find_with_lines(conn, id)?.ok_or(Error::OrderNotFound(id))
            })
            .await
    }

    /// Checks the payment method belongs to the customer, with the caller's
    /// token (a customer may only read their own cards).
    async fn check_payment_method(
        &self,
        caller: &Caller,
        customer: CustomerId,
        id: PaymentMethodId,
    ) -> Result<(), Status> {
        let mut request = Request::new(pb::GetPaymentMethodRequest { name: id.name() });
        let bearer = format!("Bearer {}", caller.token())
            .parse()
            .map_err(|_| Status::unauthenticated("token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        match self.payment.clone().get_payment_method(request).await {
            Ok(method) if method.get_ref().customer == customer.name() => Ok(()),
            Ok(_) => Err(Error::PaymentMethodNotFound(id).into()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => {
                Err(Error::PaymentMethodNotFound(id).into())
            }
            Err(status) => Err(status),
        }
    }

    #[instrument(skip_all, fields(order, customer))]
    pub(super) async fn place(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let access = caller.access();
        // How long this call may wait for the saga: its deadline (minus a
        // margin to answer in time), at most the configured cap.
        let cap = self.saga.config().place_order_wait;
        let wait = backroom_shared::deadline::remaining()
            .map(|left| left.saturating_sub(Duration::from_millis(200)))
            .unwrap_or(cap)
            .min(cap);
        let req = request.into_inner();
        let cmd = PlaceOrder::try_from(&req)?;
        // A slot for the saga's first drive, taken before the order exists:
        // when every slot is busy the order is refused, not parked.
        let drive_slot = self.work_slot()?;
        let customer = resolve_customer("customer", cmd.customer, access)?;
        record("customer", customer);
        let address = shipping_address(&cmd.shipping_address, customer, &caller)?;
        caller.require_owner_or_admin(customer.uuid())?;
        self.check_payment_method(&caller, customer, cmd.payment_method)
            .await?;

        let fingerprint = idempotency::fingerprint(&pb::PlaceOrderRequest {
            customer: customer.name(),
            shipping_address: address.as_str().to_owned(),
            request_id: String::new(),
            ..req
        });
        let order = NewOrder {
            id: OrderId::generate(),
            customer,
            request_id: cmd.request_id,
            fingerprint,
            shipping_address: address,
            payment_method: cmd.payment_method,
            currency: cmd.currency,
            lines: cmd.lines,
            discount_codes: cmd.discount_codes,
        };
        // The order's insert and its saga's first drive run on their own
        // task: if this caller gives up (its deadline, a hang-up) at any
        // point — even while the insert commits — the saga still runs on at
        // once; it never holds its reservation idle until a worker's lease
        // expires.
        let give_up = tokio::time::Instant::now() + wait;
        let (store, saga) = (self.store.clone(), self.saga.clone());
        // The insert keeps the caller's deadline (a task does not inherit
        // it): with the database down it fails within the call's time, not
        // after the pool's whole checkout timeout.
        let deadline = backroom_shared::deadline::current();
        let (id, mut driven) = super::detached(drive_slot, async move {
            let insert =
                store.write(move |conn, now| repo::orders::insert_order(conn, &order, now));
            let (stored, created) = backroom_shared::deadline::scope(deadline, insert).await?;
            if created {
                tracing::info!(order = %stored.id, "order placed");
            }
            Ok((stored.id, saga.drive(stored.id).await?))
        })
        .await?;
        record("order", id);

        // When another worker drives the saga or a step waits for a retry,
        // keep checking until it is terminal or our time is up.
        loop {
            let (order, lines) = self.load(id).await?;
            let now = tokio::time::Instant::now();
            if order.state.is_terminal() || now >= give_up || driven == Driven::Crashed {
                return Ok(Response::new(order_to_proto(&order, &lines)));
            }
            let due_in = (order.next_attempt_at - self.store.now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(
                due_in
                    .clamp(Duration::from_millis(20), Duration::from_millis(500))
                    .min(give_up - now),
            )
            .await;
            driven = self.saga.drive(id).await?;
        }
    }

    #[instrument(skip_all, fields(order))]
    pub(super) async fn order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = GetOrder::try_from(request.into_inner())?;
        record("order", cmd.id);
        let (order, lines) = self
            .store
            .read(move |conn| {
                let found = repo::orders::find_with_lines(conn, cmd.id)?;
                // Another customer's order does not exist, as far as they know.
                order::visible(access, found).ok_or(Error::OrderNotFound(cmd.id))
            })
            .await?;
        Ok(Response::new(order_to_proto(&order, &lines)))
    }

    #[instrument(skip_all, fields(customer))]
    pub(super) async fn orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = ListOrders::try_from(request.into_inner())?;
        let named = cmd
            .customer
            .map(|customer| resolve_customer("customer", customer, access))
            .transpose()?;
        let customer = order::listed_customer(access, named).map_err(Error::from)?;
        if let Some(customer) = customer {
            record("customer", customer);
        }
        let (state, page, before) = (cmd.state, cmd.page.clone(), cmd.before);
        let found = self
            .store
            .read(move |conn| repo::orders::list(conn, customer, state, &page, before))
            .await?;
        let (found, next_page_token) = cmd.page.finish(found, |(order, _)| order.id.to_string());
        Ok(Response::new(pb::ListOrdersResponse {
            orders: found
                .iter()
                .map(|(order, lines)| order_to_proto(order, lines))
                .collect(),
            next_page_token,
        }))
    }
}
