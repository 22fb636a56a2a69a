//! WatchStock latency: from an AdjustStock call to the WatchStock streams
//! delivering the level that call made.
//!
//! One run ([`watch_latency`]): a fresh product with stock at `main`,
//! `watchers` streams on its SKU (one customer's token, spread over a few
//! connections), each read up to its snapshot; then sequential +1
//! AdjustStock calls as the admin, each with a fresh request id. AdjustStock
//! is a compare-and-swap on `expected_version`, so the version a call makes
//! is known before it is sent: a delivery is the time from just before the
//! call to the moment the slowest stream yields the level at that version
//! (not merely some message). The call's own latency is recorded too.
//!
//! The hub reads levels when the event feed moves, but at most once per
//! coalescing interval (`BACKROOM_WATCH_POLL_INTERVAL_MS`), so the
//! adjustments alternate between the two cases a writer meets:
//! - back to back: sent as soon as the previous one was delivered, so it
//!   commits inside the interval that began with the read that delivered the
//!   previous one and waits out the rest of it;
//! - hub idle: sent [`IDLE_MARGIN`] more than the interval after the
//!   previous delivery, when the hub is waiting on the feed: the wake-up path
//!   alone (commit, NOTIFY, sequencing, one read, the stream).

use std::time::{Duration, Instant};

use backroom_proto::inventory::v1::{
    AdjustStockRequest, StockAdjustmentReason, StockLevel, WatchStockRequest,
    inventory_service_client::InventoryServiceClient,
};
use futures_util::future::try_join_all;
use tonic::Streaming;

use super::{channels, run_tag};
use crate::{
    fixtures::{self, Suite},
    stats::RpcStats,
};

/// Sequential adjustments per run (half back to back, half on an idle hub).
pub const ADJUSTMENTS: usize = 60;

/// Streams on the same SKU in the many-watchers variant, all one customer's:
/// the bench lifts inventory's per-caller and per-address stream caps to
/// allow them.
pub const WATCHERS: usize = 32;

/// Where the measured level lives.
const LOCATION: &str = "main";

/// Added to the coalescing interval before an adjustment that should find
/// the hub idle: the hub's wait began at its read, before the stream
/// delivered, so this only has to cover scheduling slop.
pub const IDLE_MARGIN: Duration = Duration::from_millis(50);

/// Longest wait for one delivery (or a snapshot) before the run fails: far
/// beyond any coalescing interval, short enough not to hang the bench.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the watchers are spread over.
const WATCH_CONNECTIONS: usize = 4;

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct WatchLatency {
    /// Streams open on the SKU.
    pub watchers: usize,
    /// Delivery to the slowest watcher of adjustments sent right after the
    /// previous delivery.
    pub back_to_back: RpcStats,
    /// Delivery to the slowest watcher of adjustments sent after the hub's
    /// coalescing interval had run out.
    pub after_idle: RpcStats,
    /// The AdjustStock calls themselves (both kinds).
    pub adjust: RpcStats,
}

/// Measures `adjustments` sequential +1 AdjustStock calls on a fresh SKU
/// watched by `watchers` streams; `coalescing` is the hub's interval in
/// effect (it sets the idle gap).
pub async fn watch_latency(
    suite: &Suite,
    watchers: usize,
    adjustments: usize,
    coalescing: Duration,
) -> anyhow::Result<WatchLatency> {
    let admin = fixtures::admin_token(suite).await?;
    let sku = format!("WATCH-{}", run_tag());
    fixtures::product(suite, &admin, &sku, 1000).await?;
    let watcher = fixtures::shopper(
        suite,
        &format!("watch-{}@example.com", run_tag().to_lowercase()),
    )
    .await?;

    let watch_channels = channels(&suite.inventory, watchers.clamp(1, WATCH_CONNECTIONS)).await?;
    let mut streams = Vec::with_capacity(watchers);
    for n in 0..watchers.max(1) {
        let mut client =
            InventoryServiceClient::new(watch_channels[n % watch_channels.len()].clone());
        let stream = client
            .watch_stock(fixtures::authed(
                &watcher.token,
                WatchStockRequest {
                    skus: vec![sku.clone()],
                    location: LOCATION.into(),
                },
            ))
            .await?
            .into_inner();
        streams.push(stream);
    }
    // Every snapshot first: the stream is live only from there.
    let snapshots = tokio::time::timeout(
        DELIVERY_TIMEOUT,
        try_join_all(streams.iter_mut().map(|s| next_level(s, &sku))),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no WatchStock snapshot within {DELIVERY_TIMEOUT:?}"))??;
    // At least one stream was opened, so there is a first snapshot.
    let mut version = snapshots[0].version;
    anyhow::ensure!(
        snapshots.iter().all(|s| s.version == version),
        "the watchers' snapshots disagree: {:?}",
        snapshots.iter().map(|s| s.version).collect::<Vec<_>>()
    );

    // `channels` opens at least one connection.
    let mut admin_client =
        InventoryServiceClient::new(channels(&suite.inventory, 1).await?.remove(0));
    let mut measured = WatchLatency {
        watchers: streams.len(),
        ..Default::default()
    };
    for n in 0..adjustments {
        let idle = n % 2 == 1;
        if idle {
            tokio::time::sleep(coalescing + IDLE_MARGIN).await;
        }
        let target = version + 1;
        let request = fixtures::authed(
            &admin,
            AdjustStockRequest {
                name: format!("products/{sku}/stockLevels/{LOCATION}"),
                delta: 1,
                reason: StockAdjustmentReason::Received as i32,
                note: String::new(),
                expected_version: version,
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        );
        let started = Instant::now();
        let adjust = async {
            let level = admin_client.adjust_stock(request).await?.into_inner();
            Ok::<_, anyhow::Error>((level, started.elapsed()))
        };
        let deliveries = async {
            let arrivals = tokio::time::timeout(
                DELIVERY_TIMEOUT,
                try_join_all(streams.iter_mut().map(|s| reaches(s, &sku, target))),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "version {target} of {sku} not streamed within {DELIVERY_TIMEOUT:?}"
                )
            })??;
            // Arrival instants, not the time the join finished: each was
            // taken the moment its stream yielded.
            Ok::<_, anyhow::Error>(arrivals.into_iter().max().unwrap_or(started) - started)
        };
        let ((level, call), slowest) = tokio::try_join!(adjust, deliveries)?;
        anyhow::ensure!(
            level.version == target,
            "AdjustStock made version {}, expected {target}",
            level.version
        );
        measured.adjust.record(call, Ok(()));
        let delivery = if idle {
            &mut measured.after_idle
        } else {
            &mut measured.back_to_back
        };
        delivery.record(slowest, Ok(()));
        version = target;
    }
    // Dropping the streams (here) cancels them; the hub frees their slots.
    Ok(measured)
}

/// The next level `stream` yields for `sku` at [`LOCATION`].
async fn next_level(stream: &mut Streaming<StockLevel>, sku: &str) -> anyhow::Result<StockLevel> {
    loop {
        let level = stream
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the WatchStock stream ended"))?;
        if level.sku == sku && level.location == LOCATION {
            return Ok(level);
        }
    }
}

/// When `stream` yielded `sku`'s level at `version` or later.
async fn reaches(
    stream: &mut Streaming<StockLevel>,
    sku: &str,
    version: i64,
) -> anyhow::Result<Instant> {
    loop {
        let level = next_level(stream, sku).await?;
        if level.version >= version {
            return Ok(Instant::now());
        }
    }
}
