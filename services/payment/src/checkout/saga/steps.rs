//! The forward steps of the saga, one function per state: check the
//! account and address and quote (PENDING), reserve (RESERVING), create and
//! confirm the payment (AUTHORIZING), re-check the authorization and commit
//! the stock — the pivot (COMMITTING), capture (CAPTURING).

use backroom_proto::{
    account::v1 as account_pb, common::v1::Money as ProtoMoney, inventory::v1 as inventory_pb,
    payment::v1 as pb,
};
use backroom_shared::{
    auth::audience,
    errors::reason_of,
    money::{MAX_AMOUNT, Money},
};
use chrono::DateTime;
use prost::Message as _;
use tonic::{Code, Status};
use tracing::instrument;

use super::{
    Saga, State,
    remote::step_request_id,
    state::{Failure, StepError},
};
use crate::{
    checkout::{
        order::{Order, OrderLine, Progress, ReservationName},
        repo,
    },
    domain::{IntentId, OrderId},
};

/// Whether a refused capture is definitive: the payment service looked at
/// the intent and said no (gone, expired, not capturable, unknown). Anything
/// else may pass and is retried, boundedly.
fn capture_refused(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::NotFound
            | Code::InvalidArgument
            | Code::OutOfRange
            | Code::AlreadyExists
    )
}

/// The order's failure when the payment service definitively refused to
/// capture `intent`: CAPTURE_REFUSED, with the refusal's reason (`refusal`)
/// and metadata.
fn capture_refusal(status: &Status, intent: IntentId) -> Failure {
    let refusal = reason_of(status).unwrap_or_else(|| format!("{:?}", status.code()));
    let mut failure = Failure::from_status(status, &refusal);
    failure.metadata.insert("refusal".to_owned(), refusal);
    failure
        .metadata
        .insert("payment_intent".to_owned(), intent.name());
    failure.reason = "CAPTURE_REFUSED".to_owned();
    failure.message = format!("the payment cannot be captured: {}", status.message());
    failure
}

/// The order's discount codes as the inventory service takes them.
fn discount_codes(order: &Order) -> Vec<String> {
    order
        .discount_codes
        .iter()
        .map(|code| code.as_str().to_owned())
        .collect()
}

/// A definitive refusal of a step's call fails the order with its reason
/// (`fallback` when it carries none).
fn business(fallback: &'static str) -> impl Fn(Status) -> StepError {
    move |status| StepError::Business(Failure::from_status(&status, fallback))
}

impl Saga {
    /// The order's lines, from the payment schema.
    async fn lines(&self, order: &Order) -> Result<Vec<OrderLine>, StepError> {
        let order = order.clone();
        Ok(self
            .db(move |conn| repo::orders::lines(conn, &order))
            .await?)
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn check_and_quote(&self, order: &Order) -> Result<(), StepError> {
        let downstream = &self.inner.downstream;
        let account = self
            .remote(
                &downstream.account,
                audience::ACCOUNT,
                account_pb::GetAccountRequest {
                    name: order.customer.name(),
                },
                |mut client, request| async move { client.get_account(request).await },
            )
            .await?
            .map_err(business("ACCOUNT_NOT_FOUND"))?;
        if account.state != account_pb::AccountState::Active as i32 {
            return Err(StepError::Business(Failure::new(
                "ACCOUNT_DISABLED",
                "the account is disabled",
            )));
        }
        let address = self
            .remote(
                &downstream.account,
                audience::ACCOUNT,
                account_pb::GetAddressRequest {
                    name: order.shipping_address.as_str().to_owned(),
                },
                |mut client, request| async move { client.get_address(request).await },
            )
            .await?
            .map_err(business("ADDRESS_NOT_FOUND"))?;
        let lines = self.lines(order).await?;
        let quote = self
            .remote(
                &downstream.inventory,
                audience::INVENTORY,
                inventory_pb::QuoteOrderRequest {
                    lines: lines
                        .iter()
                        .map(|line| inventory_pb::LineItem {
                            sku: line.sku.as_str().to_owned(),
                            quantity: line.quantity.get(),
                        })
                        .collect(),
                    destination_country_code: address.country_code.clone(),
                    destination_postal_code: address.postal_code.clone(),
                    currency_code: order.currency.code().to_owned(),
                    discount_codes: discount_codes(order),
                },
                |mut client, request| async move { client.quote_order(request).await },
            )
            .await?
            .map_err(business("QUOTE_FAILED"))?;
        self.fault_after_call(State::Pending)?;
        // One payment collects at most MAX_AMOUNT: a dearer order fails
        // here, with its reason, instead of at the payment intent.
        let total = quote.total.as_ref().map_or(0, |m| m.amount_minor);
        if total > MAX_AMOUNT {
            let mut failure = Failure::new(
                "ORDER_TOO_LARGE",
                format!(
                    "the order's total is more than one payment may collect ({MAX_AMOUNT} minor units)"
                ),
            );
            failure
                .metadata
                .insert("total_minor".into(), total.to_string());
            failure
                .metadata
                .insert("max_minor".into(), MAX_AMOUNT.to_string());
            return Err(StepError::Business(failure));
        }
        // Quoted in the order's currency, as asked.
        let amount = |m: &Option<ProtoMoney>| {
            m.as_ref()
                .map(|m| Money::new(order.currency, m.amount_minor))
        };
        let priced_lines = lines
            .into_iter()
            .map(|line| {
                let quoted = quote.lines.iter().find(|q| q.sku == line.sku.as_str());
                OrderLine {
                    display_name: quoted.map(|q| q.display_name.clone()).unwrap_or_default(),
                    unit_price: quoted.and_then(|q| amount(&q.unit_price)),
                    line_total: quoted.and_then(|q| amount(&q.line_total)),
                    discount: quoted.and_then(|q| amount(&q.discount)),
                    ..line
                }
            })
            .collect();
        let progress = Progress {
            shipping_address_snapshot: Some(address.encode_to_vec()),
            subtotal: amount(&quote.subtotal),
            shipping: amount(&quote.shipping),
            total: amount(&quote.total),
            shipping_zone: Some(quote.shipping_zone.clone()),
            priced_lines,
            discount: amount(&quote.discount),
            tax: amount(&quote.tax),
            quote_snapshot: Some(quote.encode_to_vec()),
            ..Progress::default()
        };
        self.transition(order.id, (State::Pending, State::Reserving), progress)
            .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn reserve(&self, order: &Order) -> Result<(), StepError> {
        let lines = self.lines(order).await?;
        let ttl =
            prost_types::Duration::try_from(self.inner.config.reservation_ttl).unwrap_or_default();
        let reservation = self
            .remote(
                &self.inner.downstream.inventory,
                audience::INVENTORY,
                inventory_pb::ReserveStockRequest {
                    order_id: order.id.to_string(),
                    lines: lines
                        .iter()
                        .map(|line| inventory_pb::ReservationLine {
                            sku: line.sku.as_str().to_owned(),
                            quantity: line.quantity.get(),
                            ..Default::default()
                        })
                        .collect(),
                    ttl: Some(ttl),
                    request_id: step_request_id(order.id, "reserve"),
                    discount_codes: discount_codes(order),
                    customer: order.customer.name(),
                },
                |mut client, request| async move { client.reserve_stock(request).await },
            )
            .await?
            .map_err(business("INSUFFICIENT_STOCK"))?;
        self.fault_after_call(State::Reserving)?;
        let progress = Progress {
            reservation: Some(ReservationName::from_stored(reservation.name)),
            ..Progress::default()
        };
        if !self
            .transition(order.id, (State::Reserving, State::Authorizing), progress)
            .await?
        {
            self.release_if_abandoned(order.id).await?;
        }
        Ok(())
    }

    /// After a reservation this worker made could not be recorded (the
    /// order moved on elsewhere — its lease lapsed and another worker took
    /// over): if that worker compensated, its release may have come before
    /// this reservation, so release it again; nothing else would until it
    /// expires.
    async fn release_if_abandoned(&self, id: OrderId) -> Result<(), StepError> {
        let order = self.db(move |conn| repo::orders::load(conn, id)).await?;
        if !matches!(order.state, State::Compensating | State::Failed) {
            return Ok(());
        }
        let released = self
            .remote(
                &self.inner.downstream.inventory,
                audience::INVENTORY,
                inventory_pb::ReleaseReservationRequest {
                    name: order.reservation_or_default().as_str().to_owned(),
                    request_id: step_request_id(order.id, "release-abandoned"),
                },
                |mut client, request| async move { client.release_reservation(request).await },
            )
            .await?;
        if let Err(status) = released {
            tracing::warn!(code = ?status.code(), status_message = status.message(), "the abandoned reservation was not released; it expires");
        }
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn authorize(&self, order: &Order) -> Result<(), StepError> {
        let payment = &self.inner.downstream.payment;
        // The intent is created first and remembered, then confirmed: a
        // crash in between leaves an intent we know about and can cancel.
        let intent = match order.payment_intent {
            Some(intent) => intent,
            None => {
                let created = self
                    .remote(
                        payment,
                        audience::PAYMENT,
                        pb::CreatePaymentIntentRequest {
                            customer: order.customer.name(),
                            amount: Some(order.total_or_zero().into()),
                            capture_method: pb::CaptureMethod::Manual as i32,
                            payment_method: order.payment_method.name(),
                            confirm: false,
                            description: format!("order {}", order.id),
                            metadata: [("order".to_owned(), order.id.name())].into(),
                            request_id: step_request_id(order.id, "create-intent"),
                            // The order's payment: only this saga may act on it.
                            order: order.id.name(),
                            tax: order.tax.map(Into::into),
                        },
                        |mut client, request| async move {
                            client.create_payment_intent(request).await
                        },
                    )
                    .await?
                    .map_err(business("PAYMENT_FAILED"))?;
                let intent = IntentId::parse("name", &created.name).map_err(|_| {
                    StepError::Business(Failure::new(
                        "PAYMENT_FAILED",
                        "the payment service named no payment intent",
                    ))
                })?;
                let (id, worker, now) = (order.id, self.inner.worker, self.now());
                let progress = Progress {
                    payment_intent: Some(intent),
                    ..Progress::default()
                };
                let recorded = self
                    .db(move |conn| {
                        repo::leases::advance(
                            conn,
                            id,
                            worker,
                            (State::Authorizing, State::Authorizing),
                            &progress,
                            now,
                        )
                    })
                    .await?;
                if !recorded {
                    // The order moved on elsewhere (compensated, say): an
                    // intent it does not know of must never be confirmed.
                    tracing::warn!(intent = %intent, "order moved on elsewhere; the intent stays unconfirmed");
                    return Ok(());
                }
                intent
            }
        };
        let confirmed = self
            .remote(
                payment,
                audience::PAYMENT,
                pb::ConfirmPaymentIntentRequest {
                    name: intent.name(),
                    payment_method: String::new(),
                    request_id: step_request_id(order.id, "confirm"),
                },
                |mut client, request| async move { client.confirm_payment_intent(request).await },
            )
            .await?
            .map_err(business("PAYMENT_FAILED"))?;
        if confirmed.status != pb::PaymentIntentStatus::RequiresCapture as i32 {
            return Err(StepError::Business(Failure::new(
                "PAYMENT_FAILED",
                "the payment was not authorized",
            )));
        }
        self.fault_after_call(State::Authorizing)?;
        self.transition(
            order.id,
            (State::Authorizing, State::Committing),
            Progress::default(),
        )
        .await?;
        Ok(())
    }

    /// Right before the pivot: the order's payment, read again, must be a live
    /// authorization (REQUIRES_CAPTURE) of the whole total that does not
    /// expire within the margin. Anything else — voided, captured, partly
    /// capturable, expiring — fails the order (compensation releases the
    /// stock and cancels what is left): stock is never committed without a
    /// payment the saga can capture.
    async fn check_authorization(&self, order: &Order) -> Result<(), StepError> {
        let lost = |cause: &str, status: &str, intent: &str| {
            tracing::warn!(
                cause,
                status,
                payment_intent = intent,
                "the order's authorization is gone before the pivot; failing the order"
            );
            StepError::Business(Failure {
                reason: "AUTHORIZATION_LOST".to_owned(),
                message: "the payment authorization is no longer valid; the order was not \
                          committed and nothing was charged"
                    .to_owned(),
                metadata: [
                    ("cause".to_owned(), cause.to_owned()),
                    ("status".to_owned(), status.to_owned()),
                    ("payment_intent".to_owned(), intent.to_owned()),
                ]
                .into(),
            })
        };
        let Some(id) = order.payment_intent else {
            return Err(lost("missing", "", ""));
        };
        let name = id.name();
        let intent = match self.read_intent(id).await? {
            Ok(intent) => intent,
            Err(status) => {
                return Err(lost(
                    "unreadable",
                    &reason_of(&status).unwrap_or_else(|| format!("{:?}", status.code())),
                    &name,
                ));
            }
        };
        let status = pb::PaymentIntentStatus::try_from(intent.status)
            .unwrap_or(pb::PaymentIntentStatus::Unspecified);
        let whole = Some(order.total_or_zero().into());
        let good_until = self.now() + self.inner.config.authorization_margin;
        let expires = intent
            .authorization_expire_time
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?));
        let cause = if status != pb::PaymentIntentStatus::RequiresCapture {
            "not_authorized"
        } else if intent.amount_capturable != whole {
            "amount"
        } else if expires.is_none_or(|expires| expires <= good_until) {
            "expiring"
        } else {
            return Ok(());
        };
        Err(lost(cause, status.as_str_name(), &name))
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn commit(&self, order: &Order) -> Result<(), StepError> {
        self.check_authorization(order).await?;
        self.remote(
            &self.inner.downstream.inventory,
            audience::INVENTORY,
            inventory_pb::CommitReservationRequest {
                name: order.reservation_or_default().as_str().to_owned(),
                request_id: step_request_id(order.id, "commit"),
            },
            |mut client, request| async move { client.commit_reservation(request).await },
        )
        .await?
        .map_err(business("RESERVATION_EXPIRED"))?;
        self.fault_after_call(State::Committing)?;
        self.transition(
            order.id,
            (State::Committing, State::Capturing),
            Progress::default(),
        )
        .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(order = %order.id))]
    pub(super) async fn capture(&self, order: &Order) -> Result<(), StepError> {
        let Some(intent) = order.payment_intent else {
            return Err(StepError::Attention(Failure::new(
                "CAPTURE_REFUSED",
                "the order has no payment intent to capture",
            )));
        };
        let captured = self
            .remote(
                &self.inner.downstream.payment,
                audience::PAYMENT,
                pb::CapturePaymentIntentRequest {
                    name: intent.name(),
                    amount_to_capture: None,
                    request_id: step_request_id(order.id, "capture"),
                },
                |mut client, request| async move { client.capture_payment_intent(request).await },
            )
            .await?;
        match captured {
            Ok(_) => {}
            // Definitive: unless the payment was captured after all (an
            // earlier capture whose answer and request id were lost), the
            // order needs attention now; retrying cannot help.
            Err(status) if capture_refused(&status) => {
                if self.captured(order, intent).await? {
                    tracing::warn!("capture refused but the payment is captured: completing");
                } else {
                    return Err(StepError::Attention(capture_refusal(&status, intent)));
                }
            }
            // Refused for a reason that may pass (a token, a fault on our
            // side): retried like an outage, boundedly.
            Err(status) => {
                tracing::error!(code = ?status.code(), status_message = status.message(), "capture refused after the pivot; retrying");
                return Err(StepError::Transient(status));
            }
        }
        self.fault_after_call(State::Capturing)?;
        self.transition(
            order.id,
            (State::Capturing, State::Completed),
            Progress::default(),
        )
        .await?;
        Ok(())
    }

    /// The payment intent, read through PaymentService with the service's
    /// token (transient failures: [`StepError::Transient`]).
    async fn read_intent(
        &self,
        intent: IntentId,
    ) -> Result<Result<pb::PaymentIntent, Status>, StepError> {
        self.remote(
            &self.inner.downstream.payment,
            audience::PAYMENT,
            pb::GetPaymentIntentRequest {
                name: intent.name(),
            },
            |mut client, request| async move { client.get_payment_intent(request).await },
        )
        .await
    }

    /// Whether the order's payment already holds its whole total, captured.
    async fn captured(&self, order: &Order, intent: IntentId) -> Result<bool, StepError> {
        Ok(self.read_intent(intent).await?.is_ok_and(|paid| {
            paid.status == pb::PaymentIntentStatus::Succeeded as i32
                && paid.amount_received == Some(order.total_or_zero().into())
        }))
    }
}
