//! The test kit (feature `testing`): a throwaway Postgres cluster, a fresh
//! database per test, and servers on `127.0.0.1:0` with connected channels.
//!
//! Layout:
//! - [`db`] — [`admin_url`] (one cluster per test process, started on first
//!   use — [`crate::local_postgres::PostgresCluster`] — unless
//!   `BACKROOM_TEST_DATABASE_URL` points at a server to use instead),
//!   [`TestDb`] (a fresh database per test, so tests run in parallel; cloned
//!   from a per-process template for a known set of services), and
//!   [`attempt_statement`], [`assert_accepted`],
//!   [`assert_refused_for_privilege`] for what a role may do;
//! - [`server`] — [`TestServer`] serves a [`crate::server::GrpcServer`] on
//!   `127.0.0.1:0`; [`Echo`] and [`echo_server`];
//! - [`deploy`] — [`check_deploy_contract`];
//! - [`nats`] — [`NatsServer`], a `nats-server -js` of the test's own, and
//!   [`stream_contents`];
//! - [`webhooks`] — [`WebhookReceiver`], a real HTTP receiver, and
//!   [`Received::verified`];
//! - [`telemetry`] — [`SpanCollector`] (an in-process OTLP receiver),
//!   [`LogCapture`].

pub mod db;
pub mod deploy;
pub mod nats;
pub mod server;
pub mod telemetry;
pub mod webhooks;

pub use crate::local_postgres::PostgresCluster;
pub use db::*;
pub use deploy::*;
pub use nats::{NatsServer, stream_contents};
pub use server::*;
pub use telemetry::*;
pub use webhooks::{Received, WebhookReceiver};
