//! Rows as diesel reads and writes them, and their conversions to and from
//! the domain types: the only place rows and domain meet. A row the domain
//! cannot read (an unknown stored enum, a corrupt name) is an error, never
//! a guess.

use backroom_shared::money::{Currency, Money};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::payment::{
    journals, ledger_accounts, ledger_entries, payment_intents, payment_methods, refunds,
};
use crate::{
    domain::{
        CustomerId, Error, IntentId, JournalId, LedgerCode, OrderId, PaymentMethodId, RefundId,
        card::{Brand, Expiry},
        intents::{CancellationReason, CaptureMethod, Intent, IntentStatus, PaymentFailure},
        ledger::{Direction, Entry, Journal, JournalKind, LedgerAccount, LedgerKind},
        payment_methods::PaymentMethod,
        refunds::{Refund, RefundReason, RefundStatus},
        values::Metadata,
    },
    processor::Authorization,
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

impl From<PaymentMethodRow> for PaymentMethod {
    fn from(row: PaymentMethodRow) -> Self {
        Self {
            id: PaymentMethodId::from_uuid(row.id),
            customer: CustomerId::from_uuid(row.customer_id),
            brand: Brand::from_code(&row.brand),
            last4: row.last4,
            expiry: Expiry {
                // 1–12 by the table's CHECK; 0 would read as long expired.
                month: u32::try_from(row.exp_month).unwrap_or(0),
                year: row.exp_year,
            },
            fingerprint: row.fingerprint,
            holder_name: row.holder_name,
            processor_token: row.processor_token,
            created_at: row.created_at,
        }
    }
}

impl TryFrom<&PaymentMethod> for PaymentMethodRow {
    type Error = Error;

    fn try_from(method: &PaymentMethod) -> Result<Self, Error> {
        Ok(Self {
            id: method.id.uuid(),
            customer_id: method.customer.uuid(),
            brand: method.brand.code().to_owned(),
            last4: method.last4.clone(),
            exp_month: i32::try_from(method.expiry.month)
                .map_err(|_| Error::field("card.exp_month", "must be 1–12"))?,
            exp_year: method.expiry.year,
            fingerprint: method.fingerprint.clone(),
            holder_name: method.holder_name.clone(),
            processor_token: method.processor_token.clone(),
            created_at: method.created_at,
            detached_at: None,
        })
    }
}

/// A payment intent as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, Identifiable)]
#[diesel(table_name = payment_intents, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct IntentRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
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
    pub tax: i64,
    pub tax_received: i64,
    pub tax_refunded: i64,
}

impl TryFrom<IntentRow> for Intent {
    type Error = Error;

    fn try_from(row: IntentRow) -> Result<Self, Error> {
        let money = |minor| Money::new(row.currency, minor);
        let last_error = row.last_error_code.map(|code| PaymentFailure {
            code,
            decline_code: row.last_error_decline_code.unwrap_or_default(),
            message: row.last_error_message.unwrap_or_default(),
            payment_method: row
                .last_error_payment_method
                .map(PaymentMethodId::from_uuid),
        });
        Ok(Self {
            id: IntentId::from_uuid(row.id),
            customer: CustomerId::from_uuid(row.customer_id),
            amount: money(row.amount),
            amount_authorized: money(row.amount_authorized),
            amount_capturable: money(row.amount_capturable),
            amount_received: money(row.amount_received),
            amount_refunded: money(row.amount_refunded),
            status: IntentStatus::from_stored(&row.status)?,
            capture_method: CaptureMethod::from_stored(&row.capture_method)?,
            payment_method: row.payment_method_id.map(PaymentMethodId::from_uuid),
            description: row.description,
            metadata: Metadata::from_json(&row.metadata)?,
            last_error,
            cancellation_reason: row
                .cancellation_reason
                .as_deref()
                .map(CancellationReason::from_stored)
                .transpose()?,
            authorization: row.authorization_id.map(|id| Authorization { id }),
            authorization_expires_at: row.authorization_expires_at,
            authorization_attempt: row.authorization_attempt,
            created_at: row.created_at,
            updated_at: row.updated_at,
            order: row.order_id.map(OrderId::from_uuid),
            tax: money(row.tax),
            tax_received: money(row.tax_received),
            tax_refunded: money(row.tax_refunded),
        })
    }
}

impl From<&Intent> for IntentRow {
    fn from(intent: &Intent) -> Self {
        let error = intent.last_error.as_ref();
        Self {
            id: intent.id.uuid(),
            customer_id: intent.customer.uuid(),
            currency: intent.amount.currency(),
            amount: intent.amount.minor(),
            amount_authorized: intent.amount_authorized.minor(),
            amount_capturable: intent.amount_capturable.minor(),
            amount_received: intent.amount_received.minor(),
            amount_refunded: intent.amount_refunded.minor(),
            status: intent.status.as_str().to_owned(),
            capture_method: intent.capture_method.as_str().to_owned(),
            payment_method_id: intent.payment_method.map(PaymentMethodId::uuid),
            description: intent.description.clone(),
            metadata: intent.metadata.to_json(),
            last_error_code: error.map(|e| e.code.clone()),
            last_error_decline_code: error.map(|e| e.decline_code.clone()),
            last_error_message: error.map(|e| e.message.clone()),
            last_error_payment_method: error.and_then(|e| e.payment_method.map(|m| m.uuid())),
            cancellation_reason: intent.cancellation_reason.map(|r| r.as_str().to_owned()),
            authorization_id: intent.authorization.as_ref().map(|a| a.id.clone()),
            authorization_expires_at: intent.authorization_expires_at,
            authorization_attempt: intent.authorization_attempt,
            created_at: intent.created_at,
            updated_at: intent.updated_at,
            order_id: intent.order.map(OrderId::uuid),
            tax: intent.tax.minor(),
            tax_received: intent.tax_received.minor(),
            tax_refunded: intent.tax_refunded.minor(),
        }
    }
}

/// A refund as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refunds, check_for_backend(diesel::pg::Pg))]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_intent_id: Uuid,
    pub currency: Currency,
    pub amount: i64,
    pub status: String,
    pub reason: String,
    pub processor_refund_id: String,
    pub created_at: DateTime<Utc>,
    pub tax: i64,
}

impl TryFrom<RefundRow> for Refund {
    type Error = Error;

    fn try_from(row: RefundRow) -> Result<Self, Error> {
        Ok(Self {
            id: RefundId::from_uuid(row.id),
            intent: IntentId::from_uuid(row.payment_intent_id),
            amount: Money::new(row.currency, row.amount),
            status: RefundStatus::from_stored(&row.status)?,
            reason: RefundReason::from_stored(&row.reason)?,
            processor_refund_id: row.processor_refund_id,
            created_at: row.created_at,
            tax: Money::new(row.currency, row.tax),
        })
    }
}

impl From<&Refund> for RefundRow {
    fn from(refund: &Refund) -> Self {
        Self {
            id: refund.id.uuid(),
            payment_intent_id: refund.intent.uuid(),
            currency: refund.amount.currency(),
            amount: refund.amount.minor(),
            status: refund.status.as_str().to_owned(),
            reason: refund.reason.as_str().to_owned(),
            processor_refund_id: refund.processor_refund_id.clone(),
            created_at: refund.created_at,
            tax: refund.tax.minor(),
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
    pub currency: Currency,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<EntryRow> for Entry {
    type Error = Error;

    fn try_from(row: EntryRow) -> Result<Self, Error> {
        Ok(Self {
            id: row.id,
            journal: JournalId::from_uuid(row.journal_id),
            account: LedgerCode::from_stored(row.ledger_account),
            direction: Direction::from_stored(&row.direction)?,
            amount: Money::new(row.currency, row.amount),
            created_at: row.created_at,
        })
    }
}

/// A new ledger entry.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ledger_entries)]
pub struct NewEntryRow {
    pub journal_id: Uuid,
    pub ledger_account: String,
    pub direction: String,
    pub currency: Currency,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

/// A journal with its entries, as read.
pub fn journal(row: JournalRow, entries: Vec<EntryRow>) -> Result<Journal, Error> {
    Ok(Journal {
        id: JournalId::from_uuid(row.id),
        intent: IntentId::from_uuid(row.payment_intent_id),
        kind: JournalKind::from_stored(&row.kind)?,
        refund: row.refund_id.map(RefundId::from_uuid),
        entries: entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<_, _>>()?,
        created_at: row.created_at,
    })
}

/// Balance of one ledger account in one currency.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct BalanceRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub ledger_account: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub currency: Currency,
    /// Σ debits − Σ credits.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub net_debit: i64,
}

/// A ledger account as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ledger_accounts, check_for_backend(diesel::pg::Pg))]
pub struct LedgerAccountRow {
    pub code: String,
    pub display_name: String,
    pub kind: String,
}

/// A ledger account with its balances among `balances` (rows of any
/// accounts).
pub fn ledger_account(
    row: LedgerAccountRow,
    balances: &[BalanceRow],
) -> Result<LedgerAccount, Error> {
    let kind = LedgerKind::from_stored(&row.kind)?;
    let balances = balances
        .iter()
        .filter(|b| b.ledger_account == row.code)
        .map(|b| {
            kind.balance(Money::new(b.currency, b.net_debit))
                .ok_or_else(|| Error::field("balances", "overflow"))
        })
        .collect::<Result<_, Error>>()?;
    Ok(LedgerAccount {
        code: LedgerCode::from_stored(row.code),
        display_name: row.display_name,
        kind,
        balances,
    })
}
