//! CreatePaymentIntent, GetPaymentIntent, ListPaymentIntents,
//! ConfirmPaymentIntent, CapturePaymentIntent and CancelPaymentIntent:
//! parsing, conversion (the intent and its enums), and the handlers.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::{Access, AccountRef, Caller},
    clock::to_timestamp,
    errors::{FieldViolation, Violations},
    idempotency,
    money::{MAX_AMOUNT, Money},
    paging::page,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{PaymentApi, amount, idempotency_key, optional, optional_amount, record, request_id};
use crate::{
    db::repo,
    domain::{
        Error, IntentId, OrderId, PaymentMethodId,
        intents::{
            self, CancelIntent, CancellationReason, CaptureIntent, CaptureMethod, ConfirmIntent,
            CreateIntent, GetIntent, Intent, IntentStatus, ListIntents, Reach, resolve_customer,
        },
        values::{Metadata, parse_description},
    },
};

impl TryFrom<&pb::CreatePaymentIntentRequest> for CreateIntent {
    type Error = Error;

    fn try_from(req: &pb::CreatePaymentIntentRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let amount = match &req.amount {
            Some(money) => amount(&mut violations, "amount", money),
            None => {
                violations.push("amount", "is required");
                None
            }
        };
        let capture_method = match pb::CaptureMethod::try_from(req.capture_method) {
            Ok(pb::CaptureMethod::Unspecified | pb::CaptureMethod::Automatic) => {
                Some(CaptureMethod::Automatic)
            }
            Ok(pb::CaptureMethod::Manual) => Some(CaptureMethod::Manual),
            Err(_) => {
                violations.push("capture_method", "is not a known capture method");
                None
            }
        };
        let payment_method = optional(&mut violations, &req.payment_method, |raw| {
            PaymentMethodId::parse("payment_method", raw)
        });
        let description = violations.check(parse_description("description", &req.description));
        let metadata = Metadata::parse("metadata", &req.metadata, &mut violations);
        let order = optional(&mut violations, &req.order, |raw| {
            OrderId::parse("order", raw)
        });
        let request_id = request_id(&mut violations, &req.request_id);
        // The VAT the amount contains: 0–amount, in its currency.
        let tax = match (&req.tax, amount) {
            (None, Some(amount)) => Some(Money::zero(amount.currency())),
            (None, None) => None,
            (Some(raw), amount) => match Money::parse("tax", raw, 0..=MAX_AMOUNT) {
                Ok(tax) if amount.is_some_and(|a| a.currency() != tax.currency()) => {
                    violations.push("tax.currency_code", "must be the amount's currency");
                    None
                }
                Ok(tax) if amount.is_some_and(|a| tax.minor() > a.minor()) => {
                    violations.push("tax.amount_minor", "must not exceed the amount");
                    None
                }
                Ok(tax) => Some(tax),
                Err(found) => {
                    violations.extend(found);
                    None
                }
            },
        };
        let (
            customer,
            amount,
            capture_method,
            payment_method,
            description,
            metadata,
            order,
            request_id,
            tax,
        ) = violations.finish_with((
            customer,
            amount,
            capture_method,
            payment_method,
            description,
            metadata,
            order,
            request_id,
            tax,
        ))?;
        Ok(Self {
            customer,
            amount,
            capture_method,
            payment_method,
            description,
            metadata,
            order,
            tax,
            confirm: req.confirm,
            request_id,
        })
    }
}

impl TryFrom<pb::GetPaymentIntentRequest> for GetIntent {
    type Error = Error;

    fn try_from(req: pb::GetPaymentIntentRequest) -> Result<Self, Error> {
        Ok(Self {
            id: IntentId::parse("name", &req.name)?,
        })
    }
}

impl TryFrom<pb::ListPaymentIntentsRequest> for ListIntents {
    type Error = Error;

    fn try_from(req: pb::ListPaymentIntentsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = optional(&mut violations, &req.customer, |raw| {
            AccountRef::parse("customer", raw)
        });
        let status = violations.check(status_from_proto("status", req.status));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.customer, &req.status.to_string()],
        );
        let after = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
        let (customer, status, page, after) =
            violations.finish_with((customer, status, page, after))?;
        Ok(Self {
            customer,
            status,
            page,
            after: after.map(IntentId::from_uuid),
        })
    }
}

impl TryFrom<pb::ConfirmPaymentIntentRequest> for ConfirmIntent {
    type Error = Error;

    fn try_from(req: pb::ConfirmPaymentIntentRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let id = violations.check(IntentId::parse("name", &req.name));
        let payment_method = optional(&mut violations, &req.payment_method, |raw| {
            PaymentMethodId::parse("payment_method", raw)
        });
        let request_id = request_id(&mut violations, &req.request_id);
        let (id, payment_method, request_id) =
            violations.finish_with((id, payment_method, request_id))?;
        Ok(Self {
            id,
            payment_method,
            request_id,
        })
    }
}

impl TryFrom<&pb::CapturePaymentIntentRequest> for CaptureIntent {
    type Error = Error;

    fn try_from(req: &pb::CapturePaymentIntentRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let id = violations.check(IntentId::parse("name", &req.name));
        let amount = optional_amount(
            &mut violations,
            "amount_to_capture",
            req.amount_to_capture.as_ref(),
        );
        let request_id = request_id(&mut violations, &req.request_id);
        let (id, amount, request_id) = violations.finish_with((id, amount, request_id))?;
        Ok(Self {
            id,
            amount,
            request_id,
        })
    }
}

/// ORDER_FAILED is the checkout saga's reason (role service only);
/// AUTHORIZATION_EXPIRED the sweeper's: which reasons a caller may give
/// depends on who it is.
impl TryFrom<(&pb::CancelPaymentIntentRequest, Access)> for CancelIntent {
    type Error = Error;

    fn try_from((req, access): (&pb::CancelPaymentIntentRequest, Access)) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let id = violations.check(IntentId::parse("name", &req.name));
        let reason = violations.check(
            match pb::CancellationReason::try_from(req.cancellation_reason) {
                Ok(pb::CancellationReason::Unspecified) => Ok(CancellationReason::Unspecified),
                Ok(pb::CancellationReason::RequestedByCustomer) => {
                    Ok(CancellationReason::RequestedByCustomer)
                }
                Ok(pb::CancellationReason::Duplicate) => Ok(CancellationReason::Duplicate),
                Ok(pb::CancellationReason::Fraudulent) => Ok(CancellationReason::Fraudulent),
                Ok(pb::CancellationReason::Abandoned) => Ok(CancellationReason::Abandoned),
                Ok(pb::CancellationReason::OrderFailed) if access.service => {
                    Ok(CancellationReason::OrderFailed)
                }
                Ok(pb::CancellationReason::OrderFailed) => Err(FieldViolation::new(
                    "cancellation_reason",
                    "ORDER_FAILED is for role service only",
                )),
                Ok(pb::CancellationReason::AuthorizationExpired) => Err(FieldViolation::new(
                    "cancellation_reason",
                    "AUTHORIZATION_EXPIRED is set by the system only",
                )),
                Err(_) => Err(FieldViolation::new(
                    "cancellation_reason",
                    "is not a known reason",
                )),
            },
        );
        let request_id = request_id(&mut violations, &req.request_id);
        let (id, reason, request_id) = violations.finish_with((id, reason, request_id))?;
        Ok(Self {
            id,
            reason,
            request_id,
        })
    }
}

pub(super) fn status_to_proto(status: IntentStatus) -> pb::PaymentIntentStatus {
    match status {
        IntentStatus::RequiresPaymentMethod => pb::PaymentIntentStatus::RequiresPaymentMethod,
        IntentStatus::RequiresConfirmation => pb::PaymentIntentStatus::RequiresConfirmation,
        IntentStatus::Processing => pb::PaymentIntentStatus::Processing,
        IntentStatus::RequiresCapture => pb::PaymentIntentStatus::RequiresCapture,
        IntentStatus::Succeeded => pb::PaymentIntentStatus::Succeeded,
        IntentStatus::Canceled => pb::PaymentIntentStatus::Canceled,
    }
}

fn status_from_proto(field: &str, raw: i32) -> Result<Option<IntentStatus>, FieldViolation> {
    Ok(match pb::PaymentIntentStatus::try_from(raw) {
        Ok(pb::PaymentIntentStatus::Unspecified) => None,
        Ok(pb::PaymentIntentStatus::RequiresPaymentMethod) => {
            Some(IntentStatus::RequiresPaymentMethod)
        }
        Ok(pb::PaymentIntentStatus::RequiresConfirmation) => {
            Some(IntentStatus::RequiresConfirmation)
        }
        Ok(pb::PaymentIntentStatus::Processing) => Some(IntentStatus::Processing),
        Ok(pb::PaymentIntentStatus::RequiresCapture) => Some(IntentStatus::RequiresCapture),
        Ok(pb::PaymentIntentStatus::Succeeded) => Some(IntentStatus::Succeeded),
        Ok(pb::PaymentIntentStatus::Canceled) => Some(IntentStatus::Canceled),
        Err(_) => return Err(FieldViolation::new(field, "is not a known status")),
    })
}

fn cancellation_to_proto(reason: Option<CancellationReason>) -> pb::CancellationReason {
    match reason {
        None | Some(CancellationReason::Unspecified) => pb::CancellationReason::Unspecified,
        Some(CancellationReason::RequestedByCustomer) => {
            pb::CancellationReason::RequestedByCustomer
        }
        Some(CancellationReason::Duplicate) => pb::CancellationReason::Duplicate,
        Some(CancellationReason::Fraudulent) => pb::CancellationReason::Fraudulent,
        Some(CancellationReason::Abandoned) => pb::CancellationReason::Abandoned,
        Some(CancellationReason::AuthorizationExpired) => {
            pb::CancellationReason::AuthorizationExpired
        }
        Some(CancellationReason::OrderFailed) => pb::CancellationReason::OrderFailed,
    }
}

/// The wire form of an intent.
pub(crate) fn intent_to_proto(intent: &Intent) -> pb::PaymentIntent {
    pb::PaymentIntent {
        name: intent.id.name(),
        customer: intent.customer.name(),
        amount: Some(intent.amount.into()),
        amount_capturable: Some(intent.amount_capturable.into()),
        amount_received: Some(intent.amount_received.into()),
        amount_refunded: Some(intent.amount_refunded.into()),
        status: status_to_proto(intent.status).into(),
        capture_method: match intent.capture_method {
            CaptureMethod::Automatic => pb::CaptureMethod::Automatic,
            CaptureMethod::Manual => pb::CaptureMethod::Manual,
        }
        .into(),
        payment_method: intent
            .payment_method
            .map(PaymentMethodId::name)
            .unwrap_or_default(),
        description: intent.description.clone(),
        metadata: intent.metadata.clone().into_map().into_iter().collect(),
        last_payment_error: intent.last_error.as_ref().map(|e| pb::PaymentError {
            code: e.code.clone(),
            decline_code: e.decline_code.clone(),
            message: e.message.clone(),
            payment_method: e
                .payment_method
                .map(PaymentMethodId::name)
                .unwrap_or_default(),
        }),
        cancellation_reason: cancellation_to_proto(intent.cancellation_reason).into(),
        authorization_expire_time: intent.authorization_expires_at.map(to_timestamp),
        create_time: Some(to_timestamp(intent.created_at)),
        update_time: Some(to_timestamp(intent.updated_at)),
        order: intent.order.map(OrderId::name).unwrap_or_default(),
        tax: Some(intent.tax.into()),
        tax_received: Some(intent.tax_received.into()),
        tax_refunded: Some(intent.tax_refunded.into()),
    }
}

impl PaymentApi {
    #[instrument(skip_all, fields(customer))]
    pub(super) async fn create_intent(
        &self,
        request: Request<pb::CreatePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let (access, authority) = (caller.access(), self.authority(&caller));
        let req = request.into_inner();
        let cmd = CreateIntent::try_from(&req)?;
        if cmd.order.is_some() {
            authority.may_pay_for_orders().map_err(Error::from)?;
        }
        let customer = resolve_customer("customer", cmd.customer, access)?;
        record("customer", customer);
        access
            .require_owner_admin_or_service(customer.uuid())
            .map_err(Error::from)?;
        if cmd.confirm && cmd.payment_method.is_none() {
            return Err(Error::PaymentMethodRequired.into());
        }
        let key = idempotency_key(&caller, "CreatePaymentIntent", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::CreatePaymentIntentRequest {
            customer: customer.name(),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .transition(key, fingerprint, move |conn, engine, failed| {
                intents::create(conn, engine, access, customer, cmd, failed)
                    .map(|intent| intent_to_proto(&intent))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, status = intent.status, "payment intent created");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn get_intent(
        &self,
        request: Request<pb::GetPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = GetIntent::try_from(request.into_inner())?;
        record("intent", cmd.id);
        let intent = self
            .store()
            .read(move |conn| intents::get(conn, access, cmd.id))
            .await?;
        Ok(Response::new(intent_to_proto(&intent)))
    }

    #[instrument(skip_all, fields(customer))]
    pub(super) async fn list_intents(
        &self,
        request: Request<pb::ListPaymentIntentsRequest>,
    ) -> Result<Response<pb::ListPaymentIntentsResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = ListIntents::try_from(request.into_inner())?;
        let named = cmd
            .customer
            .map(|customer| resolve_customer("customer", customer, access))
            .transpose()?;
        let customer = intents::listed_customer(access, named).map_err(Error::from)?;
        if let Some(customer) = customer {
            record("customer", customer);
        }
        let (status, page, after) = (cmd.status, cmd.page.clone(), cmd.after);
        let found = self
            .store()
            .read(move |conn| repo::intents::list(conn, customer, status, &page, after))
            .await?;
        let (found, next_page_token) = cmd.page.finish(found, |i| i.id.to_string());
        Ok(Response::new(pb::ListPaymentIntentsResponse {
            payment_intents: found.iter().map(intent_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn confirm_intent(
        &self,
        request: Request<pb::ConfirmPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let (access, authority) = (caller.access(), self.authority(&caller));
        let cmd = ConfirmIntent::try_from(request.into_inner())?;
        record("intent", cmd.id);
        let key = idempotency_key(&caller, "ConfirmPaymentIntent", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::ConfirmPaymentIntentRequest {
            name: cmd.id.name(),
            payment_method: cmd
                .payment_method
                .map(PaymentMethodId::name)
                .unwrap_or_default(),
            request_id: String::new(),
        });
        let intent = self
            .transition(key, fingerprint, move |conn, engine, failed| {
                let intent =
                    intents::lock_to_manage(conn, cmd.id, Reach::Visible(access), authority)?;
                let intent =
                    engine.confirm(conn, access, intent, cmd.payment_method, false, failed)?;
                Ok(intent_to_proto(&intent))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, status = intent.status, "payment intent confirmed");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn capture_intent(
        &self,
        request: Request<pb::CapturePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let authority = self.authority(&caller);
        caller
            .access()
            .require_admin_or_service()
            .map_err(Error::from)?;
        let req = request.into_inner();
        let cmd = CaptureIntent::try_from(&req)?;
        record("intent", cmd.id);
        let key = idempotency_key(&caller, "CapturePaymentIntent", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::CapturePaymentIntentRequest {
            name: cmd.id.name(),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .transition(key, fingerprint, move |conn, engine, _| {
                let intent = intents::lock_to_manage(conn, cmd.id, Reach::Any, authority)?;
                Ok(intent_to_proto(&engine.capture(conn, intent, cmd.amount)?))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, "payment intent captured");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn cancel_intent(
        &self,
        request: Request<pb::CancelPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let (access, authority) = (caller.access(), self.authority(&caller));
        let req = request.into_inner();
        let cmd = CancelIntent::try_from((&req, access))?;
        record("intent", cmd.id);
        let key = idempotency_key(&caller, "CancelPaymentIntent", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::CancelPaymentIntentRequest {
            name: cmd.id.name(),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .transition(key, fingerprint, move |conn, engine, _| {
                let intent =
                    intents::lock_to_manage(conn, cmd.id, Reach::Visible(access), authority)?;
                Ok(intent_to_proto(&engine.cancel(conn, intent, cmd.reason)?))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, "payment intent canceled");
        Ok(Response::new(intent))
    }
}
