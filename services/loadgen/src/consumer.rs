//! `backroom-loadgen consume`: a reference consumer of the services'
//! JetStream streams that applies every event's effect exactly once.
//!
//! JetStream delivers at least once: a message not acknowledged within the
//! consumer's `ack_wait` comes again, and so does every message whose
//! acknowledgement a crash swallowed. The consumer turns that into exactly
//! once the way the events' README section tells every consumer to: it
//! records effects by event id.
//!
//! - One durable pull consumer per stream (`<prefix>-<source>` on
//!   `BACKROOM_<SOURCE>`), explicit acknowledgement, so a restarted
//!   consumer resumes where the acknowledged messages end.
//! - Per fetched batch, one Postgres transaction (in a schema of its own,
//!   created on start): each event id is inserted into `applied` (primary
//!   key, `ON CONFLICT DO NOTHING`); only an id that was new applies its
//!   effect, a tally per event type (`tallies`); an id seen before counts
//!   as a duplicate (`duplicates`, per source). Commit, then acknowledge.
//! - So a crash before the commit applies nothing and the batch comes again;
//!   a crash between the commit and the acknowledgement applies it once and
//!   its redelivery is only counted as duplicates. `--ack-delay-ms` widens
//!   that window, for the fault tests to land a kill -9 in it.
//!
//! Afterwards `SUM(tallies.count) = COUNT(applied)`, and `applied` holds
//! each event of the streams once.
//!
//! A message that is not a `backroom.events.v1.Event` with a UUID id is
//! terminated (JetStream never redelivers it) and counted in `rejected`.
//! Diesel runs on the blocking pool, never on the async workers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use backroom_proto::events::v1 as pb;
use backroom_shared::events::relay;
use diesel::{
    Connection as _, PgConnection, RunQueryDsl as _,
    connection::SimpleConnection as _,
    sql_query,
    sql_types::{BigInt, Text},
};
use futures_util::StreamExt as _;
use prost::Message as _;

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    /// NATS URL.
    pub nats_url: String,
    /// Postgres URL of the database holding the consumer's schema.
    pub database_url: String,
    /// The consumer's schema (`[a-z_]+`).
    pub schema: String,
    /// The services whose streams are consumed.
    pub sources: Vec<String>,
    /// Durable consumer names are `<prefix>-<source>`.
    pub durable_prefix: String,
    /// Messages per batch (one transaction each).
    pub batch: usize,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Pause between a batch's commit and its acknowledgement.
    pub ack_delay: Duration,
}

/// One batch's outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Events applied for the first time.
    pub new: usize,
    /// Events seen before (redeliveries), not applied again.
    pub duplicates: usize,
    /// Messages that are not events.
    pub rejected: usize,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, other: Self) {
        self.new += other.new;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
    }
}

/// Consumes every configured stream until the process is told to stop
/// (SIGINT, SIGTERM); returns the totals of this run.
pub async fn run(config: ConsumeConfig) -> anyhow::Result<Applied> {
    anyhow::ensure!(
        !config.schema.is_empty()
            && config
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
        "--schema must be [a-z_]+, got {:?}",
        config.schema
    );
    anyhow::ensure!(config.batch > 0, "--batch must be positive");
    let (url, schema) = (config.database_url.clone(), config.schema.clone());
    tokio::task::spawn_blocking(move || prepare(&url, &schema)).await??;
    let client = async_nats::ConnectOptions::new()
        .name(format!("{}-consumer", config.durable_prefix))
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(&config.nats_url)
        .await
        .context("connect to NATS")?;
    let context = jetstream::new(client);
    let totals = Arc::new(Mutex::new(Applied::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for source in config.sources.clone() {
        tasks.spawn(consume_stream(
            context.clone(),
            config.clone(),
            source,
            totals.clone(),
        ));
    }
    println!(
        "consuming {} into schema {} (batch {}, ack wait {:?}, ack delay {:?})",
        config.sources.join(", "),
        config.schema,
        config.batch,
        config.ack_wait,
        config.ack_delay
    );
    tokio::select! {
        () = stop_signal() => {}
        // The stream tasks never end; one that panicked ends the run.
        Some(ended) = tasks.join_next() => ended?,
    }
    tasks.abort_all();
    let totals = *totals.lock().unwrap_or_else(|e| e.into_inner());
    Ok(totals)
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Creates the consumer's schema and tables when they are missing.
fn prepare(url: &str, schema: &str) -> anyhow::Result<()> {
    let mut conn = backroom_shared::db::connect(url).context("connect to Postgres")?;
    conn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.applied (
             event_id uuid PRIMARY KEY,
             source text NOT NULL,
             sequence bigint NOT NULL,
             type text NOT NULL,
             subject text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         CREATE TABLE IF NOT EXISTS {schema}.tallies (
             type text PRIMARY KEY,
             count bigint NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.duplicates (
             source text PRIMARY KEY,
             count bigint NOT NULL
         );"
    ))
    .context("create the consumer's tables")?;
    Ok(())
}

/// Consumes `source`'s stream (waiting for it to exist) batch by batch;
/// reconnects after errors with backoff.
async fn consume_stream(
    context: jetstream::Context,
    config: ConsumeConfig,
    source: String,
    totals: Arc<Mutex<Applied>>,
) {
    let mut conn: Option<PgConnection> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&context, &config, &source, &mut conn, &totals).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                eprintln!("consumer of {source}: {err:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session(
    context: &jetstream::Context,
    config: &ConsumeConfig,
    source: &str,
    conn: &mut Option<PgConnection>,
    totals: &Mutex<Applied>,
) -> anyhow::Result<()> {
    let stream = context
        .get_stream(relay::stream_name(source))
        .await
        .with_context(|| format!("stream {}", relay::stream_name(source)))?;
    let durable = format!("{}-{source}", config.durable_prefix);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                deliver_policy: DeliverPolicy::All,
                max_ack_pending: i64::try_from(config.batch * 4).unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .context("the durable consumer")?;
    loop {
        let mut messages = consumer
            .fetch()
            .max_messages(config.batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .context("fetch")?;
        let mut batch = Vec::with_capacity(config.batch);
        while let Some(message) = messages.next().await {
            batch.push(message.map_err(|err| anyhow::anyhow!("fetch: {err}"))?);
        }
        if batch.is_empty() {
            continue;
        }
        let (events, rejects): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|message| match decoded(&message) {
                Some(event) => (message, Some(event)),
                None => (message, None),
            })
            .partition(|(_, event)| event.is_some());
        let rows: Vec<Row> = events
            .iter()
            .filter_map(|(_, event)| event.clone())
            .collect();
        let mut taken = conn.take();
        let url = config.database_url.clone();
        let schema = config.schema.clone();
        let source_name = source.to_owned();
        let (back, applied) = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let connection = match taken.as_mut() {
                    Some(connection) => connection,
                    None => taken.insert(backroom_shared::db::connect(&url)?),
                };
                apply(connection, &schema, &source_name, &rows)
            })();
            // A connection that failed is dropped: the next batch opens one.
            if result.is_err() {
                taken = None;
            }
            (taken, result)
        })
        .await?;
        *conn = back;
        let mut applied = applied?;
        tokio::time::sleep(config.ack_delay).await;
        for (message, _) in &events {
            message
                .double_ack()
                .await
                .map_err(|err| anyhow::anyhow!("ack: {err}"))?;
        }
        for (message, _) in &rejects {
            message
                .ack_with(AckKind::Term)
                .await
                .map_err(|err| anyhow::anyhow!("terminate: {err}"))?;
        }
        applied.rejected = rejects.len();
        *totals.lock().unwrap_or_else(|e| e.into_inner()) += applied;
    }
}

/// What the consumer keeps of one event.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    sequence: i64,
    kind: String,
    subject: String,
}

fn decoded(message: &jetstream::Message) -> Option<Row> {
    let event = pb::Event::decode(message.payload.clone()).ok()?;
    uuid::Uuid::parse_str(&event.id).ok()?;
    Some(Row {
        id: event.id,
        sequence: event.sequence,
        kind: event.r#type,
        subject: event.subject,
    })
}

/// Records and applies `rows` in one transaction.
fn apply(
    conn: &mut PgConnection,
    schema: &str,
    source: &str,
    rows: &[Row],
) -> anyhow::Result<Applied> {
    conn.transaction(|conn| {
        let mut applied = Applied::default();
        for row in rows {
            let inserted = sql_query(format!(
                "INSERT INTO {schema}.applied (event_id, source, sequence, type, subject) \
                 VALUES ($1::uuid, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING"
            ))
            .bind::<Text, _>(&row.id)
            .bind::<Text, _>(source)
            .bind::<BigInt, _>(row.sequence)
            .bind::<Text, _>(&row.kind)
            .bind::<Text, _>(&row.subject)
            .execute(conn)?;
            if inserted == 1 {
                // The effect: applied only for an id never seen before.
                sql_query(format!(
                    "INSERT INTO {schema}.tallies (type, count) VALUES ($1, 1) \
                     ON CONFLICT (type) DO UPDATE SET count = {schema}.tallies.count + 1"
                ))
                .bind::<Text, _>(&row.kind)
                .execute(conn)?;
                applied.new += 1;
            } else {
                applied.duplicates += 1;
            }
        }
        if applied.duplicates > 0 {
            sql_query(format!(
                "INSERT INTO {schema}.duplicates (source, count) VALUES ($1, $2) \
                 ON CONFLICT (source) DO UPDATE SET count = {schema}.duplicates.count + $2"
            ))
            .bind::<Text, _>(source)
            .bind::<BigInt, _>(i64::try_from(applied.duplicates).unwrap_or(i64::MAX))
            .execute(conn)?;
        }
        Ok(applied)
    })
}
