//! Rows and their conversions to domain values (the only place rows and
//! domain meet).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::payment::{journals, ledger_entries, payment_intents, payment_methods, refunds};
use crate::domain::{
    CancellationReason, CaptureMethod, Currency, Direction, Error, IntentStatus, JournalKind,
    Metadata, RefundReason, RefundStatus, card::Brand,
};

/// A payment method as stored (no PAN, no CVC).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_methods, check_for_backend(diesel::pg::Pg))]
pub struct PaymentMethodRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub brand: String,
    pub last4: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub fingerprint: String,
    pub holder_name: String,
    pub processor_token: String,
    pub created_at: DateTime<Utc>,
    pub detached_at: Option<DateTime<Utc>>,
}

impl PaymentMethodRow {
    /// The card network.
    pub fn brand(&self) -> Brand {
        Brand::from_code(&self.brand)
    }

    /// Whether the card's expiry month has passed at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        crate::domain::card::Expiry {
            month: u32::try_from(self.exp_month).unwrap_or(0),
            year: self.exp_year,
        }
        .is_past(now)
    }
}

/// A payment intent as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, Identifiable)]
#[diesel(table_name = payment_intents, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct IntentRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub amount: i64,
    pub amount_authorized: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub status: String,
    pub capture_method: String,
    pub payment_method_id: Option<Uuid>,
    pub description: String,
    pub metadata: String,
    pub last_error_code: Option<String>,
    pub last_error_decline_code: Option<String>,
    pub last_error_message: Option<String>,
    pub last_error_payment_method: Option<Uuid>,
    pub cancellation_reason: Option<String>,
    pub authorization_id: Option<String>,
    pub authorization_expires_at: Option<DateTime<Utc>>,
    pub authorization_attempt: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub order_id: Option<Uuid>,
}

/// Why the last authorization attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFailure {
    /// `CARD_DECLINED`, `INSUFFICIENT_FUNDS`, `EXPIRED_CARD` or `PROCESSOR_ERROR`.
    pub code: String,
    /// The processor's finer reason.
    pub decline_code: String,
    /// Safe for the customer.
    pub message: String,
    /// The method that failed.
    pub payment_method: Option<Uuid>,
}

/// A payment intent as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub amount: i64,
    pub amount_authorized: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub status: IntentStatus,
    pub capture_method: CaptureMethod,
    pub payment_method_id: Option<Uuid>,
    pub description: String,
    pub metadata: Metadata,
    pub last_error: Option<PaymentFailure>,
    pub cancellation_reason: Option<CancellationReason>,
    pub authorization_id: Option<String>,
    pub authorization_expires_at: Option<DateTime<Utc>>,
    pub authorization_attempt: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The order whose payment this is (checkout created it): managed by
    /// checkout only.
    pub order_id: Option<Uuid>,
}

impl TryFrom<IntentRow> for Intent {
    type Error = Error;

    fn try_from(row: IntentRow) -> Result<Self, Error> {
        let last_error = row.last_error_code.map(|code| PaymentFailure {
            code,
            decline_code: row.last_error_decline_code.unwrap_or_default(),
            message: row.last_error_message.unwrap_or_default(),
            payment_method: row.last_error_payment_method,
        });
        Ok(Self {
            id: row.id,
            customer_id: row.customer_id,
            currency: Currency::stored(&row.currency)?,
            amount: row.amount,
            amount_authorized: row.amount_authorized,
            amount_capturable: row.amount_capturable,
            amount_received: row.amount_received,
            amount_refunded: row.amount_refunded,
            status: IntentStatus::from_code(&row.status)?,
            capture_method: CaptureMethod::from_code(&row.capture_method)?,
            payment_method_id: row.payment_method_id,
            description: row.description,
            metadata: Metadata::from_json(&row.metadata)?,
            last_error,
            cancellation_reason: row
                .cancellation_reason
                .as_deref()
                .map(CancellationReason::from_code)
                .transpose()?,
            authorization_id: row.authorization_id,
            authorization_expires_at: row.authorization_expires_at,
            authorization_attempt: row.authorization_attempt,
            created_at: row.created_at,
            updated_at: row.updated_at,
            order_id: row.order_id,
        })
    }
}

impl From<&Intent> for IntentRow {
    fn from(intent: &Intent) -> Self {
        let error = intent.last_error.as_ref();
        Self {
            id: intent.id,
            customer_id: intent.customer_id,
            currency: intent.currency.code().to_owned(),
            amount: intent.amount,
            amount_authorized: intent.amount_authorized,
            amount_capturable: intent.amount_capturable,
            amount_received: intent.amount_received,
            amount_refunded: intent.amount_refunded,
            status: intent.status.code().to_owned(),
            capture_method: intent.capture_method.code().to_owned(),
            payment_method_id: intent.payment_method_id,
            description: intent.description.clone(),
            metadata: intent.metadata.to_json(),
            last_error_code: error.map(|e| e.code.clone()),
            last_error_decline_code: error.map(|e| e.decline_code.clone()),
            last_error_message: error.map(|e| e.message.clone()),
            last_error_payment_method: error.and_then(|e| e.payment_method),
            cancellation_reason: intent.cancellation_reason.map(|r| r.code().to_owned()),
            authorization_id: intent.authorization_id.clone(),
            authorization_expires_at: intent.authorization_expires_at,
            authorization_attempt: intent.authorization_attempt,
            created_at: intent.created_at,
            updated_at: intent.updated_at,
            order_id: intent.order_id,
        }
    }
}

/// A refund as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds, check_for_backend(diesel::pg::Pg))]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_intent_id: Uuid,
    pub currency: String,
    pub amount: i64,
    pub status: String,
    pub reason: String,
    pub processor_refund_id: String,
    pub created_at: DateTime<Utc>,
}

impl RefundRow {
    /// A succeeded refund.
    pub fn succeeded(
        id: Uuid,
        intent: &Intent,
        amount: i64,
        reason: RefundReason,
        processor_refund_id: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            payment_intent_id: intent.id,
            currency: intent.currency.code().to_owned(),
            amount,
            status: RefundStatus::Succeeded.code().to_owned(),
            reason: reason.code().to_owned(),
            processor_refund_id,
            created_at: now,
        }
    }
}

/// A journal header as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = journals, check_for_backend(diesel::pg::Pg))]
pub struct JournalRow {
    pub id: Uuid,
    pub payment_intent_id: Uuid,
    pub kind: String,
    pub refund_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A ledger entry as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ledger_entries, check_for_backend(diesel::pg::Pg))]
pub struct EntryRow {
    pub id: i64,
    pub journal_id: Uuid,
    pub ledger_account: String,
    pub direction: String,
    pub currency: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

/// A new ledger entry.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ledger_entries)]
pub struct NewEntryRow {
    pub journal_id: Uuid,
    pub ledger_account: String,
    pub direction: String,
    pub currency: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

/// A journal with its entries.
#[derive(Debug, Clone)]
pub struct JournalWithEntries {
    pub journal: JournalRow,
    pub entries: Vec<EntryRow>,
}

impl JournalWithEntries {
    /// The journal kind.
    pub fn kind(&self) -> Result<JournalKind, Error> {
        JournalKind::from_code(&self.journal.kind)
    }
}

/// Balance of one ledger account in one currency.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct BalanceRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub ledger_account: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub currency: String,
    /// Σ debits − Σ credits.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub net_debit: i64,
}

/// A ledger account as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::payment::ledger_accounts, check_for_backend(diesel::pg::Pg))]
pub struct LedgerAccountRow {
    pub code: String,
    pub display_name: String,
    pub kind: String,
}

/// Reads a stored direction.
pub fn direction(entry: &EntryRow) -> Result<Direction, Error> {
    Direction::from_code(&entry.direction)
}
