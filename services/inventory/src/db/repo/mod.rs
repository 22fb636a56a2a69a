//! Repository functions, one module per aggregate: each takes a connection
//! (the caller owns the transaction) and the current time from the service
//! clock, runs the SQL, and returns domain types; every decision is a rule
//! of `domain`. Every call is instrumented with the resource it acts on.
//!
//! Concurrency rules, relied on by the tests:
//! - stock only moves through [`stock::apply`]: one conditional `UPDATE`
//!   (`available >= n` where units leave `available`) that bumps the level's
//!   version, plus the movement with that version as its sequence — so the
//!   log has no gaps and never disagrees with the level, and no interleaving
//!   can oversell;
//! - a transaction touching several levels locks them in (sku, location)
//!   order, so concurrent multi-line reservations cannot deadlock each other;
//! - expiry locks reservations `FOR UPDATE SKIP LOCKED`, so any number of
//!   sweepers (replicas) and lazy expirers run at once, each reservation's
//!   units returned exactly once.
//!
//! Layout: [`products`], [`stock`] (levels, movements, AdjustStock),
//! [`reservations`] (reserve, commit/release, expiry, the sweep),
//! [`shipping`] (zones, bands, and QuoteOrder, which prices with both),
//! [`pricing`] (VAT rates, discount codes and the uses reservations hold).
//!
//! Discount codes are locked after stock levels (a reservation takes its
//! levels, then its codes in code order); a code's uses only move through
//! [`pricing::redeem`] (a conditional UPDATE, `uses < usage_limit`) and
//! [`pricing::give_back`].

pub mod pricing;
pub mod products;
pub mod reservations;
pub mod shipping;
pub mod stock;

/// How expiry treats reservations another transaction has locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Wait for them.
    Wait,
    /// Leave them to whoever holds them (sweepers, reads).
    SkipLocked,
}
