//! Repository functions, one module per aggregate: each takes a connection
//! (the caller owns the transaction), speaks domain types, and is
//! instrumented with the resource it acts on (never its other arguments).
//! Checkout's orders have their own, `crate::checkout::repo`.

pub mod intents;
pub mod ledger;
pub mod payment_methods;
pub mod refunds;
