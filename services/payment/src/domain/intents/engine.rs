//! The transitions of the payment-intent state machine (see [`super`]):
//! confirm, capture, cancel and refund, each on an intent locked
//! `FOR UPDATE` inside the caller's transaction, calling the processor and
//! posting the journals of the money it moves in that same transaction.

use std::sync::Arc;

use backroom_shared::{auth::Access, money::Money};
use chrono::{DateTime, Duration, Utc};
use diesel::PgConnection;

use super::{CancellationReason, CaptureMethod, Intent, IntentStatus, PaymentFailure};
use crate::{
    db::repo,
    domain::{
        DeclineKind, Error, PROCESSOR_ERROR, PaymentMethodId, checked,
        ledger::JournalKind,
        payment_methods,
        refunds::{Refund, RefundReason},
    },
    processor::{AuthorizeError, AuthorizeRequest, Processor},
};

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
            repo::intents::insert(conn, &self.intent)
        } else {
            repo::intents::record_failed_attempt(conn, &self.intent)
        }
    }
}

/// Runs state transitions with a processor, a time and the authorization
/// lifetime; cheap to clone into a blocking closure.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The card processor.
    pub processor: Arc<dyn Processor>,
    /// The service clock's now.
    pub now: DateTime<Utc>,
    /// How long an uncaptured authorization lives.
    pub authorization_ttl: Duration,
}

impl Engine {
    /// Confirms `intent` (locked, or just inserted): authorizes its amount on
    /// its payment method (or `payment_method`), capturing at once when the
    /// capture method is automatic. On a decline or processor failure,
    /// `failed` receives the state to persist; `insert` says whether the
    /// intent was created in this same request.
    pub fn confirm(
        &self,
        conn: &mut PgConnection,
        access: Access,
        mut intent: Intent,
        payment_method: Option<PaymentMethodId>,
        insert: bool,
        failed: &mut Option<FailedAttempt>,
    ) -> Result<Intent, Error> {
        if !intent.status.can_confirm() {
            return Err(Error::InvalidState(intent.status));
        }
        let method_id = payment_method
            .or(intent.payment_method)
            .ok_or(Error::PaymentMethodRequired)?;
        let method = payment_methods::usable(conn, access, intent.customer, method_id)?;
        intent.payment_method = Some(method_id);
        intent.status = IntentStatus::Processing;
        let key = format!("{}/authorize/{}", intent.id, intent.authorization_attempt);
        let outcome = if method.is_expired(self.now) {
            Err(AuthorizeError::Declined(DeclineKind::ExpiredCard))
        } else {
            self.processor.authorize(AuthorizeRequest {
                token: &method.processor_token,
                amount: intent.amount,
                idempotency_key: &key,
            })
        };
        let authorization = match outcome {
            Ok(authorization) => authorization,
            Err(AuthorizeError::Declined(kind)) => {
                let id = intent.id;
                intent.status = IntentStatus::RequiresPaymentMethod;
                intent.payment_method = None;
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
                return Err(Error::Declined { kind, intent: id });
            }
            Err(AuthorizeError::Unavailable(cause)) => {
                let id = intent.id;
                tracing::warn!(%cause, intent = %id, "authorization failed at the processor");
                *failed = Some(self.processor_failure(intent, method_id, insert));
                return Err(Error::ProcessorUnavailable { intent: Some(id) });
            }
        };
        intent.amount_authorized = intent.amount;
        intent.last_error = None;
        intent.updated_at = self.now;
        match intent.capture_method {
            CaptureMethod::Manual => {
                intent.authorization = Some(authorization);
                intent.status = IntentStatus::RequiresCapture;
                intent.amount_capturable = intent.amount;
                intent.authorization_expires_at = Some(self.now + self.authorization_ttl);
                repo::intents::update(conn, &intent)?;
                self.post(conn, &intent, JournalKind::AuthorizationHold, intent.amount)?;
            }
            CaptureMethod::Automatic => {
                let captured = self.processor.capture(
                    &authorization,
                    intent.amount,
                    &format!("{}/capture", intent.id),
                );
                if let Err(cause) = captured {
                    // The hold stays at the processor under the same key; a
                    // retry finds it and captures it once.
                    let id = intent.id;
                    tracing::warn!(%cause, intent = %id, "automatic capture failed");
                    *failed = Some(self.processor_failure(intent, method_id, insert));
                    return Err(Error::ProcessorUnavailable { intent: Some(id) });
                }
                intent.authorization = Some(authorization);
                intent.status = IntentStatus::Succeeded;
                intent.amount_received = intent.amount;
                repo::intents::update(conn, &intent)?;
                self.post(conn, &intent, JournalKind::AuthorizationHold, intent.amount)?;
                self.post(conn, &intent, JournalKind::Capture, intent.amount)?;
            }
        }
        Ok(intent)
    }

    fn processor_failure(
        &self,
        mut intent: Intent,
        method_id: PaymentMethodId,
        insert: bool,
    ) -> FailedAttempt {
        intent.status = IntentStatus::RequiresConfirmation;
        intent.payment_method = Some(method_id);
        intent.authorization = None;
        intent.amount_authorized = intent.zero();
        intent.last_error = Some(PaymentFailure {
            code: PROCESSOR_ERROR.to_owned(),
            decline_code: "processing_error".to_owned(),
            message: "the payment processor failed; retry".to_owned(),
            payment_method: Some(method_id),
        });
        intent.updated_at = self.now;
        FailedAttempt { intent, insert }
    }

    /// Captures `amount` (default: everything capturable) of an authorized
    /// intent and releases the rest.
    pub fn capture(
        &self,
        conn: &mut PgConnection,
        mut intent: Intent,
        amount: Option<Money>,
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
            Some(amount) if amount.currency() != intent.amount.currency() => {
                return Err(Error::CurrencyMismatch {
                    field: "amount_to_capture.currency_code",
                });
            }
            Some(amount) if amount.minor() > capturable.minor() => {
                return Err(Error::AmountExceedsCapturable { capturable });
            }
            Some(amount) => amount,
        };
        let authorization = intent.authorization.clone().unwrap_or_default();
        self.processor
            .capture(&authorization, amount, &format!("{}/capture", intent.id))
            .map_err(|cause| {
                tracing::warn!(%cause, "capture failed at the processor");
                Error::ProcessorUnavailable {
                    intent: Some(intent.id),
                }
            })?;
        let remainder = checked(capturable.checked_sub(amount))?;
        intent.amount_received = checked(intent.amount_received.checked_add(amount))?;
        let tax_before = intent.tax_received;
        intent.tax_received = intent.tax_received_at(intent.amount_received);
        let tax = checked(intent.tax_received.checked_sub(tax_before))?;
        intent.amount_capturable = intent.zero();
        intent.status = IntentStatus::Succeeded;
        intent.authorization_expires_at = None;
        intent.updated_at = self.now;
        repo::intents::update(conn, &intent)?;
        repo::ledger::post_journal(
            conn,
            intent.id,
            JournalKind::Capture,
            None,
            amount,
            tax,
            self.now,
        )?;
        if remainder.minor() > 0 {
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
            let authorization = intent.authorization.clone().unwrap_or_default();
            self.processor
                .void(&authorization, &format!("{}/void", intent.id))
                .map_err(|cause| {
                    tracing::warn!(%cause, "void failed at the processor");
                    Error::ProcessorUnavailable {
                        intent: Some(intent.id),
                    }
                })?;
        }
        intent.status = IntentStatus::Canceled;
        intent.cancellation_reason = Some(reason);
        intent.amount_capturable = intent.zero();
        intent.authorization_expires_at = None;
        intent.updated_at = self.now;
        repo::intents::update(conn, &intent)?;
        if released.minor() > 0 {
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
        amount: Option<Money>,
        reason: RefundReason,
    ) -> Result<(Intent, Refund), Error> {
        if intent.status != IntentStatus::Succeeded {
            return Err(Error::InvalidState(intent.status));
        }
        let refundable = checked(intent.amount_received.checked_sub(intent.amount_refunded))?;
        let amount = match amount {
            Some(amount) if amount.currency() != intent.amount.currency() => {
                return Err(Error::CurrencyMismatch {
                    field: "amount.currency_code",
                });
            }
            Some(amount) => amount,
            None => refundable,
        };
        if refundable.minor() == 0 || amount.minor() > refundable.minor() {
            return Err(Error::RefundExceedsCaptured { refundable });
        }
        // Sequenced per intent: a retry after a lost response reuses the key.
        let sequence = repo::refunds::count(conn, intent.id)?;
        let authorization = intent.authorization.clone().unwrap_or_default();
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
                    intent: Some(intent.id),
                }
            })?;
        intent.amount_refunded = checked(intent.amount_refunded.checked_add(amount))?;
        let tax_before = intent.tax_refunded;
        intent.tax_refunded = intent.tax_refunded_at(intent.amount_refunded);
        let tax = checked(intent.tax_refunded.checked_sub(tax_before))?;
        let refund = Refund::succeeded(&intent, amount, tax, reason, processor_refund, self.now);
        repo::refunds::insert(conn, &refund)?;
        intent.updated_at = self.now;
        repo::intents::update(conn, &intent)?;
        repo::ledger::post_journal(
            conn,
            intent.id,
            JournalKind::Refund,
            Some(refund.id),
            amount,
            tax,
            self.now,
        )?;
        Ok((intent, refund))
    }

    fn post(
        &self,
        conn: &mut PgConnection,
        intent: &Intent,
        kind: JournalKind,
        amount: Money,
    ) -> Result<(), Error> {
        repo::ledger::post_journal(conn, intent.id, kind, None, amount, intent.zero(), self.now)
            .map(|_| ())
    }
}
