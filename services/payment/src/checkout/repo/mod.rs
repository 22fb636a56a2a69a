//! Checkout's tables: orders and their lines — the rows and their
//! conversions ([`models`]), storing and reading them ([`orders`]) — and
//! what happens to an order after checkout ([`shipments`],
//! [`cancellations`], [`returns`], [`refunds`]), and
//! the saga's bookkeeping on them — leases, guarded state transitions,
//! retries, the recovery scan ([`leases`]).

pub mod cancellations;
pub mod flows;
pub mod leases;
pub mod models;
pub mod orders;
pub mod refunds;
pub mod returns;
pub mod shipments;
