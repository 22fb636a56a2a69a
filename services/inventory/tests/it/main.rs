//! The inventory service's integration tests, one binary: a real server on
//! 127.0.0.1:0 per test, with its own database, called through the
//! generated client.
//!
//! Layout: [`helpers`] (the `TestApp` and fixtures), then one module per
//! area — [`catalogue`] (products, stock, movements, quotes, shipping),
//! [`reservations`], [`watch`] (WatchStock under pressure),
//! [`db_privileges`] (the runtime role), [`deploy_contract`] (the
//! manifests against the binary's flags).

mod catalogue;
mod db_privileges;
mod deploy_contract;
mod helpers;
mod reservations;
mod watch;
