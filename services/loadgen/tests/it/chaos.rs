//! Process faults and overload against the three service binaries running
//! as real processes (the debug builds `cargo test --workspace` makes), on a
//! durable throwaway Postgres.
//!
//! - `kill_9_of_each_service_under_mixed_load_loses_and_doubles_nothing`:
//!   shoppers race for less stock than they order (retrying each order with
//!   its request id), accounts register, log in and rotate refresh tokens,
//!   cards are attached, stock is read, restocked and reserved with a short
//!   TTL, payments outside orders are refunded; meanwhile account, inventory and
//!   payment are each killed with SIGKILL and restarted. Afterwards every
//!   saga is terminal, every acknowledged write is there, nothing is
//!   oversold or charged twice, the ledger balances, no reservation outlives
//!   its TTL plus the sweep, the invariant checker finds nothing, and no
//!   table row or log line holds a card number, password, token or key.
//!   Events ride along: every service relays to a NATS of the test's own,
//!   a webhook receiver takes every payment event, and the reference
//!   consumer (`backroom-loadgen consume`) applies every event; the kills
//!   hit each relay mid-publish, then the consumer is killed between a
//!   batch's commit and its acknowledgement, then NATS is stopped and the
//!   receiver is down for a while. Afterwards every committed event is in
//!   its stream once (by id), in order, none unpublished, every lag gauge
//!   back at 0, the consumer applied each once (and skipped redeliveries),
//!   the receiver got every payment event in order per subject, and the
//!   audit with its relay check is clean.
//! - `past_the_concurrency_limit_calls_are_shed_fast_and_memory_stays_bounded`:
//!   storms of 2000 concurrent GetProduct calls (inventory) and Login calls
//!   (account) against a concurrency limit of 4: every call is served or
//!   shed with RESOURCE_EXHAUSTED before its deadline, and inventory's RSS
//!   stays within a bound of its idle RSS.
//!
//! Each test prints what it injected and what it checked.

use std::{
    future::Future,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::common::{
    CALL_DEADLINE, EventsRig, MixedLoad, World, assert_audit_clean_with, call, count,
    mixed_load_options, request_id,
};
use backroom_loadgen::{
    fixtures,
    stack::{Service, StackOptions},
};
use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
};
use backroom_shared::errors::reason_of;
use tonic::{Code, Status, transport::Channel};

/// Orders acknowledged between two faults (and after the last).
const ORDERS_BETWEEN_FAULTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_each_service_under_mixed_load_loses_and_doubles_nothing() {
    // Everything, dependencies included: the secret scan reads it all.
    let (mut events, options) = EventsRig::start(mixed_load_options("debug")).await;
    let mut world = World::start("chaos", true, options).await;
    let mut mixed = MixedLoad::start(&world, CALL_DEADLINE).await;
    let load = mixed.load.clone();
    events.attach(&world, &load.admin).await;

    // kill -9 of each service in turn, mid-load.
    for service in Service::ALL {
        load.progress(ORDERS_BETWEEN_FAULTS).await;
        // Wait (briefly) for one of our calls to be in flight to it; the
        // other services' calls to it are in flight too.
        let busy = Instant::now() + Duration::from_secs(5);
        while load.tally.in_flight(service) == 0 && Instant::now() < busy {
            tokio::task::yield_now().await;
        }
        let in_flight = load.tally.in_flight(service);
        let pid = world.stack.pid(service).unwrap_or_default();
        let acknowledged = load.tally.acknowledged.load(Ordering::SeqCst);
        // Its relay, mid-publish: wait (up to 3 s) for events sequenced and
        // not yet acknowledged by JetStream, then kill at once (0: the relay
        // kept caught up).
        let unpublished_sql = format!(
            "SELECT '' AS label, count(*) AS n FROM {}.events WHERE published_at IS NULL",
            service.name()
        );
        let publishing = Instant::now() + Duration::from_secs(3);
        let mut unpublished = count(&world.admin_url, &unpublished_sql).await;
        while unpublished == 0 && Instant::now() < publishing {
            unpublished = count(&world.admin_url, &unpublished_sql).await;
        }
        world.stack.kill9(service).expect("kill -9");
        println!(
            "injected at {:.1} s: kill -9 of {} (pid {pid}) with {in_flight} test calls in flight to it, {acknowledged} operations acknowledged so far, {unpublished} of its events not yet acknowledged by JetStream",
            mixed.started.elapsed().as_secs_f64(),
            service.binary()
        );
        // It stays down until the load has run into it: a call to it that
        // began after the kill failed.
        let killed = Instant::now();
        load.tally
            .wait_until(
                "a client ran into the killed service",
                Duration::from_secs(10),
                || {
                    load.tally
                        .attempts
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|a| a.service == service && a.began >= killed && a.failure.is_some())
                },
            )
            .await;
        let took = world.stack.restart(service).await.expect("restart");
        println!(
            "injected at {:.1} s: {} restarted on the same port with the same environment, SERVING {} ms after start",
            mixed.started.elapsed().as_secs_f64(),
            service.binary(),
            took.as_millis()
        );
    }
    load.progress(ORDERS_BETWEEN_FAULTS).await;

    // kill -9 of the consumer between a batch's commit and its ack.
    events
        .kill_consumer_mid_batch(&world.admin_url, mixed.started)
        .await;
    load.progress(ORDERS_BETWEEN_FAULTS).await;

    // NATS stopped and the webhook receiver down for a while, under load.
    let outage = Instant::now();
    events.nats.stop();
    events.receiver.down();
    println!(
        "injected at {:.1} s: nats-server killed, webhook receiver down (connections refused)",
        mixed.started.elapsed().as_secs_f64()
    );
    load.progress(ORDERS_BETWEEN_FAULTS).await;
    // The relay notices when a publish times out; its lag gauge then grows.
    let lag = loop {
        let lag = events.relay_lag(Service::Payment).await;
        if lag.is_some_and(|lag| lag > 0.0) {
            break lag;
        }
        assert!(
            outage.elapsed() < Duration::from_secs(30),
            "payment's relay lag gauge does not show the outage: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Down for a while: at least OUTAGE, the load running on.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    events.nats.restart().await;
    events.receiver.up().await;
    println!(
        "injected at {:.1} s: nats-server restarted on the same port and store, receiver back, after {:.1} s down; payment's relay lag gauge read {} during the outage",
        mixed.started.elapsed().as_secs_f64(),
        outage.elapsed().as_secs_f64(),
        lag.unwrap_or_default()
    );
    load.progress(ORDERS_BETWEEN_FAULTS).await;

    let load_time = mixed.finish().await;
    let retried = mixed.verify(&world, load_time).await;
    assert!(
        retried.keys().any(|k| k.starts_with("PlaceOrder")),
        "no PlaceOrder ever failed: the kills missed the load"
    );
    events.verify(&world.admin_url).await;
    let tolerances = assert_audit_clean_with(&world.admin_url, Some(RELAY_LAG)).await;
    println!(
        "checked: backroom audit with the relay check (no event unpublished past {:?}): no findings",
        tolerances.relay_lag.unwrap_or_default()
    );
    world.stop().await;
}

/// How long NATS and the webhook receiver stay down, at least.
const OUTAGE: Duration = Duration::from_secs(4);
/// The audit's bound on an unpublished event once the relays caught up.
const RELAY_LAG: Duration = Duration::from_secs(5);

/// Calls per storm, the HTTP/2 connections they are spread over, the
/// concurrency limit of the stormed services, and each call's deadline.
const STORM_CALLS: usize = 2000;
const STORM_CONNECTIONS: usize = 10;
const STORM_LIMIT: usize = 4;
const STORM_DEADLINE: Duration = Duration::from_secs(5);
/// Storms per service.
const STORMS: usize = 3;
/// Allowed RSS growth of inventory over its idle RSS after the storms.
const STORM_RSS_GROWTH_MIB: f64 = 64.0;

/// One storm's answers.
struct Storm {
    wall: Duration,
    ok: Vec<Duration>,
    shed: Vec<Duration>,
    /// Shed calls whose ErrorInfo says OVERLOADED, as the protos promise.
    with_reason: usize,
    other: Vec<String>,
}

impl Storm {
    /// Fires `STORM_CALLS` calls at once, `call(connection)` each.
    async fn run<F, Fut>(channels: &[Channel], call: F) -> Self
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let begun = Instant::now();
        let results =
            futures_util::future::join_all(channels.iter().cycle().take(STORM_CALLS).map(|c| {
                let call = call(c.clone());
                async move {
                    let begun = Instant::now();
                    (call.await, begun.elapsed())
                }
            }))
            .await;
        let mut storm = Self {
            wall: begun.elapsed(),
            ok: Vec::new(),
            shed: Vec::new(),
            with_reason: 0,
            other: Vec::new(),
        };
        for (result, latency) in results {
            match result {
                Ok(()) => storm.ok.push(latency),
                Err(status) if status.code() == Code::ResourceExhausted => {
                    if reason_of(&status).as_deref() == Some("OVERLOADED") {
                        storm.with_reason += 1;
                    }
                    storm.shed.push(latency);
                }
                Err(status) => {
                    storm
                        .other
                        .push(format!("{:?}: {}", status.code(), status.message()))
                }
            }
        }
        storm.ok.sort();
        storm.shed.sort();
        storm
    }

    fn ms(latencies: &[Duration], quantile: f64) -> f64 {
        let at =
            ((latencies.len() as f64 * quantile) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(at).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Prints it and checks that every call was served or shed before its
    /// deadline, and that most were shed.
    fn check(&self, what: &str) {
        println!(
            "injected: {what}: {STORM_CALLS} concurrent calls over {STORM_CONNECTIONS} connections, all answered in {} ms; {} OK (p50 {:.0} ms, max {:.0} ms), {} RESOURCE_EXHAUSTED (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} with ErrorInfo reason OVERLOADED), {} other",
            self.wall.as_millis(),
            self.ok.len(),
            Self::ms(&self.ok, 0.5),
            Self::ms(&self.ok, 1.0),
            self.shed.len(),
            Self::ms(&self.shed, 0.5),
            Self::ms(&self.shed, 0.99),
            Self::ms(&self.shed, 1.0),
            self.with_reason,
            self.other.len()
        );
        assert!(
            self.other.is_empty(),
            "{what}: calls neither served nor shed (a queued call would be DEADLINE_EXCEEDED): {:?}",
            self.other
        );
        assert_eq!(
            self.with_reason,
            self.shed.len(),
            "{what}: every shed call carries ErrorInfo reason OVERLOADED"
        );
        assert!(
            self.shed.len() * 2 >= STORM_CALLS,
            "{what}: only {} of {STORM_CALLS} calls shed past a limit of {STORM_LIMIT}",
            self.shed.len()
        );
        assert!(
            Self::ms(&self.shed, 1.0) < STORM_DEADLINE.as_secs_f64() * 1000.0,
            "{what}: a refusal took its whole deadline"
        );
    }
}

/// Inventory's GetProduct (a point read) and account's Login (an Argon2id
/// hash of tens of ms, at most one per core: a server that queued instead of
/// shedding would need `STORM_CALLS × hash time ÷ cores`, far past every
/// deadline), each with a concurrency limit of 4, each stormed
/// [`STORMS`] times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_calls_are_shed_fast_and_memory_stays_bounded() {
    // The storms test the concurrency limit, not the per-client rate limit
    // (every call comes from one address).
    let options = StackOptions {
        rust_log: "info".into(),
        ..StackOptions::default()
    }
    .without_rate_limits()
    .with_env(
        Service::Inventory,
        "BACKROOM_CONCURRENCY_LIMIT",
        STORM_LIMIT.to_string(),
    )
    .with_env(
        Service::Account,
        "BACKROOM_CONCURRENCY_LIMIT",
        STORM_LIMIT.to_string(),
    );
    let world = World::start("overload", false, options).await;
    let stack = &world.stack;
    let suite = stack.suite();
    let admin = fixtures::admin_token(&suite).await.expect("admin login");
    fixtures::product(&suite, &admin, "STORM", 10)
        .await
        .expect("product");
    let email = "storm@example.com";
    let password = format!("storm-pw-{}", uuid::Uuid::new_v4().simple());
    let to_inventory = backroom_loadgen::scenarios::channels(&suite.inventory, STORM_CONNECTIONS)
        .await
        .expect("connect to inventory");
    let to_account = backroom_loadgen::scenarios::channels(&suite.account, STORM_CONNECTIONS)
        .await
        .expect("connect to account");
    AccountServiceClient::new(to_account[0].clone())
        .register(account_pb::RegisterRequest {
            email: email.into(),
            password: password.clone(),
            display_name: "Storm".into(),
            request_id: request_id(),
        })
        .await
        .expect("register");
    let refresh_tokens = Arc::new(Mutex::new(Vec::new()));
    let get_product = |channel: Channel| {
        let mut request = call(
            &admin,
            inventory_pb::GetProductRequest {
                name: "products/STORM".into(),
            },
        );
        request.set_timeout(STORM_DEADLINE);
        async move {
            InventoryServiceClient::new(channel)
                .get_product(request)
                .await
                .map(drop)
        }
    };
    let login = |channel: Channel| {
        let mut request = call(
            "",
            account_pb::LoginRequest {
                email: email.into(),
                password: password.clone(),
            },
        );
        request.set_timeout(STORM_DEADLINE);
        let refresh_tokens = refresh_tokens.clone();
        async move {
            let session = AccountServiceClient::new(channel).login(request).await?;
            refresh_tokens
                .lock()
                .unwrap()
                .push(session.into_inner().refresh_token);
            Ok(())
        }
    };

    // Inventory: warm (pools, the token's verification), then storm.
    for channel in to_inventory.iter().cycle().take(200) {
        get_product(channel.clone())
            .await
            .expect("GetProduct before the storm");
    }
    let (idle, _) = stack.rss_mib(Service::Inventory);
    println!(
        "setup: inventory and account with BACKROOM_CONCURRENCY_LIMIT={STORM_LIMIT}; inventory idle RSS {idle:.1} MiB after 200 warm-up calls ({:.1} s)",
        world.started.elapsed().as_secs_f64()
    );
    let mut after = idle;
    for n in 1..=STORMS {
        Storm::run(&to_inventory, get_product)
            .await
            .check(&format!("inventory GetProduct storm {n}"));
        let (rss, peak) = stack.rss_mib(Service::Inventory);
        after = rss;
        println!("  inventory RSS {rss:.1} MiB (idle {idle:.1}, peak {peak:.1})");
    }
    let growth = after - idle;
    assert!(
        growth < STORM_RSS_GROWTH_MIB,
        "inventory RSS grew {growth:.1} MiB over idle ({idle:.1} → {after:.1}) in the storms"
    );
    get_product(to_inventory[0].clone())
        .await
        .expect("GetProduct after the storms");
    println!(
        "checked: inventory RSS after {STORMS} storms {after:.1} MiB, {growth:+.1} MiB over idle (bound {STORM_RSS_GROWTH_MIB} MiB); still serving"
    );

    // Account: time one login alone, then storm.
    let mut alone = Duration::MAX;
    for channel in to_account.iter().take(STORM_LIMIT * 2) {
        let begun = Instant::now();
        login(channel.clone())
            .await
            .expect("login before the storm");
        alone = alone.min(begun.elapsed());
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let queued = alone * u32::try_from(STORM_CALLS / cores).unwrap_or(u32::MAX);
    let (account_idle, _) = stack.rss_mib(Service::Account);
    println!(
        "setup: a login alone takes {} ms, so serving {STORM_CALLS} in turn would take ≥ {:.0} s; account idle RSS {account_idle:.1} MiB",
        alone.as_millis(),
        queued.as_secs_f64()
    );
    for n in 1..=STORMS {
        Storm::run(&to_account, login)
            .await
            .check(&format!("account Login storm {n}"));
        let (rss, peak) = stack.rss_mib(Service::Account);
        println!("  account RSS {rss:.1} MiB (idle {account_idle:.1}, peak {peak:.1})");
        // Each hashing thread reuses one Argon2id block buffer, so the logins
        // a storm does serve add nothing lasting.
        assert!(
            rss - account_idle < STORM_RSS_GROWTH_MIB,
            "account RSS grew {:.1} MiB over idle ({account_idle:.1} → {rss:.1}) in the storms",
            rss - account_idle
        );
    }
    login(to_account[0].clone())
        .await
        .expect("login after the storms");
    println!(
        "checked: every call of every storm answered before its {STORM_DEADLINE:?} deadline, OK or RESOURCE_EXHAUSTED, at least half shed; both services still serving"
    );

    let mut scan = world.secret_scan();
    scan.secret("storm password", password.clone());
    scan.secret("admin access token", admin.clone());
    for token in refresh_tokens.lock().unwrap().iter() {
        scan.secret("refresh token", token.clone());
    }
    world.assert_no_secrets(scan, false).await;
    world.stop().await;
}
