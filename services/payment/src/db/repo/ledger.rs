//! The ledger tables (`journals`, `ledger_entries`, `ledger_accounts`):
//! posting a journal (the only way one is written), reading journals,
//! entries and balances, and [`audit`], which checks every invariant the
//! ledger and the intents must keep.

use backroom_shared::{db::DbError, money::Money, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _, QueryableByName,
    prelude::*,
    sql_query,
    sql_types::{Array, Text},
};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    db::{
        models::{self, BalanceRow, EntryRow, JournalRow, LedgerAccountRow, NewEntryRow},
        schema::payment::{journals, ledger_accounts, ledger_entries},
    },
    domain::{
        Error, IntentId, JournalId, LedgerCode, RefundId,
        ledger::{self, Entry, Journal, JournalKind, LedgerAccount},
    },
};

/// Posts a balanced journal of `kind` moving `amount`, of which `tax` is
/// VAT, for an intent (the only way journals are written; see
/// [`crate::domain::ledger`]). Entries of zero are left out.
#[instrument(skip_all, fields(intent = %intent, kind = %kind, amount = %amount, tax = %tax))]
pub fn post_journal(
    conn: &mut PgConnection,
    intent: IntentId,
    kind: JournalKind,
    refund: Option<RefundId>,
    amount: Money,
    tax: Money,
    now: DateTime<Utc>,
) -> Result<JournalId, Error> {
    if amount.minor() <= 0 || tax.minor() < 0 || tax.minor() > amount.minor() {
        return Err(Error::Db(DbError::Other(anyhow::anyhow!(
            "journal amounts are positive and the tax part within, got {amount} with {tax}"
        ))));
    }
    let id = JournalId::generate();
    diesel::insert_into(journals::table)
        .values(JournalRow {
            id: id.uuid(),
            payment_intent_id: intent.uuid(),
            kind: kind.as_str().to_owned(),
            refund_id: refund.map(RefundId::uuid),
            created_at: now,
        })
        .execute(conn)?;
    let entries: Vec<NewEntryRow> = ledger::postings(kind)
        .iter()
        .map(|(account, direction, part)| (account, direction, part.of(amount, tax)))
        .filter(|(_, _, minor)| *minor > 0)
        .map(|(account, direction, minor)| NewEntryRow {
            journal_id: id.uuid(),
            ledger_account: (*account).to_owned(),
            direction: direction.as_str().to_owned(),
            currency: amount.currency(),
            amount: minor,
            created_at: now,
        })
        .collect();
    diesel::insert_into(ledger_entries::table)
        .values(&entries)
        .execute(conn)?;
    Ok(id)
}

fn with_entries(conn: &mut PgConnection, journals: Vec<JournalRow>) -> Result<Vec<Journal>, Error> {
    let ids: Vec<Uuid> = journals.iter().map(|j| j.id).collect();
    let mut entries: Vec<EntryRow> = ledger_entries::table
        .filter(ledger_entries::journal_id.eq_any(&ids))
        .select(EntryRow::as_select())
        .order(ledger_entries::id.asc())
        .load(conn)?;
    journals
        .into_iter()
        .map(|journal| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut entries)
                .into_iter()
                .partition(|e| e.journal_id == journal.id);
            entries = rest;
            models::journal(journal, mine)
        })
        .collect()
}

/// A journal with its entries.
#[instrument(skip_all, fields(journal = %id))]
pub fn get_journal(conn: &mut PgConnection, id: JournalId) -> Result<Option<Journal>, Error> {
    let Some(journal) = journals::table
        .find(id.uuid())
        .select(JournalRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    Ok(with_entries(conn, vec![journal])?.pop())
}

/// Journals, oldest first, optionally of one intent / kind.
#[instrument(skip_all, fields(intent = intent.map(tracing::field::display)))]
pub fn list_journals(
    conn: &mut PgConnection,
    intent: Option<IntentId>,
    kind: Option<JournalKind>,
    page: &PageRequest,
    after: Option<JournalId>,
) -> Result<Vec<Journal>, Error> {
    let mut query = journals::table
        .select(JournalRow::as_select())
        .order(journals::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(intent) = intent {
        query = query.filter(journals::payment_intent_id.eq(intent.uuid()));
    }
    if let Some(kind) = kind {
        query = query.filter(journals::kind.eq(kind.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(journals::id.gt(after.uuid()));
    }
    let rows = query.load(conn)?;
    with_entries(conn, rows)
}

/// Balances (Σ debits − Σ credits per currency) of the given accounts,
/// replayed from their entries, ordered by account and currency.
fn balances(conn: &mut PgConnection, codes: &[String]) -> Result<Vec<BalanceRow>, Error> {
    Ok(sql_query(
        "SELECT ledger_account, currency, \
                sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END)::bigint AS net_debit \
           FROM ledger_entries WHERE ledger_account = ANY($1) \
          GROUP BY ledger_account, currency ORDER BY ledger_account, currency",
    )
    .bind::<Array<Text>, _>(codes)
    .load(conn)?)
}

/// Ledger accounts ordered by code, after the page's `after`, with their
/// balances.
#[instrument(skip_all)]
pub fn list_accounts(
    conn: &mut PgConnection,
    page: &PageRequest,
) -> Result<Vec<LedgerAccount>, Error> {
    let mut query = ledger_accounts::table
        .select(LedgerAccountRow::as_select())
        .order(ledger_accounts::code.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = &page.after {
        query = query.filter(ledger_accounts::code.gt(after.clone()));
    }
    let rows = query.load(conn)?;
    let codes: Vec<String> = rows.iter().map(|r| r.code.clone()).collect();
    let balances = balances(conn, &codes)?;
    rows.into_iter()
        .map(|row| models::ledger_account(row, &balances))
        .collect()
}

/// A ledger account with its balances.
#[instrument(skip_all, fields(ledger_account = %code))]
pub fn get_account(
    conn: &mut PgConnection,
    code: &LedgerCode,
) -> Result<Option<LedgerAccount>, Error> {
    let Some(row) = ledger_accounts::table
        .find(code.as_str())
        .select(LedgerAccountRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let balances = balances(conn, std::slice::from_ref(&row.code))?;
    models::ledger_account(row, &balances).map(Some)
}

/// Entries of one account, oldest first, after entry id `after`.
#[instrument(skip_all, fields(ledger_account = %code))]
pub fn list_entries(
    conn: &mut PgConnection,
    code: &LedgerCode,
    page: &PageRequest,
    after: Option<i64>,
) -> Result<Vec<Entry>, Error> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::ledger_account.eq(code.as_str()))
        .select(EntryRow::as_select())
        .order(ledger_entries::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(ledger_entries::id.gt(after));
    }
    query.load(conn)?.into_iter().map(Entry::try_from).collect()
}

#[derive(QueryableByName)]
struct Problem {
    #[diesel(sql_type = Text)]
    problem: String,
}

/// Every check of [`audit`]: each query returns one text row per violation.
const CHECKS: &[&str] = &[
    // Every journal has >= 2 entries and balances per currency.
    "SELECT 'journal ' || j.id || ' has fewer than 2 entries' AS problem
       FROM journals j LEFT JOIN ledger_entries e ON e.journal_id = j.id
      GROUP BY j.id HAVING count(e.id) < 2",
    "SELECT 'journal ' || journal_id || ' does not balance in ' || currency AS problem
       FROM ledger_entries GROUP BY journal_id, currency
     HAVING sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) <> 0",
    // The whole ledger sums to zero per currency.
    "SELECT 'ledger does not sum to zero in ' || currency AS problem
       FROM ledger_entries GROUP BY currency
     HAVING sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) <> 0",
    // Entries are in their intent's currency.
    "SELECT 'entry ' || e.id || ' is not in its intent''s currency' AS problem
       FROM ledger_entries e JOIN journals j ON j.id = e.journal_id
       JOIN payment_intents i ON i.id = j.payment_intent_id
      WHERE e.currency <> i.currency",
    // Intent amounts.
    "SELECT 'intent ' || id || ' breaks its amount invariants' AS problem
       FROM payment_intents
      WHERE amount_received > amount_authorized OR amount_refunded > amount_received
         OR amount_capturable + amount_received > amount_authorized OR amount_authorized > amount
         OR (status = 'succeeded' AND amount_received = 0)
         OR (status <> 'requires_capture' AND amount_capturable <> 0)",
    // Refunds add up.
    "SELECT 'intent ' || i.id || ' amount_refunded differs from its refunds' AS problem
       FROM payment_intents i LEFT JOIN refunds r ON r.payment_intent_id = i.id AND r.status = 'succeeded'
      GROUP BY i.id, i.amount_refunded HAVING coalesce(sum(r.amount), 0) <> i.amount_refunded",
    // The ledger agrees with every intent.
    "WITH per_intent AS (
        SELECT j.payment_intent_id AS id,
               sum(CASE WHEN e.ledger_account = 'authorization_holds' THEN
                   CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS holds,
               sum(CASE WHEN e.ledger_account = 'customer_funds' THEN
                   CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS funds,
               sum(CASE WHEN e.ledger_account = 'processor_clearing' THEN
                   CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS clearing,
               sum(CASE WHEN e.ledger_account = 'merchant_revenue' THEN
                   CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS revenue,
               sum(CASE WHEN e.ledger_account = 'tax_payable' THEN
                   CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS tax
          FROM journals j JOIN ledger_entries e ON e.journal_id = j.id
         GROUP BY j.payment_intent_id)
     SELECT 'intent ' || i.id || ' disagrees with the ledger' AS problem
       FROM payment_intents i LEFT JOIN per_intent p ON p.id = i.id
      WHERE coalesce(p.holds, 0) <> i.amount_capturable
         OR coalesce(p.funds, 0) <> i.amount_capturable
         OR coalesce(p.clearing, 0) <> i.amount_received - i.amount_refunded
         OR coalesce(p.revenue, 0) <> (i.amount_received - i.amount_refunded)
                                      - (i.tax_received - i.tax_refunded)
         OR coalesce(p.tax, 0) <> i.tax_received - i.tax_refunded",
    // VAT follows the amounts in proportion, rounded half up (see
    // `Intent::tax_received_at` and `Intent::tax_refunded_at`).
    "SELECT 'intent ' || id || ' carries VAT out of proportion: tax ' || tax || ', received '
            || tax_received || ', refunded ' || tax_refunded AS problem
       FROM payment_intents
      WHERE tax_received <> (2 * tax * amount_received + amount) / (2 * amount)
         OR tax_refunded <> CASE WHEN amount_received = 0 THEN 0
                            ELSE (2 * tax_received * amount_refunded + amount_received)
                                 / (2 * amount_received) END",
    // Each refund's VAT adds up to the intent's.
    "SELECT 'intent ' || i.id || ' tax_refunded differs from its refunds' AS problem
       FROM payment_intents i LEFT JOIN refunds r ON r.payment_intent_id = i.id AND r.status = 'succeeded'
      GROUP BY i.id, i.tax_refunded HAVING coalesce(sum(r.tax), 0) <> i.tax_refunded",
];

/// Audits the ledger and the intents (read-only; run it in a repeatable-read
/// transaction for a consistent view): every journal balances, the ledger
/// sums to zero per currency, Σ captured ≤ authorized and Σ refunded ≤
/// captured per intent, and each intent's holds, clearing and revenue equal
/// what its journals posted. Returns the problems found (empty: healthy).
#[instrument(skip_all)]
pub fn audit(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    let mut problems = Vec::new();
    for check in CHECKS {
        let found: Vec<Problem> = sql_query(*check).load(conn)?;
        problems.extend(found.into_iter().map(|p| p.problem));
    }
    Ok(problems)
}
