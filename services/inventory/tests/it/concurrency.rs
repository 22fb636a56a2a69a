//! The concurrency guarantees of stock and reservations, through the
//! generated client against a real server and a real Postgres: no
//! oversell, no deadlock, one reservation per order, and a movement log
//! that replays to every level after a random concurrent run.

use std::collections::BTreeMap;

use backroom_inventory::db::repo::reservations::sweep_expired;
use backroom_shared::clock::Clock as _;
use futures_util::future::join_all;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tonic::Code;

use crate::helpers::{TestApp, authed, order_id, reason, reserve_request, units};

#[tokio::test]
async fn two_hundred_concurrent_reservations_never_oversell() {
    let app = TestApp::spawn().await;
    app.product("HOT", 100, 10).await;
    app.stock("HOT", "main", 10).await;
    let results = join_all((0..200).map(|_| {
        let mut client = app.client();
        let request = authed(&app.service, reserve_request(&order_id(), &[("HOT", 1)]));
        async move { client.reserve_stock(request).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let short = results
        .iter()
        .filter(|r| {
            matches!(r, Err(s) if s.code() == Code::FailedPrecondition && reason(s) == "INSUFFICIENT_STOCK")
        })
        .count();
    assert_eq!(
        (ok, short),
        (10, 190),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(units(&app, "HOT", "main").await, (10, 0, 10, 0));
}

#[tokio::test]
async fn opposite_line_orders_never_deadlock() {
    let app = TestApp::spawn().await;
    app.product("L", 100, 10).await;
    app.product("R", 100, 10).await;
    app.stock("L", "main", 60).await;
    app.stock("R", "main", 60).await;
    let results = join_all((0..100).map(|i| {
        let mut client = app.client();
        let lines: &[(&str, i64)] = if i % 2 == 0 {
            &[("L", 1), ("R", 1)]
        } else {
            &[("R", 1), ("L", 1)]
        };
        let request = authed(&app.service, reserve_request(&order_id(), lines));
        async move { client.reserve_stock(request).await }
    }))
    .await;
    for result in &results {
        if let Err(status) = result {
            assert_eq!(
                (status.code(), reason(status).as_str()),
                (Code::FailedPrecondition, "INSUFFICIENT_STOCK"),
                "{status:?}"
            );
        }
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 60);
    assert_eq!(units(&app, "L", "main").await, (60, 0, 60, 0));
    assert_eq!(units(&app, "R", "main").await, (60, 0, 60, 0));
}

#[tokio::test]
async fn one_order_reserved_twenty_times_at_once_is_one_reservation() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.stock("A", "main", 10).await;
    let order = order_id();
    let results = join_all((0..20).map(|_| {
        let mut client = app.client();
        let request = authed(&app.service, reserve_request(&order, &[("A", 3)]));
        async move { client.reserve_stock(request).await }
    }))
    .await;
    let reservations: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every call returns the reservation").into_inner())
        .collect();
    assert!(reservations.iter().all(|r| *r == reservations[0]));
    assert_eq!(units(&app, "A", "main").await, (10, 7, 3, 0));
}

#[tokio::test]
async fn the_movement_log_replays_to_every_level_after_a_random_concurrent_run() {
    let app = TestApp::spawn().await;
    let skus = ["P1", "P2", "P3", "P4"];
    for sku in skus {
        app.product(sku, 100, 10).await;
        app.stock(sku, "main", 15).await;
        app.stock(sku, "west", 15).await;
    }
    let worker = |seed: u64| {
        let app = &app;
        async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..6 {
                match rng.gen_range(0..10) {
                    0..=6 => {
                        let first = rng.gen_range(0..skus.len());
                        let second = (first + rng.gen_range(1..skus.len())) % skus.len();
                        let lines = [(skus[first], rng.gen_range(1..4)), (skus[second], 1)];
                        let count = rng.gen_range(1..=2);
                        let order = order_id();
                        let mut request = reserve_request(&order, &lines[..count]);
                        if rng.gen_bool(0.3) {
                            request.lines[0].location = "west".into();
                        }
                        match app
                            .client()
                            .reserve_stock(authed(&app.service, request))
                            .await
                        {
                            Ok(_) => match rng.gen_range(0..3) {
                                0 => drop(app.commit(&order).await),
                                1 => drop(app.release(&order).await),
                                _ => {}
                            },
                            Err(status) => assert_eq!(reason(&status), "INSUFFICIENT_STOCK"),
                        }
                    }
                    _ => {
                        let sku = skus[rng.gen_range(0..skus.len())];
                        let delta = if rng.gen_bool(0.5) { 3 } else { -2 };
                        for _ in 0..5 {
                            let version = app.level(sku, "main").await.version;
                            match app.adjust(sku, "main", delta, version).await {
                                Ok(_) => break,
                                Err(status) => assert!(
                                    ["VERSION_MISMATCH", "INSUFFICIENT_STOCK"]
                                        .contains(&reason(&status).as_str()),
                                    "{status:?}"
                                ),
                            }
                        }
                    }
                }
            }
        }
    };
    let sweeper = async {
        // Let the workers get going (each yield hands the turn to them), so
        // the sweep lands mid-run.
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        app.clock.advance(chrono::Duration::minutes(16));
        sweep_expired(&app.pool, app.clock.now()).await.unwrap();
    };
    let workers = join_all((0..40).map(worker));
    tokio::join!(workers, sweeper);
    sweep_expired(&app.pool, app.clock.now()).await.unwrap();

    let levels = app.levels().await;
    assert_eq!(levels.len(), 8);
    /// (on_hand, available, reserved, committed, version) per (sku, location).
    type Replayed = BTreeMap<(String, String), (i64, i64, i64, i64, i64)>;
    let mut replayed = Replayed::new();
    // Replay in sequence order per level (the wildcard listing is by time).
    let mut log = app.movements("products/-/stockLevels/-").await;
    log.sort_by(|a, b| (&a.sku, &a.location, a.sequence).cmp(&(&b.sku, &b.location, b.sequence)));
    for m in log {
        let entry = replayed
            .entry((m.sku.clone(), m.location.clone()))
            .or_default();
        entry.0 += m.delta_on_hand;
        entry.1 += m.delta_available;
        entry.2 += m.delta_reserved;
        entry.3 += m.delta_committed;
        assert_eq!(m.sequence, entry.4 + 1, "gap-free per level: {m:?}");
        entry.4 = m.sequence;
    }
    for level in &levels {
        assert_eq!(
            level.on_hand,
            level.available + level.reserved + level.committed
        );
        let replay = replayed[&(level.sku.clone(), level.location.clone())];
        assert_eq!(
            replay,
            (
                level.on_hand,
                level.available,
                level.reserved,
                level.committed,
                level.version
            ),
            "{level:?}"
        );
    }
}
