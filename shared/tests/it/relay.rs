//! The JetStream relay end to end: a real Postgres with the shared
//! migrations, the feed and relay started as a service starts them, and a
//! `nats-server -js` of the test's own. Every recorded event lands in the
//! service's stream once (by message id) in sequence order; a NATS outage
//! loses nothing and the lag returns to 0; a second relay replica never
//! publishes beside the leader, and a republish after a crash is dropped
//! as a duplicate.

use std::time::Duration;

use backroom_proto::{
    events::v1 as pb,
    inventory::v1::{Product, ProductCreated},
};
use backroom_shared::{
    db::{DbError, Pool},
    events::{self, Events, EventsConfig, NewEvent, read, relay},
    service::Shutdown,
    testing::{NatsServer, TestDb, stream_contents},
};
use diesel::{Connection as _, RunQueryDsl as _};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

const ALPHA: EmbeddedMigrations = embed_migrations!("tests/migrations/alpha");
const PATIENCE: Duration = Duration::from_secs(30);

async fn record(pool: &Pool, count: usize, tag: &str) {
    let batch: Vec<NewEvent> = (0..count)
        .map(|i| {
            let sku = format!("{tag}-{i}");
            NewEvent::new(
                format!("products/{sku}"),
                &ProductCreated {
                    product: Some(Product {
                        sku,
                        ..Default::default()
                    }),
                },
            )
        })
        .collect();
    pool.run(move |conn| {
        conn.transaction(|conn| events::record(conn, chrono::Utc::now(), batch.clone()))
            .map_err(DbError::from)
    })
    .await
    .unwrap();
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_once_in_order(found: &[(String, pb::Event)], expected: usize) {
    let sequences: Vec<i64> = found.iter().map(|(_, e)| e.sequence).collect();
    let wanted: Vec<i64> = (1..=i64::try_from(expected).unwrap()).collect();
    assert_eq!(sequences, wanted, "each event once, in sequence order");
    for (id, event) in found {
        assert_eq!(id, &event.id, "the message id is the event id");
    }
}

async fn lag_zero(events: &Events, pool: &Pool) {
    let pool = pool.clone();
    eventually("the relay caught up", || {
        let pool = pool.clone();
        let stats_lag = events.relay_stats().lag();
        async move {
            let (pending, _) = pool
                .run(|conn| relay::lag(conn).map_err(DbError::from))
                .await
                .unwrap();
            (pending == 0 && stats_lag == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn every_event_reaches_jetstream_once_in_order_through_an_outage_and_a_second_replica() {
    let mut nats = NatsServer::start().await;
    let db = TestDb::with_services([("alpha", ALPHA)]).await;
    let pool = Pool::new(&db.service_config("alpha", ALPHA).await, "alpha");
    let config = EventsConfig {
        nats_url: Some(nats.url()),
        ..EventsConfig::default()
    };
    let shutdown = Shutdown::default();
    let leader = Events::new(pool.clone(), "inventory", config.clone());
    leader.start(&shutdown);
    let mut leads = leader.leader();
    tokio::time::timeout(PATIENCE, leads.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    // A second replica of the same service: it must not publish.
    let replica_shutdown = Shutdown::default();
    let replica = Events::new(pool.clone(), "inventory", config);
    replica.start(&replica_shutdown);

    record(&pool, 30, "A").await;
    lag_zero(&leader, &pool).await;
    assert_once_in_order(&stream_contents(&nats.url(), "inventory").await, 30);
    assert_eq!(leader.relay_stats().published(), 30);
    assert_eq!(replica.relay_stats().published(), 0);

    // NATS goes away while changes keep committing: nothing is lost.
    nats.stop();
    for round in 0..5 {
        record(&pool, 10, &format!("B{round}")).await;
    }
    let pending = pool
        .run(|conn| relay::lag(conn).map_err(DbError::from))
        .await
        .unwrap()
        .0;
    assert!(pending > 0, "nothing can be published while NATS is down");
    nats.restart().await;
    lag_zero(&leader, &pool).await;
    assert_once_in_order(&stream_contents(&nats.url(), "inventory").await, 80);

    // A crash between JetStream's acknowledgement and the mark: the rows
    // look unpublished again, the relay republishes, JetStream drops the
    // copies (same message ids) and the stream still holds each once.
    let before = leader.relay_stats().duplicates();
    pool.run(|conn| {
        diesel::sql_query("UPDATE events SET published_at = NULL WHERE sequence > 70")
            .execute(conn)
            .map_err(DbError::from)
    })
    .await
    .unwrap();
    record(&pool, 1, "C").await;
    lag_zero(&leader, &pool).await;
    assert_eq!(leader.relay_stats().duplicates() - before, 10);
    assert_once_in_order(&stream_contents(&nats.url(), "inventory").await, 81);

    // The leader stops: the replica takes the lock and relays from there.
    shutdown.trigger();
    let mut replica_leads = replica.leader();
    tokio::time::timeout(PATIENCE, replica_leads.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    record(&pool, 5, "D").await;
    lag_zero(&replica, &pool).await;
    assert_once_in_order(&stream_contents(&nats.url(), "inventory").await, 86);
    let newest = pool
        .run(|conn| read::newest(conn).map_err(DbError::from))
        .await
        .unwrap();
    assert_eq!(newest, 86);
    replica_shutdown.trigger();
}
