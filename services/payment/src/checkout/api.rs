//! The tonic `CheckoutService`: validates a PlaceOrder, stores the order
//! (idempotently per customer and request id), drives its saga until it is
//! terminal or the caller's patience ends, and reads orders back.

use std::{collections::BTreeMap, time::Duration};

use backroom_proto::{
    account::v1::Address,
    common::v1::Money,
    payment::v1::{self as pb, checkout_service_server::CheckoutService},
};
use backroom_shared::{
    auth::Caller,
    clock::to_timestamp,
    errors::{FieldViolation, Violations, invalid_argument, with_reason},
    idempotency,
    paging::{PageRequest, fingerprint as page_fingerprint},
};
use prost::Message as _;
use tonic::{Code, Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use super::{
    repo::{self, LineRow, NewOrder, OrderError, OrderRow},
    saga::{Driven, Saga, State},
};
use crate::{
    DOMAIN,
    domain::{AccountRef, Currency, parse_name, payment_method_name},
};

/// Most lines in one order.
const MAX_LINES: usize = 100;
/// Most units of one line.
const MAX_QUANTITY: i64 = 10_000;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct CheckoutApi {
    saga: Saga,
    pool: backroom_shared::db::Pool,
    clock: backroom_shared::clock::SharedClock,
    payment: backroom_proto::payment::v1::payment_service_client::PaymentServiceClient<
        backroom_shared::client::TracedChannel,
    >,
}

fn validation(violations: Vec<FieldViolation>) -> Status {
    invalid_argument(DOMAIN, &violations)
}

/// The one mapping of order errors to statuses.
fn status(err: OrderError) -> Status {
    match err {
        OrderError::RequestIdReused => with_reason(
            Code::InvalidArgument,
            DOMAIN,
            "REQUEST_ID_REUSED",
            "request_id was already used for an order with different parameters",
            [("field".to_owned(), "request_id".to_owned())],
        ),
        OrderError::NotFound => order_not_found(),
        OrderError::Db(err) => err.into_status(DOMAIN),
    }
}

fn order_not_found() -> Status {
    with_reason(
        Code::NotFound,
        DOMAIN,
        "ORDER_NOT_FOUND",
        "no such order",
        [],
    )
}

fn payment_method_not_found(name: &str) -> Status {
    with_reason(
        Code::NotFound,
        DOMAIN,
        "PAYMENT_METHOD_NOT_FOUND",
        format!("{name} is not a payment method of this customer"),
        [("name".to_owned(), name.to_owned())],
    )
}

fn money(currency: &str, amount: Option<i64>) -> Option<Money> {
    amount.map(|amount_minor| Money {
        currency_code: currency.to_owned(),
        amount_minor,
    })
}

/// An order and its lines as the proto resource.
pub fn order_to_proto(order: &OrderRow, lines: &[LineRow]) -> pb::Order {
    let state = State::parse(&order.state).map_or(pb::OrderState::Unspecified, State::to_proto);
    let failure = order
        .failure_reason
        .as_ref()
        .map(|reason| pb::OrderFailure {
            reason: reason.clone(),
            message: order.failure_message.clone().unwrap_or_default(),
            metadata: order
                .failure_metadata
                .as_deref()
                .and_then(|json| serde_json::from_str::<BTreeMap<String, String>>(json).ok())
                .unwrap_or_default()
                .into_iter()
                .collect(),
        });
    pb::Order {
        name: format!("orders/{}", order.id),
        customer: format!("accounts/{}", order.customer_id),
        lines: lines
            .iter()
            .map(|line| pb::OrderLine {
                sku: line.sku.clone(),
                display_name: line.display_name.clone(),
                quantity: line.quantity,
                unit_price: money(&order.currency_code, line.unit_price_minor),
                line_total: money(&order.currency_code, line.line_total_minor),
            })
            .collect(),
        shipping_address: order.shipping_address.clone(),
        shipping_address_snapshot: order
            .shipping_address_snapshot
            .as_deref()
            .and_then(|bytes| Address::decode(bytes).ok()),
        payment_method: order.payment_method.clone(),
        currency_code: order.currency_code.clone(),
        subtotal: money(&order.currency_code, order.subtotal_minor),
        shipping: money(&order.currency_code, order.shipping_minor),
        total: money(&order.currency_code, order.total_minor),
        shipping_zone: order.shipping_zone.clone(),
        state: state as i32,
        failure,
        payment_intent: order.payment_intent.clone().unwrap_or_default(),
        reservation: order.reservation.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(order.created_at)),
        update_time: Some(to_timestamp(order.updated_at)),
    }
}

/// A validated PlaceOrder.
struct Placement {
    customer: Uuid,
    request_id: Uuid,
    lines: Vec<(String, i64)>,
    payment_method: Uuid,
    shipping_address: String,
    currency: Currency,
}

fn parse_place_order(req: &pb::PlaceOrderRequest, caller: &Caller) -> Result<Placement, Status> {
    let mut violations = Violations::default();
    let customer = violations.check(AccountRef::parse("customer", &req.customer));
    let request_id = if req.request_id.is_empty() {
        violations.push("request_id", "is required for PlaceOrder");
        None
    } else {
        violations.check(
            Uuid::try_parse(&req.request_id)
                .map_err(|_| FieldViolation::new("request_id", "must be a UUID")),
        )
    };
    if req.lines.is_empty() || req.lines.len() > MAX_LINES {
        violations.push("lines", format!("must hold 1–{MAX_LINES} lines"));
    }
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, line) in req.lines.iter().enumerate().take(MAX_LINES) {
        let sku = line.sku.trim();
        if sku.is_empty() || sku.len() > 64 {
            violations.push(
                format!("lines[{i}].sku"),
                "is required (at most 64 characters)",
            );
        } else if lines.iter().any(|(s, _): &(String, i64)| s == sku) {
            violations.push(format!("lines[{i}].sku"), "appears twice; merge the lines");
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            violations.push(
                format!("lines[{i}].quantity"),
                format!("must be 1–{MAX_QUANTITY}"),
            );
        }
        lines.push((sku.to_owned(), line.quantity));
    }
    let payment_method = violations.check(parse_name(
        "payment_method",
        "paymentMethods",
        &req.payment_method,
    ));
    let currency = violations.check(Currency::parse("currency_code", &req.currency_code));
    violations.finish().map_err(validation)?;
    let (Some(customer), Some(request_id), Some(payment_method), Some(currency)) =
        (customer, request_id, payment_method, currency)
    else {
        unreachable!("no violations means every field parsed");
    };
    let customer = customer
        .resolve("customer", caller)
        .map_err(|v| validation(vec![v]))?;
    // The address must be the customer's: `accounts/{customer}/addresses/{id}`.
    let address_ok = req
        .shipping_address
        .strip_prefix(&format!("accounts/{customer}/addresses/"))
        .or_else(|| {
            req.shipping_address
                .strip_prefix("accounts/me/addresses/")
                .filter(|_| caller.account_id() == Some(customer))
        })
        .is_some_and(|id| Uuid::try_parse(id).is_ok());
    if !address_ok {
        return Err(validation(vec![FieldViolation::new(
            "shipping_address",
            "must be accounts/{customer}/addresses/{uuid} of the ordering customer",
        )]));
    }
    let address_id = req.shipping_address.rsplit('/').next().unwrap_or_default();
    Ok(Placement {
        customer,
        request_id,
        lines,
        payment_method,
        shipping_address: format!("accounts/{customer}/addresses/{address_id}"),
        currency,
    })
}

impl CheckoutApi {
    /// The API over `saga`, reading payment methods through `payment` (the
    /// caller's own token is forwarded: it proves the card is theirs).
    pub fn new(
        saga: Saga,
        pool: backroom_shared::db::Pool,
        clock: backroom_shared::clock::SharedClock,
        payment: backroom_proto::payment::v1::payment_service_client::PaymentServiceClient<
            backroom_shared::client::TracedChannel,
        >,
    ) -> Self {
        Self {
            saga,
            pool,
            clock,
            payment,
        }
    }

    async fn load(&self, id: Uuid) -> Result<(OrderRow, Vec<LineRow>), Status> {
        self.pool
            .run(move |conn| {
                let order = repo::load(conn, id)?;
                let lines = repo::lines(conn, id)?;
                Ok::<_, OrderError>((order, lines))
            })
            .await
            .map_err(status)
    }

    /// Checks the payment method belongs to the customer, with the caller's
    /// token (a customer may only read their own cards).
    async fn check_payment_method(
        &self,
        caller: &Caller,
        customer: Uuid,
        id: Uuid,
    ) -> Result<(), Status> {
        let name = payment_method_name(id);
        let mut request = Request::new(pb::GetPaymentMethodRequest { name: name.clone() });
        let bearer = format!("Bearer {}", caller.token())
            .parse()
            .map_err(|_| Status::unauthenticated("token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        match self.payment.clone().get_payment_method(request).await {
            Ok(method) if method.get_ref().customer == format!("accounts/{customer}") => Ok(()),
            Ok(_) => Err(payment_method_not_found(&name)),
            Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => {
                Err(payment_method_not_found(&name))
            }
            Err(status) => Err(status),
        }
    }
}

#[tonic::async_trait]
impl CheckoutService for CheckoutApi {
    #[instrument(skip_all)]
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        // How long this call may wait for the saga: its deadline (minus a
        // margin to answer in time), at most the configured cap.
        let wait = backroom_shared::deadline::remaining()
            .map(|left| left.saturating_sub(Duration::from_millis(200)))
            .unwrap_or(self.saga.config().place_order_wait)
            .min(self.saga.config().place_order_wait);
        let req = request.into_inner();
        let placement = parse_place_order(&req, &caller)?;
        caller.require_owner_or_admin(placement.customer)?;
        self.check_payment_method(&caller, placement.customer, placement.payment_method)
            .await?;

        let fingerprint = idempotency::fingerprint(&pb::PlaceOrderRequest {
            customer: format!("accounts/{}", placement.customer),
            shipping_address: placement.shipping_address.clone(),
            request_id: String::new(),
            ..req.clone()
        });
        let now = self.clock.now();
        let order_id = Uuid::now_v7();
        let order = NewOrder {
            id: order_id,
            customer_id: placement.customer,
            request_id: placement.request_id,
            fingerprint,
            shipping_address: placement.shipping_address.clone(),
            payment_method: payment_method_name(placement.payment_method),
            currency_code: placement.currency.code().to_owned(),
            state: State::Pending.as_str().to_owned(),
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
        };
        let lines: Vec<LineRow> = placement
            .lines
            .iter()
            .zip(0..)
            .map(|((sku, quantity), position)| LineRow {
                order_id,
                position,
                sku: sku.clone(),
                quantity: *quantity,
                display_name: String::new(),
                unit_price_minor: None,
                line_total_minor: None,
            })
            .collect();
        let (stored, created) = self
            .pool
            .run(move |conn| repo::insert_order(conn, &order, &lines))
            .await
            .map_err(status)?;
        if created {
            tracing::info!(order = %stored.id, "order placed");
        }

        // Drive the saga; when another worker drives it or a step waits for
        // a retry, keep checking until it is terminal or our time is up.
        let id = stored.id;
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let driven = self.saga.drive(id).await.map_err(status)?;
            let (order, lines) = self.load(id).await?;
            let terminal = State::parse(&order.state).is_some_and(State::is_terminal);
            let now = tokio::time::Instant::now();
            if terminal || now >= give_up || driven == Driven::Crashed {
                return Ok(Response::new(order_to_proto(&order, &lines)));
            }
            let due_in = (order.next_attempt_at - self.clock.now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(
                due_in
                    .clamp(Duration::from_millis(20), Duration::from_millis(500))
                    .min(give_up - now),
            )
            .await;
        }
    }

    #[instrument(skip_all)]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let id = parse_name("name", "orders", &req.name).map_err(|v| validation(vec![v]))?;
        let (order, lines) = self.load(id).await?;
        // Another customer's order does not exist, as far as they know.
        if !(caller.is_admin() || caller.account_id() == Some(order.customer_id)) {
            return Err(order_not_found());
        }
        Ok(Response::new(order_to_proto(&order, &lines)))
    }

    #[instrument(skip_all)]
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let customer = if req.customer.is_empty() {
            None
        } else {
            violations.check(AccountRef::parse("customer", &req.customer))
        };
        let state = match pb::OrderState::try_from(req.state) {
            Ok(pb::OrderState::Unspecified) => None,
            Ok(state) => Some(state),
            Err(_) => {
                violations.push("state", "unknown state");
                None
            }
        };
        let page = violations.check(
            PageRequest::parse(
                req.page_size,
                &req.page_token,
                page_fingerprint(&[&req.customer, &req.state.to_string()]),
            )
            .map_err(|mut v| v.remove(0)),
        );
        violations.finish().map_err(validation)?;
        let Some(page) = page else {
            unreachable!("no violations means the page parsed");
        };
        let customer = match customer {
            Some(customer) => Some(customer.resolve("customer", &caller).map_err(|_| {
                validation(vec![FieldViolation::new(
                    "customer",
                    "accounts/me needs a person's token",
                )])
            })?),
            None => None,
        };
        // Customers see only their own orders; admins see everyone's.
        let customer = if caller.is_admin() {
            customer
        } else {
            let own = caller.account_id().ok_or_else(|| {
                with_reason(
                    Code::PermissionDenied,
                    DOMAIN,
                    "ACCESS_DENIED",
                    "only accounts list orders",
                    [("required".to_owned(), "owner or role admin".to_owned())],
                )
            })?;
            if customer.is_some_and(|c| c != own) {
                return Err(with_reason(
                    Code::PermissionDenied,
                    DOMAIN,
                    "ACCESS_DENIED",
                    "customers list only their own orders",
                    [("required".to_owned(), "owner or role admin".to_owned())],
                ));
            }
            Some(own)
        };
        let state = state.map(|s| {
            s.as_str_name()
                .trim_start_matches("ORDER_STATE_")
                .to_owned()
        });
        let before = page
            .after
            .as_deref()
            .map(|after| {
                Uuid::try_parse(after).map_err(|_| {
                    validation(vec![FieldViolation::new(
                        "page_token",
                        "is not a token this API issued",
                    )])
                })
            })
            .transpose()?;
        let lookup = page.clone();
        let rows = self
            .pool
            .run(move |conn| {
                let orders = repo::list_orders(conn, customer, state.as_deref(), &lookup, before)?;
                orders
                    .into_iter()
                    .map(|order| {
                        let lines = repo::lines(conn, order.id)?;
                        Ok((order, lines))
                    })
                    .collect::<Result<Vec<_>, OrderError>>()
            })
            .await
            .map_err(status)?;
        let (rows, next_page_token) = page.finish(rows, |(order, _)| order.id.to_string());
        Ok(Response::new(pb::ListOrdersResponse {
            orders: rows
                .iter()
                .map(|(order, lines)| order_to_proto(order, lines))
                .collect(),
            next_page_token,
        }))
    }
}
