//! Repository functions: each takes a connection (the caller owns the
//! transaction) and the current time from the service clock. Every call is
//! instrumented.
//!
//! Layout: [`accounts`] (accounts, security versions, revocations),
//! [`sessions`] (refresh-token families), [`throttles`] (failed-login
//! counters per email and client), [`addresses`].

pub mod accounts;
pub mod addresses;
pub mod sessions;
pub mod throttles;

pub use accounts::*;
pub use addresses::*;
pub use sessions::*;
pub use throttles::*;
