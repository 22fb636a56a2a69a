//! WatchStock's hub: one reader per process feeds every open stream.
//!
//! Each WatchStock stream used to poll the database on its own, so the
//! database work grew with the number of streams until they exhausted the
//! pool. Now one task, [`WatchHub::run`], reads the levels of the union of
//! every watched SKU with one query whenever stock changed (only while
//! someone watches), keeps the version it last saw of each level, and hands each
//! subscriber what concerns it (its SKUs, its location):
//!
//! - a new subscriber gets its snapshot from the first poll that began after
//!   it subscribed, so the snapshot and the changes after it come from the
//!   same readings and nothing falls between them;
//! - after that, every level whose version moved since the previous poll.
//!
//! The reader does not poll: it waits on the service's event feed
//! ([`backroom_shared::events::Events::newest`]), which moves when any
//! replica commits a change (every stock movement is a `StockLevelChanged`
//! event, announced by Postgres `NOTIFY`), or for a new subscriber. Reads
//! coalesce: at most one per `BACKROOM_WATCH_POLL_INTERVAL_MS` (250 ms by
//! default), however many changes commit meanwhile. The reader never
//! writes: units of expired reservations come back when the reservation
//! sweeper returns them (`BACKROOM_RESERVATION_SWEEP_INTERVAL_MS`), which is
//! a movement like any other.
//!
//! Bounds, so that no caller can make the server hold more than it allows:
//! - each subscriber's queue holds [`QUEUE_DEPTH`] polls' worth of changes;
//!   when it is full the subscriber is ended with RESOURCE_EXHAUSTED
//!   `STREAM_TOO_SLOW` instead of buffering without bound or holding up
//!   the poller and everyone else;
//! - each principal holds at most `streams_per_caller` open streams
//!   ([`backroom_shared::streams::StreamSlots`]); the stream holds its slot,
//!   so the slot frees when the stream ends or the client goes away (the
//!   stream also holds a slot of the server's concurrency limit until then).
//!
//! Every [`REVALIDATION_INTERVAL`] the hub checks each subscriber's token
//! again with [`Caller::revalidate`] (expiry, with the same leeway the
//! verifier allows a new call, and the revocation list), and ends the
//! streams whose token stopped counting with that token's status. So a
//! stream lives no longer than a new call with its token would be accepted,
//! give or take a second.
//!
//! Layout:
//! - [`WatchHub`]: the registry ([`WatchHub::reserve`],
//!   [`WatchHub::subscribe`]), the poll and revalidation loops
//!   ([`WatchHub::run`]), [`WatchStats`] for tests and operators;
//! - [`LevelStream`]: what one WatchStock call streams (levels, then at most
//!   one final error); dropping it unsubscribes and frees its slot.

use std::{
    collections::{HashMap, HashSet},
    future::Future as _,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use backroom_shared::{
    auth::Caller,
    catalog::Sku,
    db::Pool,
    events::Events,
    service::Shutdown,
    streams::{StreamSlot, StreamSlots},
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_stream::Stream;
use tracing::instrument;

use crate::{
    db::repo,
    domain::{
        Error,
        stock::{LevelKey, StockLevel, WatchStock},
        values::LocationId,
    },
};

/// Polls' worth of changes a subscriber may have queued before it is ended
/// as too slow: eight seconds of continuous change at the default interval,
/// far more than a healthy reader needs (HTTP/2 flow control buffers more in
/// front of it).
pub const QUEUE_DEPTH: usize = 32;

/// How often every subscriber's token is checked again.
pub const REVALIDATION_INTERVAL: Duration = Duration::from_secs(1);

/// How the hub behaves.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Time between two polls of the database.
    pub poll_interval: Duration,
    /// Open streams each principal may hold.
    pub streams_per_caller: usize,
    /// Open streams from one client address, whoever the principals are.
    pub streams_per_address: usize,
    /// Open streams of all principals together.
    pub streams_max: usize,
}

/// What the hub holds now (a snapshot; see [`WatchHub::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Streams the hub feeds.
    pub subscribers: usize,
    /// Open streams holding a caller's slot (a stream the hub has ended
    /// holds its slot until it has told its client why).
    pub open_streams: usize,
    /// Polls of the database completed since the start.
    pub polls: u64,
}

/// The one poller of a process and its subscribers; cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("config", &self.inner.config)
            .field("stats", &*self.inner.stats.borrow())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: WatchConfig,
    slots: Arc<StreamSlots>,
    state: Mutex<State>,
    /// Wakes the idle poller when the first subscriber arrives.
    wake: Notify,
    stats: watch::Sender<WatchStats>,
    /// Set by the first [`WatchHub::run`]: one poller per hub.
    running: AtomicBool,
}

#[derive(Default)]
struct State {
    subscribers: HashMap<u64, Subscriber>,
    /// SKU → how many subscribers watch it: the union the poller reads.
    watched: HashMap<Sku, usize>,
    /// Level → the version the last poll read.
    versions: HashMap<LevelKey, i64>,
    next_id: u64,
    /// Polls begun; a subscriber's first poll is the next one to begin.
    polls_begun: u64,
    polls_done: u64,
    /// Set when the hub stopped: new subscribers are refused with it.
    closed: bool,
}

struct Subscriber {
    caller: Caller,
    skus: HashSet<Sku>,
    location: Option<LocationId>,
    /// The first poll whose readings it may use (its snapshot).
    first_poll: u64,
    /// Whether it has had its snapshot.
    live: bool,
    batches: mpsc::Sender<Batch>,
    end: oneshot::Sender<Error>,
}

impl Subscriber {
    fn wants(&self, level: &StockLevel) -> bool {
        self.skus.contains(&level.key.sku)
            && self
                .location
                .as_ref()
                .is_none_or(|at| *at == level.key.location)
    }
}

/// The levels one poll has for one subscriber, in (sku, location) order.
type Batch = Vec<Arc<StockLevel>>;

impl State {
    /// Removes a subscriber, telling it why when there is a `reason` (none:
    /// its stream is gone already).
    fn remove(&mut self, id: u64, reason: Option<Error>) {
        let Some(subscriber) = self.subscribers.remove(&id) else {
            return;
        };
        for sku in &subscriber.skus {
            if let Some(count) = self.watched.get_mut(sku) {
                *count -= 1;
                if *count == 0 {
                    self.watched.remove(sku);
                }
            }
        }
        if let Some(reason) = reason {
            // The stream may be gone meanwhile; then nobody needs the reason.
            let _ = subscriber.end.send(reason);
        }
    }

    fn end_all(&mut self, reason: impl Fn() -> Error) {
        let ids: Vec<u64> = self.subscribers.keys().copied().collect();
        for id in ids {
            self.remove(id, Some(reason()));
        }
    }
}

impl WatchHub {
    /// A hub that polls every `config.poll_interval` once [`Self::run`]
    /// runs.
    pub fn new(config: WatchConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                slots: StreamSlots::with_limits(
                    config.streams_per_caller,
                    config.streams_per_address,
                    config.streams_max,
                ),
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                stats: watch::Sender::new(WatchStats::default()),
                running: AtomicBool::new(false),
            }),
        }
    }

    /// Claims one of `caller`'s stream slots (and one of its client
    /// `address`'s): call it before any other work of a new stream, so a
    /// caller at its cap costs nothing more.
    pub fn reserve(&self, caller: &Caller, address: Option<&str>) -> Result<StreamSlot, Error> {
        Ok(self.inner.slots.acquire_from(&caller.claims.sub, address)?)
    }

    /// Subscribes to the levels `watch` names (its SKUs, at its location or
    /// every location): the snapshot at the next poll, then every change.
    /// The stream holds `slot` until it ends. Refused once the hub has
    /// stopped.
    pub fn subscribe(
        &self,
        slot: StreamSlot,
        caller: Caller,
        watch: WatchStock,
    ) -> Result<LevelStream, Error> {
        let (batch_tx, batch_rx) = mpsc::channel(QUEUE_DEPTH);
        let (end_tx, end_rx) = oneshot::channel();
        let WatchStock { skus, location } = watch;
        let skus: HashSet<Sku> = skus.into_iter().collect();
        let id = {
            let mut state = self.inner.lock();
            if state.closed {
                return Err(Error::ShuttingDown);
            }
            let id = state.next_id;
            state.next_id += 1;
            for sku in &skus {
                *state.watched.entry(sku.clone()).or_default() += 1;
            }
            let first_poll = state.polls_begun;
            state.subscribers.insert(
                id,
                Subscriber {
                    caller,
                    skus,
                    location,
                    first_poll,
                    live: false,
                    batches: batch_tx,
                    end: end_tx,
                },
            );
            self.inner.publish(&state);
            id
        };
        // Stores a permit if the poller is busy: it looks again before idling.
        self.inner.wake.notify_one();
        Ok(LevelStream {
            batches: batch_rx,
            end: end_rx,
            current: Vec::new().into_iter(),
            subscription: Some(Subscription {
                hub: self.inner.clone(),
                id,
                slot: Some(slot),
            }),
        })
    }

    /// What the hub holds, updated on every change.
    pub fn stats(&self) -> watch::Receiver<WatchStats> {
        self.inner.stats.subscribe()
    }

    /// The poller and the revalidation of tokens, until `shutdown`; then
    /// every stream ends with UNAVAILABLE and new ones are refused. Spawned
    /// once by [`crate::server`]; a second call returns at once.
    pub async fn run(self, pool: Pool, events: Events, shutdown: Shutdown) {
        if self.inner.running.swap(true, Ordering::SeqCst) {
            return;
        }
        // However `run` ends (shutdown, a panic, its task aborted), no
        // stream may be left waiting for a poller that is gone.
        let _close = CloseOnDrop(self.inner.clone());
        tokio::select! {
            () = self.inner.clone().poll_loop(pool, events) => {}
            () = self.inner.clone().revalidation_loop() => {}
            () = shutdown.triggered() => {}
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is completed before it is unlocked
        // (nothing in it can panic half-way), so a poisoned lock still
        // holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, state: &State) {
        self.stats.send_replace(WatchStats {
            subscribers: state.subscribers.len(),
            open_streams: self.slots.total(),
            polls: state.polls_done,
        });
    }

    async fn poll_loop(self: Arc<Self>, pool: Pool, events: Events) {
        let mut newest = events.newest();
        loop {
            // Idle (no query at all) until someone watches.
            loop {
                if !self.lock().subscribers.is_empty() {
                    break;
                }
                self.wake.notified().await;
            }
            let (poll, skus) = {
                let mut state = self.lock();
                let poll = state.polls_begun;
                state.polls_begun += 1;
                let mut skus: Vec<Sku> = state.watched.keys().cloned().collect();
                skus.sort_unstable();
                (poll, skus)
            };
            match read_levels(&pool, skus).await {
                Ok(levels) => self.fan_out(poll, levels),
                Err(err) => {
                    tracing::warn!(error = %err, "WatchStock poll failed; ending every stream");
                    let mut state = self.lock();
                    state.end_all(|| Error::StockUnreadable);
                    self.publish(&state);
                }
            }
            // Reads coalesce: at most one per interval, however many
            // changes commit meanwhile.
            tokio::time::sleep(self.config.poll_interval).await;
            // Then nothing until a change commits (the feed's newest
            // sequence moves: any replica's stock movement is an event) or
            // a new subscriber needs its snapshot. No polling.
            tokio::select! {
                changed = newest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = self.wake.notified() => {}
            }
        }
    }

    /// Hands one poll's readings to every subscriber that may use them.
    fn fan_out(&self, poll: u64, levels: Vec<StockLevel>) {
        let levels: Vec<Arc<StockLevel>> = levels.into_iter().map(Arc::new).collect();
        let mut state = self.lock();
        let mut versions = HashMap::with_capacity(levels.len());
        let mut changed = Vec::new();
        for level in &levels {
            let key = level.key.clone();
            if state
                .versions
                .get(&key)
                .is_none_or(|seen| *seen < level.version)
            {
                changed.push(level.clone());
            }
            versions.insert(key, level.version);
        }
        // Only what this poll read: levels nobody watches any more are
        // forgotten.
        state.versions = versions;
        state.polls_done += 1;
        let mut ended = Vec::new();
        for (id, subscriber) in &mut state.subscribers {
            if subscriber.first_poll > poll {
                // Subscribed after this poll began: its SKUs may be missing.
                continue;
            }
            let source = if subscriber.live { &changed } else { &levels };
            subscriber.live = true;
            let batch: Batch = source
                .iter()
                .filter(|level| subscriber.wants(level))
                .cloned()
                .collect();
            if batch.is_empty() {
                continue;
            }
            match subscriber.batches.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    ended.push((*id, Some(Error::StreamTooSlow)));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => ended.push((*id, None)),
            }
        }
        for (id, reason) in ended {
            if reason.is_some() {
                tracing::info!(
                    subscriber = id,
                    "WatchStock reader fell {QUEUE_DEPTH} polls behind; ending its stream"
                );
            }
            state.remove(id, reason);
        }
        self.publish(&state);
    }

    async fn revalidation_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REVALIDATION_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // One check per distinct token, however many streams share it.
            let callers: Vec<Caller> = {
                let state = self.lock();
                let mut seen = HashSet::new();
                state
                    .subscribers
                    .values()
                    .filter(|s| seen.insert(s.caller.token().to_owned()))
                    .map(|s| s.caller.clone())
                    .collect()
            };
            let mut refused = HashMap::new();
            for caller in callers {
                if let Err(err) = caller.revalidate().await {
                    refused.insert(caller.token().to_owned(), err);
                }
            }
            if refused.is_empty() {
                continue;
            }
            let mut state = self.lock();
            let ended: Vec<(u64, Error)> = state
                .subscribers
                .iter()
                .filter_map(|(id, s)| {
                    let err = refused.get(s.caller.token())?;
                    Some((*id, Error::TokenNoLongerValid(err.clone())))
                })
                .collect();
            for (id, reason) in ended {
                tracing::info!(subscriber = id, %reason, "ending a WatchStock stream");
                state.remove(id, Some(reason));
            }
            self.publish(&state);
        }
    }
}

/// One query for the levels of every watched SKU, on the blocking pool.
#[instrument(skip_all, fields(skus = skus.len()))]
async fn read_levels(pool: &Pool, skus: Vec<Sku>) -> Result<Vec<StockLevel>, Error> {
    pool.run(move |conn| repo::stock::levels_of(conn, &skus, None))
        .await
}

/// Closes the hub when [`WatchHub::run`] ends, however it ends.
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.end_all(|| Error::ShuttingDown);
        self.0.publish(&state);
    }
}

/// A stream's registration: unsubscribes and frees the caller's slot when
/// dropped.
struct Subscription {
    hub: Arc<Inner>,
    id: u64,
    slot: Option<StreamSlot>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The slot first, so the stats published below count it free.
        drop(self.slot.take());
        let mut state = self.hub.lock();
        state.remove(self.id, None);
        self.hub.publish(&state);
    }
}

/// What one WatchStock call streams: stock levels (the snapshot, then the
/// changes), then at most one error, after which it ends. An end the hub
/// decided (too slow, token, shutdown, poll failure) comes before anything
/// still queued: the reader is told at once.
pub struct LevelStream {
    batches: mpsc::Receiver<Batch>,
    end: oneshot::Receiver<Error>,
    current: std::vec::IntoIter<Arc<StockLevel>>,
    /// `None` once the stream has ended.
    subscription: Option<Subscription>,
}

impl std::fmt::Debug for LevelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelStream")
            .field("subscriber", &self.subscription.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

impl LevelStream {
    /// Ends the stream with `reason`, freeing its subscription and slot now
    /// rather than when the transport drops the stream.
    fn finish(&mut self, reason: Error) -> Poll<Option<Result<Arc<StockLevel>, Error>>> {
        self.subscription = None;
        Poll::Ready(Some(Err(reason)))
    }
}

impl Stream for LevelStream {
    type Item = Result<Arc<StockLevel>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.subscription.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.end).poll(cx) {
            Poll::Ready(Ok(reason)) => return this.finish(reason),
            // The hub sends a reason whenever it lets go of a live stream;
            // without one it is gone, which only its shutdown does.
            Poll::Ready(Err(_)) => return this.finish(Error::ShuttingDown),
            Poll::Pending => {}
        }
        loop {
            if let Some(level) = this.current.next() {
                return Poll::Ready(Some(Ok(level)));
            }
            match this.batches.poll_recv(cx) {
                Poll::Ready(Some(batch)) => this.current = batch.into_iter(),
                // The hub sent its reason before it dropped the queue.
                Poll::Ready(None) => {
                    let reason = this.end.try_recv().unwrap_or(Error::ShuttingDown);
                    return this.finish(reason);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
