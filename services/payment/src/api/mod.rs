//! The tonic `PaymentService`: the only place proto ⇄ domain conversions
//! and `Error` → `Status` happen (`impl From<Error> for Status`, one
//! exhaustive match, which checkout's API uses too).
//!
//! Every handler reads the same way: who (the caller's `Access`, and
//! whether it is the checkout saga) → parse (a command type per request,
//! `TryFrom` the proto message, every bad field named at once) → act
//! through the domain in a [`Store`] transaction → convert.
//!
//! Requests carrying card data are never formatted with `{:?}`: handlers
//! are instrumented with `skip_all`, and the card is parsed at once into
//! [`crate::domain::card::CardInput`], whose `Debug` redacts the PAN and
//! CVC.
//!
//! Layout: this module (the service impl that delegates, the error
//! mapping, helpers every resource uses), `payment_methods`, `intents`,
//! `refunds`, `ledger`.

mod intents;
mod ledger;
mod payment_methods;
mod refunds;

pub(crate) use intents::intent_to_proto;

/// The wire form of a refund.
pub(crate) fn refund_to_proto(
    refund: &crate::domain::refunds::Refund,
) -> backroom_proto::payment::v1::Refund {
    refund.into()
}

use backroom_proto::{
    common::v1::Money as ProtoMoney,
    payment::v1::{self as pb, payment_service_server::PaymentService},
};
use backroom_shared::{
    auth::{Caller, Principal},
    catalog::sku_list,
    errors::{
        FieldViolation, Violations, invalid_argument, invalid_argument_with_reason, with_reason,
    },
    idempotency::{self, IdempotencyKey},
    money::Money,
    store::Store,
};
use diesel::{Connection as _, PgConnection};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{
    DOMAIN, Deps,
    domain::{
        Error,
        intents::{Engine, FailedAttempt, OrderAuthority},
        payment_methods::MAX_PAYMENT_METHODS,
        values::AMOUNTS,
    },
};

/// The service implementation.
#[derive(Debug, Clone)]
pub struct PaymentApi {
    deps: Deps,
}

impl PaymentApi {
    /// Wraps the service's dependencies.
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    fn store(&self) -> &Store {
        &self.deps.store
    }

    /// Whether `caller` is the checkout saga: this service's own principal,
    /// with role service.
    fn authority(&self, caller: &Caller) -> OrderAuthority {
        match (caller.claims.principal(), &self.deps.checkout_principal) {
            (Some(Principal::Service(id)), Some(ours)) if caller.is_service() && id == *ours => {
                OrderAuthority::Checkout
            }
            _ => OrderAuthority::Other,
        }
    }

    /// Runs `work` in a transaction guarded by the request id (AIP-155),
    /// with the state machine's [`Engine`]. A failed authorization attempt
    /// that `work` reports is persisted in the same transaction after the
    /// refused mutation's own writes were rolled back, so the intent shows
    /// the decline while the request's outcome (the error) is what a replay
    /// returns.
    // hoist to shared: `Store::idempotent` with a hook that writes after the
    // refused mutation rolled back (only payment needs it so far).
    async fn transition<R, F>(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: Vec<u8>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        F: FnOnce(&mut PgConnection, &Engine, &mut Option<FailedAttempt>) -> Result<R, Error>
            + Send
            + 'static,
    {
        let now = self.store().now();
        let engine = self.deps.engine(now);
        self.store()
            .pool()
            .run(move |conn| {
                conn.transaction::<_, Error, _>(|conn| {
                    let mut failed = None;
                    let outcome =
                        idempotency::run(conn, DOMAIN, key.as_ref(), &fingerprint, now, |conn| {
                            work(conn, &engine, &mut failed).map_err(Status::from)
                        });
                    if let Some(attempt) = failed {
                        attempt.persist(conn)?;
                    }
                    Ok(outcome)
                })
            })
            .await
            .map_err(Status::from)?
    }
}

/// A mutation's `request_id` (AIP-155): `Some(None)` when empty
/// (de-duplication off); a violation of `request_id` when it is not a UUID.
pub(crate) fn request_id(violations: &mut Violations, raw: &str) -> Option<Option<Uuid>> {
    // The shared parser words the violation; its scope is added later,
    // once the caller is known.
    violations.check(IdempotencyKey::parse(raw, "", None))?;
    Some(Uuid::try_parse(raw).ok())
}

/// The idempotency key of a parsed request id, scoped to `caller`.
// hoist to shared: `IdempotencyKey::new(request_id, method, caller)` for an
// id parsed already.
pub(crate) fn idempotency_key(
    caller: &Caller,
    method: &'static str,
    request_id: Option<Uuid>,
) -> Result<Option<IdempotencyKey>, Error> {
    Ok(request_id
        .map(|id| IdempotencyKey::parse(&id.to_string(), method, Some(caller)))
        .transpose()?
        .flatten())
}

/// A Money field of 1–`MAX_AMOUNT` minor units, recording its violations.
pub(crate) fn amount(violations: &mut Violations, field: &str, raw: &ProtoMoney) -> Option<Money> {
    match Money::parse(field, raw, AMOUNTS) {
        Ok(money) => Some(money),
        Err(found) => {
            violations.extend(found);
            None
        }
    }
}

/// An optional Money field of 1–`MAX_AMOUNT` minor units.
fn optional_amount(
    violations: &mut Violations,
    field: &str,
    raw: Option<&ProtoMoney>,
) -> Option<Option<Money>> {
    match raw {
        None => Some(None),
        Some(raw) => amount(violations, field, raw).map(Some),
    }
}

/// An optional name field (`""`: none), parsed by `parse`.
fn optional<T>(
    violations: &mut Violations,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, FieldViolation>,
) -> Option<Option<T>> {
    if raw.is_empty() {
        Some(None)
    } else {
        violations.check(parse(raw)).map(Some)
    }
}

/// Records the resource a call acts on in the RPC's span (declared empty
/// by its `#[instrument]`, filled once the request parsed).
pub(crate) fn record(field: &'static str, value: impl std::fmt::Display) {
    tracing::Span::current().record(field, tracing::field::display(value));
}

fn not_found(reason: &str, name: String) -> Status {
    with_reason(
        Code::NotFound,
        DOMAIN,
        reason,
        format!("{name} not found"),
        [("name".to_owned(), name)],
    )
}

fn precondition(reason: &str, message: String, metadata: Vec<(String, String)>) -> Status {
    with_reason(Code::FailedPrecondition, DOMAIN, reason, message, metadata)
}

/// The one mapping of domain errors to statuses; exhaustive on purpose.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Validation(violations) => invalid_argument(DOMAIN, &violations),
            Error::InvalidCardNumber(violations) => {
                invalid_argument_with_reason(DOMAIN, "INVALID_CARD_NUMBER", &violations)
            }
            Error::ExpiredCardInput(violations) => {
                invalid_argument_with_reason(DOMAIN, "EXPIRED_CARD", &violations)
            }
            Error::AccessDenied(denied) => denied.into_status(DOMAIN),
            Error::PaymentMethodLimitReached => precondition(
                "PAYMENT_METHOD_LIMIT_REACHED",
                format!("the customer already has {MAX_PAYMENT_METHODS} payment methods"),
                vec![],
            ),
            Error::PaymentMethodNotFound(id) => not_found("PAYMENT_METHOD_NOT_FOUND", id.name()),
            Error::PaymentIntentNotFound(id) => not_found("PAYMENT_INTENT_NOT_FOUND", id.name()),
            Error::RefundNotFound { intent, refund } => {
                not_found("REFUND_NOT_FOUND", refund.name_under(intent))
            }
            Error::LedgerAccountNotFound(code) => {
                not_found("LEDGER_ACCOUNT_NOT_FOUND", code.name())
            }
            Error::JournalNotFound(id) => not_found("JOURNAL_NOT_FOUND", id.name()),
            Error::OrderNotFound(id) => not_found("ORDER_NOT_FOUND", id.name()),
            Error::OrderRequestIdReused => with_reason(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used for an order with different parameters",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            Error::OrderNotShippable(state) => precondition(
                "ORDER_NOT_SHIPPABLE",
                format!("only a completed order ships; this one is {state}"),
                vec![("current_state".to_owned(), state.to_owned())],
            ),
            Error::ShipmentExceedsOrder(skus) => {
                let skus = sku_list(&skus);
                precondition(
                    "SHIPMENT_EXCEEDS_ORDER",
                    format!("more units than the order has left to ship: {skus}"),
                    vec![("skus".to_owned(), skus)],
                )
            }
            Error::NothingToShip => precondition(
                "NOTHING_TO_SHIP",
                "every unit of the order has shipped or is shipping".into(),
                vec![],
            ),
            Error::OrderNotCancelable(state) => precondition(
                "ORDER_NOT_CANCELABLE",
                format!("only a completed order is canceled; this one is {state}"),
                vec![("current_state".to_owned(), state.to_owned())],
            ),
            Error::NothingToCancel => precondition(
                "NOTHING_TO_CANCEL",
                "every unit of the order has shipped, is shipping or is canceled".into(),
                vec![],
            ),
            Error::OrderNotReturnable(state) => precondition(
                "ORDER_NOT_RETURNABLE",
                format!("only a completed order is returned; this one is {state}"),
                vec![("current_state".to_owned(), state.to_owned())],
            ),
            Error::ReturnExceedsShipped(skus) => {
                let skus = sku_list(&skus);
                precondition(
                    "RETURN_EXCEEDS_SHIPPED",
                    format!("more units than shipped and not yet returned: {skus}"),
                    vec![("skus".to_owned(), skus)],
                )
            }
            Error::NothingToReturn => precondition(
                "NOTHING_TO_RETURN",
                "every shipped unit of the order is returned or being returned".into(),
                vec![],
            ),
            Error::ReturnWindowClosed { closed_at } => precondition(
                "RETURN_WINDOW_CLOSED",
                format!("the return window closed at {}", closed_at.to_rfc3339()),
                vec![("closed_at".to_owned(), closed_at.to_rfc3339())],
            ),
            Error::ReturnNotFound { order, id } => {
                not_found("RETURN_NOT_FOUND", id.name_under(order))
            }
            Error::ReturnRequestIdReused => with_reason(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used for a return of this order with different parameters",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            Error::ReturnAlreadyReceived => precondition(
                "RETURN_ALREADY_RECEIVED",
                "the return was already received with other decisions".into(),
                vec![],
            ),
            Error::ReceiptMismatch(skus) => {
                let skus = sku_list(&skus);
                precondition(
                    "RECEIPT_MISMATCH",
                    format!(
                        "each line of the return must be decided once, restocked + written off = its units: {skus}"
                    ),
                    vec![("skus".to_owned(), skus)],
                )
            }
            Error::OrderNotRefundable(state) => precondition(
                "ORDER_NOT_REFUNDABLE",
                format!("only a completed order is refunded; this one is {state}"),
                vec![("current_state".to_owned(), state.to_owned())],
            ),
            Error::OrderRefundRequestIdReused => with_reason(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used for a refund of this order with different parameters",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            Error::CancellationRequestIdReused => with_reason(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used to cancel this order with different parameters",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            Error::ShipmentRequestIdReused => with_reason(
                Code::InvalidArgument,
                DOMAIN,
                "REQUEST_ID_REUSED",
                "request_id was already used for a shipment of this order with different parameters",
                [("field".to_owned(), "request_id".to_owned())],
            ),
            Error::ShipmentFailed(cause) => precondition(
                "SHIPMENT_FAILED",
                format!("inventory refused the shipment: {cause}"),
                vec![("cause".to_owned(), cause)],
            ),
            Error::ManagedByOrder { order, intent } => precondition(
                "INTENT_MANAGED_BY_ORDER",
                format!(
                    "{} is the payment of {}: only checkout acts on it",
                    intent.name(),
                    order.name()
                ),
                vec![
                    ("order".to_owned(), order.name()),
                    ("payment_intent".to_owned(), intent.name()),
                ],
            ),
            Error::PaymentMethodRequired => precondition(
                "PAYMENT_METHOD_REQUIRED",
                "the intent has no payment method; pass payment_method".into(),
                vec![],
            ),
            Error::InvalidState(current) => {
                let current = intents::status_to_proto(current).as_str_name();
                precondition(
                    "INVALID_STATE",
                    format!("not allowed while the intent is {current}"),
                    vec![("current_state".to_owned(), current.to_owned())],
                )
            }
            Error::AuthorizationExpired => precondition(
                "AUTHORIZATION_EXPIRED",
                "the authorization has expired".into(),
                vec![],
            ),
            Error::AmountExceedsCapturable { capturable } => invalid_argument_with_reason(
                DOMAIN,
                "AMOUNT_EXCEEDS_CAPTURABLE",
                &[FieldViolation::new(
                    "amount_to_capture.amount_minor",
                    format!("must be at most the capturable {}", capturable.minor()),
                )],
            ),
            Error::CurrencyMismatch { field } => invalid_argument_with_reason(
                DOMAIN,
                "CURRENCY_MISMATCH",
                &[FieldViolation::new(field, "must be the intent's currency")],
            ),
            Error::RefundExceedsCaptured { refundable } => precondition(
                "REFUND_EXCEEDS_CAPTURED",
                format!(
                    "at most {} minor units are left to refund",
                    refundable.minor()
                ),
                vec![(
                    "refundable_minor".to_owned(),
                    refundable.minor().to_string(),
                )],
            ),
            Error::Declined { kind, intent } => precondition(
                kind.reason(),
                kind.message().to_owned(),
                vec![
                    ("decline_code".to_owned(), kind.decline_code().to_owned()),
                    ("payment_intent".to_owned(), intent.name()),
                ],
            ),
            Error::ProcessorUnavailable { intent } => {
                let mut metadata = vec![("decline_code".to_owned(), "processing_error".to_owned())];
                if let Some(intent) = intent {
                    metadata.push(("payment_intent".to_owned(), intent.name()));
                }
                with_reason(
                    Code::Unavailable,
                    DOMAIN,
                    "PROCESSOR_ERROR",
                    "the payment processor failed; retry with the same request_id",
                    metadata,
                )
            }
            Error::Db(err) => err.into_status(DOMAIN),
        }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn attach_payment_method(
        &self,
        request: Request<pb::AttachPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        self.attach(request).await
    }

    async fn get_payment_method(
        &self,
        request: Request<pb::GetPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        self.get_method(request).await
    }

    async fn list_payment_methods(
        &self,
        request: Request<pb::ListPaymentMethodsRequest>,
    ) -> Result<Response<pb::ListPaymentMethodsResponse>, Status> {
        self.list_methods(request).await
    }

    async fn detach_payment_method(
        &self,
        request: Request<pb::DetachPaymentMethodRequest>,
    ) -> Result<Response<()>, Status> {
        self.detach(request).await
    }

    async fn create_payment_intent(
        &self,
        request: Request<pb::CreatePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        self.create_intent(request).await
    }

    async fn get_payment_intent(
        &self,
        request: Request<pb::GetPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        self.get_intent(request).await
    }

    async fn list_payment_intents(
        &self,
        request: Request<pb::ListPaymentIntentsRequest>,
    ) -> Result<Response<pb::ListPaymentIntentsResponse>, Status> {
        self.list_intents(request).await
    }

    async fn confirm_payment_intent(
        &self,
        request: Request<pb::ConfirmPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        self.confirm_intent(request).await
    }

    async fn capture_payment_intent(
        &self,
        request: Request<pb::CapturePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        self.capture_intent(request).await
    }

    async fn cancel_payment_intent(
        &self,
        request: Request<pb::CancelPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        self.cancel_intent(request).await
    }

    async fn create_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        self.refund(request).await
    }

    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        self.find_refund(request).await
    }

    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        self.refunds(request).await
    }

    async fn list_ledger_accounts(
        &self,
        request: Request<pb::ListLedgerAccountsRequest>,
    ) -> Result<Response<pb::ListLedgerAccountsResponse>, Status> {
        self.ledger_accounts(request).await
    }

    async fn get_ledger_account(
        &self,
        request: Request<pb::GetLedgerAccountRequest>,
    ) -> Result<Response<pb::LedgerAccount>, Status> {
        self.ledger_account(request).await
    }

    async fn get_journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Result<Response<pb::Journal>, Status> {
        self.journal(request).await
    }

    async fn list_journals(
        &self,
        request: Request<pb::ListJournalsRequest>,
    ) -> Result<Response<pb::ListJournalsResponse>, Status> {
        self.journals(request).await
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        self.ledger_entries(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_currencies() {
        let money = |currency: &str, amount_minor| ProtoMoney {
            currency_code: currency.to_owned(),
            amount_minor,
        };
        let mut v = Violations::default();
        assert!(amount(&mut v, "amount", &money("EUR", 100)).is_some());
        assert!(amount(&mut v, "amount", &money("XXX", 100)).is_none());
        assert!(amount(&mut v, "amount", &money("EUR", 0)).is_none());
        assert!(
            amount(
                &mut v,
                "amount",
                &money("EUR", crate::domain::values::MAX_AMOUNT + 1)
            )
            .is_none()
        );
        let fields: Vec<_> = v
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|f| f.field)
            .collect();
        assert_eq!(
            fields,
            [
                "amount.currency_code",
                "amount.amount_minor",
                "amount.amount_minor"
            ]
        );
    }
}
