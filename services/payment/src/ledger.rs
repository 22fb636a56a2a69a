//! The double-entry ledger: the chart of accounts, the postings of each
//! journal kind, and [`audit`], which checks every invariant the ledger and
//! the intents must keep.
//!
//! ## Postings (amount `a`, always in the intent's currency)
//!
//! | journal | debit | credit |
//! |---|---|---|
//! | AUTHORIZATION_HOLD | authorization_holds a | customer_funds a |
//! | CAPTURE | customer_funds a; processor_clearing a | authorization_holds a; merchant_revenue a |
//! | RELEASE (void, expiry, uncaptured remainder) | customer_funds a | authorization_holds a |
//! | REFUND | merchant_revenue a | processor_clearing a |
//!
//! Journals are written only by [`crate::db::repo::post_journal`], in the
//! transaction of the state change they record; a deferred constraint
//! trigger refuses, at commit, any journal with fewer than two entries or
//! that does not balance per currency, and the ledger tables are
//! append-only. Balances are always derived from the entries.

use backroom_shared::db::DbError;
use diesel::{PgConnection, QueryableByName, RunQueryDsl as _, sql_query, sql_types::Text};

use crate::domain::{Direction, JournalKind};

/// `authorization_holds` (asset): card funds authorized, not yet captured.
pub const AUTHORIZATION_HOLDS: &str = "authorization_holds";
/// `customer_funds` (liability): the customer's funds under those holds.
pub const CUSTOMER_FUNDS: &str = "customer_funds";
/// `processor_clearing` (asset): captured money the processor owes us.
pub const PROCESSOR_CLEARING: &str = "processor_clearing";
/// `merchant_revenue` (revenue): captured sales net of refunds.
pub const MERCHANT_REVENUE: &str = "merchant_revenue";

/// The entries of a journal of `kind` moving `amount`: (account, side).
pub fn postings(kind: JournalKind) -> &'static [(&'static str, Direction)] {
    match kind {
        JournalKind::AuthorizationHold => &[
            (AUTHORIZATION_HOLDS, Direction::Debit),
            (CUSTOMER_FUNDS, Direction::Credit),
        ],
        JournalKind::Capture => &[
            (CUSTOMER_FUNDS, Direction::Debit),
            (AUTHORIZATION_HOLDS, Direction::Credit),
            (PROCESSOR_CLEARING, Direction::Debit),
            (MERCHANT_REVENUE, Direction::Credit),
        ],
        JournalKind::Release => &[
            (CUSTOMER_FUNDS, Direction::Debit),
            (AUTHORIZATION_HOLDS, Direction::Credit),
        ],
        JournalKind::Refund => &[
            (MERCHANT_REVENUE, Direction::Debit),
            (PROCESSOR_CLEARING, Direction::Credit),
        ],
    }
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
                   CASE e.direction WHEN 'credit' THEN e.amount ELSE -e.amount END ELSE 0 END) AS revenue
          FROM journals j JOIN ledger_entries e ON e.journal_id = j.id
         GROUP BY j.payment_intent_id)
     SELECT 'intent ' || i.id || ' disagrees with the ledger' AS problem
       FROM payment_intents i LEFT JOIN per_intent p ON p.id = i.id
      WHERE coalesce(p.holds, 0) <> i.amount_capturable
         OR coalesce(p.funds, 0) <> i.amount_capturable
         OR coalesce(p.clearing, 0) <> i.amount_received - i.amount_refunded
         OR coalesce(p.revenue, 0) <> i.amount_received - i.amount_refunded",
];

/// Audits the ledger and the intents (read-only; run it in a repeatable-read
/// transaction for a consistent view): every journal balances, the ledger
/// sums to zero per currency, Σ captured ≤ authorized and Σ refunded ≤
/// captured per intent, and each intent's holds, clearing and revenue equal
/// what its journals posted. Returns the problems found (empty: healthy).
pub fn audit(conn: &mut PgConnection) -> Result<Vec<String>, DbError> {
    let mut problems = Vec::new();
    for check in CHECKS {
        let found: Vec<Problem> = sql_query(*check).load(conn)?;
        problems.extend(found.into_iter().map(|p| p.problem));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_balances() {
        for kind in [
            JournalKind::AuthorizationHold,
            JournalKind::Capture,
            JournalKind::Release,
            JournalKind::Refund,
        ] {
            let debits = postings(kind)
                .iter()
                .filter(|(_, d)| *d == Direction::Debit)
                .count();
            assert_eq!(debits * 2, postings(kind).len(), "{kind:?}");
        }
    }
}
