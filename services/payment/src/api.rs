//! The tonic `PaymentService`: parse the request into domain values, check
//! who may do it, run the domain operation, convert back. The one exhaustive
//! `Error` → `Status` mapping is [`status`].
//!
//! Requests carrying card data are never formatted with `{:?}`: handlers are
//! instrumented with `skip_all`, and the card is parsed at once into
//! [`crate::domain::card::CardInput`], whose `Debug` redacts the PAN and CVC.

use std::sync::Arc;

use backroom_proto::{
    common::v1::Money,
    payment::v1::{self as pb, payment_service_server::PaymentService},
};
use backroom_shared::{
    auth::Caller,
    clock::to_timestamp,
    errors::{
        FieldViolation, Violations, invalid_argument, invalid_argument_with_reason, with_reason,
    },
    idempotency::{self, IdempotencyKey, request_key},
    paging::{self, page},
};
use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection};
use tonic::{Code, Request, Response, Status};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    DOMAIN, Deps,
    db::{
        models::{
            BalanceRow, EntryRow, Intent, JournalWithEntries, LedgerAccountRow, PaymentMethodRow,
            RefundRow, direction,
        },
        repo,
    },
    domain::{
        AccountRef, Amount, CancellationReason, CaptureMethod, Currency, Direction, Error,
        IntentStatus, JournalKind, LedgerKind, Metadata, RefundReason, RefundStatus, account_name,
        card::{self, Brand, CardInput, RawCard},
        journal_name, ledger_account_name, order_name, parse_description,
        parse_ledger_account_name, parse_name, parse_refund_name, payment_intent_name,
        payment_method_name, refund_name,
    },
    intents::{Actor, Engine, FailedAttempt},
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

    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    fn actor(&self, caller: &Caller) -> Actor {
        Actor::of(caller, self.deps.checkout_principal.as_deref())
    }

    /// Runs `work` in a transaction guarded by the request id (AIP-155).
    /// A failed authorization attempt that `work` reports is persisted in
    /// the same transaction after the refused mutation's own writes were
    /// rolled back, so the intent shows the decline while the request's
    /// outcome (the error) is what a replay returns.
    async fn idempotent<R, F>(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: Vec<u8>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        F: FnOnce(&mut PgConnection, Engine<'_>, &mut Option<FailedAttempt>) -> Result<R, Error>
            + Send
            + 'static,
    {
        let now = self.now();
        let processor = Arc::clone(&self.deps.processor);
        let ttl = self.deps.authorization_ttl;
        self.deps
            .pool
            .run(move |conn| {
                conn.transaction::<_, Error, _>(|conn| {
                    let engine = Engine {
                        processor: processor.as_ref(),
                        now,
                        authorization_ttl: ttl,
                    };
                    let mut failed = None;
                    let outcome =
                        idempotency::run(conn, DOMAIN, key.as_ref(), &fingerprint, now, |conn| {
                            work(conn, engine, &mut failed).map_err(status)
                        });
                    if let Some(attempt) = failed {
                        attempt.persist(conn)?;
                    }
                    Ok(outcome)
                })
            })
            .await
            .map_err(status)?
    }

    /// Runs read work on the pool.
    async fn db<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    {
        self.deps.pool.run(work).await.map_err(status)
    }
}

fn validation(violations: Vec<FieldViolation>) -> Status {
    invalid_argument(DOMAIN, &violations)
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

/// The one mapping of domain errors to statuses; exhaustive on purpose.
pub(crate) fn status(err: Error) -> Status {
    let precondition = |reason: &str, message: String, metadata: Vec<(String, String)>| {
        with_reason(Code::FailedPrecondition, DOMAIN, reason, message, metadata)
    };
    match err {
        Error::Validation(violations) => validation(violations),
        Error::InvalidCardNumber(violations) => {
            invalid_argument_with_reason(DOMAIN, "INVALID_CARD_NUMBER", &violations)
        }
        Error::ExpiredCardInput(violations) => {
            invalid_argument_with_reason(DOMAIN, "EXPIRED_CARD", &violations)
        }
        Error::AccessDenied(required) => with_reason(
            Code::PermissionDenied,
            DOMAIN,
            "ACCESS_DENIED",
            format!("this call requires {required}"),
            [("required".to_owned(), required.to_owned())],
        ),
        Error::PaymentMethodLimitReached => precondition(
            "PAYMENT_METHOD_LIMIT_REACHED",
            format!(
                "the customer already has {} payment methods",
                repo::MAX_PAYMENT_METHODS
            ),
            vec![],
        ),
        Error::PaymentMethodNotFound(name) => not_found("PAYMENT_METHOD_NOT_FOUND", name),
        Error::PaymentIntentNotFound(name) => not_found("PAYMENT_INTENT_NOT_FOUND", name),
        Error::RefundNotFound(name) => not_found("REFUND_NOT_FOUND", name),
        Error::LedgerAccountNotFound(name) => not_found("LEDGER_ACCOUNT_NOT_FOUND", name),
        Error::JournalNotFound(name) => not_found("JOURNAL_NOT_FOUND", name),
        Error::OrderNotFound(name) => not_found("ORDER_NOT_FOUND", name),
        Error::ManagedByOrder { order, intent } => precondition(
            "INTENT_MANAGED_BY_ORDER",
            format!("{intent} is the payment of {order}: only checkout acts on it"),
            vec![
                ("order".to_owned(), order),
                ("payment_intent".to_owned(), intent),
            ],
        ),
        Error::PaymentMethodRequired => precondition(
            "PAYMENT_METHOD_REQUIRED",
            "the intent has no payment method; pass payment_method".into(),
            vec![],
        ),
        Error::InvalidState(current) => {
            let current = status_to_proto(current).as_str_name();
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
                format!("must be at most the capturable {capturable}"),
            )],
        ),
        Error::CurrencyMismatch { field } => invalid_argument_with_reason(
            DOMAIN,
            "CURRENCY_MISMATCH",
            &[FieldViolation::new(field, "must be the intent's currency")],
        ),
        Error::RefundExceedsCaptured { refundable } => precondition(
            "REFUND_EXCEEDS_CAPTURED",
            format!("at most {refundable} minor units are left to refund"),
            vec![("refundable_minor".to_owned(), refundable.to_string())],
        ),
        Error::Declined { kind, intent } => precondition(
            kind.reason(),
            kind.message().to_owned(),
            vec![
                ("decline_code".to_owned(), kind.decline_code().to_owned()),
                ("payment_intent".to_owned(), intent),
            ],
        ),
        Error::ProcessorUnavailable { intent } => {
            let mut metadata = vec![("decline_code".to_owned(), "processing_error".to_owned())];
            if !intent.is_empty() {
                metadata.push(("payment_intent".to_owned(), intent));
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

fn money(currency: Currency, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.code().to_owned(),
        amount_minor,
    })
}

fn brand_to_proto(brand: Brand) -> pb::CardBrand {
    match brand {
        Brand::Visa => pb::CardBrand::Visa,
        Brand::Mastercard => pb::CardBrand::Mastercard,
        Brand::Amex => pb::CardBrand::Amex,
        Brand::Discover => pb::CardBrand::Discover,
        Brand::Diners => pb::CardBrand::Diners,
        Brand::Jcb => pb::CardBrand::Jcb,
        Brand::UnionPay => pb::CardBrand::Unionpay,
        Brand::Other => pb::CardBrand::Other,
    }
}

fn method_to_proto(row: &PaymentMethodRow) -> pb::PaymentMethod {
    pb::PaymentMethod {
        name: payment_method_name(row.id),
        customer: account_name(row.customer_id),
        card: Some(pb::CardDetails {
            brand: brand_to_proto(row.brand()).into(),
            last4: row.last4.clone(),
            exp_month: row.exp_month,
            exp_year: row.exp_year,
            fingerprint: row.fingerprint.clone(),
            holder_name: row.holder_name.clone(),
        }),
        create_time: Some(to_timestamp(row.created_at)),
    }
}

fn status_to_proto(status: IntentStatus) -> pb::PaymentIntentStatus {
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

fn intent_to_proto(intent: &Intent) -> pb::PaymentIntent {
    let currency = intent.currency;
    pb::PaymentIntent {
        name: payment_intent_name(intent.id),
        customer: account_name(intent.customer_id),
        amount: money(currency, intent.amount),
        amount_capturable: money(currency, intent.amount_capturable),
        amount_received: money(currency, intent.amount_received),
        amount_refunded: money(currency, intent.amount_refunded),
        status: status_to_proto(intent.status).into(),
        capture_method: match intent.capture_method {
            CaptureMethod::Automatic => pb::CaptureMethod::Automatic,
            CaptureMethod::Manual => pb::CaptureMethod::Manual,
        }
        .into(),
        payment_method: intent
            .payment_method_id
            .map(payment_method_name)
            .unwrap_or_default(),
        description: intent.description.clone(),
        metadata: intent.metadata.clone().into_map().into_iter().collect(),
        last_payment_error: intent.last_error.as_ref().map(|e| pb::PaymentError {
            code: e.code.clone(),
            decline_code: e.decline_code.clone(),
            message: e.message.clone(),
            payment_method: e
                .payment_method
                .map(payment_method_name)
                .unwrap_or_default(),
        }),
        cancellation_reason: cancellation_to_proto(intent.cancellation_reason).into(),
        authorization_expire_time: intent.authorization_expires_at.map(to_timestamp),
        create_time: Some(to_timestamp(intent.created_at)),
        update_time: Some(to_timestamp(intent.updated_at)),
        order: intent.order_id.map(order_name).unwrap_or_default(),
    }
}

fn refund_to_proto(row: &RefundRow) -> Result<pb::Refund, Error> {
    let reason = match RefundReason::from_code(&row.reason)? {
        RefundReason::Unspecified => pb::RefundReason::Unspecified,
        RefundReason::RequestedByCustomer => pb::RefundReason::RequestedByCustomer,
        RefundReason::Duplicate => pb::RefundReason::Duplicate,
        RefundReason::Fraudulent => pb::RefundReason::Fraudulent,
    };
    let status = match RefundStatus::from_code(&row.status)? {
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    };
    Ok(pb::Refund {
        name: refund_name(row.payment_intent_id, row.id),
        amount: money(Currency::stored(&row.currency)?, row.amount),
        status: status.into(),
        reason: reason.into(),
        create_time: Some(to_timestamp(row.created_at)),
    })
}

fn kind_to_proto(kind: JournalKind) -> pb::JournalKind {
    match kind {
        JournalKind::AuthorizationHold => pb::JournalKind::AuthorizationHold,
        JournalKind::Capture => pb::JournalKind::Capture,
        JournalKind::Release => pb::JournalKind::Release,
        JournalKind::Refund => pb::JournalKind::Refund,
    }
}

fn entry_to_proto(entry: &EntryRow) -> Result<pb::LedgerEntry, Error> {
    Ok(pb::LedgerEntry {
        journal: journal_name(entry.journal_id),
        ledger_account: ledger_account_name(&entry.ledger_account),
        direction: match direction(entry)? {
            Direction::Debit => pb::EntryDirection::Debit,
            Direction::Credit => pb::EntryDirection::Credit,
        }
        .into(),
        amount: money(Currency::stored(&entry.currency)?, entry.amount),
        create_time: Some(to_timestamp(entry.created_at)),
    })
}

fn journal_to_proto(journal: &JournalWithEntries) -> Result<pb::Journal, Error> {
    Ok(pb::Journal {
        name: journal_name(journal.journal.id),
        payment_intent: payment_intent_name(journal.journal.payment_intent_id),
        kind: kind_to_proto(journal.kind()?).into(),
        entries: journal
            .entries
            .iter()
            .map(entry_to_proto)
            .collect::<Result<_, _>>()?,
        refund: journal
            .journal
            .refund_id
            .map(|refund| refund_name(journal.journal.payment_intent_id, refund))
            .unwrap_or_default(),
        create_time: Some(to_timestamp(journal.journal.created_at)),
    })
}

fn ledger_account_to_proto(
    row: &LedgerAccountRow,
    balances: &[BalanceRow],
) -> Result<pb::LedgerAccount, Error> {
    let kind = LedgerKind::from_code(&row.kind)?;
    let balances = balances
        .iter()
        .filter(|b| b.ledger_account == row.code)
        .map(|b| {
            let amount = if kind.debit_normal() {
                Some(b.net_debit)
            } else {
                b.net_debit.checked_neg()
            };
            let amount = amount.ok_or_else(|| Error::field("balances", "overflow"))?;
            Ok(Money {
                currency_code: b.currency.clone(),
                amount_minor: amount,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(pb::LedgerAccount {
        name: ledger_account_name(&row.code),
        code: row.code.clone(),
        display_name: row.display_name.clone(),
        kind: match kind {
            LedgerKind::Asset => pb::LedgerAccountKind::Asset,
            LedgerKind::Liability => pb::LedgerAccountKind::Liability,
            LedgerKind::Equity => pb::LedgerAccountKind::Equity,
            LedgerKind::Revenue => pb::LedgerAccountKind::Revenue,
            LedgerKind::Expense => pb::LedgerAccountKind::Expense,
        }
        .into(),
        balances,
    })
}

fn bad_token() -> Status {
    validation(vec![paging::bad_token()])
}

/// An optional `{collection}/{uuid}` field.
fn optional_name(
    violations: &mut Violations,
    field: &str,
    collection: &str,
    raw: &str,
) -> Option<Uuid> {
    if raw.is_empty() {
        None
    } else {
        violations.check(parse_name(field, collection, raw))
    }
}

/// An optional Money field.
fn optional_amount(
    violations: &mut Violations,
    field: &str,
    raw: Option<&Money>,
) -> Option<Amount> {
    raw.and_then(|m| Amount::parse(field, &m.currency_code, m.amount_minor, violations))
}

/// Unwraps values parsed before `violations.finish()` succeeded.
fn parsed<T>(value: Option<T>) -> Result<T, Status> {
    // Every parse that yields None records a violation, so after a clean
    // finish() this is always Some; answer INTERNAL rather than panic.
    value
        .ok_or_else(|| Status::internal("request parsed without violations but a value is missing"))
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    #[instrument(skip_all)]
    async fn attach_payment_method(
        &self,
        request: Request<pb::AttachPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let card = match &req.card {
            Some(c) => CardInput::parse(
                "card",
                RawCard {
                    number: &c.number,
                    exp_month: c.exp_month,
                    exp_year: c.exp_year,
                    cvc: &c.cvc,
                    holder_name: &c.holder_name,
                },
                self.now(),
                &mut violations,
            ),
            None => {
                violations.push("card", "is required");
                None
            }
        };
        // The request with its card data is not needed any more.
        drop(req.card);
        let key = request_key(
            &mut violations,
            &req.request_id,
            "AttachPaymentMethod",
            Some(&caller),
        );
        if let Err(found) = violations.finish() {
            return Err(status(if found.iter().any(|v| v.field == "card.number") {
                Error::InvalidCardNumber(found)
            } else if found.iter().any(|v| v.description == card::EXPIRED) {
                Error::ExpiredCardInput(found)
            } else {
                Error::Validation(found)
            }));
        }
        let (customer, card) = (parsed(customer)?, parsed(card)?);
        let customer_id = customer
            .resolve("customer", &caller)
            .map_err(|v| status(v.into()))?;
        actor.may_manage_methods_of(customer_id).map_err(status)?;
        let card_fingerprint = self.deps.fingerprint_key.fingerprint(&card.number);
        // The keyed card fingerprint stands in for the PAN; the CVC is left
        // out: neither is ever stored for idempotency.
        let fingerprint = idempotency::fingerprint(&pb::AttachPaymentMethodRequest {
            customer: account_name(customer_id),
            card: Some(pb::Card {
                number: card_fingerprint.clone(),
                // 1–12 by construction.
                exp_month: i32::try_from(card.expiry.month).unwrap_or_default(),
                exp_year: card.expiry.year,
                cvc: String::new(),
                holder_name: card.holder_name.clone(),
            }),
            request_id: String::new(),
        });
        let method = self
            .idempotent(key, fingerprint, move |conn, engine, _| {
                let vaulted = engine.processor.tokenize(&card.number).map_err(|cause| {
                    tracing::warn!(%cause, "tokenization failed at the processor");
                    Error::ProcessorUnavailable {
                        intent: String::new(),
                    }
                })?;
                let row = PaymentMethodRow {
                    id: Uuid::now_v7(),
                    customer_id,
                    brand: card.number.brand().code().to_owned(),
                    last4: card.number.last4().to_owned(),
                    exp_month: i32::try_from(card.expiry.month)
                        .map_err(|_| Error::field("card.exp_month", "must be 1–12"))?,
                    exp_year: card.expiry.year,
                    fingerprint: card_fingerprint,
                    holder_name: card.holder_name,
                    processor_token: vaulted.token,
                    created_at: engine.now,
                    detached_at: None,
                };
                Ok(method_to_proto(&repo::insert_payment_method(conn, &row)?))
            })
            .await?;
        tracing::info!(payment_method = %method.name, "payment method attached");
        Ok(Response::new(method))
    }

    #[instrument(skip_all)]
    async fn get_payment_method(
        &self,
        request: Request<pb::GetPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let actor = self.actor(&Caller::of(&request)?);
        actor.may_look_up_methods().map_err(status)?;
        let req = request.into_inner();
        let id =
            parse_name("name", "paymentMethods", &req.name).map_err(|v| validation(vec![v]))?;
        let row = self
            .db(move |conn| {
                repo::get_payment_method(conn, id)?
                    .filter(|row| actor.sees_methods_of(row.customer_id))
                    .ok_or_else(|| Error::PaymentMethodNotFound(payment_method_name(id)))
            })
            .await?;
        Ok(Response::new(method_to_proto(&row)))
    }

    #[instrument(skip_all)]
    async fn list_payment_methods(
        &self,
        request: Request<pb::ListPaymentMethodsRequest>,
    ) -> Result<Response<pb::ListPaymentMethodsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.customer],
        );
        violations.finish().map_err(validation)?;
        let (customer, page) = (parsed(customer)?, parsed(page)?);
        let customer_id = customer
            .resolve("customer", &caller)
            .map_err(|v| status(v.into()))?;
        actor.may_manage_methods_of(customer_id).map_err(status)?;
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_payment_methods(conn, customer_id, &lookup, after))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.id.to_string());
        Ok(Response::new(pb::ListPaymentMethodsResponse {
            payment_methods: rows.iter().map(method_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn detach_payment_method(
        &self,
        request: Request<pb::DetachPaymentMethodRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        actor.may_look_up_methods().map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("name", "paymentMethods", &req.name));
        let key = request_key(
            &mut violations,
            &req.request_id,
            "DetachPaymentMethod",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let id = parsed(id)?;
        let fingerprint = idempotency::fingerprint(&pb::DetachPaymentMethodRequest {
            name: payment_method_name(id),
            request_id: String::new(),
        });
        self.idempotent(key, fingerprint, move |conn, engine, _| {
            repo::get_payment_method(conn, id)?
                .filter(|row| actor.sees_methods_of(row.customer_id))
                .ok_or_else(|| Error::PaymentMethodNotFound(payment_method_name(id)))?;
            if !repo::detach_payment_method(conn, id, engine.now)? {
                return Err(Error::PaymentMethodNotFound(payment_method_name(id)));
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }

    #[instrument(skip_all)]
    async fn create_payment_intent(
        &self,
        request: Request<pb::CreatePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let amount = match &req.amount {
            Some(m) => Amount::parse("amount", &m.currency_code, m.amount_minor, &mut violations),
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
        let method = optional_name(
            &mut violations,
            "payment_method",
            "paymentMethods",
            &req.payment_method,
        );
        let description = violations.check(parse_description("description", &req.description));
        let metadata = Metadata::parse("metadata", &req.metadata, &mut violations);
        let order = optional_name(&mut violations, "order", "orders", &req.order);
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CreatePaymentIntent",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        if order.is_some() {
            actor.may_pay_for_orders().map_err(status)?;
        }
        let (customer, amount, capture_method, description, metadata) = (
            parsed(customer)?,
            parsed(amount)?,
            parsed(capture_method)?,
            parsed(description)?,
            parsed(metadata)?,
        );
        let customer_id = customer
            .resolve("customer", &caller)
            .map_err(|v| status(v.into()))?;
        actor.may_act_for(customer_id).map_err(status)?;
        if req.confirm && method.is_none() {
            return Err(status(Error::PaymentMethodRequired));
        }
        let confirm = req.confirm;
        let fingerprint = idempotency::fingerprint(&pb::CreatePaymentIntentRequest {
            customer: account_name(customer_id),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .idempotent(key, fingerprint, move |conn, engine, failed| {
                if let Some(order) = order {
                    match repo::order_customer(conn, order)? {
                        None => return Err(Error::OrderNotFound(order_name(order))),
                        Some(buyer) if buyer != customer_id => {
                            return Err(Error::field("order", "is an order of another customer"));
                        }
                        Some(_) => {}
                    }
                    // One payment per order: asked again (a retry whose
                    // request id was forgotten), it is the same one.
                    if let Some(existing) = repo::intent_of_order(conn, order)? {
                        return Ok(intent_to_proto(&existing));
                    }
                }
                if let Some(method) = method {
                    engine.usable_method(conn, actor, customer_id, method)?;
                }
                let intent = Intent {
                    id: Uuid::now_v7(),
                    customer_id,
                    currency: amount.currency,
                    amount: amount.minor,
                    amount_authorized: 0,
                    amount_capturable: 0,
                    amount_received: 0,
                    amount_refunded: 0,
                    status: if method.is_some() {
                        IntentStatus::RequiresConfirmation
                    } else {
                        IntentStatus::RequiresPaymentMethod
                    },
                    capture_method,
                    payment_method_id: method,
                    description,
                    metadata,
                    last_error: None,
                    cancellation_reason: None,
                    authorization_id: None,
                    authorization_expires_at: None,
                    authorization_attempt: 0,
                    created_at: engine.now,
                    updated_at: engine.now,
                    order_id: order,
                };
                repo::insert_intent(conn, &intent)?;
                let intent = if confirm {
                    engine.confirm(conn, actor, intent, None, true, failed)?
                } else {
                    intent
                };
                Ok(intent_to_proto(&intent))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, status = intent.status, "payment intent created");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all)]
    async fn get_payment_intent(
        &self,
        request: Request<pb::GetPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let actor = self.actor(&Caller::of(&request)?);
        let req = request.into_inner();
        let id =
            parse_name("name", "paymentIntents", &req.name).map_err(|v| validation(vec![v]))?;
        let intent = self
            .db(move |conn| {
                repo::get_intent(conn, id)?
                    .filter(|intent| actor.sees_intents_of(intent.customer_id))
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))
            })
            .await?;
        Ok(Response::new(intent_to_proto(&intent)))
    }

    #[instrument(skip_all)]
    async fn list_payment_intents(
        &self,
        request: Request<pb::ListPaymentIntentsRequest>,
    ) -> Result<Response<pb::ListPaymentIntentsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let customer = if req.customer.is_empty() {
            None
        } else {
            violations.check(AccountRef::parse("customer", &req.customer))
        };
        let status_filter = violations.check(status_from_proto("status", req.status));
        let status_key = req.status.to_string();
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.customer, &status_key],
        );
        violations.finish().map_err(validation)?;
        let page = parsed(page)?;
        let status_filter = status_filter.flatten();
        let customer_id = match customer {
            Some(customer) => Some(
                customer
                    .resolve("customer", &caller)
                    .map_err(|v| status(v.into()))?,
            ),
            None if actor.admin || actor.service => None,
            // Customers see only their own, by default too.
            None => Some(actor.account.ok_or_else(|| {
                status(Error::AccessDenied(crate::intents::OWNER_ADMIN_OR_SERVICE))
            })?),
        };
        if let Some(customer_id) = customer_id {
            actor.may_act_for(customer_id).map_err(status)?;
        }
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let lookup = page.clone();
        let intents = self
            .db(move |conn| repo::list_intents(conn, customer_id, status_filter, &lookup, after))
            .await?;
        let (intents, next_page_token) = page.finish(intents, |i| i.id.to_string());
        Ok(Response::new(pb::ListPaymentIntentsResponse {
            payment_intents: intents.iter().map(intent_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn confirm_payment_intent(
        &self,
        request: Request<pb::ConfirmPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("name", "paymentIntents", &req.name));
        let method = optional_name(
            &mut violations,
            "payment_method",
            "paymentMethods",
            &req.payment_method,
        );
        let key = request_key(
            &mut violations,
            &req.request_id,
            "ConfirmPaymentIntent",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let id = parsed(id)?;
        let fingerprint = idempotency::fingerprint(&pb::ConfirmPaymentIntentRequest {
            name: payment_intent_name(id),
            payment_method: method.map(payment_method_name).unwrap_or_default(),
            request_id: String::new(),
        });
        let intent = self
            .idempotent(key, fingerprint, move |conn, engine, failed| {
                let intent = repo::lock_intent(conn, id)?
                    .filter(|intent| actor.sees_intents_of(intent.customer_id))
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))?;
                actor.may_manage(&intent)?;
                let intent = engine.confirm(conn, actor, intent, method, false, failed)?;
                Ok(intent_to_proto(&intent))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, status = intent.status, "payment intent confirmed");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all)]
    async fn capture_payment_intent(
        &self,
        request: Request<pb::CapturePaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        actor.require_admin_or_service().map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("name", "paymentIntents", &req.name));
        let amount = optional_amount(
            &mut violations,
            "amount_to_capture",
            req.amount_to_capture.as_ref(),
        );
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CapturePaymentIntent",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let id = parsed(id)?;
        let fingerprint = idempotency::fingerprint(&pb::CapturePaymentIntentRequest {
            name: payment_intent_name(id),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .idempotent(key, fingerprint, move |conn, engine, _| {
                let intent = repo::lock_intent(conn, id)?
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))?;
                actor.may_manage(&intent)?;
                let intent = engine.capture(conn, intent, amount.map(|a| (a.currency, a.minor)))?;
                Ok(intent_to_proto(&intent))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, "payment intent captured");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all)]
    async fn cancel_payment_intent(
        &self,
        request: Request<pb::CancelPaymentIntentRequest>,
    ) -> Result<Response<pb::PaymentIntent>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("name", "paymentIntents", &req.name));
        let reason = match pb::CancellationReason::try_from(req.cancellation_reason) {
            Ok(pb::CancellationReason::Unspecified) => Some(CancellationReason::Unspecified),
            Ok(pb::CancellationReason::RequestedByCustomer) => {
                Some(CancellationReason::RequestedByCustomer)
            }
            Ok(pb::CancellationReason::Duplicate) => Some(CancellationReason::Duplicate),
            Ok(pb::CancellationReason::Fraudulent) => Some(CancellationReason::Fraudulent),
            Ok(pb::CancellationReason::Abandoned) => Some(CancellationReason::Abandoned),
            Ok(pb::CancellationReason::OrderFailed) if actor.service => {
                Some(CancellationReason::OrderFailed)
            }
            Ok(pb::CancellationReason::OrderFailed) => {
                violations.push(
                    "cancellation_reason",
                    "ORDER_FAILED is for role service only",
                );
                None
            }
            Ok(pb::CancellationReason::AuthorizationExpired) => {
                violations.push(
                    "cancellation_reason",
                    "AUTHORIZATION_EXPIRED is set by the system only",
                );
                None
            }
            Err(_) => {
                violations.push("cancellation_reason", "is not a known reason");
                None
            }
        };
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CancelPaymentIntent",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let (id, reason) = (parsed(id)?, parsed(reason)?);
        let fingerprint = idempotency::fingerprint(&pb::CancelPaymentIntentRequest {
            name: payment_intent_name(id),
            request_id: String::new(),
            ..req
        });
        let intent = self
            .idempotent(key, fingerprint, move |conn, engine, _| {
                let intent = repo::lock_intent(conn, id)?
                    .filter(|intent| actor.sees_intents_of(intent.customer_id))
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))?;
                actor.may_manage(&intent)?;
                Ok(intent_to_proto(&engine.cancel(conn, intent, reason)?))
            })
            .await?;
        tracing::info!(payment_intent = %intent.name, "payment intent canceled");
        Ok(Response::new(intent))
    }

    #[instrument(skip_all)]
    async fn create_refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let caller = Caller::of(&request)?;
        let actor = self.actor(&caller);
        actor.require_admin_or_service().map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("parent", "paymentIntents", &req.parent));
        let amount = optional_amount(&mut violations, "amount", req.amount.as_ref());
        let reason = match pb::RefundReason::try_from(req.reason) {
            Ok(pb::RefundReason::Unspecified) => Some(RefundReason::Unspecified),
            Ok(pb::RefundReason::RequestedByCustomer) => Some(RefundReason::RequestedByCustomer),
            Ok(pb::RefundReason::Duplicate) => Some(RefundReason::Duplicate),
            Ok(pb::RefundReason::Fraudulent) => Some(RefundReason::Fraudulent),
            Err(_) => {
                violations.push("reason", "is not a known reason");
                None
            }
        };
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CreateRefund",
            Some(&caller),
        );
        violations.finish().map_err(validation)?;
        let (id, reason) = (parsed(id)?, parsed(reason)?);
        let fingerprint = idempotency::fingerprint(&pb::CreateRefundRequest {
            parent: payment_intent_name(id),
            request_id: String::new(),
            ..req
        });
        let refund = self
            .idempotent(key, fingerprint, move |conn, engine, _| {
                let intent = repo::lock_intent(conn, id)?
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))?;
                actor.may_manage(&intent)?;
                let (_, refund) =
                    engine.refund(conn, intent, amount.map(|a| (a.currency, a.minor)), reason)?;
                refund_to_proto(&refund)
            })
            .await?;
        tracing::info!(refund = %refund.name, "refund created");
        Ok(Response::new(refund))
    }

    #[instrument(skip_all)]
    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let actor = self.actor(&Caller::of(&request)?);
        let req = request.into_inner();
        let (intent_id, refund_id) =
            parse_refund_name("name", &req.name).map_err(|v| validation(vec![v]))?;
        let refund = self
            .db(move |conn| {
                let missing = || Error::RefundNotFound(refund_name(intent_id, refund_id));
                repo::get_intent(conn, intent_id)?
                    .filter(|intent| actor.sees_intents_of(intent.customer_id))
                    .ok_or_else(missing)?;
                let refund = repo::get_refund(conn, intent_id, refund_id)?.ok_or_else(missing)?;
                refund_to_proto(&refund)
            })
            .await?;
        Ok(Response::new(refund))
    }

    #[instrument(skip_all)]
    async fn list_refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let actor = self.actor(&Caller::of(&request)?);
        let req = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(parse_name("parent", "paymentIntents", &req.parent));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent],
        );
        violations.finish().map_err(validation)?;
        let (id, page) = (parsed(id)?, parsed(page)?);
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let lookup = page.clone();
        let rows = self
            .db(move |conn| {
                repo::get_intent(conn, id)?
                    .filter(|intent| actor.sees_intents_of(intent.customer_id))
                    .ok_or_else(|| Error::PaymentIntentNotFound(payment_intent_name(id)))?;
                repo::list_refunds(conn, id, &lookup, after)
            })
            .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.id.to_string());
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: rows
                .iter()
                .map(refund_to_proto)
                .collect::<Result<_, _>>()
                .map_err(status)?,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn list_ledger_accounts(
        &self,
        request: Request<pb::ListLedgerAccountsRequest>,
    ) -> Result<Response<pb::ListLedgerAccountsResponse>, Status> {
        self.actor(&Caller::of(&request)?)
            .require_admin_or_service()
            .map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let page = page(&mut violations, req.page_size, &req.page_token, &[]);
        violations.finish().map_err(validation)?;
        let page = parsed(page)?;
        let lookup = page.clone();
        let (rows, balances) = self
            .db(move |conn| {
                let rows = repo::list_ledger_accounts(conn, &lookup, lookup.after.as_deref())?;
                let codes: Vec<String> = rows.iter().map(|r| r.code.clone()).collect();
                let balances = repo::balances(conn, &codes)?;
                Ok((rows, balances))
            })
            .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.code.clone());
        Ok(Response::new(pb::ListLedgerAccountsResponse {
            ledger_accounts: rows
                .iter()
                .map(|r| ledger_account_to_proto(r, &balances))
                .collect::<Result<_, _>>()
                .map_err(status)?,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn get_ledger_account(
        &self,
        request: Request<pb::GetLedgerAccountRequest>,
    ) -> Result<Response<pb::LedgerAccount>, Status> {
        self.actor(&Caller::of(&request)?)
            .require_admin_or_service()
            .map_err(status)?;
        let req = request.into_inner();
        let code = parse_ledger_account_name("name", &req.name).map_err(|v| validation(vec![v]))?;
        let account = self
            .db(move |conn| {
                let row = repo::get_ledger_account(conn, &code)?
                    .ok_or_else(|| Error::LedgerAccountNotFound(ledger_account_name(&code)))?;
                let balances = repo::balances(conn, std::slice::from_ref(&row.code))?;
                ledger_account_to_proto(&row, &balances)
            })
            .await?;
        Ok(Response::new(account))
    }

    #[instrument(skip_all)]
    async fn get_journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Result<Response<pb::Journal>, Status> {
        self.actor(&Caller::of(&request)?)
            .require_admin_or_service()
            .map_err(status)?;
        let req = request.into_inner();
        let id = parse_name("name", "journals", &req.name).map_err(|v| validation(vec![v]))?;
        let journal = self
            .db(move |conn| {
                let journal = repo::get_journal(conn, id)?
                    .ok_or_else(|| Error::JournalNotFound(journal_name(id)))?;
                journal_to_proto(&journal)
            })
            .await?;
        Ok(Response::new(journal))
    }

    #[instrument(skip_all)]
    async fn list_journals(
        &self,
        request: Request<pb::ListJournalsRequest>,
    ) -> Result<Response<pb::ListJournalsResponse>, Status> {
        self.actor(&Caller::of(&request)?)
            .require_admin_or_service()
            .map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let intent = optional_name(
            &mut violations,
            "payment_intent",
            "paymentIntents",
            &req.payment_intent,
        );
        let kind = match pb::JournalKind::try_from(req.kind) {
            Ok(pb::JournalKind::Unspecified) => None,
            Ok(pb::JournalKind::AuthorizationHold) => Some(JournalKind::AuthorizationHold),
            Ok(pb::JournalKind::Capture) => Some(JournalKind::Capture),
            Ok(pb::JournalKind::Release) => Some(JournalKind::Release),
            Ok(pb::JournalKind::Refund) => Some(JournalKind::Refund),
            Err(_) => {
                violations.push("kind", "is not a known journal kind");
                None
            }
        };
        let kind_key = req.kind.to_string();
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.payment_intent, &kind_key],
        );
        violations.finish().map_err(validation)?;
        let page = parsed(page)?;
        let after = page.after_uuid().map_err(|v| validation(vec![v]))?;
        let lookup = page.clone();
        let journals = self
            .db(move |conn| repo::list_journals(conn, intent, kind, &lookup, after))
            .await?;
        let (journals, next_page_token) = page.finish(journals, |j| j.journal.id.to_string());
        Ok(Response::new(pb::ListJournalsResponse {
            journals: journals
                .iter()
                .map(journal_to_proto)
                .collect::<Result<_, _>>()
                .map_err(status)?,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        self.actor(&Caller::of(&request)?)
            .require_admin_or_service()
            .map_err(status)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let code = violations.check(parse_ledger_account_name(
            "ledger_account",
            &req.ledger_account,
        ));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.ledger_account],
        );
        violations.finish().map_err(validation)?;
        let (code, page) = (parsed(code)?, parsed(page)?);
        let after = page
            .after
            .as_deref()
            .map(|a| a.parse::<i64>().map_err(|_| bad_token()))
            .transpose()?;
        let lookup = page.clone();
        let entries = self
            .db(move |conn| {
                repo::get_ledger_account(conn, &code)?
                    .ok_or_else(|| Error::LedgerAccountNotFound(ledger_account_name(&code)))?;
                repo::list_entries(conn, &code, &lookup, after)
            })
            .await?;
        let (entries, next_page_token) = page.finish(entries, |e| e.id.to_string());
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            ledger_entries: entries
                .iter()
                .map(entry_to_proto)
                .collect::<Result<_, _>>()
                .map_err(status)?,
            next_page_token,
        }))
    }
}
