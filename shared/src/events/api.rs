//! `backroom.events.v1.EventService` (the feed) as every service serves it.
//!
//! `WatchEvents` runs one task per stream: it reads the events after its
//! cursor in batches of [`BATCH`] and sends them with the stream's flow
//! control (the outbox is the buffer, so a slow reader costs no memory and
//! holds nobody up), then waits for the feed's newest sequence to pass its
//! cursor ([`super::Events::newest`], raised by database notifications).
//! Each principal holds at most [`STREAMS_PER_CALLER`] streams on a process,
//! all principals [`STREAMS_MAX`]; every [`REVALIDATION_INTERVAL`] the
//! caller's token is checked again (expiry, revocation) and the stream ends
//! with its status once it no longer counts. Shutdown ends streams with
//! UNAVAILABLE.

use std::{collections::BTreeSet, pin::Pin, sync::Arc, time::Duration};

use backroom_proto::events::v1::{self as pb, event_service_server::EventService};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{Events, read};
use crate::{
    auth::Caller,
    db::DbError,
    errors::{Domain, Violations, invalid_argument},
    paging,
    service::Shutdown,
    streams::{StreamSlot, StreamSlots},
};

/// Events read per query by a stream.
pub const BATCH: i64 = 100;
/// Open WatchEvents streams per principal and process.
pub const STREAMS_PER_CALLER: usize = 8;
/// Open WatchEvents streams of all principals on a process.
pub const STREAMS_MAX: usize = 64;
/// How often a stream checks its caller's token again.
pub const REVALIDATION_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many types in one filter.
const MAX_TYPES: usize = 64;

/// The feed of one service.
#[derive(Debug, Clone)]
pub struct EventApi {
    events: Events,
    domain: Domain,
    slots: Arc<StreamSlots>,
    shutdown: Shutdown,
}

impl EventApi {
    /// The feed of `events`, answering errors in `domain`; streams end on
    /// `shutdown`.
    pub fn new(events: Events, domain: Domain, shutdown: Shutdown) -> Self {
        Self {
            events,
            domain,
            slots: StreamSlots::with_total_limit(STREAMS_PER_CALLER, STREAMS_MAX),
            shutdown,
        }
    }

    /// The generated server around it.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::event_service_server::EventServiceServer<Self> {
        pb::event_service_server::EventServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = Caller::of(request)?;
        caller.require_admin_or_service()?;
        Ok(caller)
    }

    fn db(&self) -> impl Fn(DbError) -> Status + use<> {
        let domain = self.domain;
        move |err| err.into_status(domain)
    }
}

/// The event types service `source` writes: the messages of
/// `backroom/<source>/v1/events.proto`, by full name.
pub fn known_types(source: &str) -> BTreeSet<String> {
    let file = format!("backroom/{source}/v1/events.proto");
    descriptors()
        .get_file_by_name(&file)
        .map(|file| file.messages().map(|m| m.full_name().to_owned()).collect())
        .unwrap_or_default()
}

/// Every Backroom message and service, decoded once.
pub fn descriptors() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(backroom_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default()
    })
}

/// Checks a type filter against the types `source` writes.
pub fn check_types(violations: &mut Violations, field: &str, source: &str, types: &[String]) {
    if types.len() > MAX_TYPES {
        violations.push(field, format!("names at most {MAX_TYPES} types"));
        return;
    }
    let known = known_types(source);
    for (i, kind) in types.iter().enumerate() {
        if !known.contains(kind) {
            violations.push(
                format!("{field}[{i}]"),
                format!(
                    "is not an event type of the {source} service (full protobuf names, e.g. {})",
                    known.iter().next().map_or("", String::as_str)
                ),
            );
        }
    }
}

/// The stream of one WatchEvents call.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.caller(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        if request.after_sequence < 0 {
            violations.push("after_sequence", "must not be negative");
        }
        check_types(
            &mut violations,
            "types",
            self.events.source(),
            &request.types,
        );
        let filters = request.types.join(",");
        let after = request.after_sequence.to_string();
        let page = paging::page(
            &mut violations,
            request.page_size,
            &request.page_token,
            &[&after, &filters],
        );
        let page = match (violations.finish(), page) {
            (Ok(()), Some(page)) => page,
            (Err(found), _) => return Err(invalid_argument(self.domain, &found)),
            (Ok(()), None) => return Err(invalid_argument(self.domain, &[paging::bad_token()])),
        };
        let start = match page.after.as_deref() {
            None => request.after_sequence,
            Some(token) => token
                .parse::<i64>()
                .map_err(|_| invalid_argument(self.domain, &[paging::bad_token()]))?,
        };
        let (limit, types) = (page.fetch_limit(), request.types);
        let (rows, last_sequence) = self
            .events
            .pool()
            .run(move |conn| {
                let newest = read::newest(conn)?;
                let rows = read::after(conn, start, &types, limit)?;
                Ok::<_, DbError>((rows, newest))
            })
            .await
            .map_err(self.db())?;
        let (rows, next_page_token) = page.finish(rows, |row| row.sequence().to_string());
        let source = self.events.source();
        Ok(Response::new(pb::ListEventsResponse {
            events: rows.iter().map(|row| row.to_proto(source)).collect(),
            next_page_token,
            last_sequence,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.caller(&request)?;
        let address = crate::ratelimit::client_addr(&request).map(|c| c.key().to_string());
        let request = request.into_inner();
        let mut violations = Violations::default();
        if request.after_sequence < -1 {
            violations.push("after_sequence", "must be -1 (only new events) or more");
        }
        check_types(
            &mut violations,
            "types",
            self.events.source(),
            &request.types,
        );
        violations
            .finish()
            .map_err(|found| invalid_argument(self.domain, &found))?;
        let slot = self
            .slots
            .acquire_from(&caller.claims.sub, address.as_deref())
            .map_err(|err| err.into_status(self.domain))?;
        let start = if request.after_sequence == -1 {
            self.events
                .pool()
                .run(|conn| read::newest(conn).map_err(DbError::from))
                .await
                .map_err(self.db())?
        } else {
            request.after_sequence
        };
        let (tx, rx) = mpsc::channel(16);
        let watch = Watch {
            events: self.events.clone(),
            domain: self.domain,
            caller,
            types: request.types,
            cursor: start,
            tx,
            _slot: slot,
        };
        let (shutdown, domain, stop) = (self.shutdown.clone(), self.domain, watch.tx.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = watch.run() => {}
                () = shutdown.triggered() => {
                    let _ = stop.try_send(Err(crate::errors::unavailable(
                        domain,
                        "the server is shutting down; resume from the last sequence received",
                    )));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One WatchEvents stream's task.
struct Watch {
    events: Events,
    domain: Domain,
    caller: Caller,
    types: Vec<String>,
    /// Everything up to here was scanned (sent, or not of the types).
    cursor: i64,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    _slot: StreamSlot,
}

impl Watch {
    async fn run(mut self) {
        let mut newest = self.events.newest();
        let mut checked = tokio::time::Instant::now();
        loop {
            if checked.elapsed() >= REVALIDATION_INTERVAL {
                checked = tokio::time::Instant::now();
                if let Err(err) = self.caller.revalidate().await {
                    let _ = self.tx.send(Err(self.caller.token_status(err))).await;
                    return;
                }
            }
            let seen = *newest.borrow_and_update();
            let (cursor, types) = (self.cursor, self.types.clone());
            let batch = self
                .events
                .pool()
                .run(move |conn| read::after(conn, cursor, &types, BATCH).map_err(DbError::from))
                .await;
            let batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    let _ = self.tx.send(Err(err.into_status(self.domain))).await;
                    return;
                }
            };
            let full = i64::try_from(batch.len()).unwrap_or(i64::MAX) >= BATCH;
            let source = self.events.source();
            for row in batch {
                self.cursor = row.sequence();
                if self.tx.send(Ok(row.to_proto(source))).await.is_err() {
                    return; // the caller went away
                }
            }
            if full {
                continue;
            }
            // Everything sequenced before the read began was scanned.
            self.cursor = self.cursor.max(seen);
            let cursor = self.cursor;
            tokio::select! {
                changed = newest.wait_for(|n| *n > cursor) => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.tx.closed() => return,
                () = tokio::time::sleep(REVALIDATION_INTERVAL) => {}
            }
        }
    }
}
