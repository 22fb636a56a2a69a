//! Postgres stopped under mixed load, against the three service binaries
//! running as real processes (the debug builds `cargo test --workspace`
//! makes) on one durable throwaway Postgres:
//!
//! - `postgres_stopped_under_mixed_load_fails_fast_recovers_and_loses_nothing`:
//!   the mixed load of the kill -9 run (orders racing for less stock than
//!   they order, retried with their request ids; registrations, logins and
//!   refresh rotations; card attaches; stock reads, restocks and short
//!   reservations; refunds), every call with a 2 s deadline. Postgres is
//!   stopped (`pg_ctl stop -m immediate`: every backend killed at once, no
//!   connection accepted, as in a crash or an outage) for 3 s while the load
//!   goes on. Every call in flight during the outage answers within its
//!   deadline (plus a little slack) and every failure is UNAVAILABLE (or a
//!   domain refusal the database gave just before the stop); the
//!   grpc.health.v1 Check of every service says NOT_SERVING within 5 s.
//!   Within 5 s of Postgres accepting connections again every service is
//!   SERVING and a real call succeeds (account Login, inventory GetProduct,
//!   payment PlaceOrder); the load goes on. Afterwards every saga is
//!   terminal, every acknowledged write is there, nothing is oversold or
//!   charged twice, the invariant checker finds nothing, and no table row or
//!   log line holds a secret.
//!
//! The services run with the deployed pool checkout timeout (2000 ms, as
//! long as the calls' deadline): a checkout uses at most half of a call's
//! remaining deadline, and only 100 ms once connecting has failed, so calls
//! answer UNAVAILABLE before their deadline (with a checkout bounded only by
//! the timeout, this test found calls racing their deadline and answering
//! CANCELLED).
//!
//! The test prints what it injected and what it checked, with figures.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{
    Attempt, Load, MixedLoad, SKUS, World, lazy_channel, mixed_load_options, request_id,
};
use backon::{BlockingRetryable as _, ConstantBuilder, Retryable as _};
use backroom_loadgen::stack::Service;
use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{self as pb, checkout_service_client::CheckoutServiceClient},
};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Deadline of every call of the load and of the recovery probes.
const DEADLINE: Duration = Duration::from_secs(2);
/// How late after its deadline an answer may come (two busy cores).
const SLACK: Duration = Duration::from_millis(300);
/// How long Postgres stays down (longer if a service has not said
/// NOT_SERVING yet).
const OUTAGE: Duration = Duration::from_secs(3);
/// Bound on the time from the stop to NOT_SERVING, per service.
const TO_NOT_SERVING: Duration = Duration::from_secs(5);
/// Bound on the time from Postgres accepting connections again to SERVING
/// and a successful call, per service.
const TO_RECOVERY: Duration = Duration::from_secs(5);
/// Orders acknowledged before the outage, and after the recovery.
const ORDERS_AROUND: usize = 6;
/// Interval and deadline of the health Checks.
const HEALTH_EVERY: Duration = Duration::from_millis(50);
const HEALTH_DEADLINE: Duration = Duration::from_secs(1);

/// One health Check answer: when it came, how long it took, the status or
/// the error code.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    took: Duration,
    status: Result<i32, Code>,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

/// Checks `endpoint`'s overall health (service "") every [`HEALTH_EVERY`]
/// until `stop`, recording every answer (and telling `load`'s waiters).
async fn sample_health(endpoint: String, samples: Samples, load: Arc<Load>, stop: Arc<AtomicBool>) {
    let mut health = HealthClient::new(lazy_channel(&endpoint));
    // A sampler's period, not a wait for something: missed ticks are skipped.
    let mut every = tokio::time::interval(HEALTH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        every.tick().await;
        let mut request = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(HEALTH_DEADLINE);
        let began = Instant::now();
        let status = health
            .check(request)
            .await
            .map(|reply| reply.into_inner().status)
            .map_err(|status| status.code());
        samples.lock().unwrap().push(Sample {
            at: Instant::now(),
            took: began.elapsed(),
            status,
        });
        load.tally.changed.notify_waiters();
    }
}

/// The first answer `wanted` that came after `since`.
fn first(samples: &Samples, since: Instant, wanted: ServingStatus) -> Option<Instant> {
    samples
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.at > since && s.status == Ok(wanted as i32))
        .map(|s| s.at)
}

/// Sends the request `make` builds (one request id throughout) until it is
/// answered OK; returns the answer and the time from `since`.
async fn first_ok<T, F, Fut>(what: &str, since: Instant, make: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    // backon (the workspace's retry library): every 50 ms, for 30 s.
    let every_50ms_for_30s = ConstantBuilder::default()
        .with_delay(Duration::from_millis(50))
        .with_max_times(600);
    match make.retry(every_50ms_for_30s).await {
        Ok(response) => (response.into_inner(), since.elapsed()),
        Err(status) => panic!("{what}: no success within 30 s; last: {status:?}"),
    }
}

/// Starts the stopped Postgres again (blocking); returns when it first
/// accepted a connection and when `pg_ctl start` returned.
fn restart_postgres(world: &World) -> (Instant, Instant) {
    let url = world.cluster.url("postgres");
    std::thread::scope(|scope| {
        let starting = scope.spawn(|| world.cluster.resume());
        // Tried every 10 ms (backon, blocking) until a connection is
        // accepted, or until pg_ctl has returned and one more try failed.
        let accepted = (|| {
            let finished = starting.is_finished();
            backroom_shared::db::connect(&url)
                .map(|_| Instant::now())
                .map_err(|_| finished)
        })
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::from_millis(10))
                .without_max_times(),
        )
        .when(|finished: &bool| !*finished)
        .call()
        .unwrap_or_else(|_| panic!("pg_ctl start returned, but Postgres accepts no connection"));
        starting
            .join()
            .expect("pg_ctl start thread")
            .expect("start Postgres again");
        (accepted, Instant::now())
    })
}

fn ms(duration: Duration) -> u128 {
    duration.as_millis()
}

/// Attempts by "code reason" (or "OK").
fn by_outcome<'a>(attempts: impl Iterator<Item = &'a Attempt>) -> BTreeMap<String, usize> {
    let mut outcomes = BTreeMap::new();
    for attempt in attempts {
        let key = match &attempt.failure {
            None => "OK".to_owned(),
            Some((code, why)) => format!("{code:?} {why}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_mixed_load_fails_fast_recovers_and_loses_nothing() {
    let options = mixed_load_options("info");
    let world = World::start("db-outage", true, options).await;
    let mut mixed = MixedLoad::start(&world, DEADLINE).await;
    let load = mixed.load.clone();
    let suite = world.stack.suite();

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let mut samplers = tokio::task::JoinSet::new();
    let health: Vec<(Service, Samples)> = Service::ALL
        .iter()
        .map(|service| {
            let samples = Samples::default();
            samplers.spawn(sample_health(
                world.stack.endpoint(*service),
                samples.clone(),
                load.clone(),
                stop_sampling.clone(),
            ));
            (*service, samples)
        })
        .collect();

    // The load runs; then Postgres stops under it.
    load.progress(ORDERS_AROUND).await;
    let in_flight: usize = Service::ALL.iter().map(|s| load.tally.in_flight(*s)).sum();
    let acknowledged = load.tally.acknowledged.load(Ordering::SeqCst);
    let down = Instant::now();
    tokio::task::block_in_place(|| world.cluster.pause()).expect("stop Postgres");
    println!(
        "injected at {:.1} s: Postgres stopped (pg_ctl stop -m immediate: every backend killed, no connection accepted; took {} ms) with {in_flight} test calls in flight, {acknowledged} operations acknowledged so far",
        mixed.started.elapsed().as_secs_f64(),
        ms(down.elapsed())
    );
    load.tally
        .wait_until("every service NOT_SERVING", TO_NOT_SERVING, || {
            health
                .iter()
                .all(|(_, samples)| first(samples, down, ServingStatus::NotServing).is_some())
        })
        .await;
    let mut to_not_serving = BTreeMap::new();
    for (service, samples) in &health {
        let at = first(samples, down, ServingStatus::NotServing).unwrap_or(down);
        assert!(
            at - down < TO_NOT_SERVING,
            "{}: NOT_SERVING only {} ms after the stop",
            service.binary(),
            ms(at - down)
        );
        to_not_serving.insert(service.name(), at - down);
    }
    println!(
        "checked: health Check NOT_SERVING after the stop, ms: {:?} (bound {} ms)",
        to_not_serving
            .iter()
            .map(|(service, took)| (*service, ms(*took)))
            .collect::<BTreeMap<_, _>>(),
        ms(TO_NOT_SERVING)
    );
    if let Some(left) = OUTAGE.checked_sub(down.elapsed()) {
        tokio::time::sleep(left).await;
    }

    // Postgres returns: recovery is timed from the first connection it
    // accepts (pg_ctl notices a little later).
    let restart = Instant::now();
    let (back, started) = tokio::task::block_in_place(|| restart_postgres(&world));
    println!(
        "injected at {:.1} s: Postgres started again after {} ms down; it accepted a connection {} ms after pg_ctl start (crash recovery of the durable cluster), pg_ctl returned after {} ms",
        mixed.started.elapsed().as_secs_f64(),
        ms(restart - down),
        ms(back - restart),
        ms(started - restart)
    );
    let shopper = mixed.shoppers[0].clone();
    let place = pb::PlaceOrderRequest {
        customer: "accounts/me".into(),
        lines: vec![pb::LineItem {
            sku: SKUS[0].0.into(),
            quantity: 1,
        }],
        payment_method: shopper.card.clone(),
        shipping_address: shopper.address.clone(),
        currency_code: "EUR".into(),
        request_id: request_id(),
        ..Default::default()
    };
    let account = AccountServiceClient::new(lazy_channel(&suite.account));
    let inventory = InventoryServiceClient::new(lazy_channel(&suite.inventory));
    let checkout = CheckoutServiceClient::new(lazy_channel(&suite.payment));
    let (login, product, order) = tokio::join!(
        first_ok("account Login", back, || {
            let mut client = account.clone();
            let request = load.call(
                "",
                account_pb::LoginRequest {
                    email: "admin@backroom.local".into(),
                    password: suite.admin_password.clone(),
                },
            );
            async move { client.login(request).await }
        }),
        first_ok("inventory GetProduct", back, || {
            let mut client = inventory.clone();
            let request = load.call(
                &load.admin,
                inventory_pb::GetProductRequest {
                    name: format!("products/{}", SKUS[0].0),
                },
            );
            async move { client.get_product(request).await }
        }),
        first_ok("payment PlaceOrder", back, || {
            let mut client = checkout.clone();
            let request = load.call(&shopper.token, place.clone());
            async move { client.place_order(request).await }
        }),
    );
    load.record(|acked| acked.orders.push((order.0.name.clone(), 1)));
    load.tally
        .wait_until("every service SERVING again", TO_RECOVERY * 2, || {
            health
                .iter()
                .all(|(_, samples)| first(samples, back, ServingStatus::Serving).is_some())
        })
        .await;
    let mut recovered = BTreeMap::new();
    for ((service, samples), (call, first_call)) in health.iter().zip([
        ("Login", login.1),
        ("GetProduct", product.1),
        ("PlaceOrder", order.1),
    ]) {
        let serving = first(samples, back, ServingStatus::Serving).unwrap_or(back) - back;
        println!(
            "checked: {} SERVING {} ms and its first {call} OK {} ms after Postgres accepted connections again",
            service.binary(),
            ms(serving),
            ms(first_call)
        );
        recovered.insert(service.name(), serving.max(first_call));
    }
    for (service, took) in &recovered {
        assert!(
            *took < TO_RECOVERY,
            "{service} recovered {} ms after Postgres returned (bound {} ms)",
            ms(*took),
            ms(TO_RECOVERY)
        );
    }
    println!(
        "checked: every service back (SERVING and a real call OK) within {} ms of Postgres returning (bound {} ms); the PlaceOrder probe's order ({}) counts as acknowledged",
        recovered.values().max().map_or(0, |d| ms(*d)),
        ms(TO_RECOVERY),
        order.0.name
    );

    // The load goes on, then ends; every health answer is examined.
    load.progress(ORDERS_AROUND).await;
    let load_time = mixed.finish().await;
    stop_sampling.store(true, Ordering::SeqCst);
    while let Some(sampler) = samplers.join_next().await {
        sampler.expect("health sampler");
    }
    for (service, samples) in &health {
        let samples = samples.lock().unwrap();
        let failed: Vec<&Sample> = samples.iter().filter(|s| s.status.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{}: health Check failed: {failed:?}",
            service.binary()
        );
        let serving = Ok(ServingStatus::Serving as i32);
        let before = samples
            .iter()
            .filter(|s| s.at < down && s.status != serving)
            .count();
        let again = samples
            .iter()
            .find(|s| s.at > back && s.status == serving)
            .map_or(back, |s| s.at);
        let flapped = samples
            .iter()
            .filter(|s| s.at > again && s.status != serving)
            .count();
        assert_eq!(
            (before, flapped),
            (0, 0),
            "{}: not SERVING under load before the outage, or again after the recovery",
            service.binary()
        );
        let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
        println!(
            "checked: {} answered all {} health Checks (every {} ms, before, during and after the outage), slowest {} ms; SERVING throughout before the stop and after the recovery",
            service.binary(),
            samples.len(),
            ms(HEALTH_EVERY),
            ms(slowest)
        );
    }

    // Every call in flight during the outage: answered in time, UNAVAILABLE
    // if it failed.
    let attempts = load.tally.attempts.lock().unwrap().clone();
    let during: Vec<&Attempt> = attempts.iter().filter(|a| a.overlaps(down, back)).collect();
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    let late: Vec<&&Attempt> = during
        .iter()
        .filter(|a| a.took > DEADLINE + SLACK)
        .collect();
    // A call the database answered just before the stop (or right after the
    // restart) may carry its definitive domain refusal (INSUFFICIENT_STOCK,
    // a version mismatch); anything that is neither that nor UNAVAILABLE —
    // INTERNAL, UNKNOWN, CANCELLED, DEADLINE_EXCEEDED — is wrong.
    let wrong: Vec<&&Attempt> = during
        .iter()
        .filter(|a| {
            matches!(
                &a.failure,
                Some((
                    Code::Internal
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Unimplemented
                        | Code::DataLoss,
                    _
                ))
            )
        })
        .collect();
    println!(
        "outage ({} ms): {} calls in flight, outcomes {:?}; slowest answer {} ms",
        ms(back - down),
        during.len(),
        by_outcome(during.iter().copied()),
        ms(slowest)
    );
    for service in Service::ALL {
        let mine: Vec<&&Attempt> = during.iter().filter(|a| a.service == service).collect();
        let unavailable: Vec<Duration> = mine
            .iter()
            .filter(|a| matches!(&a.failure, Some((Code::Unavailable, _))))
            .map(|a| a.took)
            .collect();
        println!(
            "  {}: {} calls, {} UNAVAILABLE (slowest {} ms), slowest answer {} ms",
            service.binary(),
            mine.len(),
            unavailable.len(),
            unavailable.iter().max().map_or(0, |d| ms(*d)),
            mine.iter().map(|a| a.took).max().map_or(0, ms)
        );
        assert!(
            !unavailable.is_empty(),
            "{}: no call failed during the outage: the outage missed it",
            service.binary()
        );
    }
    assert!(
        late.is_empty(),
        "calls answered later than their {} ms deadline + {} ms during the outage: {late:#?}",
        ms(DEADLINE),
        ms(SLACK)
    );
    assert!(
        wrong.is_empty(),
        "calls that failed otherwise than UNAVAILABLE or a domain refusal during the outage: {wrong:#?}"
    );
    println!(
        "checked: every one of the {} calls in flight during the outage answered within its {} ms deadline + {} ms (slowest {} ms); every failure UNAVAILABLE or the database's own domain refusal",
        during.len(),
        ms(DEADLINE),
        ms(SLACK),
        ms(slowest)
    );
    let broken: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(&a.failure, Some((Code::Internal | Code::Unknown, _))))
        .collect();
    println!(
        "whole run: {} calls, outcomes {:?}",
        attempts.len(),
        by_outcome(attempts.iter())
    );
    assert!(
        broken.is_empty(),
        "INTERNAL or UNKNOWN answers: {broken:#?}"
    );

    mixed.verify(&world, load_time).await;
    world.stop().await;
}
