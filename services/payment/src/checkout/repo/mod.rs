//! Checkout's tables, `orders` and `order_lines`: the rows and their
//! conversions ([`models`]), storing and reading orders ([`orders`]), and
//! the saga's bookkeeping on them — leases, guarded state transitions,
//! retries, the recovery scan ([`leases`]).

pub mod leases;
pub mod models;
pub mod orders;
