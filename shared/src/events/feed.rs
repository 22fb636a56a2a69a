//! The feed connection: one asynchronous Postgres connection per process
//! and service (tokio-postgres; diesel has no asynchronous notifications).
//!
//! It listens on `backroom_events_<schema>` (a transaction recorded events)
//! and `backroom_feed_<schema>` (a sequencer sequenced events through the
//! sequence in the payload), and tries to hold the session advisory lock
//! `backroom-events-<schema>`. The holder is the leader: it sequences (see
//! the module docs of [`super`]) whenever a transaction with events commits,
//! and runs the relay and the webhook deliveries. The lock goes with the
//! connection: a leader that crashes or loses the database loses it at once
//! and another replica takes over within [`TAKEOVER_INTERVAL`].
//!
//! A notification missed while the connection was down is made up for when
//! it comes back (the leader sequences everything pending, every process
//! reads the newest sequence); while it is up nothing polls, except the
//! leader's pass every [`SAFETY_INTERVAL`] in case a notification was lost.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::Events;

/// How often a process that is not the leader tries to take the lock.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(1);
/// How often the leader sequences without being woken.
pub const SAFETY_INTERVAL: Duration = Duration::from_secs(10);
/// Events sequenced per statement.
const BATCH: i64 = 1_000;

/// Runs the feed connection until the task is dropped, reconnecting with
/// backoff.
pub async fn run(events: Events) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        if let Err(err) = session(&events).await {
            tracing::warn!(
                error = format!("{err:#}"),
                source = events.source(),
                "event feed connection lost"
            );
        }
        events.set_leader(false);
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(events: &Events) -> anyhow::Result<()> {
    let schema = events.pool().schema().to_owned();
    let (client, mut connection) =
        tokio_postgres::connect(events.pool().url().expose(), NoTls).await?;
    // Notifications coalesce: a full queue means a wake-up is pending.
    let (wake, mut woken) = mpsc::channel::<tokio_postgres::Notification>(64);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let _ = wake.try_send(notification);
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    let _driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!(
            "LISTEN backroom_events_{schema}; LISTEN backroom_feed_{schema}"
        ))
        .await?;
    let sequence_sql = format!(
        "WITH base AS (SELECT coalesce(max(sequence), 0) AS last FROM {schema}.events), \
         next AS (SELECT position, row_number() OVER (ORDER BY position) AS n \
                  FROM (SELECT position FROM {schema}.events WHERE sequence IS NULL \
                        ORDER BY position LIMIT {BATCH}) pending) \
         UPDATE {schema}.events e SET sequence = base.last + next.n FROM base, next \
         WHERE e.position = next.position RETURNING e.sequence"
    );
    let newest_sql = format!("SELECT coalesce(max(sequence), 0) FROM {schema}.events");
    let lock_key = format!("backroom-events-{schema}");
    let feed_channel = format!("backroom_feed_{schema}");
    events.saw(client.query_one(&newest_sql, &[]).await?.get(0));
    let mut leader = false;
    loop {
        if !leader {
            leader = client
                .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_key])
                .await?
                .get(0);
            if leader {
                tracing::info!(
                    source = events.source(),
                    "this process sequences the events"
                );
                events.set_leader(true);
            }
        }
        if leader {
            loop {
                let rows = client.query(&sequence_sql, &[]).await?;
                let Some(newest) = rows.iter().map(|row| row.get::<_, i64>(0)).max() else {
                    break;
                };
                client
                    .execute(
                        "SELECT pg_notify($1, $2)",
                        &[&feed_channel, &newest.to_string()],
                    )
                    .await?;
                events.saw(newest);
                if i64::try_from(rows.len()).unwrap_or(i64::MAX) < BATCH {
                    break;
                }
            }
        }
        let pause = if leader {
            SAFETY_INTERVAL
        } else {
            TAKEOVER_INTERVAL
        };
        tokio::select! {
            notification = woken.recv() => {
                let Some(notification) = notification else {
                    anyhow::bail!("the connection closed");
                };
                let mut next = Some(notification);
                while let Some(notification) = next {
                    if notification.channel() == feed_channel
                        && let Ok(sequence) = notification.payload().parse::<i64>()
                    {
                        events.saw(sequence);
                    }
                    next = woken.try_recv().ok();
                }
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Aborts the connection's driver when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
