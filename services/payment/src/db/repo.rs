//! Repository functions: each takes a connection (the caller owns the
//! transaction) and the current time from the service clock. Every call is
//! instrumented without its arguments.

use backroom_shared::{db::DbError, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _,
    prelude::*,
    sql_query,
    sql_types::{Array, Text},
};
use tracing::instrument;
use uuid::Uuid;

use super::{
    models::{
        BalanceRow, EntryRow, Intent, IntentRow, JournalRow, JournalWithEntries, LedgerAccountRow,
        NewEntryRow, PaymentMethodRow, RefundRow,
    },
    schema::payment::{
        journals, ledger_accounts, ledger_entries, orders, payment_intents, payment_methods,
        refunds,
    },
};
use crate::{
    domain::{Currency, Error, IntentStatus, JournalKind},
    ledger,
};

/// Most payment methods a customer may have attached.
pub const MAX_PAYMENT_METHODS: i64 = 20;

/// Inserts a payment method unless the customer already has
/// [`MAX_PAYMENT_METHODS`] (serialised per customer by an advisory lock).
#[instrument(skip_all)]
pub fn insert_payment_method(
    conn: &mut PgConnection,
    row: &PaymentMethodRow,
) -> Result<PaymentMethodRow, Error> {
    sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind::<Text, _>(row.customer_id.to_string())
        .execute(conn)?;
    let attached: i64 = payment_methods::table
        .filter(payment_methods::customer_id.eq(row.customer_id))
        .filter(payment_methods::detached_at.is_null())
        .count()
        .get_result(conn)?;
    if attached >= MAX_PAYMENT_METHODS {
        return Err(Error::PaymentMethodLimitReached);
    }
    Ok(diesel::insert_into(payment_methods::table)
        .values(row)
        .returning(PaymentMethodRow::as_returning())
        .get_result(conn)?)
}

/// An attached (not detached) payment method.
#[instrument(skip_all)]
pub fn get_payment_method(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<PaymentMethodRow>, Error> {
    Ok(payment_methods::table
        .find(id)
        .filter(payment_methods::detached_at.is_null())
        .select(PaymentMethodRow::as_select())
        .first(conn)
        .optional()?)
}

/// A customer's attached payment methods, newest first, after `after`.
#[instrument(skip_all)]
pub fn list_payment_methods(
    conn: &mut PgConnection,
    customer: Uuid,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<PaymentMethodRow>, Error> {
    let mut query = payment_methods::table
        .filter(payment_methods::customer_id.eq(customer))
        .filter(payment_methods::detached_at.is_null())
        .select(PaymentMethodRow::as_select())
        .order(payment_methods::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payment_methods::id.lt(after));
    }
    Ok(query.load(conn)?)
}

/// Marks a payment method detached; false if it was not attached.
#[instrument(skip_all)]
pub fn detach_payment_method(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let updated = diesel::update(
        payment_methods::table
            .find(id)
            .filter(payment_methods::detached_at.is_null()),
    )
    .set(payment_methods::detached_at.eq(now))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Inserts an intent.
#[instrument(skip_all)]
pub fn insert_intent(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    diesel::insert_into(payment_intents::table)
        .values(IntentRow::from(intent))
        .execute(conn)?;
    Ok(())
}

/// Saves every mutable field of an intent.
#[instrument(skip_all)]
pub fn update_intent(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    let row = IntentRow::from(intent);
    diesel::update(payment_intents::table.find(intent.id))
        .set(&row)
        .execute(conn)?;
    Ok(())
}

/// Records a failed authorization attempt, unless the intent moved on
/// meanwhile (only a confirmable intent is overwritten).
#[instrument(skip_all)]
pub fn record_failed_attempt(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    let row = IntentRow::from(intent);
    diesel::update(
        payment_intents::table
            .find(intent.id)
            .filter(payment_intents::status.eq_any([
                IntentStatus::RequiresPaymentMethod.code(),
                IntentStatus::RequiresConfirmation.code(),
            ])),
    )
    .set(&row)
    .execute(conn)?;
    Ok(())
}

/// An intent.
#[instrument(skip_all)]
pub fn get_intent(conn: &mut PgConnection, id: Uuid) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .find(id)
        .select(IntentRow::as_select())
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// An intent, its row locked until the transaction ends: every state change
/// of one intent is serialised here.
#[instrument(skip_all)]
pub fn lock_intent(conn: &mut PgConnection, id: Uuid) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .find(id)
        .select(IntentRow::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// Intents, newest first, optionally of one customer / in one status.
#[instrument(skip_all)]
pub fn list_intents(
    conn: &mut PgConnection,
    customer: Option<Uuid>,
    status: Option<IntentStatus>,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<Intent>, Error> {
    let mut query = payment_intents::table
        .select(IntentRow::as_select())
        .order(payment_intents::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(customer) = customer {
        query = query.filter(payment_intents::customer_id.eq(customer));
    }
    if let Some(status) = status {
        query = query.filter(payment_intents::status.eq(status.code()));
    }
    if let Some(after) = after {
        query = query.filter(payment_intents::id.lt(after));
    }
    query
        .load(conn)?
        .into_iter()
        .map(Intent::try_from)
        .collect()
}

/// The customer of order `id`, if it exists.
#[instrument(skip_all)]
pub fn order_customer(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, Error> {
    Ok(orders::table
        .find(id)
        .select(orders::customer_id)
        .first(conn)
        .optional()?)
}

/// The payment intent of order `id`, if checkout created one.
#[instrument(skip_all)]
pub fn intent_of_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .filter(payment_intents::order_id.eq(id))
        .select(IntentRow::as_select())
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// Up to `limit` intents whose authorization expired at `now`, locked;
/// rows another replica is sweeping are skipped. An order's payment is left
/// alone while the order's saga still runs: the saga owns it then (before
/// the pivot its re-read sees the expiry and compensates; after the pivot a
/// capture the processor refuses sends the order to NEEDS_ATTENTION), and a
/// void under its feet would let it commit stock against a dead
/// authorization.
#[instrument(skip_all)]
pub fn lock_expired_authorizations(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Intent>, Error> {
    let saga_running = orders::table
        .filter(orders::id.nullable().eq(payment_intents::order_id))
        .filter(orders::state.ne_all(crate::checkout::repo::TERMINAL));
    payment_intents::table
        .filter(payment_intents::status.eq(IntentStatus::RequiresCapture.code()))
        .filter(payment_intents::authorization_expires_at.le(now))
        .filter(diesel::dsl::not(diesel::dsl::exists(saga_running)))
        .select(IntentRow::as_select())
        .order(payment_intents::authorization_expires_at.asc())
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)?
        .into_iter()
        .map(Intent::try_from)
        .collect()
}

/// Inserts a refund.
#[instrument(skip_all)]
pub fn insert_refund(conn: &mut PgConnection, row: &RefundRow) -> Result<(), Error> {
    diesel::insert_into(refunds::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// How many refunds an intent has (sequences the processor's keys).
#[instrument(skip_all)]
pub fn count_refunds(conn: &mut PgConnection, intent: Uuid) -> Result<i64, Error> {
    Ok(refunds::table
        .filter(refunds::payment_intent_id.eq(intent))
        .count()
        .get_result(conn)?)
}

/// A refund of an intent.
#[instrument(skip_all)]
pub fn get_refund(
    conn: &mut PgConnection,
    intent: Uuid,
    id: Uuid,
) -> Result<Option<RefundRow>, Error> {
    Ok(refunds::table
        .find(id)
        .filter(refunds::payment_intent_id.eq(intent))
        .select(RefundRow::as_select())
        .first(conn)
        .optional()?)
}

/// An intent's refunds, oldest first.
#[instrument(skip_all)]
pub fn list_refunds(
    conn: &mut PgConnection,
    intent: Uuid,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<RefundRow>, Error> {
    let mut query = refunds::table
        .filter(refunds::payment_intent_id.eq(intent))
        .select(RefundRow::as_select())
        .order(refunds::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(refunds::id.gt(after));
    }
    Ok(query.load(conn)?)
}

/// Posts a balanced journal of `kind` moving `amount` for an intent (the
/// only way journals are written; see [`crate::ledger`]).
#[instrument(skip_all, fields(kind = kind.code(), amount))]
pub fn post_journal(
    conn: &mut PgConnection,
    intent: Uuid,
    kind: JournalKind,
    refund: Option<Uuid>,
    currency: Currency,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<Uuid, Error> {
    if amount <= 0 {
        return Err(Error::Db(DbError::Other(anyhow::anyhow!(
            "journal amounts are positive, got {amount}"
        ))));
    }
    let id = Uuid::now_v7();
    diesel::insert_into(journals::table)
        .values(JournalRow {
            id,
            payment_intent_id: intent,
            kind: kind.code().to_owned(),
            refund_id: refund,
            created_at: now,
        })
        .execute(conn)?;
    let entries: Vec<NewEntryRow> = ledger::postings(kind)
        .iter()
        .map(|(account, direction)| NewEntryRow {
            journal_id: id,
            ledger_account: (*account).to_owned(),
            direction: direction.code().to_owned(),
            currency: currency.code().to_owned(),
            amount,
            created_at: now,
        })
        .collect();
    diesel::insert_into(ledger_entries::table)
        .values(&entries)
        .execute(conn)?;
    Ok(id)
}

fn with_entries(
    conn: &mut PgConnection,
    journals: Vec<JournalRow>,
) -> Result<Vec<JournalWithEntries>, Error> {
    let ids: Vec<Uuid> = journals.iter().map(|j| j.id).collect();
    let mut entries: Vec<EntryRow> = ledger_entries::table
        .filter(ledger_entries::journal_id.eq_any(&ids))
        .select(EntryRow::as_select())
        .order(ledger_entries::id.asc())
        .load(conn)?;
    Ok(journals
        .into_iter()
        .map(|journal| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut entries)
                .into_iter()
                .partition(|e| e.journal_id == journal.id);
            entries = rest;
            JournalWithEntries {
                journal,
                entries: mine,
            }
        })
        .collect())
}

/// A journal with its entries.
#[instrument(skip_all)]
pub fn get_journal(conn: &mut PgConnection, id: Uuid) -> Result<Option<JournalWithEntries>, Error> {
    let Some(journal) = journals::table
        .find(id)
        .select(JournalRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    Ok(with_entries(conn, vec![journal])?.pop())
}

/// Journals, oldest first, optionally of one intent / kind.
#[instrument(skip_all)]
pub fn list_journals(
    conn: &mut PgConnection,
    intent: Option<Uuid>,
    kind: Option<JournalKind>,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<JournalWithEntries>, Error> {
    let mut query = journals::table
        .select(JournalRow::as_select())
        .order(journals::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(intent) = intent {
        query = query.filter(journals::payment_intent_id.eq(intent));
    }
    if let Some(kind) = kind {
        query = query.filter(journals::kind.eq(kind.code()));
    }
    if let Some(after) = after {
        query = query.filter(journals::id.gt(after));
    }
    let rows = query.load(conn)?;
    with_entries(conn, rows)
}

/// Ledger accounts ordered by code, after `after`.
#[instrument(skip_all)]
pub fn list_ledger_accounts(
    conn: &mut PgConnection,
    page: &PageRequest,
    after: Option<&str>,
) -> Result<Vec<LedgerAccountRow>, Error> {
    let mut query = ledger_accounts::table
        .select(LedgerAccountRow::as_select())
        .order(ledger_accounts::code.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(ledger_accounts::code.gt(after.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// A ledger account.
#[instrument(skip_all)]
pub fn get_ledger_account(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Option<LedgerAccountRow>, Error> {
    Ok(ledger_accounts::table
        .find(code)
        .select(LedgerAccountRow::as_select())
        .first(conn)
        .optional()?)
}

/// Balances (Σ debits − Σ credits per currency) of the given accounts,
/// replayed from their entries, ordered by account and currency.
#[instrument(skip_all)]
pub fn balances(conn: &mut PgConnection, codes: &[String]) -> Result<Vec<BalanceRow>, Error> {
    Ok(sql_query(
        "SELECT ledger_account, currency, \
                sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)::bigint AS net_debit \
           FROM ledger_entries WHERE ledger_account = ANY($1) \
          GROUP BY ledger_account, currency ORDER BY ledger_account, currency",
    )
    .bind::<Array<Text>, _>(codes)
    .load(conn)?)
}

/// Entries of one account, oldest first, after entry id `after`.
#[instrument(skip_all)]
pub fn list_entries(
    conn: &mut PgConnection,
    code: &str,
    page: &PageRequest,
    after: Option<i64>,
) -> Result<Vec<EntryRow>, Error> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::ledger_account.eq(code.to_owned()))
        .select(EntryRow::as_select())
        .order(ledger_entries::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(ledger_entries::id.gt(after));
    }
    Ok(query.load(conn)?)
}
