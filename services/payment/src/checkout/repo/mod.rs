//! Checkout's tables, `orders`, `order_lines` and `shipments`: the rows and
//! their conversions ([`models`]), storing and reading orders ([`orders`])
//! and shipments ([`shipments`]), and
//! the saga's bookkeeping on them — leases, guarded state transitions,
//! retries, the recovery scan ([`leases`]).

pub mod cancellations;
pub mod leases;
pub mod models;
pub mod orders;
pub mod shipments;
