//! The shared crate against real servers and a real Postgres: one test
//! binary, a module per area.

mod db;
mod relay;
mod server;
mod trace;
mod webhooks;
