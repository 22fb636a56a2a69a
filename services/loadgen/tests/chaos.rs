//! Process faults and overload against the three service binaries running
//! as real processes (the debug builds `cargo test --workspace` makes), on a
//! durable throwaway Postgres.
//!
//! - `kill_9_of_each_service_under_mixed_load_loses_and_doubles_nothing`:
//!   shoppers race for less stock than they order (retrying each order with
//!   its request id), accounts register, log in and rotate refresh tokens,
//!   cards are attached, stock is read, restocked and reserved with a short
//!   TTL, completed orders are refunded; meanwhile account, inventory and
//!   payment are each killed with SIGKILL and restarted. Afterwards every
//!   saga is terminal, every acknowledged write is there, nothing is
//!   oversold or charged twice, the ledger balances, no reservation outlives
//!   its TTL plus the sweep, the invariant checker finds nothing, and no
//!   table row or log line holds a card number, password, token or key.
//! - `past_the_concurrency_limit_calls_are_shed_fast_and_memory_stays_bounded`:
//!   storms of 2000 concurrent GetProduct calls (inventory) and Login calls
//!   (account) against a concurrency limit of 4: every call is served or
//!   shed with RESOURCE_EXHAUSTED before its deadline, and inventory's RSS
//!   stays within a bound of its idle RSS.
//!
//! Each test prints what it injected and what it checked.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use backroom::audit::{Tolerances, audit};
use backroom_loadgen::{
    fixtures::{self, Shopper, Suite},
    secrets::{ScanReport, SecretScan},
    stack::{Service, Stack, StackOptions},
};
use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    common::v1::Money,
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{
        self as pb, checkout_service_client::CheckoutServiceClient,
        payment_service_client::PaymentServiceClient,
    },
};
use backroom_shared::{errors::reason_of, testing::PostgresCluster};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    connection::SimpleConnection as _,
    sql_query,
    sql_types::{BigInt, Text},
};
use tonic::{Code, Request, Response, Status, transport::Channel};

/// Deadline of every call the test makes (PlaceOrder answers with the
/// order's current state when it passes).
const CALL_DEADLINE: Duration = Duration::from_secs(8);
/// How long one logical operation may keep failing retryably before the
/// test gives up on it.
const OPERATION_DEADLINE: Duration = Duration::from_secs(60);
/// The inventory sweeper's interval in the chaos run.
const SWEEP: Duration = Duration::from_millis(200);
/// TTL of the reservations made directly (and never committed).
const DIRECT_RESERVATION_TTL_SECS: i64 = 1;
/// The two SKUs the shoppers race for, and their initial stock.
const SKUS: [(&str, i64); 2] = [("CHAOS-MUG", 12), ("CHAOS-CAP", 8)];
/// Units added to each SKU per restock.
const RESTOCK: i64 = 2;
/// Time between restocks.
const RESTOCK_EVERY: Duration = Duration::from_millis(1000);
/// Orders acknowledged between two faults (and after the last).
const ORDERS_BETWEEN_FAULTS: usize = 6;
/// Test cards attached during the load (number, CVC); all authorize.
const CARDS: [(&str, &str); 4] = [
    ("4242424242424242", "123"),
    ("5555555555554444", "123"),
    ("378282246310005", "1234"),
    ("6011111111111117", "123"),
];

/// Where the service binaries are: one level above this test's executable
/// (`target/debug/deps/chaos-…` → `target/debug`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug above target/debug/deps")
        .to_owned();
    for service in Service::ALL {
        assert!(
            dir.join(service.binary()).is_file(),
            "{} not found in {}: run `cargo test --workspace` so the service binaries are built",
            service.binary(),
            dir.display()
        );
    }
    dir
}

fn log_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("backroom-{test}-{}", uuid::Uuid::new_v4().simple()))
}

/// A throwaway cluster (`durable`: every acknowledged commit survives a
/// crash) with database `backroom`; returns it and the database's admin URL.
async fn cluster(durable: bool) -> (PostgresCluster, String) {
    tokio::task::spawn_blocking(move || {
        let cluster = if durable {
            PostgresCluster::start_durable()
        } else {
            PostgresCluster::start()
        }
        .expect("start a throwaway Postgres");
        backroom_shared::db::connect(&cluster.url("postgres"))
            .expect("connect to the throwaway Postgres")
            .batch_execute("CREATE DATABASE backroom")
            .expect("create database backroom");
        let url = cluster.url("backroom");
        (cluster, url)
    })
    .await
    .expect("cluster task")
}

/// A channel that connects on first use and reconnects after the process
/// behind it died.
fn lazy_channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint URL")
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL_DEADLINE + Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// `message` with a bearer token (if any) and the call deadline.
fn call<T>(token: &str, message: T) -> Request<T> {
    let mut request = if token.is_empty() {
        Request::new(message)
    } else {
        fixtures::authed(token, message)
    };
    request.set_timeout(CALL_DEADLINE);
    request
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether the call got no definitive answer, so the same request (same
/// request id) may and must be sent again.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
    ) || reason_of(status).as_deref() == Some("REQUEST_IN_PROGRESS")
}

/// Calls in flight per service, and every retryable failure seen by RPC and
/// code.
struct Tally {
    in_flight: HashMap<Service, AtomicUsize>,
    retried: Mutex<BTreeMap<String, usize>>,
    /// Operations acknowledged (any kind).
    acknowledged: AtomicUsize,
}

impl Tally {
    fn new() -> Self {
        Self {
            in_flight: Service::ALL
                .iter()
                .map(|s| (*s, AtomicUsize::new(0)))
                .collect(),
            retried: Mutex::new(BTreeMap::new()),
            acknowledged: AtomicUsize::new(0),
        }
    }

    fn in_flight(&self, service: Service) -> usize {
        self.in_flight[&service].load(Ordering::SeqCst)
    }

    fn note_retry(&self, rpc: &str, status: &Status) {
        *self
            .retried
            .lock()
            .unwrap()
            .entry(format!("{rpc} {:?}", status.code()))
            .or_default() += 1;
    }

    /// Sends the request `make` builds until it gets a definitive answer:
    /// OK, or an error that is not [`retryable`].
    async fn answered<T, F, Fut>(
        &self,
        service: Service,
        rpc: &str,
        mut make: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        loop {
            self.in_flight[&service].fetch_add(1, Ordering::SeqCst);
            let result = make().await;
            self.in_flight[&service].fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(response) => {
                    self.acknowledged.fetch_add(1, Ordering::SeqCst);
                    return Ok(response.into_inner());
                }
                Err(status) if retryable(&status) => {
                    self.note_retry(rpc, &status);
                    assert!(
                        Instant::now() < deadline,
                        "{rpc}: no definitive answer within {OPERATION_DEADLINE:?}; last: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// Every write the services acknowledged, and every secret the test handled.
#[derive(Default)]
struct Acked {
    /// `orders/…` names with the units ordered.
    orders: Vec<(String, i64)>,
    /// (email, password) of registered accounts.
    accounts: Vec<(String, String)>,
    /// Access and refresh tokens received.
    tokens: Vec<String>,
    /// (payment method name, its owner's token).
    cards: Vec<(String, String)>,
    /// Refund names.
    refunds: Vec<String>,
    /// Units added per SKU by acknowledged AdjustStock calls.
    restocked: BTreeMap<String, i64>,
    /// Direct reservations granted.
    reservations: usize,
    /// Direct reservations refused for lack of stock.
    reservations_short: usize,
}

impl Acked {
    fn ordered_units(&self) -> i64 {
        self.orders.iter().map(|(_, units)| units).sum()
    }

    /// Initial stock plus acknowledged restocks, over all SKUs.
    fn supply(&self) -> i64 {
        SKUS.iter().map(|(_, units)| units).sum::<i64>() + self.restocked.values().sum::<i64>()
    }
}

/// What the load workers share.
struct Load {
    suite: Suite,
    admin: String,
    service_token: String,
    stop: AtomicBool,
    /// Restocks continue while set.
    restocking: AtomicBool,
    tally: Tally,
    acked: Mutex<Acked>,
    run: String,
}

impl Load {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn record(&self, f: impl FnOnce(&mut Acked)) {
        f(&mut self.acked.lock().unwrap());
    }

    fn orders(&self) -> usize {
        self.acked.lock().unwrap().orders.len()
    }

    /// Waits until `orders` more orders are acknowledged and at least a
    /// second has passed: the load runs between two faults.
    async fn progress(&self, orders: usize) {
        let mark = self.orders();
        let since = Instant::now();
        wait_until("load progress", OPERATION_DEADLINE, || {
            self.orders() >= mark + orders && since.elapsed() >= Duration::from_secs(1)
        })
        .await;
    }
}

/// One shopper ordering one or two units at a time, alternating SKUs, and
/// refunding part of every third completed order.
async fn shop(load: Arc<Load>, shopper: Shopper, n: usize) {
    let checkout = CheckoutServiceClient::new(lazy_channel(&load.suite.payment));
    let payments = PaymentServiceClient::new(lazy_channel(&load.suite.payment));
    let mut round = 0usize;
    while !load.stopped() {
        round += 1;
        let (sku, _) = SKUS[(n + round) % SKUS.len()];
        let quantity = 1 + i64::try_from(round % 2).unwrap_or(0);
        let place = pb::PlaceOrderRequest {
            customer: "accounts/me".into(),
            lines: vec![pb::LineItem {
                sku: sku.into(),
                quantity,
            }],
            payment_method: shopper.card.clone(),
            shipping_address: shopper.address.clone(),
            currency_code: "EUR".into(),
            request_id: request_id(),
        };
        let order = load
            .tally
            .answered(Service::Payment, "PlaceOrder", || {
                let mut client = checkout.clone();
                let request = call(&shopper.token, place.clone());
                async move { client.place_order(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("PlaceOrder refused: {status:?}"));
        load.record(|acked| acked.orders.push((order.name.clone(), quantity)));
        if order.state == pb::OrderState::Completed as i32 && round.is_multiple_of(3) {
            let refund = pb::CreateRefundRequest {
                parent: order.payment_intent.clone(),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 100,
                }),
                reason: pb::RefundReason::RequestedByCustomer as i32,
                request_id: request_id(),
            };
            let refund = load
                .tally
                .answered(Service::Payment, "CreateRefund", || {
                    let mut client = payments.clone();
                    let request = call(&load.admin, refund.clone());
                    async move { client.create_refund(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("CreateRefund refused: {status:?}"));
            load.record(|acked| acked.refunds.push(refund.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers accounts, logs each in and rotates its refresh token twice.
async fn sessions(load: Arc<Load>, n: usize) {
    let accounts = AccountServiceClient::new(lazy_channel(&load.suite.account));
    let mut round = 0usize;
    while !load.stopped() {
        round += 1;
        let email = format!("chaos-{}-{n}-{round}@example.com", load.run);
        let password = format!("chaos-pw-{}", uuid::Uuid::new_v4().simple());
        let register = account_pb::RegisterRequest {
            email: email.clone(),
            password: password.clone(),
            display_name: format!("Chaos {n}"),
            request_id: request_id(),
        };
        load.tally
            .answered(Service::Account, "Register", || {
                let mut client = accounts.clone();
                let request = call("", register.clone());
                async move { client.register(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("Register of {email} refused: {status:?}"));
        load.record(|acked| acked.accounts.push((email.clone(), password.clone())));
        let login = account_pb::LoginRequest {
            email: email.clone(),
            password: password.clone(),
        };
        let log_in = || async {
            load.tally
                .answered(Service::Account, "Login", || {
                    let mut client = accounts.clone();
                    let request = call("", login.clone());
                    async move { client.login(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("Login of {email} refused: {status:?}"))
        };
        let session = log_in().await;
        load.record(|acked| {
            acked.tokens.push(session.access_token.clone());
            acked.tokens.push(session.refresh_token.clone());
        });
        let mut refresh_token = session.refresh_token;
        for _ in 0..2 {
            // Not retried: after a lost answer the token may be rotated
            // already, and presenting it again is reuse (the family is
            // revoked). The client logs in again instead, as documented.
            let mut client = accounts.clone();
            let refreshed = client
                .refresh_session(call(
                    "",
                    account_pb::RefreshSessionRequest {
                        refresh_token: refresh_token.clone(),
                    },
                ))
                .await;
            let session = match refreshed {
                Ok(session) => {
                    load.tally.acknowledged.fetch_add(1, Ordering::SeqCst);
                    session.into_inner()
                }
                Err(status) if retryable(&status) => {
                    load.tally
                        .note_retry("RefreshSession (then Login)", &status);
                    log_in().await
                }
                Err(status) => panic!("RefreshSession of {email} refused: {status:?}"),
            };
            load.record(|acked| {
                acked.tokens.push(session.access_token.clone());
                acked.tokens.push(session.refresh_token.clone());
            });
            refresh_token = session.refresh_token;
        }
    }
}

/// Attaches the test cards to the shoppers in turn (a customer may hold
/// 20).
async fn attach_cards(load: Arc<Load>, shoppers: Vec<Shopper>) {
    let payments = PaymentServiceClient::new(lazy_channel(&load.suite.payment));
    let mut round = 0usize;
    while !load.stopped() {
        let (number, cvc) = CARDS[round % CARDS.len()];
        let shopper = &shoppers[round % shoppers.len()];
        round += 1;
        let attach = pb::AttachPaymentMethodRequest {
            customer: "accounts/me".into(),
            card: Some(pb::Card {
                number: number.into(),
                exp_month: 12,
                exp_year: 2099,
                cvc: cvc.into(),
                holder_name: "Chaos Shopper".into(),
            }),
            request_id: request_id(),
        };
        let method = load
            .tally
            .answered(Service::Payment, "AttachPaymentMethod", || {
                let mut client = payments.clone();
                let request = call(&shopper.token, attach.clone());
                async move { client.attach_payment_method(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("AttachPaymentMethod refused: {status:?}"));
        load.record(|acked| acked.cards.push((method.name, shopper.token.clone())));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Reads products and stock levels and, until the last fault is over,
/// restocks each SKU (compare-and-swap on the level's version) every
/// [`RESTOCK_EVERY`].
async fn restock(load: Arc<Load>) {
    let inventory = InventoryServiceClient::new(lazy_channel(&load.suite.inventory));
    while !load.stopped() {
        for (sku, _) in SKUS {
            let name = format!("products/{sku}/stockLevels/main");
            load.tally
                .answered(Service::Inventory, "GetProduct", || {
                    let mut client = inventory.clone();
                    let request = call(
                        &load.admin,
                        inventory_pb::GetProductRequest {
                            name: format!("products/{sku}"),
                        },
                    );
                    async move { client.get_product(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("GetProduct refused: {status:?}"));
            let level = load
                .tally
                .answered(Service::Inventory, "GetStockLevel", || {
                    let mut client = inventory.clone();
                    let request = call(
                        &load.admin,
                        inventory_pb::GetStockLevelRequest { name: name.clone() },
                    );
                    async move { client.get_stock_level(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("GetStockLevel refused: {status:?}"));
            if !load.restocking.load(Ordering::SeqCst) {
                continue;
            }
            let adjust = inventory_pb::AdjustStockRequest {
                name: name.clone(),
                delta: RESTOCK,
                reason: inventory_pb::StockAdjustmentReason::Received as i32,
                note: "chaos restock".into(),
                expected_version: level.version,
                request_id: request_id(),
            };
            match load
                .tally
                .answered(Service::Inventory, "AdjustStock", || {
                    let mut client = inventory.clone();
                    let request = call(&load.admin, adjust.clone());
                    async move { client.adjust_stock(request).await }
                })
                .await
            {
                Ok(_) => load.record(|acked| {
                    *acked.restocked.entry(sku.to_owned()).or_default() += RESTOCK;
                }),
                // Orders moved the level since the read: not applied.
                Err(status) if reason_of(&status).as_deref() == Some("VERSION_MISMATCH") => {}
                Err(status) => panic!("AdjustStock refused: {status:?}"),
            }
        }
        tokio::time::sleep(RESTOCK_EVERY).await;
    }
}

/// Reserves one unit at a time for a second, as the payment principal, and
/// never commits or releases: the sweeper must return every unit.
async fn reserve_and_abandon(load: Arc<Load>) {
    let inventory = InventoryServiceClient::new(lazy_channel(&load.suite.inventory));
    let mut round = 0usize;
    while !load.stopped() {
        let (sku, _) = SKUS[round % SKUS.len()];
        round += 1;
        let reserve = inventory_pb::ReserveStockRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
            lines: vec![inventory_pb::ReservationLine {
                sku: sku.into(),
                quantity: 1,
                location: String::new(),
            }],
            ttl: Some(prost_types::Duration {
                seconds: DIRECT_RESERVATION_TTL_SECS,
                nanos: 0,
            }),
            request_id: request_id(),
        };
        match load
            .tally
            .answered(Service::Inventory, "ReserveStock", || {
                let mut client = inventory.clone();
                let request = call(&load.service_token, reserve.clone());
                async move { client.reserve_stock(request).await }
            })
            .await
        {
            Ok(_) => load.record(|acked| acked.reservations += 1),
            Err(status) if reason_of(&status).as_deref() == Some("INSUFFICIENT_STOCK") => {
                load.record(|acked| acked.reservations_short += 1);
            }
            Err(status) => panic!("ReserveStock refused: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `sql`, which selects a `label` text and an `n` bigint per row,
/// through the admin URL.
async fn counts(admin_url: &str, sql: &str) -> Vec<(String, i64)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        label: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (url, sql) = (admin_url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut conn = backroom_shared::db::connect(&url).expect("connect as admin");
        let rows: Vec<Row> = sql_query(&sql)
            .load(&mut conn)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
        rows.into_iter().map(|r| (r.label, r.n)).collect()
    })
    .await
    .expect("query task")
}

async fn count(admin_url: &str, sql: &str) -> i64 {
    counts(admin_url, sql).await.first().map_or(0, |(_, n)| *n)
}

/// Waits until `done` holds, polling; panics with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One test's world: a throwaway Postgres, the three services as processes,
/// and their log files.
struct World {
    started: Instant,
    cluster: PostgresCluster,
    admin_url: String,
    stack: Stack,
    logs: PathBuf,
}

impl World {
    /// Starts Postgres (`durable`: every acknowledged commit survives a
    /// crash) and the services with `options`, logging to a fresh directory.
    async fn start(test: &str, durable: bool, mut options: StackOptions) -> Self {
        let started = Instant::now();
        let bin_dir = bin_dir();
        let (cluster, admin_url) = cluster(durable).await;
        let logs = log_dir(test);
        options.log_dir = Some(logs.clone());
        let stack = Stack::start(&admin_url, &bin_dir, options)
            .await
            .expect("start the three services");
        println!(
            "setup: {} Postgres, three service processes SERVING after {:.1} s (account, inventory, payment: {:?} from start); logs in {}",
            if durable { "durable" } else { "fast" },
            started.elapsed().as_secs_f64(),
            stack.to_serving(),
            logs.display()
        );
        Self {
            started,
            cluster,
            admin_url,
            stack,
            logs,
        }
    }

    /// A scan for card numbers, private keys and every secret the services
    /// were started with.
    fn secret_scan(&self) -> SecretScan {
        let mut scan = SecretScan::new();
        for (label, value) in self.stack.secrets() {
            scan.secret(label, value);
        }
        scan
    }

    /// Scans every log line (and, with `tables`, every row of every table)
    /// with `scan`; asserts that nothing is found.
    async fn assert_no_secrets(&self, scan: SecretScan, tables: bool) -> ScanReport {
        let log_files: Vec<PathBuf> = Service::ALL
            .iter()
            .filter_map(|s| self.stack.log_path(*s))
            .collect();
        let mut report = scan.scan_logs(&log_files).expect("scan the logs");
        if tables {
            let url = self.admin_url.clone();
            let scan = scan.clone();
            report.merge(
                tokio::task::spawn_blocking(move || scan.scan_database(&url))
                    .await
                    .expect("scan task")
                    .expect("scan the database"),
            );
        }
        let leaks: Vec<String> = report.leaks.iter().map(ToString::to_string).collect();
        assert!(leaks.is_empty(), "secrets found: {leaks:#?}");
        println!(
            "checked: secret scan of {} rows in {} tables and {} log lines ({} files) for Luhn-valid card numbers, private keys and {} secrets (passwords, tokens, keys): none found",
            report.rows,
            report.tables,
            report.log_lines,
            report.log_files,
            scan.secrets()
        );
        report
    }

    /// Stops the services (SIGINT) and Postgres; removes the logs.
    async fn stop(self) {
        drop(self.stack);
        let cluster = self.cluster;
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .expect("stop Postgres");
        let _ = std::fs::remove_dir_all(&self.logs);
        println!("total {:.1} s", self.started.elapsed().as_secs_f64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_each_service_under_mixed_load_loses_and_doubles_nothing() {
    let options = StackOptions {
        // Everything, dependencies included: the secret scan reads it all.
        rust_log: "debug".into(),
        ..StackOptions::default()
    }
    .with_env(
        Service::Inventory,
        "BACKROOM_RESERVATION_SWEEP_INTERVAL_MS",
        SWEEP.as_millis().to_string(),
    )
    .with_env(Service::Payment, "BACKROOM_CHECKOUT_LEASE_SECS", "2")
    .with_env(
        Service::Payment,
        "BACKROOM_AUTHORIZATION_SWEEP_INTERVAL_SECS",
        "1",
    );
    let mut world = World::start("chaos", true, options).await;
    let admin_url = world.admin_url.clone();
    let suite = world.stack.suite();

    // Fixtures, before any fault.
    let admin = fixtures::admin_token(&suite).await.expect("admin login");
    let service_token = fixtures::service_token(&suite, "backroom.inventory")
        .await
        .expect("service token");
    for (sku, units) in SKUS {
        fixtures::product(&suite, &admin, sku, units)
            .await
            .expect("product");
    }
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut shoppers = Vec::new();
    for n in 0..6 {
        shoppers.push(
            fixtures::shopper(&suite, &format!("shopper-{run}-{n}@example.com"))
                .await
                .expect("shopper"),
        );
    }
    let load = Arc::new(Load {
        suite: suite.clone(),
        admin: admin.clone(),
        service_token: service_token.clone(),
        stop: AtomicBool::new(false),
        restocking: AtomicBool::new(true),
        tally: Tally::new(),
        acked: Mutex::new(Acked::default()),
        run,
    });

    // The mixed load.
    let load_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (n, shopper) in shoppers.iter().enumerate() {
        workers.spawn(shop(load.clone(), shopper.clone(), n));
    }
    workers.spawn(sessions(load.clone(), 0));
    workers.spawn(sessions(load.clone(), 1));
    workers.spawn(attach_cards(load.clone(), shoppers.clone()));
    workers.spawn(restock(load.clone()));
    workers.spawn(reserve_and_abandon(load.clone()));
    println!(
        "load: {} shoppers ordering 1–2 units of {:?} (stock {:?}, +{RESTOCK} each per restock), 2 accounts workers (register, login, 2 refresh rotations), card attach, stock reads + restocks, {DIRECT_RESERVATION_TTL_SECS} s reservations never committed, refunds of every third completed order",
        shoppers.len(),
        SKUS.map(|(sku, _)| sku),
        SKUS.map(|(_, units)| units),
    );

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
        world.stack.kill9(service).expect("kill -9");
        println!(
            "injected at {:.1} s: kill -9 of {} (pid {pid}) with {in_flight} test calls in flight to it, {acknowledged} operations acknowledged so far",
            load_started.elapsed().as_secs_f64(),
            service.binary()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let took = world.stack.restart(service).await.expect("restart");
        println!(
            "injected at {:.1} s: {} restarted on the same port with the same environment, SERVING {} ms after start",
            load_started.elapsed().as_secs_f64(),
            service.binary(),
            took.as_millis()
        );
    }
    load.progress(ORDERS_BETWEEN_FAULTS).await;
    // No more restocks: the shoppers order on until more units were
    // ordered than ever existed (counting one restock still in flight).
    load.restocking.store(false, Ordering::SeqCst);
    wait_until("more units ordered than exist", OPERATION_DEADLINE, || {
        let acked = load.acked.lock().unwrap();
        acked.ordered_units() > acked.supply() + RESTOCK
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    while let Some(worker) = tokio::time::timeout(OPERATION_DEADLINE, workers.join_next())
        .await
        .expect("load workers finish their last operation")
    {
        worker.expect("load worker");
    }
    let load_time = load_started.elapsed();

    // Every saga terminal.
    let settle = Instant::now();
    let unfinished = "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state NOT IN ('COMPLETED', 'FAILED')";
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&admin_url, unfinished).await > 0 {
        assert!(
            Instant::now() < deadline,
            "sagas still unfinished 60 s after the load: {:?}",
            counts(
                &admin_url,
                "SELECT state AS label, count(*) AS n FROM payment.orders GROUP BY state"
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_time = settle.elapsed();
    // Direct reservations: the last one's TTL plus a sweep (with slack).
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(DIRECT_RESERVATION_TTL_SECS).unwrap_or(1),
    ))
    .await;
    tokio::time::sleep(SWEEP * 3).await;

    let acked = std::mem::take(&mut *load.acked.lock().unwrap());
    let retried = load.tally.retried.lock().unwrap().clone();
    println!(
        "load ran {:.1} s: {} orders, {} accounts, {} token pairs, {} cards, {} refunds, {} direct reservations ({} refused short), restocked {:?}; every saga terminal {} ms after the load",
        load_time.as_secs_f64(),
        acked.orders.len(),
        acked.accounts.len(),
        acked.tokens.len() / 2,
        acked.cards.len(),
        acked.refunds.len(),
        acked.reservations,
        acked.reservations_short,
        acked.restocked,
        settle_time.as_millis()
    );
    println!("retried (no definitive answer) by RPC and code: {retried:?}");
    // What the faults did to the sagas, from payment's own log.
    let payment_log = world
        .stack
        .log_path(Service::Payment)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let log_count = |needle: &str| payment_log.lines().filter(|l| l.contains(needle)).count();
    println!(
        "sagas: {} steps failed transiently (a dependency down) and were retried, {} orders compensated, {} recovery-worker passes picked up unfinished orders (retries after backoff, orders the killed process left)",
        log_count("saga step failed transiently"),
        log_count("order failed; compensating"),
        log_count("recovery pass")
    );
    assert!(
        retried.keys().any(|k| k.starts_with("PlaceOrder")),
        "no PlaceOrder ever failed: the kills missed the load"
    );

    // Every acknowledged write is there.
    let mut checkout = CheckoutServiceClient::new(lazy_channel(&suite.payment));
    let mut by_state: BTreeMap<i32, usize> = BTreeMap::new();
    for (name, _) in &acked.orders {
        let order = checkout
            .get_order(call(&admin, pb::GetOrderRequest { name: name.clone() }))
            .await
            .unwrap_or_else(|status| panic!("acknowledged order {name} lost: {status:?}"))
            .into_inner();
        *by_state.entry(order.state).or_default() += 1;
    }
    assert!(
        by_state.keys().all(|s| {
            *s == pb::OrderState::Completed as i32 || *s == pb::OrderState::Failed as i32
        }),
        "acknowledged orders not terminal: {by_state:?}"
    );
    let failures = counts(
        &admin_url,
        "SELECT coalesce(failure_reason, state) AS label, count(*) AS n FROM payment.orders GROUP BY 1 ORDER BY 1",
    )
    .await;
    let all_orders = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders",
    )
    .await;
    assert_eq!(
        usize::try_from(all_orders).unwrap_or_default(),
        acked.orders.len(),
        "one order per acknowledged request id, none without one"
    );
    println!(
        "checked: all {} acknowledged orders exist and are terminal; outcomes {failures:?}",
        acked.orders.len()
    );
    let mut accounts = AccountServiceClient::new(lazy_channel(&suite.account));
    let mut tokens = acked.tokens.clone();
    for (email, password) in &acked.accounts {
        let session = accounts
            .login(call(
                "",
                account_pb::LoginRequest {
                    email: email.clone(),
                    password: password.clone(),
                },
            ))
            .await
            .unwrap_or_else(|status| panic!("registered account {email} cannot log in: {status:?}"))
            .into_inner();
        tokens.push(session.access_token);
        tokens.push(session.refresh_token);
    }
    println!(
        "checked: all {} acknowledged registrations log in with their passwords",
        acked.accounts.len()
    );
    let mut payments = PaymentServiceClient::new(lazy_channel(&suite.payment));
    for (name, token) in &acked.cards {
        payments
            .get_payment_method(call(
                token,
                pb::GetPaymentMethodRequest { name: name.clone() },
            ))
            .await
            .unwrap_or_else(|status| panic!("attached card {name} lost: {status:?}"));
    }
    for name in &acked.refunds {
        payments
            .get_refund(call(&admin, pb::GetRefundRequest { name: name.clone() }))
            .await
            .unwrap_or_else(|status| panic!("refund {name} lost: {status:?}"));
    }
    println!(
        "checked: all {} attached cards and {} refunds are there",
        acked.cards.len(),
        acked.refunds.len()
    );

    // Stock: no oversell, nothing held, every restock counted once.
    let ordered_units = acked.ordered_units();
    let sold = counts(
        &admin_url,
        "SELECT l.sku AS label, sum(l.quantity)::bigint AS n FROM payment.orders o JOIN payment.order_lines l ON l.order_id = o.id WHERE o.state = 'COMPLETED' GROUP BY l.sku",
    )
    .await
    .into_iter()
    .collect::<BTreeMap<_, _>>();
    let mut supply = 0;
    for (sku, initial) in SKUS {
        let levels = counts(
            &admin_url,
            &format!(
                "SELECT unnest(ARRAY['available', 'reserved', 'committed', 'on_hand']) AS label, unnest(ARRAY[available, reserved, committed, on_hand]) AS n FROM inventory.stock_levels WHERE sku = '{sku}' AND location = 'main'"
            ),
        )
        .await
        .into_iter()
        .collect::<BTreeMap<_, _>>();
        let restocked = acked.restocked.get(sku).copied().unwrap_or_default();
        let sold = sold.get(sku).copied().unwrap_or_default();
        supply += initial + restocked;
        assert_eq!(
            levels["on_hand"],
            initial + restocked,
            "{sku}: on_hand is the initial stock plus every acknowledged restock, once: {levels:?}"
        );
        assert_eq!(
            levels["available"] + levels["reserved"] + levels["committed"],
            levels["on_hand"],
            "{sku}: {levels:?}"
        );
        assert_eq!(
            levels["committed"], sold,
            "{sku}: committed units are exactly the completed orders' units"
        );
        assert!(levels["committed"] <= levels["on_hand"], "{sku}: oversold");
        assert_eq!(levels["reserved"], 0, "{sku}: units still held: {levels:?}");
        println!(
            "checked: {sku} initial {initial} + restocked {restocked} = on_hand {}; sold (committed) {sold}, available {}, reserved 0",
            levels["on_hand"], levels["available"]
        );
    }
    assert!(
        ordered_units > supply,
        "the shoppers ordered {ordered_units} units, not more than the {supply} that existed"
    );
    println!("checked: {ordered_units} units ordered for {supply} that existed, none oversold");
    let held = count(
        &admin_url,
        &format!(
            "SELECT '' AS label, count(*) AS n FROM inventory.reservations WHERE state = 'ACTIVE' AND expire_at < now() - interval '{} milliseconds'",
            SWEEP.as_millis() + 1000
        ),
    )
    .await;
    assert_eq!(held, 0, "ACTIVE reservations past their TTL plus the sweep");
    let swept = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM inventory.reservations WHERE state = 'EXPIRED'",
    )
    .await;
    println!(
        "checked: no ACTIVE reservation past its TTL + {} ms sweep (+1 s slack); {swept} expired reservations returned",
        SWEEP.as_millis()
    );

    // Money: one charge per completed order, for its total; nothing open.
    let completed = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state = 'COMPLETED'",
    )
    .await;
    let charged_right = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders o JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent WHERE o.state = 'COMPLETED' AND i.status = 'succeeded' AND i.amount_received = o.total_minor",
    )
    .await;
    let succeeded = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded'",
    )
    .await;
    let open = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status IN ('requires_capture', 'processing', 'requires_confirmation')",
    )
    .await;
    let intents_per_order = counts(
        &admin_url,
        "SELECT metadata::jsonb ->> 'order' AS label, count(*) AS n FROM payment.payment_intents WHERE metadata::jsonb ? 'order' GROUP BY 1 HAVING count(*) > 1",
    )
    .await;
    assert_eq!(
        (charged_right, succeeded),
        (completed, completed),
        "every completed order charged once for its total, and nothing else charged"
    );
    assert_eq!(open, 0, "authorizations left open");
    assert!(
        intents_per_order.is_empty(),
        "orders with more than one payment intent: {intents_per_order:?}"
    );
    println!(
        "checked: {completed} completed orders, {succeeded} succeeded intents each for its order's total, one intent per order, no authorization open"
    );

    // The invariant checker, strict.
    let tolerances = Tolerances {
        grace: SWEEP + Duration::from_secs(1),
        stuck_after: Duration::ZERO,
    };
    let url = admin_url.clone();
    let findings = tokio::task::spawn_blocking(move || {
        audit(
            &mut backroom_shared::db::connect(&url).expect("connect as admin"),
            tolerances,
        )
        .expect("audit")
    })
    .await
    .expect("audit task");
    assert!(findings.is_empty(), "audit findings: {findings:#?}");
    println!(
        "checked: backroom audit (grace {:?}, stuck after 0 s): {} checks, no findings (ledger balanced)",
        tolerances.grace,
        backroom::audit::check_names().len()
    );

    // Secrets: nothing the run handled is in any table or log line.
    let mut scan = world.secret_scan();
    scan.secret("shopper password", "loadgen password");
    scan.secret("admin access token", admin.clone());
    scan.secret("service token", service_token.clone());
    for shopper in &shoppers {
        scan.secret("shopper access token", shopper.token.clone());
    }
    for (_, password) in &acked.accounts {
        scan.secret("account password", password.clone());
    }
    for token in &tokens {
        scan.secret("access or refresh token", token.clone());
    }
    for (number, _) in CARDS {
        scan.secret("test card number", number);
    }
    let report = world.assert_no_secrets(scan, true).await;
    assert!(
        report.tables >= 15 && report.rows > 100 && report.log_lines > 100,
        "the scan saw too little: {} tables, {} rows, {} log lines",
        report.tables,
        report.rows,
        report.log_lines
    );
    world.stop().await;
}

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
    let options = StackOptions {
        rust_log: "info".into(),
        ..StackOptions::default()
    }
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
