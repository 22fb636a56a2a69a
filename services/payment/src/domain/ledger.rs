//! The double-entry ledger: the chart of accounts, the postings of each
//! journal kind, and its entities (journals, entries, accounts with their
//! balances).
//!
//! ## Postings (amount `a`, always in the intent's currency)
//!
//! | journal | debit | credit |
//! |---|---|---|
//! | AUTHORIZATION_HOLD | authorization_holds a | customer_funds a |
//! | CAPTURE | customer_funds a; processor_clearing a | authorization_holds a; merchant_revenue a − t; tax_payable t |
//! | RELEASE (void, expiry, uncaptured remainder) | customer_funds a | authorization_holds a |
//! | REFUND | merchant_revenue a − t; tax_payable t | processor_clearing a |
//!
//! `t` is the VAT the captured or refunded amount contains (see
//! [`crate::domain::Intent::tax_received_at`]); entries of zero are not
//! posted.
//!
//! Journals are written only by `crate::db::repo::ledger::post_journal`, in
//! the transaction of the state change they record; a deferred constraint
//! trigger refuses, at commit, any journal with fewer than two entries or
//! that does not balance per currency, and the ledger tables are
//! append-only. Balances are always derived from the entries;
//! `crate::db::repo::ledger::audit` checks every invariant.

use backroom_shared::{money::Money, paging::PageRequest};
use chrono::{DateTime, Utc};

use super::{IntentId, JournalId, LedgerCode, RefundId};

/// `authorization_holds` (asset): card funds authorized, not yet captured.
pub const AUTHORIZATION_HOLDS: &str = "authorization_holds";
/// `customer_funds` (liability): the customer's funds under those holds.
pub const CUSTOMER_FUNDS: &str = "customer_funds";
/// `processor_clearing` (asset): captured money the processor owes us.
pub const PROCESSOR_CLEARING: &str = "processor_clearing";
/// `merchant_revenue` (revenue): captured sales net of refunds and VAT.
pub const MERCHANT_REVENUE: &str = "merchant_revenue";
/// `tax_payable` (liability): VAT collected, owed to the tax office.
pub const TAX_PAYABLE: &str = "tax_payable";

/// Which part of a journal's amount `a` (with VAT `t`) an entry moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `a`.
    Whole,
    /// `a − t`.
    Net,
    /// `t`.
    Tax,
}

impl Part {
    /// The minor units of `amount` (with VAT `tax`) this part is.
    pub fn of(self, amount: Money, tax: Money) -> i64 {
        match self {
            Self::Whole => amount.minor(),
            Self::Net => amount.minor() - tax.minor(),
            Self::Tax => tax.minor(),
        }
    }
}

backroom_shared::stored_enum!(
    /// Which money movement a journal records.
    pub JournalKind {
        /// An authorization hold.
        AuthorizationHold = "authorization_hold",
        /// A capture.
        Capture = "capture",
        /// A released hold.
        Release = "release",
        /// A refund.
        Refund = "refund",
    }
);

backroom_shared::stored_enum!(
    /// Side of a ledger entry.
    pub Direction {
        /// Debit.
        Debit = "debit",
        /// Credit.
        Credit = "credit",
    }
);

backroom_shared::stored_enum!(
    /// Accounting class of a ledger account.
    pub LedgerKind {
        /// Debit-normal.
        Asset = "asset",
        /// Credit-normal.
        Liability = "liability",
        /// Credit-normal.
        Equity = "equity",
        /// Credit-normal.
        Revenue = "revenue",
        /// Debit-normal.
        Expense = "expense",
    }
);

impl LedgerKind {
    /// Whether the balance is Σ debits − Σ credits.
    pub fn debit_normal(self) -> bool {
        matches!(self, Self::Asset | Self::Expense)
    }

    /// The balance of an account of this kind whose entries net
    /// `net_debit` (Σ debits − Σ credits); `None` on overflow.
    pub fn balance(self, net_debit: Money) -> Option<Money> {
        if self.debit_normal() {
            Some(net_debit)
        } else {
            Money::zero(net_debit.currency()).checked_sub(net_debit)
        }
    }
}

/// The entries of a journal of `kind`: (account, side, part of the amount).
pub fn postings(kind: JournalKind) -> &'static [(&'static str, Direction, Part)] {
    match kind {
        JournalKind::AuthorizationHold => &[
            (AUTHORIZATION_HOLDS, Direction::Debit, Part::Whole),
            (CUSTOMER_FUNDS, Direction::Credit, Part::Whole),
        ],
        JournalKind::Capture => &[
            (CUSTOMER_FUNDS, Direction::Debit, Part::Whole),
            (AUTHORIZATION_HOLDS, Direction::Credit, Part::Whole),
            (PROCESSOR_CLEARING, Direction::Debit, Part::Whole),
            (MERCHANT_REVENUE, Direction::Credit, Part::Net),
            (TAX_PAYABLE, Direction::Credit, Part::Tax),
        ],
        JournalKind::Release => &[
            (CUSTOMER_FUNDS, Direction::Debit, Part::Whole),
            (AUTHORIZATION_HOLDS, Direction::Credit, Part::Whole),
        ],
        JournalKind::Refund => &[
            (MERCHANT_REVENUE, Direction::Debit, Part::Net),
            (TAX_PAYABLE, Direction::Debit, Part::Tax),
            (PROCESSOR_CLEARING, Direction::Credit, Part::Whole),
        ],
    }
}

/// One side of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number (the ledger's order).
    pub id: i64,
    /// Its journal.
    pub journal: JournalId,
    /// The account it moves.
    pub account: LedgerCode,
    /// Debit or credit.
    pub direction: Direction,
    /// How much.
    pub amount: Money,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A balanced set of entries recording one money movement of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Its id.
    pub id: JournalId,
    /// The intent whose money moved.
    pub intent: IntentId,
    /// Which movement.
    pub kind: JournalKind,
    /// The refund it records, for REFUND journals.
    pub refund: Option<RefundId>,
    /// Its entries, in ledger order.
    pub entries: Vec<Entry>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An account of the chart with its balances, one per currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAccount {
    /// Its code.
    pub code: LedgerCode,
    /// What people call it.
    pub display_name: String,
    /// Its class.
    pub kind: LedgerKind,
    /// Balances, replayed from the entries, by currency.
    pub balances: Vec<Money>,
}

/// GetLedgerAccount, parsed.
#[derive(Debug, Clone)]
pub struct GetLedgerAccount {
    /// The account.
    pub code: LedgerCode,
}

/// ListLedgerAccounts, parsed.
#[derive(Debug, Clone)]
pub struct ListLedgerAccounts {
    /// Which page (keyed by code).
    pub page: PageRequest,
}

/// GetJournal, parsed.
#[derive(Debug, Clone, Copy)]
pub struct GetJournal {
    /// The journal.
    pub id: JournalId,
}

/// ListJournals, parsed.
#[derive(Debug, Clone)]
pub struct ListJournals {
    /// Only this intent's.
    pub intent: Option<IntentId>,
    /// Only this kind.
    pub kind: Option<JournalKind>,
    /// Which page.
    pub page: PageRequest,
    /// The last journal of the previous page.
    pub after: Option<JournalId>,
}

/// ListLedgerEntries, parsed.
#[derive(Debug, Clone)]
pub struct ListLedgerEntries {
    /// The account.
    pub code: LedgerCode,
    /// Which page.
    pub page: PageRequest,
    /// The last entry of the previous page.
    pub after: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_balances_whatever_its_tax() {
        let eur = backroom_shared::money::Currency::parse("c", "EUR").unwrap();
        for kind in JournalKind::ALL {
            for (amount, tax) in [(100, 0), (119, 19), (1, 1), (5_985, 802)] {
                let (amount, tax) = (Money::new(eur, amount), Money::new(eur, tax));
                let side = |wanted: Direction| -> i64 {
                    postings(*kind)
                        .iter()
                        .filter(|(_, d, _)| *d == wanted)
                        .map(|(_, _, part)| part.of(amount, tax))
                        .sum()
                };
                assert_eq!(side(Direction::Debit), side(Direction::Credit), "{kind:?}");
            }
        }
    }
}
