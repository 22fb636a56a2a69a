//! The payment-intent state machine: confirm, capture, cancel, refund and
//! expiry, each run on an intent row locked `FOR UPDATE` inside the
//! caller's transaction, calling the processor and posting the journals of
//! the money it moves in that same transaction.
//!
//! ```text
//! requires_payment_method ─(payment method)→ requires_confirmation
//!        ↑ decline                                   │ confirm
//!        └──────────────── processing ←──────────────┘
//!                              │ authorized
//!              manual ┌────────┴────────┐ automatic
//!          requires_capture ─capture→ succeeded (refunds)
//!   cancel: requires_payment_method | requires_confirmation | requires_capture → canceled
//!   expiry (sweeper): requires_capture past authorization_expires_at → canceled
//! ```
//!
//! An intent checkout created for an order (`order_id` set) is the order's
//! payment: confirm, cancel, capture and refund are the checkout saga's
//! alone ([`Actor::may_manage`]); anyone else — the customer, an admin,
//! another service — could otherwise void the authorization the saga is
//! about to commit stock against.

use backroom_shared::auth::{Caller, Principal};
use chrono::{DateTime, Duration, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use crate::{
    db::{
        models::{Intent, PaymentFailure, RefundRow},
        repo,
    },
    domain::{
        CancellationReason, CaptureMethod, Currency, DeclineKind, Error, IntentStatus, JournalKind,
        PROCESSOR_ERROR, RefundReason, order_name, payment_intent_name, payment_method_name,
    },
    processor::{AuthorizeError, AuthorizeRequest, Processor},
};

/// Who acts, reduced to what authorization needs (cheap to move into
/// blocking closures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The caller's account, if a person.
    pub account: Option<Uuid>,
    /// Role admin.
    pub admin: bool,
    /// A service principal with role service.
    pub service: bool,
    /// The checkout saga: this service's own principal (its
    /// `BACKROOM_SERVICE_CLIENT_ID`), the only one that acts on an order's
    /// payment.
    pub checkout: bool,
}

/// What `metadata.required` says when a customer touches another's resource.
pub const OWNER_ADMIN_OR_SERVICE: &str = "owner, role admin or role service";
/// What `metadata.required` says for payment methods.
pub const OWNER_OR_ADMIN: &str = "owner or role admin";
/// What `metadata.required` says for capture, refunds and the ledger.
pub const ADMIN_OR_SERVICE: &str = "role admin or role service";
/// What `metadata.required` says when only checkout may do it.
pub const CHECKOUT_ONLY: &str = "the checkout service principal";

impl Actor {
    /// The actor of a verified caller; `checkout_principal` is the client id
    /// of this service's own principal (the saga), if it runs checkout.
    pub fn of(caller: &Caller, checkout_principal: Option<&str>) -> Self {
        let service = caller.is_service();
        let checkout = service
            && matches!(
                (caller.claims.principal(), checkout_principal),
                (Some(Principal::Service(id)), Some(ours)) if id == ours
            );
        Self {
            account: caller.account_id(),
            admin: caller.is_admin(),
            service,
            checkout,
        }
    }

    /// Whether the actor may confirm, cancel, capture or refund `intent`:
    /// an order's payment only through checkout.
    pub fn may_manage(self, intent: &Intent) -> Result<(), Error> {
        match intent.order_id {
            Some(order) if !self.checkout => Err(Error::ManagedByOrder {
                order: order_name(order),
                intent: payment_intent_name(intent.id),
            }),
            _ => Ok(()),
        }
    }

    /// Only checkout may create an intent for an order.
    pub fn may_pay_for_orders(self) -> Result<(), Error> {
        if self.checkout {
            Ok(())
        } else {
            Err(Error::AccessDenied(CHECKOUT_ONLY))
        }
    }

    /// Owner, admin or service may act for the account `customer` a request
    /// names (PERMISSION_DENIED otherwise: naming an account reveals nothing).
    pub fn may_act_for(self, customer: Uuid) -> Result<(), Error> {
        if self.admin || self.service || self.account == Some(customer) {
            Ok(())
        } else {
            Err(Error::AccessDenied(OWNER_ADMIN_OR_SERVICE))
        }
    }

    /// Whether the actor sees an intent (and its refunds) of `customer`: the
    /// owner, an admin or a service. Everyone else is told it does not exist
    /// (NOT_FOUND, exactly as for a missing one), so another customer's ids
    /// cannot be probed for existence.
    pub fn sees_intents_of(self, customer: Uuid) -> bool {
        self.admin || self.service || self.account == Some(customer)
    }

    /// Whether the actor sees a payment method of `customer`: the owner or an
    /// admin (others: NOT_FOUND, as for [`Self::sees_intents_of`]).
    pub fn sees_methods_of(self, customer: Uuid) -> bool {
        self.admin || self.account == Some(customer)
    }

    /// Before a payment method is looked up by name: only a person (its
    /// possible owner) or an admin may ask. This depends on the caller alone,
    /// so PERMISSION_DENIED reveals nothing about the method.
    pub fn may_look_up_methods(self) -> Result<(), Error> {
        if self.admin || self.account.is_some() {
            Ok(())
        } else {
            Err(Error::AccessDenied(OWNER_OR_ADMIN))
        }
    }

    /// Owner or admin may manage the payment methods of the account
    /// `customer` a request names.
    pub fn may_manage_methods_of(self, customer: Uuid) -> Result<(), Error> {
        if self.admin || self.account == Some(customer) {
            Ok(())
        } else {
            Err(Error::AccessDenied(OWNER_OR_ADMIN))
        }
    }

    /// Admin or service only.
    pub fn require_admin_or_service(self) -> Result<(), Error> {
        if self.admin || self.service {
            Ok(())
        } else {
            Err(Error::AccessDenied(ADMIN_OR_SERVICE))
        }
    }
}

/// A failed authorization attempt, persisted after the refused mutation's
/// own writes were rolled back (a decline is stored as the request's
/// outcome, yet the intent must show it).
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    /// The intent as it must be stored.
    pub intent: Intent,
    /// Insert it (CreatePaymentIntent with confirm) rather than update.
    pub insert: bool,
}

impl FailedAttempt {
    /// Writes the attempt's outcome.
    pub fn persist(&self, conn: &mut PgConnection) -> Result<(), Error> {
        if self.insert {
            repo::insert_intent(conn, &self.intent)
        } else {
            repo::record_failed_attempt(conn, &self.intent)
        }
    }
}

fn checked(value: Option<i64>) -> Result<i64, Error> {
    value.ok_or_else(|| Error::field("amount", "the amount overflows"))
}

/// Runs state transitions with a processor, a time and the authorization
/// lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Engine<'a> {
    /// The card processor.
    pub processor: &'a dyn Processor,
    /// The service clock's now.
    pub now: DateTime<Utc>,
    /// How long an uncaptured authorization lives.
    pub authorization_ttl: Duration,
}

impl Engine<'_> {
    /// Confirms `intent` (locked, or just inserted): authorizes its amount on
    /// its payment method (or `payment_method`), capturing at once when the
    /// capture method is automatic. On a decline or processor failure,
    /// `failed` receives the state to persist; `insert` says whether the
    /// intent was created in this same request.
    pub fn confirm(
        &self,
        conn: &mut PgConnection,
        actor: Actor,
        mut intent: Intent,
        payment_method: Option<Uuid>,
        insert: bool,
        failed: &mut Option<FailedAttempt>,
    ) -> Result<Intent, Error> {
        if !intent.status.can_confirm() {
            return Err(Error::InvalidState(intent.status));
        }
        let method_id = payment_method
            .or(intent.payment_method_id)
            .ok_or(Error::PaymentMethodRequired)?;
        let method = self.usable_method(conn, actor, intent.customer_id, method_id)?;
        intent.payment_method_id = Some(method_id);
        intent.status = IntentStatus::Processing;
        let key = format!("{}/authorize/{}", intent.id, intent.authorization_attempt);
        let outcome = if method.is_expired(self.now) {
            Err(AuthorizeError::Declined(DeclineKind::ExpiredCard))
        } else {
            self.processor.authorize(AuthorizeRequest {
                token: &method.processor_token,
                currency: intent.currency,
                amount: intent.amount,
                idempotency_key: &key,
            })
        };
        let name = payment_intent_name(intent.id);
        let authorization = match outcome {
            Ok(authorization) => authorization,
            Err(AuthorizeError::Declined(kind)) => {
                intent.status = IntentStatus::RequiresPaymentMethod;
                intent.payment_method_id = None;
                intent.last_error = Some(PaymentFailure {
                    code: kind.reason().to_owned(),
                    decline_code: kind.decline_code().to_owned(),
                    message: kind.message().to_owned(),
                    payment_method: Some(method_id),
                });
                // A new attempt, a new processor key.
                intent.authorization_attempt = intent.authorization_attempt.saturating_add(1);
                intent.updated_at = self.now;
                *failed = Some(FailedAttempt { intent, insert });
                return Err(Error::Declined { kind, intent: name });
            }
            Err(AuthorizeError::Unavailable(cause)) => {
                tracing::warn!(%cause, intent = %name, "authorization failed at the processor");
                *failed = Some(self.processor_failure(intent, method_id, insert));
                return Err(Error::ProcessorUnavailable { intent: name });
            }
        };
        intent.authorization_id = Some(authorization.id.clone());
        intent.amount_authorized = intent.amount;
        intent.last_error = None;
        intent.updated_at = self.now;
        match intent.capture_method {
            CaptureMethod::Manual => {
                intent.status = IntentStatus::RequiresCapture;
                intent.amount_capturable = intent.amount;
                intent.authorization_expires_at = Some(self.now + self.authorization_ttl);
                repo::update_intent(conn, &intent)?;
                self.post(conn, &intent, JournalKind::AuthorizationHold, intent.amount)?;
            }
            CaptureMethod::Automatic => {
                let captured = self.processor.capture(
                    &authorization.id,
                    intent.amount,
                    &format!("{}/capture", intent.id),
                );
                if let Err(cause) = captured {
                    // The hold stays at the processor under the same key; a
                    // retry finds it and captures it once.
                    tracing::warn!(%cause, intent = %name, "automatic capture failed");
                    *failed = Some(self.processor_failure(intent, method_id, insert));
                    return Err(Error::ProcessorUnavailable { intent: name });
                }
                intent.status = IntentStatus::Succeeded;
                intent.amount_received = intent.amount;
                repo::update_intent(conn, &intent)?;
                self.post(conn, &intent, JournalKind::AuthorizationHold, intent.amount)?;
                self.post(conn, &intent, JournalKind::Capture, intent.amount)?;
            }
        }
        Ok(intent)
    }

    fn processor_failure(
        &self,
        mut intent: Intent,
        method_id: Uuid,
        insert: bool,
    ) -> FailedAttempt {
        intent.status = IntentStatus::RequiresConfirmation;
        intent.payment_method_id = Some(method_id);
        intent.authorization_id = None;
        intent.amount_authorized = 0;
        intent.last_error = Some(PaymentFailure {
            code: PROCESSOR_ERROR.to_owned(),
            decline_code: "processing_error".to_owned(),
            message: "the payment processor failed; retry".to_owned(),
            payment_method: Some(method_id),
        });
        intent.updated_at = self.now;
        FailedAttempt { intent, insert }
    }

    /// A payment method `actor` may use for `customer`'s intent.
    pub fn usable_method(
        &self,
        conn: &mut PgConnection,
        actor: Actor,
        customer: Uuid,
        method_id: Uuid,
    ) -> Result<crate::db::models::PaymentMethodRow, Error> {
        // Another customer's card is answered exactly as a missing one.
        repo::get_payment_method(conn, method_id)?
            .filter(|method| {
                method.customer_id == customer
                    && (actor.admin || actor.service || actor.account == Some(customer))
            })
            .ok_or_else(|| Error::PaymentMethodNotFound(payment_method_name(method_id)))
    }

    /// Captures `amount` (default: everything capturable) of an authorized
    /// intent and releases the rest.
    pub fn capture(
        &self,
        conn: &mut PgConnection,
        mut intent: Intent,
        amount: Option<(Currency, i64)>,
    ) -> Result<Intent, Error> {
        if intent.status != IntentStatus::RequiresCapture {
            return Err(Error::InvalidState(intent.status));
        }
        if intent
            .authorization_expires_at
            .is_some_and(|expires| expires <= self.now)
        {
            return Err(Error::AuthorizationExpired);
        }
        let capturable = intent.amount_capturable;
        let amount = match amount {
            None => capturable,
            Some((currency, _)) if currency != intent.currency => {
                return Err(Error::CurrencyMismatch {
                    field: "amount_to_capture.currency_code",
                });
            }
            Some((_, minor)) if minor > capturable => {
                return Err(Error::AmountExceedsCapturable { capturable });
            }
            Some((_, minor)) => minor,
        };
        let authorization = intent.authorization_id.clone().unwrap_or_default();
        self.processor
            .capture(&authorization, amount, &format!("{}/capture", intent.id))
            .map_err(|cause| {
                tracing::warn!(%cause, "capture failed at the processor");
                Error::ProcessorUnavailable {
                    intent: payment_intent_name(intent.id),
                }
            })?;
        let remainder = checked(capturable.checked_sub(amount))?;
        intent.amount_received = checked(intent.amount_received.checked_add(amount))?;
        intent.amount_capturable = 0;
        intent.status = IntentStatus::Succeeded;
        intent.authorization_expires_at = None;
        intent.updated_at = self.now;
        repo::update_intent(conn, &intent)?;
        self.post(conn, &intent, JournalKind::Capture, amount)?;
        if remainder > 0 {
            self.post(conn, &intent, JournalKind::Release, remainder)?;
        }
        Ok(intent)
    }

    /// Cancels an intent, voiding its authorization if it holds one.
    pub fn cancel(
        &self,
        conn: &mut PgConnection,
        mut intent: Intent,
        reason: CancellationReason,
    ) -> Result<Intent, Error> {
        if !intent.status.can_cancel() {
            return Err(Error::InvalidState(intent.status));
        }
        let released = intent.amount_capturable;
        if intent.status == IntentStatus::RequiresCapture {
            let authorization = intent.authorization_id.clone().unwrap_or_default();
            self.processor
                .void(&authorization, &format!("{}/void", intent.id))
                .map_err(|cause| {
                    tracing::warn!(%cause, "void failed at the processor");
                    Error::ProcessorUnavailable {
                        intent: payment_intent_name(intent.id),
                    }
                })?;
        }
        intent.status = IntentStatus::Canceled;
        intent.cancellation_reason = Some(reason);
        intent.amount_capturable = 0;
        intent.authorization_expires_at = None;
        intent.updated_at = self.now;
        repo::update_intent(conn, &intent)?;
        if released > 0 {
            self.post(conn, &intent, JournalKind::Release, released)?;
        }
        Ok(intent)
    }

    /// Refunds `amount` (default: everything not yet refunded) of a
    /// succeeded intent.
    pub fn refund(
        &self,
        conn: &mut PgConnection,
        mut intent: Intent,
        amount: Option<(Currency, i64)>,
        reason: RefundReason,
    ) -> Result<(Intent, RefundRow), Error> {
        if intent.status != IntentStatus::Succeeded {
            return Err(Error::InvalidState(intent.status));
        }
        let refundable = checked(intent.amount_received.checked_sub(intent.amount_refunded))?;
        let amount = match amount {
            Some((currency, _)) if currency != intent.currency => {
                return Err(Error::CurrencyMismatch {
                    field: "amount.currency_code",
                });
            }
            Some((_, minor)) => minor,
            None => refundable,
        };
        if refundable == 0 || amount > refundable {
            return Err(Error::RefundExceedsCaptured { refundable });
        }
        // Sequenced per intent: a retry after a lost response reuses the key.
        let sequence = repo::count_refunds(conn, intent.id)?;
        let authorization = intent.authorization_id.clone().unwrap_or_default();
        let processor_refund = self
            .processor
            .refund(
                &authorization,
                amount,
                &format!("{}/refund/{sequence}", intent.id),
            )
            .map_err(|cause| {
                tracing::warn!(%cause, "refund failed at the processor");
                Error::ProcessorUnavailable {
                    intent: payment_intent_name(intent.id),
                }
            })?;
        let refund = RefundRow::succeeded(
            Uuid::now_v7(),
            &intent,
            amount,
            reason,
            processor_refund,
            self.now,
        );
        repo::insert_refund(conn, &refund)?;
        intent.amount_refunded = checked(intent.amount_refunded.checked_add(amount))?;
        intent.updated_at = self.now;
        repo::update_intent(conn, &intent)?;
        repo::post_journal(
            conn,
            intent.id,
            JournalKind::Refund,
            Some(refund.id),
            intent.currency,
            amount,
            self.now,
        )?;
        Ok((intent, refund))
    }

    fn post(
        &self,
        conn: &mut PgConnection,
        intent: &Intent,
        kind: JournalKind,
        amount: i64,
    ) -> Result<Uuid, Error> {
        repo::post_journal(
            conn,
            intent.id,
            kind,
            None,
            intent.currency,
            amount,
            self.now,
        )
    }
}
