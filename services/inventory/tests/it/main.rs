//! The inventory service's integration tests, one binary: a real server on
//! 127.0.0.1:0 per test, with its own database, called through the
//! generated client.
//!
//! Layout: [`helpers`] (the `TestApp` and fixtures), then one module per
//! area — [`products`], [`stock`] (levels, AdjustStock, movements,
//! WatchStock's contract), [`quotes`] (QuoteOrder, shipping rules),
//! [`access`] (tokens and roles), [`reservations`], [`shipments`]
//! (committed units leaving the building), [`concurrency`]
//! (oversell, deadlock, replay), [`watch`] (WatchStock under pressure),
//! [`db_privileges`] (the runtime role), [`deploy_contract`] (the
//! manifests against the binary's flags).

mod access;
mod concurrency;
mod db_privileges;
mod deploy_contract;
mod discounts;
mod helpers;
mod products;
mod quotes;
mod reservations;
mod shipments;
mod stock;
mod watch;
