//! Webhooks: HTTP endpoints that receive a service's events, registered with
//! `backroom.events.v1.WebhookService` ([`WebhookApi`]) and delivered by
//! [`run`] in the process that sequences the events (the feed's leader, like
//! the relay), so replicas never deliver side by side.
//!
//! Delivery. Each endpoint has its own task, so a slow or dead receiver
//! holds up nobody else. Deliveries to one endpoint go out one at a time:
//! the event being retried if one is, else the oldest pending redelivery
//! (`webhook_redeliveries`, queued by `RedeliverWebhookEvent`), else the next
//! event after `delivered_sequence` of the endpoint's types (all types when
//! `event_types` is empty). A 2xx answer moves `delivered_sequence` on;
//! anything else (another status, a redirect — they are not followed — a
//! refused connection, a timeout) is retried after a delay that doubles from
//! [`FIRST_RETRY`] up to [`MAX_RETRY`] (less up to a tenth, so receivers
//! coming back are not hit by every sender at once), for the retry window
//! (`BACKROOM_WEBHOOK_RETRY_WINDOW_SECS`, counted from the first failure);
//! the last try falls on the window's end, and when it fails too the event is
//! given up: `abandoned_count` goes up and delivery moves on. The retry state
//! (`failing_since`, `next_attempt_at`) is stored, so a new leader carries on
//! where the old one stopped. Every attempt is a row of `webhook_attempts`
//! (the newest [`ATTEMPTS_KEPT`] per endpoint are kept).
//!
//! The endpoint tasks wait on the feed's newest sequence
//! ([`super::Events::newest`]) and on their retry timers; the API wakes them
//! in-process when it queues a redelivery and the dispatcher when it adds or
//! removes an endpoint (an endpoint registered through another replica is
//! picked up by the dispatcher's pass every [`RESCAN_INTERVAL`]). Nothing
//! polls faster.
//!
//! The request. `POST` to the endpoint's URL with the event envelope as
//! canonical proto3 JSON ([`envelope_json`]: the payload expanded with its
//! `@type`), `content-type: application/json`, and the Standard Webhooks
//! headers `webhook-id` (the event id, the same on every attempt and
//! redelivery), `webhook-timestamp` (unix seconds) and `webhook-signature`
//! (`v1,` + base64 of HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed with
//! the base64-decoded part of the endpoint's `whsec_` secret; see
//! [`signature`]). Each attempt is limited to `BACKROOM_WEBHOOK_TIMEOUT_MS`,
//! and the URL's host is checked against `BACKROOM_WEBHOOK_ALLOWED_HOSTS`
//! again before every attempt (a host taken off the list gets nothing more).
//!
//! Layout: the tables, [`run`] (the dispatcher) and the endpoint tasks, the
//! request ([`envelope_json`], [`signature`]), then [`WebhookApi`] and its
//! one error mapping.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use backroom_proto::events::v1::{
    self as pb,
    webhook_service_server::{WebhookService, WebhookServiceServer},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use diesel::{PgConnection, QueryResult, prelude::*};
use hmac::{Hmac, Mac as _};
use prost::{Message as _, Name as _};
use rand::{Rng as _, RngCore as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, watch};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use super::{
    Events, api,
    read::{self, StoredEvent},
};
use crate::{
    auth::{Caller, ROLE_ADMIN},
    db::DbError,
    errors::{Domain, ErrorChain, FieldViolation, Violations, invalid_argument, with_reason},
    names, paging,
};

/// Endpoints one service may have.
pub const MAX_ENDPOINTS: i64 = 100;
/// Redeliveries one endpoint may have queued.
pub const MAX_PENDING_REDELIVERIES: i64 = 1_000;
/// Longest endpoint URL, in characters.
pub const MAX_URL_CHARS: usize = 2_048;
/// The wait after a delivery's first failure; it doubles from there.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at one delivery.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often the dispatcher reads the endpoint list without being woken
/// (endpoints registered through another replica).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Attempts kept per endpoint (older ones are deleted).
pub const ATTEMPTS_KEPT: i64 = 1_000;
/// The collection of endpoint resource names.
pub const COLLECTION: &str = "webhookEndpoints";
/// How a signing secret starts.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest error text stored with an attempt.
const MAX_ERROR_CHARS: usize = 500;
/// How often an idle endpoint task looks again without being woken, in case
/// a wake-up was lost.
const IDLE_RECHECK: Duration = super::feed::SAFETY_INTERVAL;
/// Attempts between two prunings of an endpoint's attempt log.
const PRUNE_EVERY: u32 = 100;

diesel::table! {
    /// Registered endpoints (see the module docs).
    webhook_endpoints (id) {
        /// The endpoint's id (UUIDv7, so ids sort by creation).
        id -> Uuid,
        /// Where deliveries are POSTed.
        url -> Text,
        /// Types delivered; empty: all.
        event_types -> Array<Text>,
        /// The signing secret (`whsec_…`).
        secret -> Text,
        /// The last event this endpoint is done with.
        delivered_sequence -> Int8,
        /// Deliveries given up so far.
        abandoned_count -> Int8,
        /// First failure of the next event's delivery, while it fails.
        failing_since -> Nullable<Timestamptz>,
        /// When to try the next event again, while it fails.
        next_attempt_at -> Nullable<Timestamptz>,
        /// When it was registered.
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// Redeliveries queued by RPC, each with its own retry state.
    webhook_redeliveries (endpoint_id, sequence) {
        /// The endpoint.
        endpoint_id -> Uuid,
        /// The event to deliver again.
        sequence -> Int8,
        /// When it was asked for (redeliveries go out in this order).
        requested_at -> Timestamptz,
        /// First failure of this redelivery, while it fails.
        failing_since -> Nullable<Timestamptz>,
        /// When to try it again, while it fails.
        next_attempt_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Every delivery attempt.
    webhook_attempts (endpoint_id, attempt) {
        /// The endpoint.
        endpoint_id -> Uuid,
        /// Insertion order.
        attempt -> Int8,
        /// The event's sequence.
        sequence -> Int8,
        /// The event's id.
        event_id -> Uuid,
        /// The receiver's status; 0 when it did not answer.
        http_status -> Int4,
        /// Why it failed; empty on success.
        error -> Text,
        /// How long it took.
        latency_ms -> Int8,
        /// When it was made.
        attempted_at -> Timestamptz,
    }
}

/// An endpoint as stored. Its `Debug` output never shows the secret.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints)]
struct EndpointRow {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    secret: String,
    delivered_sequence: i64,
    abandoned_count: i64,
    failing_since: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl std::fmt::Debug for EndpointRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("delivered_sequence", &self.delivered_sequence)
            .field("abandoned_count", &self.abandoned_count)
            .field("failing_since", &self.failing_since)
            .field("next_attempt_at", &self.next_attempt_at)
            .finish_non_exhaustive()
    }
}

impl EndpointRow {
    /// The resource, with the secret only when `with_secret` (the create
    /// response).
    fn to_proto(&self, with_secret: bool) -> pb::WebhookEndpoint {
        pb::WebhookEndpoint {
            name: names::name(COLLECTION, self.id),
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            secret: if with_secret {
                self.secret.clone()
            } else {
                String::new()
            },
            delivered_sequence: self.delivered_sequence,
            create_time: Some(timestamp(self.created_at)),
            abandoned_count: self.abandoned_count,
        }
    }
}

/// A queued redelivery as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_redeliveries)]
struct RedeliveryRow {
    sequence: i64,
    failing_since: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
}

/// An attempt as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
struct AttemptRow {
    attempt: i64,
    sequence: i64,
    event_id: Uuid,
    http_status: i32,
    error: String,
    latency_ms: i64,
    attempted_at: DateTime<Utc>,
}

impl AttemptRow {
    fn to_proto(&self) -> pb::WebhookAttempt {
        pb::WebhookAttempt {
            sequence: self.sequence,
            event_id: self.event_id.to_string(),
            http_status: self.http_status,
            error: self.error.clone(),
            latency_ms: self.latency_ms,
            attempt_time: Some(timestamp(self.attempted_at)),
            succeeded: is_success(self.http_status),
        }
    }
}

fn is_success(http_status: i32) -> bool {
    (200..300).contains(&http_status)
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------
// In-process wake-ups.

/// Wake-ups from the API to the dispatcher of the same schema in this
/// process. Both sides find it by the database and schema they use, since
/// the API and the dispatcher are built apart (each from an [`Events`]).
#[derive(Debug, Default)]
struct Hub {
    /// Endpoints were added or removed. `Notify` keeps a permit when nobody
    /// waits, so a wake-up between two waits is not lost.
    rescan: Notify,
    /// Per endpoint: a redelivery was queued.
    endpoints: Mutex<HashMap<Uuid, Arc<Notify>>>,
}

impl Hub {
    /// The hub of `events`' database and schema.
    fn of(events: &Events) -> Arc<Hub> {
        static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
        // Keyed by a digest, so the map holds no database password.
        let mut digest = Sha256::new();
        digest.update(events.pool().url().expose().as_bytes());
        digest.update([0]);
        digest.update(events.pool().schema().as_bytes());
        let key = STANDARD.encode(digest.finalize());
        let hubs = HUBS.get_or_init(Mutex::default);
        // The lock guards map operations only; a panic inside one leaves
        // the map usable.
        let mut hubs = hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.entry(key).or_default().clone()
    }

    /// The wake-up of endpoint `id`.
    fn endpoint(&self, id: Uuid) -> Arc<Notify> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.entry(id).or_default().clone()
    }

    /// Drops the wake-up of a removed endpoint.
    fn forget(&self, id: Uuid) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.remove(&id);
    }
}

// ---------------------------------------------------------------------------
// The dispatcher.

/// Delivers to the registered endpoints while this process leads (see the
/// module docs), until the task is dropped.
pub async fn run(events: Events) {
    let client = match http_client(events.config()) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), source = events.source(), "cannot build the webhook HTTP client; no webhooks");
            return;
        }
    };
    let mut leader = events.leader();
    loop {
        if leader.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        lead(&events, &client, &mut leader).await;
    }
}

/// The HTTP client of deliveries: the configured time limit, no redirects
/// (a receiver must not send deliveries somewhere off the allow-list).
fn http_client(config: &super::EventsConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.webhook_timeout())
        .connect_timeout(config.webhook_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("backroom-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Aborts an endpoint task when dropped: every task stops when this process
/// stops leading or the endpoint goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one task per endpoint while `leader` stays true.
async fn lead(events: &Events, client: &reqwest::Client, leader: &mut watch::Receiver<bool>) {
    let hub = Hub::of(events);
    let mut tasks: HashMap<Uuid, AbortOnDrop> = HashMap::new();
    tracing::info!(source = events.source(), "delivering webhooks");
    loop {
        if !*leader.borrow_and_update() {
            tracing::info!(source = events.source(), "no longer delivering webhooks");
            return; // dropping `tasks` stops them
        }
        let listed = events
            .pool()
            .run(|conn| {
                webhook_endpoints::table
                    .select(webhook_endpoints::id)
                    .load::<Uuid>(conn)
                    .map_err(DbError::from)
            })
            .await;
        match listed {
            Ok(ids) => {
                tasks.retain(|id, task| ids.contains(id) && !task.0.is_finished());
                for id in ids {
                    tasks.entry(id).or_insert_with(|| {
                        let task = EndpointTask {
                            events: events.clone(),
                            client: client.clone(),
                            id,
                            wake: hub.endpoint(id),
                        };
                        AbortOnDrop(tokio::spawn(task.run()))
                    });
                }
            }
            Err(err) => {
                tracing::warn!(error = %ErrorChain(&err), source = events.source(), "cannot list the webhook endpoints");
            }
        }
        tokio::select! {
            () = hub.rescan.notified() => {}
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RESCAN_INTERVAL) => {}
        }
    }
}

/// What an endpoint's task does next.
#[derive(Debug)]
enum Step {
    /// The endpoint was removed.
    Gone,
    /// Nothing to deliver.
    Idle,
    /// The current delivery failed; try again then.
    Wait(DateTime<Utc>),
    /// Deliver this now.
    Deliver(Box<Delivery>),
}

/// Which of the endpoint's deliveries it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The next event after `delivered_sequence`.
    Next,
    /// A queued redelivery.
    Redelivery,
}

/// One delivery to make. Its `Debug` output never shows the secret.
struct Delivery {
    endpoint: Uuid,
    url: String,
    secret: String,
    kind: Kind,
    event: StoredEvent,
    failing_since: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("endpoint", &self.endpoint)
            .field("url", &self.url)
            .field("kind", &self.kind)
            .field("sequence", &self.event.sequence())
            .field("failing_since", &self.failing_since)
            .finish_non_exhaustive()
    }
}

/// How one attempt went.
#[derive(Debug, Clone)]
struct Outcome {
    http_status: i32,
    error: String,
    latency: Duration,
    attempted_at: DateTime<Utc>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        is_success(self.http_status)
    }
}

/// The task delivering to one endpoint.
struct EndpointTask {
    events: Events,
    client: reqwest::Client,
    id: Uuid,
    wake: Arc<Notify>,
}

impl EndpointTask {
    #[tracing::instrument(name = "webhook_endpoint", skip_all, fields(source = self.events.source(), endpoint = %self.id))]
    async fn run(self) {
        let mut newest = self.events.newest();
        let mut db_backoff = FIRST_RETRY;
        // Prune once at start, then every PRUNE_EVERY attempts.
        let mut until_prune = 0;
        loop {
            newest.borrow_and_update();
            if until_prune == 0 {
                until_prune = PRUNE_EVERY;
                let id = self.id;
                if let Err(err) = self.events.pool().run(move |conn| prune(conn, id)).await {
                    tracing::warn!(error = %ErrorChain(&err), "cannot prune the webhook attempts");
                }
            }
            let id = self.id;
            let step = match self
                .events
                .pool()
                .run(move |conn| next_step(conn, id))
                .await
            {
                Ok(step) => {
                    db_backoff = FIRST_RETRY;
                    step
                }
                Err(err) => {
                    tracing::warn!(error = %ErrorChain(&err), retry_in = ?db_backoff, "cannot read the next webhook delivery");
                    tokio::time::sleep(db_backoff).await;
                    db_backoff = (db_backoff * 2).min(MAX_RETRY);
                    continue;
                }
            };
            match step {
                Step::Gone => return,
                Step::Idle => {
                    tokio::select! {
                        changed = newest.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(IDLE_RECHECK) => {}
                    }
                }
                Step::Wait(until) => {
                    let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // Re-read: the endpoint may be gone (its task is
                        // stopped then anyway) or a redelivery queued (it
                        // waits for the current delivery).
                        () = self.wake.notified() => {}
                    }
                }
                Step::Deliver(delivery) => {
                    until_prune = until_prune.saturating_sub(1);
                    let outcome = attempt(&self.events, &self.client, &delivery).await;
                    let window = self.events.config().retry_window();
                    let source = self.events.source();
                    let recorded = self
                        .events
                        .pool()
                        .run(move |conn| record(conn, &delivery, &outcome, window, source))
                        .await;
                    if let Err(err) = recorded {
                        // The attempt is made again: at least once.
                        tracing::warn!(error = %ErrorChain(&err), retry_in = ?db_backoff, "cannot record a webhook attempt");
                        tokio::time::sleep(db_backoff).await;
                        db_backoff = (db_backoff * 2).min(MAX_RETRY);
                    }
                }
            }
        }
    }
}

/// The endpoint's next step (see the module docs for the order).
fn next_step(conn: &mut PgConnection, id: Uuid) -> Result<Step, DbError> {
    let Some(endpoint) = webhook_endpoints::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(Step::Gone);
    };
    let delivery = |kind, event, failing_since| Delivery {
        endpoint: id,
        url: endpoint.url.clone(),
        secret: endpoint.secret.clone(),
        kind,
        event,
        failing_since,
    };
    let due = |delivery: Delivery, next_attempt_at: Option<DateTime<Utc>>| match next_attempt_at {
        Some(at) if at > Utc::now() => Step::Wait(at),
        _ => Step::Deliver(Box::new(delivery)),
    };
    // While the next event is being retried, redeliveries wait for it.
    if endpoint.failing_since.is_none() {
        loop {
            let Some(redelivery) = webhook_redeliveries::table
                .filter(webhook_redeliveries::endpoint_id.eq(id))
                .order((
                    webhook_redeliveries::requested_at.asc(),
                    webhook_redeliveries::sequence.asc(),
                ))
                .select(RedeliveryRow::as_select())
                .first(conn)
                .optional()?
            else {
                break;
            };
            match read::at(conn, redelivery.sequence)? {
                Some(event) => {
                    return Ok(due(
                        delivery(Kind::Redelivery, event, redelivery.failing_since),
                        redelivery.next_attempt_at,
                    ));
                }
                // The API checks the event exists; events are never
                // removed, but a queue entry must not block the endpoint.
                None => {
                    diesel::delete(webhook_redeliveries::table.find((id, redelivery.sequence)))
                        .execute(conn)?;
                }
            }
        }
    }
    let next = read::after(conn, endpoint.delivered_sequence, &endpoint.event_types, 1)?;
    Ok(match next.into_iter().next() {
        Some(event) => due(
            delivery(Kind::Next, event, endpoint.failing_since),
            endpoint.next_attempt_at,
        ),
        None => Step::Idle,
    })
}

/// Makes one HTTP attempt at `delivery`.
async fn attempt(events: &Events, client: &reqwest::Client, delivery: &Delivery) -> Outcome {
    let attempted_at = Utc::now();
    let started = Instant::now();
    let (http_status, error) = match send(events, client, delivery, attempted_at).await {
        Ok(status) if is_success(status) => (status, String::new()),
        Ok(status) => (status, format!("the receiver answered HTTP {status}")),
        Err(error) => (0, clip(&error)),
    };
    let latency = started.elapsed();
    let source = events.source();
    let outcome = if is_success(http_status) {
        "delivered"
    } else {
        "failed"
    };
    metrics::counter!("backroom_webhook_attempts_total", "source" => source, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("backroom_webhook_attempt_seconds", "source" => source)
        .record(latency.as_secs_f64());
    if !error.is_empty() {
        tracing::info!(sequence = delivery.event.sequence(), http_status, %error, "webhook delivery failed");
    }
    Outcome {
        http_status,
        error,
        latency,
        attempted_at,
    }
}

/// POSTs the signed envelope; the receiver's status, or why none came.
async fn send(
    events: &Events,
    client: &reqwest::Client,
    delivery: &Delivery,
    at: DateTime<Utc>,
) -> Result<i32, String> {
    let url = url::Url::parse(&delivery.url).map_err(|err| format!("bad URL: {err}"))?;
    let allowed = events.config().allowed_hosts();
    if !host_allowed(&url, &allowed) {
        return Err("the URL's host is not on BACKROOM_WEBHOOK_ALLOWED_HOSTS (any more)".into());
    }
    let event = delivery.event.to_proto(events.source());
    let body = envelope_json(&event).map_err(|err| format!("cannot encode the event: {err:#}"))?;
    let id = event.id;
    let timestamp = at.timestamp();
    let signature = signature(&delivery.secret, &id, timestamp, &body)
        .ok_or_else(|| "the endpoint's secret is not a whsec_ secret".to_owned())?;
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|err| ErrorChain(&err.without_url()).to_string())?;
    Ok(i32::from(response.status().as_u16()))
}

/// `text` cut to [`MAX_ERROR_CHARS`].
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Stores `outcome` and what follows from it, in one transaction.
fn record(
    conn: &mut PgConnection,
    delivery: &Delivery,
    outcome: &Outcome,
    window: Duration,
    source: &'static str,
) -> Result<(), DbError> {
    let id = delivery.endpoint;
    let sequence = delivery.event.sequence();
    conn.transaction(|conn| {
        // Locked, so the delete of the endpoint waits; gone: nothing to do.
        let present = webhook_endpoints::table
            .find(id)
            .select(webhook_endpoints::id)
            .for_update()
            .first::<Uuid>(conn)
            .optional()?;
        if present.is_none() {
            return Ok(());
        }
        diesel::insert_into(webhook_attempts::table)
            .values((
                webhook_attempts::endpoint_id.eq(id),
                webhook_attempts::sequence.eq(sequence),
                webhook_attempts::event_id.eq(delivery.event.id),
                webhook_attempts::http_status.eq(outcome.http_status),
                webhook_attempts::error.eq(&outcome.error),
                webhook_attempts::latency_ms
                    .eq(i64::try_from(outcome.latency.as_millis()).unwrap_or(i64::MAX)),
                webhook_attempts::attempted_at.eq(outcome.attempted_at),
            ))
            .execute(conn)?;
        let endpoint = webhook_endpoints::table.find(id);
        let redelivery = webhook_redeliveries::table.find((id, sequence));
        if outcome.succeeded() {
            match delivery.kind {
                Kind::Next => {
                    diesel::update(endpoint.filter(webhook_endpoints::delivered_sequence.lt(sequence)))
                        .set((
                            webhook_endpoints::delivered_sequence.eq(sequence),
                            webhook_endpoints::failing_since.eq(None::<DateTime<Utc>>),
                            webhook_endpoints::next_attempt_at.eq(None::<DateTime<Utc>>),
                        ))
                        .execute(conn)?;
                }
                Kind::Redelivery => {
                    diesel::delete(redelivery).execute(conn)?;
                }
            }
            return Ok(());
        }
        let now = Utc::now();
        let failing_since = delivery.failing_since.unwrap_or(outcome.attempted_at);
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let failing_for = now - failing_since;
        if failing_for >= window {
            tracing::warn!(sequence, failing_since = %failing_since, "webhook delivery given up after the retry window");
            metrics::counter!("backroom_webhook_abandoned_total", "source" => source).increment(1);
            match delivery.kind {
                Kind::Next => {
                    diesel::update(endpoint.filter(webhook_endpoints::delivered_sequence.lt(sequence)))
                        .set((
                            webhook_endpoints::delivered_sequence.eq(sequence),
                            webhook_endpoints::failing_since.eq(None::<DateTime<Utc>>),
                            webhook_endpoints::next_attempt_at.eq(None::<DateTime<Utc>>),
                            webhook_endpoints::abandoned_count
                                .eq(webhook_endpoints::abandoned_count + 1),
                        ))
                        .execute(conn)?;
                }
                Kind::Redelivery => {
                    diesel::delete(redelivery).execute(conn)?;
                    diesel::update(endpoint)
                        .set(
                            webhook_endpoints::abandoned_count
                                .eq(webhook_endpoints::abandoned_count + 1),
                        )
                        .execute(conn)?;
                }
            }
            return Ok(());
        }
        let delay = chrono::Duration::from_std(retry_delay(failing_for.to_std().unwrap_or_default()))
            .unwrap_or(chrono::Duration::MAX);
        // The last try falls on the end of the window.
        let next = (now + delay).min(failing_since + window);
        match delivery.kind {
            Kind::Next => {
                diesel::update(endpoint)
                    .set((
                        webhook_endpoints::failing_since.eq(failing_since),
                        webhook_endpoints::next_attempt_at.eq(next),
                    ))
                    .execute(conn)?;
            }
            Kind::Redelivery => {
                diesel::update(redelivery)
                    .set((
                        webhook_redeliveries::failing_since.eq(failing_since),
                        webhook_redeliveries::next_attempt_at.eq(next),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(())
    })
}

/// The wait before the next attempt at a delivery that has been failing
/// for `failing_for`: about as long again (so waits double), from
/// [`FIRST_RETRY`] up to [`MAX_RETRY`], less a random tenth.
fn retry_delay(failing_for: Duration) -> Duration {
    let base = failing_for.clamp(FIRST_RETRY, MAX_RETRY);
    let jitter = rand::thread_rng().gen_range(0.0..0.1);
    base.mul_f64(1.0 - jitter)
}

/// Deletes endpoint `id`'s attempts past the newest [`ATTEMPTS_KEPT`].
fn prune(conn: &mut PgConnection, id: Uuid) -> Result<(), DbError> {
    let oldest_kept = webhook_attempts::table
        .filter(webhook_attempts::endpoint_id.eq(id))
        .order(webhook_attempts::attempt.desc())
        .offset(ATTEMPTS_KEPT - 1)
        .select(webhook_attempts::attempt)
        .first::<i64>(conn)
        .optional()?;
    if let Some(oldest_kept) = oldest_kept {
        diesel::delete(
            webhook_attempts::table
                .filter(webhook_attempts::endpoint_id.eq(id))
                .filter(webhook_attempts::attempt.lt(oldest_kept)),
        )
        .execute(conn)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The request.

/// `event` as canonical proto3 JSON (lowerCamelCase fields, int64 as
/// strings, default values left out, the `Any` payload expanded to its
/// fields with `@type`), from the descriptors of every Backroom message.
pub fn envelope_json(event: &pb::Event) -> anyhow::Result<Vec<u8>> {
    let descriptor = api::descriptors()
        .get_message_by_name(&pb::Event::full_name())
        .ok_or_else(|| anyhow::anyhow!("no descriptor of {}", pb::Event::full_name()))?;
    let message =
        prost_reflect::DynamicMessage::decode(descriptor, event.encode_to_vec().as_slice())?;
    Ok(serde_json::to_vec(&message)?)
}

/// The Standard Webhooks signature header of `body` sent as `id` at
/// `timestamp` (unix seconds): `v1,` + base64 of HMAC-SHA256 over
/// `<id>.<timestamp>.<body>`, keyed with the bytes `secret` (`whsec_` +
/// base64) encodes; `None` when `secret` is not of that form.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// A fresh signing secret: `whsec_` + base64 of 32 random bytes.
fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Whether `url`'s host is exactly one of `allowed` (lower-cased names or
/// IPs; IPv6 with or without brackets).
fn host_allowed(url: &url::Url, allowed: &[String]) -> bool {
    let unbracket = |host: &str| {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    };
    url.host_str().is_some_and(|host| {
        let host = unbracket(&host.to_ascii_lowercase());
        allowed.iter().any(|entry| unbracket(entry) == host)
    })
}

/// Parses an endpoint URL (see `CreateWebhookEndpointRequest.url`).
fn parse_url(field: &str, raw: &str, allowed: &[String]) -> Result<url::Url, FieldViolation> {
    let bad = |why: String| FieldViolation::new(field, why);
    if raw.is_empty() {
        return Err(bad("is required".into()));
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(bad(format!("must be at most {MAX_URL_CHARS} characters")));
    }
    let url = url::Url::parse(raw).map_err(|err| bad(format!("is not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials (user:password@)".into()));
    }
    let Some(host) = url.host_str() else {
        return Err(bad("must name a host".into()));
    };
    if allowed.is_empty() {
        return Err(bad(
            "cannot be registered: BACKROOM_WEBHOOK_ALLOWED_HOSTS is empty, so this service sends no webhooks".into(),
        ));
    }
    if !host_allowed(&url, allowed) {
        return Err(bad(format!(
            "has host {host}, which is not on BACKROOM_WEBHOOK_ALLOWED_HOSTS"
        )));
    }
    Ok(url)
}

// ---------------------------------------------------------------------------
// The API.

/// `backroom.events.v1.WebhookService` of one service (admins only).
#[derive(Debug, Clone)]
pub struct WebhookApi {
    events: Events,
    domain: Domain,
    hub: Arc<Hub>,
}

/// What the webhook RPCs can fail with; one mapping to [`Status`]
/// ([`Error::into_status`]).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("invalid request")]
    Validation(Vec<FieldViolation>),
    #[error("no endpoint {0}")]
    EndpointNotFound(String),
    #[error("no event {0}")]
    EventNotFound(i64),
    #[error("the endpoint limit is reached")]
    TooManyEndpoints,
    #[error("the redelivery limit is reached")]
    TooManyRedeliveries,
    #[error("event {sequence} is a {kind}, which the endpoint does not receive")]
    TypeNotDelivered { sequence: i64, kind: String },
}

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}

impl Error {
    fn into_status(self, domain: Domain) -> Status {
        match self {
            Error::Db(err) => err.into_status(domain),
            Error::Validation(violations) => invalid_argument(domain, &violations),
            Error::EndpointNotFound(name) => with_reason(
                Code::NotFound,
                domain,
                "WEBHOOK_ENDPOINT_NOT_FOUND",
                format!("{name} not found"),
                [("name".to_owned(), name)],
            ),
            Error::EventNotFound(sequence) => with_reason(
                Code::NotFound,
                domain,
                "EVENT_NOT_FOUND",
                format!("no event has sequence {sequence}"),
                [("sequence".to_owned(), sequence.to_string())],
            ),
            Error::TooManyEndpoints => with_reason(
                Code::FailedPrecondition,
                domain,
                "TOO_MANY_WEBHOOK_ENDPOINTS",
                format!(
                    "a service has at most {MAX_ENDPOINTS} webhook endpoints; delete one first"
                ),
                [("limit".to_owned(), MAX_ENDPOINTS.to_string())],
            ),
            Error::TooManyRedeliveries => with_reason(
                Code::FailedPrecondition,
                domain,
                "TOO_MANY_REDELIVERIES",
                format!(
                    "an endpoint has at most {MAX_PENDING_REDELIVERIES} redeliveries queued; wait for them to go out"
                ),
                [("limit".to_owned(), MAX_PENDING_REDELIVERIES.to_string())],
            ),
            Error::TypeNotDelivered { sequence, kind } => with_reason(
                Code::FailedPrecondition,
                domain,
                "EVENT_TYPE_NOT_DELIVERED",
                format!("event {sequence} is a {kind}, which the endpoint does not receive"),
                [("type".to_owned(), kind)],
            ),
        }
    }
}

impl WebhookApi {
    /// The webhooks of `events`, answering errors in `domain`.
    pub fn new(events: Events, domain: Domain) -> Self {
        let hub = Hub::of(&events);
        Self {
            events,
            domain,
            hub,
        }
    }

    /// The generated server around it.
    pub fn into_server(self, max_message_bytes: usize) -> WebhookServiceServer<Self> {
        WebhookServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn admin<T>(request: &Request<T>) -> Result<(), Status> {
        Caller::of(request)?.require_role(ROLE_ADMIN)
    }

    fn invalid(&self, violations: Vec<FieldViolation>) -> Status {
        invalid_argument(self.domain, &violations)
    }

    fn status(&self) -> impl Fn(Error) -> Status + use<> {
        let domain = self.domain;
        move |err| err.into_status(domain)
    }
}

/// `types` without repeats, in their order.
fn distinct(types: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    types
        .into_iter()
        .filter(|kind| seen.insert(kind.clone()))
        .collect()
}

/// The endpoint `id` (named `name`), or NOT_FOUND.
fn endpoint(conn: &mut PgConnection, id: Uuid, name: &str) -> Result<EndpointRow, Error> {
    webhook_endpoints::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::EndpointNotFound(name.to_owned()))
}

/// A page of endpoints after `after`, oldest first.
fn endpoints_after(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<EndpointRow>> {
    let mut query = webhook_endpoints::table
        .order(webhook_endpoints::id.asc())
        .limit(limit)
        .select(EndpointRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(webhook_endpoints::id.gt(after));
    }
    query.load(conn)
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    #[tracing::instrument(skip_all, fields(source = self.events.source()))]
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        Self::admin(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let allowed = self.events.config().allowed_hosts();
        let url = violations.check(parse_url("url", &request.url, &allowed));
        api::check_types(
            &mut violations,
            "event_types",
            self.events.source(),
            &request.event_types,
        );
        if request.after_sequence < 0 {
            violations.push(
                "after_sequence",
                "must not be negative (0: the events from now on; ListEvents serves history)",
            );
        }
        let url = violations
            .finish_with(url)
            .map_err(|found| self.invalid(found))?;
        let (url, types, after) = (
            url.to_string(),
            distinct(request.event_types),
            request.after_sequence,
        );
        let (id, secret) = (Uuid::now_v7(), new_secret());
        let row = self
            .events
            .pool()
            .run(move |conn| {
                conn.transaction(|conn| {
                    // Creations one at a time, so the limit holds.
                    diesel::sql_query(
                        "SELECT pg_advisory_xact_lock(hashtext('backroom-webhook-endpoints-' || current_schema()))",
                    )
                    .execute(conn)?;
                    let count: i64 = webhook_endpoints::table.count().get_result(conn)?;
                    if count >= MAX_ENDPOINTS {
                        return Err(Error::TooManyEndpoints);
                    }
                    let newest = read::newest(conn)?;
                    if after > newest {
                        return Err(Error::Validation(vec![FieldViolation::new(
                            "after_sequence",
                            format!("is past the newest event ({newest})"),
                        )]));
                    }
                    let start = if after == 0 { newest } else { after };
                    Ok(diesel::insert_into(webhook_endpoints::table)
                        .values((
                            webhook_endpoints::id.eq(id),
                            webhook_endpoints::url.eq(&url),
                            webhook_endpoints::event_types.eq(&types),
                            webhook_endpoints::secret.eq(&secret),
                            webhook_endpoints::delivered_sequence.eq(start),
                            webhook_endpoints::created_at.eq(Utc::now()),
                        ))
                        .returning(EndpointRow::as_returning())
                        .get_result(conn)?)
                })
            })
            .await
            .map_err(self.status())?;
        tracing::info!(endpoint = %row.id, url = row.url, "webhook endpoint registered");
        self.hub.rescan.notify_one();
        Ok(Response::new(row.to_proto(true)))
    }

    #[tracing::instrument(skip_all, fields(source = self.events.source()))]
    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        Self::admin(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let page = paging::page(&mut violations, request.page_size, &request.page_token, &[]);
        let page = violations
            .finish_with(page)
            .map_err(|found| self.invalid(found))?;
        let after = page.after_uuid().map_err(|bad| self.invalid(vec![bad]))?;
        let limit = page.fetch_limit();
        let rows = self
            .events
            .pool()
            .run(move |conn| endpoints_after(conn, after, limit).map_err(Error::from))
            .await
            .map_err(self.status())?;
        let (rows, next_page_token) = page.finish(rows, |row| row.id.to_string());
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: rows.iter().map(|row| row.to_proto(false)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(source = self.events.source(), endpoint))]
    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<()>, Status> {
        Self::admin(&request)?;
        let name = request.into_inner().name;
        let id =
            names::parse_uuid("name", COLLECTION, &name).map_err(|bad| self.invalid(vec![bad]))?;
        tracing::Span::current().record("endpoint", tracing::field::display(id));
        let deleted = self
            .events
            .pool()
            .run(move |conn| {
                diesel::delete(webhook_endpoints::table.find(id))
                    .execute(conn)
                    .map_err(Error::from)
            })
            .await
            .map_err(self.status())?;
        if deleted == 0 {
            return Err(self.status()(Error::EndpointNotFound(name)));
        }
        tracing::info!(endpoint = %id, "webhook endpoint removed");
        self.hub.forget(id);
        self.hub.rescan.notify_one();
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(source = self.events.source(), endpoint))]
    async fn list_webhook_attempts(
        &self,
        request: Request<pb::ListWebhookAttemptsRequest>,
    ) -> Result<Response<pb::ListWebhookAttemptsResponse>, Status> {
        Self::admin(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(names::parse_uuid("endpoint", COLLECTION, &request.endpoint));
        let page = paging::page(
            &mut violations,
            request.page_size,
            &request.page_token,
            &[&request.endpoint],
        );
        let (id, page) = violations
            .finish_with((id, page))
            .map_err(|found| self.invalid(found))?;
        tracing::Span::current().record("endpoint", tracing::field::display(id));
        let before = page
            .after
            .as_deref()
            .map(|key| {
                key.parse::<i64>()
                    .map_err(|_| self.invalid(vec![paging::bad_token()]))
            })
            .transpose()?;
        let (limit, name) = (page.fetch_limit(), request.endpoint);
        let rows = self
            .events
            .pool()
            .run(move |conn| {
                endpoint(conn, id, &name)?;
                let mut query = webhook_attempts::table
                    .filter(webhook_attempts::endpoint_id.eq(id))
                    .order(webhook_attempts::attempt.desc())
                    .limit(limit)
                    .select(AttemptRow::as_select())
                    .into_boxed();
                if let Some(before) = before {
                    query = query.filter(webhook_attempts::attempt.lt(before));
                }
                Ok::<_, Error>(query.load(conn)?)
            })
            .await
            .map_err(self.status())?;
        let (rows, next_page_token) = page.finish(rows, |row| row.attempt.to_string());
        Ok(Response::new(pb::ListWebhookAttemptsResponse {
            attempts: rows.iter().map(AttemptRow::to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(source = self.events.source(), endpoint, sequence))]
    async fn redeliver_webhook_event(
        &self,
        request: Request<pb::RedeliverWebhookEventRequest>,
    ) -> Result<Response<()>, Status> {
        Self::admin(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(names::parse_uuid("endpoint", COLLECTION, &request.endpoint));
        if request.sequence < 1 {
            violations.push("sequence", "must be the sequence of an event (1 or more)");
        }
        let id = violations
            .finish_with(id)
            .map_err(|found| self.invalid(found))?;
        let (sequence, name) = (request.sequence, request.endpoint);
        let span = tracing::Span::current();
        span.record("endpoint", tracing::field::display(id));
        span.record("sequence", sequence);
        self.events
            .pool()
            .run(move |conn| {
                conn.transaction(|conn| {
                    let endpoint = endpoint(conn, id, &name)?;
                    let event = read::at(conn, sequence)?.ok_or(Error::EventNotFound(sequence))?;
                    if !endpoint.event_types.is_empty()
                        && !endpoint.event_types.contains(&event.kind)
                    {
                        return Err(Error::TypeNotDelivered {
                            sequence,
                            kind: event.kind,
                        });
                    }
                    let pending: i64 = webhook_redeliveries::table
                        .filter(webhook_redeliveries::endpoint_id.eq(id))
                        .count()
                        .get_result(conn)?;
                    if pending >= MAX_PENDING_REDELIVERIES {
                        return Err(Error::TooManyRedeliveries);
                    }
                    // Already queued: it stays where it is.
                    diesel::insert_into(webhook_redeliveries::table)
                        .values((
                            webhook_redeliveries::endpoint_id.eq(id),
                            webhook_redeliveries::sequence.eq(sequence),
                            webhook_redeliveries::requested_at.eq(Utc::now()),
                        ))
                        .on_conflict_do_nothing()
                        .execute(conn)?;
                    Ok(())
                })
            })
            .await
            .map_err(self.status())?;
        self.hub.endpoint(id).notify_one();
        // Its task may not run yet (the endpoint is new to this process).
        self.hub.rescan.notify_one();
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        let signed = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signed.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(
            signature("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, b""),
            None
        );
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let key = STANDARD
            .decode(a.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn retry_delays_double_from_a_second_up_to_five_minutes() {
        let first = retry_delay(Duration::ZERO);
        assert!(
            first <= FIRST_RETRY && first >= FIRST_RETRY.mul_f64(0.9),
            "{first:?}"
        );
        let later = retry_delay(Duration::from_secs(8));
        assert!(later <= Duration::from_secs(8) && later >= Duration::from_millis(7_200));
        let capped = retry_delay(Duration::from_secs(86_400));
        assert!(capped <= MAX_RETRY && capped >= MAX_RETRY.mul_f64(0.9));
    }

    #[test]
    fn urls_must_be_http_without_credentials_on_an_allowed_host() {
        let allowed = vec!["hooks.example.com".to_owned(), "::1".to_owned()];
        let ok = |raw: &str| parse_url("url", raw, &allowed).map(|u| u.to_string());
        assert!(ok("https://hooks.example.com/in").is_ok());
        assert!(ok("http://HOOKS.example.com:8080/in?x=1").is_ok());
        assert!(ok("http://[::1]:9/in").is_ok());
        for bad in [
            "",
            "hooks.example.com/in",
            "ftp://hooks.example.com/in",
            "https://user:pw@hooks.example.com/in",
            "https://user@hooks.example.com/in",
            "https://evil.example.com/in",
            "https://hooks.example.com.evil.net/in",
            "file:///etc/passwd",
        ] {
            let err = ok(bad).unwrap_err();
            assert_eq!(err.field, "url", "{bad}");
        }
        let long = format!("https://hooks.example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(ok(&long).unwrap_err().description.contains("2048"));
        let err = parse_url("url", "https://hooks.example.com/", &[]).unwrap_err();
        assert!(
            err.description
                .contains("BACKROOM_WEBHOOK_ALLOWED_HOSTS is empty")
        );
    }
}
