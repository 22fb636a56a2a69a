//! Domain events: the transactional outbox, the feed every service serves,
//! the JetStream relay and webhooks.
//!
//! Writing. A repository function that changes state calls [`record`] with
//! the change's events on the same connection, inside the same transaction:
//! the rows land in the service's `events` table (shared migration
//! `2026-12-07-000000_events`) or not at all, with the change. Each row gets
//! a `position` from a sequence (with gaps where a transaction rolled back)
//! and no `sequence` yet; the transaction also notifies channel
//! `backroom_events_<schema>` (delivered at commit).
//!
//! Sequencing. One process per service at a time (the holder of a session
//! advisory lock on its feed connection, see [`feed`]) gives the committed
//! rows their gap-free `sequence` in the order it sees them commit, in one
//! statement, then notifies `backroom_feed_<schema>` with the newest
//! sequence. Readers only ever see sequenced rows, so a reader never sees a
//! gap that a later commit fills. Changes to one subject are serialised by
//! its row lock before the event is written, so a subject's events are
//! sequenced in the order of its changes.
//!
//! Reading. [`api::EventApi`] serves `ListEvents` and `WatchEvents` from the
//! table; a watcher waits on the feed's newest sequence (a
//! `tokio::sync::watch`, fed by the notifications of every replica) and
//! reads what is new: no polling loop.
//!
//! Publishing. With `BACKROOM_NATS_URL`, the sequencer's process also runs
//! [`relay`] (JetStream, message id = event id) and, with endpoints
//! registered, [`webhooks`].
//!
//! Describing. [`asyncapi`] generates the AsyncAPI 3.0 document of every
//! event type from the protos (committed as `docs/events.asyncapi.yaml`).
//!
//! Layout: [`NewEvent`] and [`record`] (writing), [`EventsConfig`],
//! [`Events`] (the per-process handle: start-up, the newest sequence),
//! [`read`] (queries and the proto envelope), [`feed`], [`api`], [`relay`],
//! [`webhooks`], [`asyncapi`].

pub mod api;
/// The AsyncAPI 3.0 document of every event type, generated from the protos.
pub mod asyncapi;
pub mod feed;
pub mod read;
pub mod relay;
pub mod webhooks;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use diesel::{PgConnection, QueryResult, RunQueryDsl, prelude::*};
use uuid::Uuid;

use crate::{db::Pool, service::Shutdown};

diesel::table! {
    /// The outbox (see the module docs).
    events (position) {
        /// Insertion order, with gaps.
        position -> Int8,
        /// Gap-free feed position, set by the sequencer.
        sequence -> Nullable<Int8>,
        /// Unique event id.
        id -> Uuid,
        /// The payload's full protobuf name.
        #[sql_name = "type"]
        kind -> Text,
        /// Resource name the event is about.
        subject -> Text,
        /// When the change was made.
        occurred_at -> Timestamptz,
        /// W3C trace context of the change.
        traceparent -> Text,
        /// Encoded payload.
        payload -> Bytea,
        /// When JetStream acknowledged it.
        published_at -> Nullable<Timestamptz>,
    }
}

/// One event to record with a change.
#[derive(Debug, Clone)]
pub struct NewEvent {
    kind: String,
    subject: String,
    payload: Vec<u8>,
}

impl NewEvent {
    /// `payload` (a message of one of the services' `events.proto`) about
    /// `subject` (a resource name).
    pub fn new<M: prost::Name>(subject: impl Into<String>, payload: &M) -> Self {
        Self {
            kind: M::full_name(),
            subject: subject.into(),
            payload: payload.encode_to_vec(),
        }
    }

    /// The payload's full protobuf name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Records `events` in the outbox, in the caller's transaction (call it on
/// the connection that made the change, inside its transaction), with the
/// current span's trace context, and wakes the sequencer at commit.
pub fn record(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    events: impl IntoIterator<Item = NewEvent>,
) -> QueryResult<()> {
    let traceparent = crate::telemetry::current_traceparent();
    let rows: Vec<_> = events
        .into_iter()
        .map(|event| {
            (
                events::id.eq(Uuid::now_v7()),
                events::kind.eq(event.kind),
                events::subject.eq(event.subject),
                events::occurred_at.eq(now),
                events::traceparent.eq(traceparent.clone()),
                events::payload.eq(event.payload),
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    diesel::insert_into(events::table)
        .values(&rows)
        .execute(conn)?;
    // Notifications with the same channel and payload fold into one per
    // transaction; delivered only if it commits.
    diesel::sql_query("SELECT pg_notify('backroom_events_' || current_schema(), '')")
        .execute(conn)?;
    Ok(())
}

/// Event settings every service reads.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `BACKROOM_NATS_URL` | unset | NATS server(s) of the JetStream relay (comma-separated); unset: no relay, the feed only |
/// | `BACKROOM_NATS_STREAM_MAX_AGE_HOURS` | 168 | how long the service's stream keeps events |
/// | `BACKROOM_NATS_DUPLICATE_WINDOW_SECS` | 600 | JetStream's de-duplication window (a republish after a crash within it is dropped) |
/// | `BACKROOM_WEBHOOK_ALLOWED_HOSTS` | empty | hosts webhook endpoints may point at (comma-separated, exact names or IPs); empty: no webhooks |
/// | `BACKROOM_WEBHOOK_RETRY_WINDOW_SECS` | 86400 | how long a failing delivery is retried before it is given up |
/// | `BACKROOM_WEBHOOK_TIMEOUT_MS` | 10000 | one delivery attempt's time limit |
#[derive(Debug, Clone, clap::Args)]
pub struct EventsConfig {
    /// NATS URL(s) for the JetStream relay; unset: no relay.
    #[arg(long, env = "BACKROOM_NATS_URL")]
    pub nats_url: Option<String>,
    /// Retention of the service's JetStream stream (hours, at least 1).
    #[arg(
        long,
        env = "BACKROOM_NATS_STREAM_MAX_AGE_HOURS",
        default_value_t = 168
    )]
    pub nats_stream_max_age_hours: u64,
    /// JetStream's de-duplication window (seconds, at least 1).
    #[arg(
        long,
        env = "BACKROOM_NATS_DUPLICATE_WINDOW_SECS",
        default_value_t = 600
    )]
    pub nats_duplicate_window_secs: u64,
    /// Hosts webhook endpoints may point at.
    #[arg(
        long,
        env = "BACKROOM_WEBHOOK_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub webhook_allowed_hosts: Vec<String>,
    /// How long a failing delivery is retried (seconds).
    #[arg(
        long,
        env = "BACKROOM_WEBHOOK_RETRY_WINDOW_SECS",
        default_value_t = 86_400
    )]
    pub webhook_retry_window_secs: u64,
    /// One attempt's time limit (milliseconds).
    #[arg(long, env = "BACKROOM_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_stream_max_age_hours: 168,
            nats_duplicate_window_secs: 600,
            webhook_allowed_hosts: Vec::new(),
            webhook_retry_window_secs: 86_400,
            webhook_timeout_ms: 10_000,
        }
    }
}

impl EventsConfig {
    /// The allowed webhook hosts, trimmed and lower-cased, empty ones
    /// dropped.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.webhook_allowed_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect()
    }

    /// The retry window of a failing webhook delivery.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.webhook_retry_window_secs)
    }

    /// One webhook attempt's time limit.
    pub fn webhook_timeout(&self) -> Duration {
        Duration::from_millis(self.webhook_timeout_ms.max(1))
    }
}

/// A service's events in this process: the feed connection (listening,
/// sequencing when it holds the lock, the relay and webhooks then), the
/// newest sequence for watchers.
#[derive(Debug, Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    source: &'static str,
    config: EventsConfig,
    newest: tokio::sync::watch::Sender<i64>,
    leader: tokio::sync::watch::Sender<bool>,
    relay: relay::RelayStats,
}

impl Events {
    /// The events of service `source` (its name: "account", …) stored in
    /// `pool`'s schema; nothing runs until [`Self::start`].
    pub fn new(pool: Pool, source: &'static str, config: EventsConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                source,
                config,
                newest: tokio::sync::watch::Sender::new(0),
                leader: tokio::sync::watch::Sender::new(false),
                relay: relay::RelayStats::default(),
            }),
        }
    }

    /// Starts the feed connection (and with it sequencing, the relay and
    /// webhooks while this process holds the lock) until `shutdown`. Must
    /// be called inside a tokio runtime.
    pub fn start(&self, shutdown: &Shutdown) {
        tokio::spawn(shutdown.until(feed::run(self.clone())));
        tokio::spawn(shutdown.until(relay::run(self.clone())));
        tokio::spawn(shutdown.until(webhooks::run(self.clone())));
    }

    /// Starts the feed (see [`Self::start`]) and adds `EventService` and
    /// `WebhookService` to `server`, answering errors in `domain`; streams end on `shutdown`.
    pub fn serve(
        &self,
        server: crate::server::GrpcServer,
        domain: crate::errors::Domain,
        shutdown: &Shutdown,
    ) -> crate::server::GrpcServer {
        self.start(shutdown);
        let max = server.config().max_message_bytes;
        server
            .add_service(
                api::EventApi::new(self.clone(), domain, shutdown.clone()).into_server(max),
            )
            .add_service(webhooks::WebhookApi::new(self.clone(), domain).into_server(max))
    }

    /// The service's name.
    pub fn source(&self) -> &'static str {
        self.inner.source
    }

    /// The pool of the service's schema.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The settings.
    pub fn config(&self) -> &EventsConfig {
        &self.inner.config
    }

    /// The newest sequence this process knows of; changes as events are
    /// sequenced (by any replica).
    pub fn newest(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.newest.subscribe()
    }

    /// Raises the newest known sequence to `sequence`.
    pub(crate) fn saw(&self, sequence: i64) {
        self.inner.newest.send_if_modified(|newest| {
            let raised = sequence > *newest;
            if raised {
                *newest = sequence;
            }
            raised
        });
    }

    /// Whether this process sequences (and relays) the service's events;
    /// changes when it takes or loses the lock.
    pub fn leader(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.leader.subscribe()
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.inner.leader.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
    }

    /// The relay's counters (published, lag).
    pub fn relay_stats(&self) -> &relay::RelayStats {
        &self.inner.relay
    }
}
