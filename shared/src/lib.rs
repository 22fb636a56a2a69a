//! `backroom-shared`: what every Backroom service shares, so each service
//! crate holds only its domain.
//!
//! Layout:
//! - [`auth`]: bearer-token verification layer, callers, service tokens;
//! - [`config`]: typed configuration from environment variables;
//! - [`server`]: health, reflection, the layer stack, graceful shutdown;
//! - [`client`]: traced outbound channels;
//! - [`concurrency`]: the concurrency limit (streams hold a slot until they end);
//! - [`ratelimit`]: per-client rate limits and the client's address;
//! - [`telemetry`]: logs, traces (OTLP), RED metrics, trace-context layers;
//! - [`db`]: the r2d2/diesel pool, provisioning, migrations, error mapping;
//! - [`deadline`]: the caller's deadline, carried to outbound calls and SQL;
//! - [`errors`]: `tonic::Status` with `google.rpc` details;
//! - [`events`]: the outbox, the event feed, the JetStream relay, webhooks;
//! - [`idempotency`]: AIP-155 request ids, stored with the mutation;
//! - [`paging`]: AIP-158 page sizes and tokens;
//! - [`money`]: the one money type (ISO-4217 currency, minor units);
//! - [`catalog`]: SKUs, line quantities and line limits (inventory and checkout);
//! - [`names`]: resource names (AIP-122);
//! - [`stored`]: enums stored as text ([`stored_enum!`]);
//! - [`store`]: a handler's database work (reads, retried writes, idempotent writes);
//! - [`service`]: the one `main` of every service binary, and the shutdown signal;
//! - [`streams`]: per-caller caps on open server streams, their end statuses;
//! - [`clock`]: injectable time;
//! - [`local_postgres`] (feature `local-postgres`): a throwaway local
//!   Postgres cluster (`backroom up`, tests);
//! - [`testing`] (feature `testing`): the test kit — databases per test,
//!   test servers, the deploy contract, trace and log capture.

pub mod auth;
pub mod catalog;
pub mod client;
pub mod clock;
pub mod concurrency;
pub mod config;
pub mod db;
pub mod deadline;
pub mod errors;
pub mod events;
pub mod gateway;
pub mod idempotency;
#[cfg(feature = "local-postgres")]
pub mod local_postgres;
pub mod money;
pub mod names;
pub mod paging;
pub mod ratelimit;
pub(crate) mod schema;
pub mod server;
pub mod service;
pub mod store;
pub mod stored;
pub mod streams;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;
