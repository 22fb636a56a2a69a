//! The JetStream relay: on when `BACKROOM_NATS_URL` is set, in the process
//! that sequences the service's events (the feed's leader, see [`super::feed`]),
//! so replicas never publish side by side; a leader that loses the lock stops
//! before its next batch.
//!
//! Stream `BACKROOM_<SOURCE>` takes subjects `backroom.<source>.>`; an event
//! goes to `backroom.<source>.<Type>` (the payload's short name, e.g.
//! `backroom.payment.OrderPlaced`) as the encoded `backroom.events.v1.Event`,
//! with headers `Nats-Msg-Id` (the event id: JetStream drops a second copy
//! within the duplicate window), `Backroom-Sequence`, `Backroom-Type` and
//! `traceparent`. The stream is created at start-up, or its subjects,
//! retention and duplicate window are set to the configured ones.
//!
//! A batch of up to [`BATCH`] unpublished events (in sequence order) is
//! published pipelined; rows are marked published only once JetStream has
//! acknowledged them, in order, up to the first failure. A crash between the
//! acknowledgement and the mark republishes: the duplicate window drops the
//! copy. Failures back off exponentially (100 ms up to 5 s); the client
//! reconnects by itself.
//!
//! Lag: gauges `backroom_events_relay_lag` (events sequenced and not yet
//! acknowledged) and `backroom_events_relay_lag_seconds` (age of the oldest),
//! labelled `source`, and [`RelayStats`].

use std::{
    sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use async_nats::jetstream::{self, stream};
use chrono::Utc;
use diesel::{dsl::count_star, prelude::*};
use prost::Message as _;

use super::{Events, events, read::StoredEvent};
use crate::db::DbError;

/// Events published per batch.
pub const BATCH: i64 = 256;

/// What the relay has done, for tests and operators.
#[derive(Debug, Default)]
pub struct RelayStats {
    published: AtomicU64,
    duplicates: AtomicU64,
    lag: AtomicI64,
    connected: AtomicBool,
}

impl RelayStats {
    /// Events JetStream acknowledged as new.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events JetStream acknowledged as duplicates (republished after a
    /// crash or a lost acknowledgement).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Sequenced events not yet acknowledged, as last counted (-1 before
    /// the first count, or on a process that does not relay).
    pub fn lag(&self) -> i64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Whether the stream was set up and the relay is publishing.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// The stream of service `source`.
pub fn stream_name(source: &str) -> String {
    format!("BACKROOM_{}", source.to_ascii_uppercase())
}

/// The subject of an event of type `kind` from `source`.
pub fn subject(source: &str, kind: &str) -> String {
    let short = kind.rsplit('.').next().unwrap_or(kind);
    format!("backroom.{source}.{short}")
}

/// The subjects of service `source`'s stream.
pub fn stream_subjects(source: &str) -> String {
    format!("backroom.{source}.>")
}

/// The headers `row` is published with (see the module docs; the AsyncAPI
/// document, [`super::asyncapi`], describes them).
pub fn headers(row: &StoredEvent) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", row.id.to_string().as_str());
    headers.insert("Backroom-Sequence", row.sequence().to_string().as_str());
    headers.insert("Backroom-Type", row.kind.as_str());
    if !row.traceparent.is_empty() {
        headers.insert("traceparent", row.traceparent.as_str());
    }
    headers
}

/// Runs the relay while this process leads, until the task is dropped; does
/// nothing without a NATS URL.
pub async fn run(events: Events) {
    let Some(url) = events.config().nats_url.clone() else {
        return;
    };
    events.relay_stats().lag.store(-1, Ordering::Relaxed);
    let mut leader = events.leader();
    let mut backoff = Duration::from_millis(100);
    loop {
        if leader.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        match session(&events, &url, &mut leader, &mut backoff).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                events
                    .relay_stats()
                    .connected
                    .store(false, Ordering::Relaxed);
                tracing::warn!(error = format!("{err:#}"), source = events.source(), retry_in = ?backoff, "event relay failed");
                // The lag keeps being reported while NATS is out of reach,
                // so the gauges show it growing rather than frozen.
                if let Ok(pending) = events
                    .pool()
                    .run(|conn| lag(conn).map_err(DbError::from))
                    .await
                {
                    report_lag(&events, pending);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session(
    events: &Events,
    url: &str,
    leader: &mut tokio::sync::watch::Receiver<bool>,
    backoff: &mut Duration,
) -> anyhow::Result<()> {
    let source = events.source();
    let client = async_nats::ConnectOptions::new()
        .name(format!("backroom-{source}-relay"))
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    let mut context = jetstream::new(client);
    context.set_timeout(Duration::from_secs(5));
    ensure_stream(events, &context).await?;
    events
        .relay_stats()
        .connected
        .store(true, Ordering::Relaxed);
    tracing::info!(
        source,
        stream = stream_name(source),
        "event relay publishing"
    );
    let mut newest = events.newest();
    loop {
        if !*leader.borrow_and_update() {
            events
                .relay_stats()
                .connected
                .store(false, Ordering::Relaxed);
            return Ok(());
        }
        newest.borrow_and_update();
        let (batch, lag) = events
            .pool()
            .run(|conn| {
                let batch = unpublished(conn, BATCH)?;
                let lag = lag(conn)?;
                Ok::<_, DbError>((batch, lag))
            })
            .await?;
        report_lag(events, lag);
        if batch.is_empty() {
            tokio::select! {
                _ = newest.changed() => {}
                _ = leader.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        let published = publish(events, &context, &batch).await;
        let acknowledged = match &published {
            Ok(done) | Err((done, _)) => done.clone(),
        };
        if !acknowledged.is_empty() {
            let now = Utc::now();
            events
                .pool()
                .run(move |conn| {
                    diesel::update(events::table.filter(events::sequence.eq_any(&acknowledged)))
                        .set(events::published_at.eq(now))
                        .execute(conn)
                        .map_err(DbError::from)
                })
                .await?;
        }
        if let Err((_, err)) = published {
            return Err(err);
        }
        *backoff = Duration::from_millis(100);
    }
}

/// Publishes `batch` pipelined; the sequences acknowledged in order, and the
/// first failure.
async fn publish(
    events: &Events,
    context: &jetstream::Context,
    batch: &[StoredEvent],
) -> Result<Vec<i64>, (Vec<i64>, anyhow::Error)> {
    let source = events.source();
    let mut pending = Vec::with_capacity(batch.len());
    let mut failure = None;
    for row in batch {
        let body = row.to_proto(source).encode_to_vec();
        match context
            .publish_with_headers(subject(source, &row.kind), headers(row), body.into())
            .await
        {
            Ok(ack) => pending.push((row.sequence(), ack)),
            Err(err) => {
                failure = Some(anyhow::Error::from(err));
                break;
            }
        }
    }
    let mut done = Vec::with_capacity(pending.len());
    for (sequence, ack) in pending {
        match ack.await {
            Ok(ack) => {
                let counter = if ack.duplicate {
                    &events.relay_stats().duplicates
                } else {
                    &events.relay_stats().published
                };
                counter.fetch_add(1, Ordering::Relaxed);
                done.push(sequence);
            }
            Err(err) => {
                return Err((done, err.into()));
            }
        }
    }
    match failure {
        None => Ok(done),
        Some(err) => Err((done, err)),
    }
}

/// Creates the service's stream, or brings its subjects, retention and
/// duplicate window to the configured ones.
async fn ensure_stream(events: &Events, context: &jetstream::Context) -> anyhow::Result<()> {
    let source = events.source();
    let config = events.config();
    let wanted = stream::Config {
        name: stream_name(source),
        subjects: vec![stream_subjects(source)],
        max_age: Duration::from_secs(config.nats_stream_max_age_hours.max(1) * 3_600),
        duplicate_window: Duration::from_secs(config.nats_duplicate_window_secs.max(1)),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut stream = context.get_or_create_stream(wanted.clone()).await?;
    let current = stream.info().await?.config.clone();
    if current.subjects != wanted.subjects
        || current.max_age != wanted.max_age
        || current.duplicate_window != wanted.duplicate_window
    {
        tracing::info!(
            stream = wanted.name,
            "updating the event stream's configuration"
        );
        context
            .update_stream(stream::Config {
                storage: current.storage,
                num_replicas: current.num_replicas,
                ..wanted
            })
            .await?;
    }
    Ok(())
}

/// Sequenced events not yet acknowledged, oldest first.
fn unpublished(
    conn: &mut diesel::PgConnection,
    limit: i64,
) -> diesel::QueryResult<Vec<StoredEvent>> {
    events::table
        .filter(events::published_at.is_null())
        .filter(events::sequence.is_not_null())
        .order(events::sequence.asc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
}

/// (unacknowledged events, age in seconds of the oldest).
pub fn lag(conn: &mut diesel::PgConnection) -> diesel::QueryResult<(i64, f64)> {
    let pending = events::table
        .filter(events::published_at.is_null())
        .filter(events::sequence.is_not_null());
    let count: i64 = pending.select(count_star()).first(conn)?;
    let oldest: Option<chrono::DateTime<Utc>> = pending
        .order(events::sequence.asc())
        .select(events::occurred_at)
        .first(conn)
        .optional()?;
    let age = oldest.map_or(0.0, |at| {
        (Utc::now() - at).num_milliseconds().max(0) as f64 / 1_000.0
    });
    Ok((count, age))
}

fn report_lag(events: &Events, (count, age): (i64, f64)) {
    events.relay_stats().lag.store(count, Ordering::Relaxed);
    let source = events.source();
    metrics::gauge!("backroom_events_relay_lag", "source" => source).set(count as f64);
    metrics::gauge!("backroom_events_relay_lag_seconds", "source" => source).set(age);
}
