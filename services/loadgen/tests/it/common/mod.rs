//! What the tests against the three service binaries share: the world (a durable or fast throwaway
//! Postgres, the three processes, their logs), the mixed load with its
//! bookkeeping of every acknowledged write and every call attempt, and the
//! checks after it (every saga terminal, every acknowledged write there, no
//! oversell, no double charge, the invariant checker, the secret scan).

#![allow(dead_code)]

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

/// Deadline of every call the checks make, and of the load's calls in the
/// kill -9 run (PlaceOrder answers with the order's current state when it
/// passes).
pub const CALL_DEADLINE: Duration = Duration::from_secs(8);
/// How long one logical operation may keep failing retryably before the
/// test gives up on it.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(60);
/// The inventory sweeper's interval in the mixed-load runs.
pub const SWEEP: Duration = Duration::from_millis(200);
/// TTL of the reservations made directly (and never committed).
pub const DIRECT_RESERVATION_TTL_SECS: i64 = 1;
/// The two SKUs the shoppers race for, and their initial stock.
pub const SKUS: [(&str, i64); 2] = [("CHAOS-MUG", 12), ("CHAOS-CAP", 8)];
/// Units added to each SKU per restock.
pub const RESTOCK: i64 = 2;
/// Time between restocks.
pub const RESTOCK_EVERY: Duration = Duration::from_millis(1000);
/// Test cards attached during the load (number, CVC); all authorize.
pub const CARDS: [(&str, &str); 4] = [
    ("4242424242424242", "123"),
    ("5555555555554444", "123"),
    ("378282246310005", "1234"),
    ("6011111111111117", "123"),
];

/// Where the service binaries are: one level above this test's executable
/// (`target/debug/deps/<test>-…` → `target/debug`).
///
/// `BACKROOM_BIN_DIR` points elsewhere: e.g. at binaries built from an older
/// commit, to show that an attack test fails against them.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("BACKROOM_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/debug above target/debug/deps")
                .to_owned()
        }
    };
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

pub fn log_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("backroom-{test}-{}", uuid::Uuid::new_v4().simple()))
}

/// A throwaway cluster (`durable`: every acknowledged commit survives a
/// crash) with database `backroom`; returns it and the database's admin URL.
pub async fn cluster(durable: bool) -> (PostgresCluster, String) {
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
pub fn lazy_channel(endpoint: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint URL")
        .connect_timeout(Duration::from_secs(1))
        .timeout(CALL_DEADLINE + Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// `message` with a bearer token (if any) and [`CALL_DEADLINE`].
pub fn call<T>(token: &str, message: T) -> Request<T> {
    call_within(token, message, CALL_DEADLINE)
}

/// `message` with a bearer token (if any) and `deadline`.
pub fn call_within<T>(token: &str, message: T, deadline: Duration) -> Request<T> {
    let mut request = if token.is_empty() {
        Request::new(message)
    } else {
        fixtures::authed(token, message)
    };
    request.set_timeout(deadline);
    request
}

pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether the call got no definitive answer, so the same request (same
/// request id) may and must be sent again.
pub fn retryable(status: &Status) -> bool {
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

/// One call the load made: when it began, how long its answer took, and
/// how it failed (if it did).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub service: Service,
    pub rpc: &'static str,
    pub began: Instant,
    pub took: Duration,
    /// The code and the ErrorInfo reason (or, without one, the message).
    pub failure: Option<(Code, String)>,
}

impl Attempt {
    /// Whether the call was in flight at some time between `from` and `to`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.began < to && self.began + self.took > from
    }
}

/// Calls in flight per service, every retryable failure seen by RPC and
/// code, and every call attempt.
pub struct Tally {
    in_flight: HashMap<Service, AtomicUsize>,
    pub retried: Mutex<BTreeMap<String, usize>>,
    /// Operations acknowledged (any kind).
    pub acknowledged: AtomicUsize,
    pub attempts: Mutex<Vec<Attempt>>,
    /// Woken whenever something a test waits on changed (a call answered, a
    /// health sample taken): waits are on events, not sleeps.
    pub changed: tokio::sync::Notify,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            in_flight: Service::ALL
                .iter()
                .map(|s| (*s, AtomicUsize::new(0)))
                .collect(),
            retried: Mutex::new(BTreeMap::new()),
            acknowledged: AtomicUsize::new(0),
            attempts: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until `done` holds, checking it whenever [`Self::changed`]
    /// fires; panics with `what` after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                assert!(done(), "{what}: not within {timeout:?}");
                return;
            }
        }
    }

    pub fn in_flight(&self, service: Service) -> usize {
        self.in_flight[&service].load(Ordering::SeqCst)
    }

    pub fn note_retry(&self, rpc: &str, status: &Status) {
        *self
            .retried
            .lock()
            .unwrap()
            .entry(format!("{rpc} {:?}", status.code()))
            .or_default() += 1;
    }

    /// Makes one call to `service`, counted in flight and recorded as an
    /// [`Attempt`].
    pub async fn attempt<T>(
        &self,
        service: Service,
        rpc: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        self.in_flight[&service].fetch_add(1, Ordering::SeqCst);
        let began = Instant::now();
        let result = call.await;
        let took = began.elapsed();
        self.in_flight[&service].fetch_sub(1, Ordering::SeqCst);
        let failure = result.as_ref().err().map(|status| {
            let why = reason_of(status).unwrap_or_else(|| status.message().to_owned());
            (status.code(), why)
        });
        self.attempts.lock().unwrap().push(Attempt {
            service,
            rpc,
            began,
            took,
            failure,
        });
        self.changed.notify_waiters();
        result
    }

    /// Sends the request `make` builds until it gets a definitive answer:
    /// OK, or an error that is not [`retryable`].
    pub async fn answered<T, F, Fut>(
        &self,
        service: Service,
        rpc: &'static str,
        mut make: F,
    ) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + OPERATION_DEADLINE;
        loop {
            match self.attempt(service, rpc, make()).await {
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
pub struct Acked {
    /// `orders/…` names with the units ordered.
    pub orders: Vec<(String, i64)>,
    /// (email, password) of registered accounts.
    pub accounts: Vec<(String, String)>,
    /// Access and refresh tokens received.
    pub tokens: Vec<String>,
    /// (payment method name, its owner's token).
    pub cards: Vec<(String, String)>,
    /// Refund names.
    pub refunds: Vec<String>,
    /// Payments outside any order (each partly refunded).
    pub payments: i64,
    /// Units added per SKU by acknowledged AdjustStock calls.
    pub restocked: BTreeMap<String, i64>,
    /// Direct reservations granted.
    pub reservations: usize,
    /// Direct reservations refused for lack of stock.
    pub reservations_short: usize,
}

impl Acked {
    pub fn ordered_units(&self) -> i64 {
        self.orders.iter().map(|(_, units)| units).sum()
    }

    /// Initial stock plus acknowledged restocks, over all SKUs.
    pub fn supply(&self) -> i64 {
        SKUS.iter().map(|(_, units)| units).sum::<i64>() + self.restocked.values().sum::<i64>()
    }
}

/// What the load workers share.
pub struct Load {
    pub suite: Suite,
    pub admin: String,
    pub service_token: String,
    /// The deadline of each call the load makes.
    pub deadline: Duration,
    pub stop: AtomicBool,
    /// Restocks continue while set.
    pub restocking: AtomicBool,
    pub tally: Tally,
    pub acked: Mutex<Acked>,
    run: String,
}

impl Load {
    /// `message` with a bearer token (if any) and the load's call deadline.
    pub fn call<T>(&self, token: &str, message: T) -> Request<T> {
        call_within(token, message, self.deadline)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub fn record(&self, f: impl FnOnce(&mut Acked)) {
        f(&mut self.acked.lock().unwrap());
    }

    pub fn orders(&self) -> usize {
        self.acked.lock().unwrap().orders.len()
    }

    /// Waits until `orders` more orders are acknowledged and at least a
    /// second has passed: the load runs between two faults.
    pub async fn progress(&self, orders: usize) {
        let mark = self.orders();
        let since = Instant::now();
        self.tally
            .wait_until("load progress", OPERATION_DEADLINE, || {
                self.orders() >= mark + orders && since.elapsed() >= Duration::from_secs(1)
            })
            .await;
    }
}

/// One shopper ordering one or two units at a time, alternating SKUs, and
/// after every third completed order paying something outside any order,
/// part of which the admin refunds.
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
                let request = load.call(&shopper.token, place.clone());
                async move { client.place_order(request).await }
            })
            .await
            .unwrap_or_else(|status| panic!("PlaceOrder refused: {status:?}"));
        load.record(|acked| acked.orders.push((order.name.clone(), quantity)));
        // Every third completed order, the shopper also pays something
        // outside any order, and the admin refunds part of it (an order's
        // own payment is the order's: refunded through the order only).
        if order.state == pb::OrderState::Completed as i32 && round.is_multiple_of(3) {
            let pay = pb::CreatePaymentIntentRequest {
                customer: "accounts/me".into(),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    amount_minor: 500,
                }),
                capture_method: pb::CaptureMethod::Automatic as i32,
                payment_method: shopper.card.clone(),
                confirm: true,
                request_id: request_id(),
                ..Default::default()
            };
            let paid = load
                .tally
                .answered(Service::Payment, "CreatePaymentIntent", || {
                    let mut client = payments.clone();
                    let request = load.call(&shopper.token, pay.clone());
                    async move { client.create_payment_intent(request).await }
                })
                .await
                .unwrap_or_else(|status| panic!("CreatePaymentIntent refused: {status:?}"));
            load.record(|acked| acked.payments += 1);
            let refund = pb::CreateRefundRequest {
                parent: paid.name.clone(),
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
                    let request = load.call(&load.admin, refund.clone());
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
                let request = load.call("", register.clone());
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
                    let request = load.call("", login.clone());
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
            let request = load.call(
                "",
                account_pb::RefreshSessionRequest {
                    refresh_token: refresh_token.clone(),
                },
            );
            let refreshed = load
                .tally
                .attempt(
                    Service::Account,
                    "RefreshSession",
                    client.refresh_session(request),
                )
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
                let request = load.call(&shopper.token, attach.clone());
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
                    let request = load.call(
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
                    let request = load.call(
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
                    let request = load.call(&load.admin, adjust.clone());
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
                let request = load.call(&load.service_token, reserve.clone());
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
pub async fn counts(admin_url: &str, sql: &str) -> Vec<(String, i64)> {
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

/// Runs `backroom audit` strictly — a reservation may outlive its TTL by
/// one sweep and a second, no saga may be unfinished — and asserts it finds
/// nothing; returns the tolerances it used.
pub async fn assert_audit_clean(admin_url: &str) -> Tolerances {
    let tolerances = Tolerances {
        grace: SWEEP + Duration::from_secs(1),
        stuck_after: Duration::ZERO,
    };
    let url = admin_url.to_owned();
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
    tolerances
}

pub async fn count(admin_url: &str, sql: &str) -> i64 {
    counts(admin_url, sql).await.first().map_or(0, |(_, n)| *n)
}

/// One test's world: a throwaway Postgres, the three services as processes,
/// and their log files.
pub struct World {
    pub started: Instant,
    pub cluster: PostgresCluster,
    pub admin_url: String,
    pub stack: Stack,
    logs: PathBuf,
    /// Held for the world's life: one world at a time (see `main.rs`).
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

/// The lock every `World` holds.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl World {
    /// Starts Postgres (`durable`: every acknowledged commit survives a
    /// crash) and the services with `options`, logging to a fresh directory.
    pub async fn start(test: &str, durable: bool, mut options: StackOptions) -> Self {
        let exclusive = EXCLUSIVE.lock().await;
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
            _exclusive: exclusive,
        }
    }

    /// A scan for card numbers, private keys and every secret the services
    /// were started with.
    pub fn secret_scan(&self) -> SecretScan {
        let mut scan = SecretScan::new();
        for (label, value) in self.stack.secrets() {
            scan.secret(label, value);
        }
        scan
    }

    /// Scans every log line (and, with `tables`, every row of every table)
    /// with `scan`; asserts that nothing is found.
    pub async fn assert_no_secrets(&self, scan: SecretScan, tables: bool) -> ScanReport {
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
    pub async fn stop(self) {
        drop(self.stack);
        let cluster = self.cluster;
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .expect("stop Postgres");
        let _ = std::fs::remove_dir_all(&self.logs);
        println!("total {:.1} s", self.started.elapsed().as_secs_f64());
    }
}

/// The environment of the mixed-load runs: a 200 ms reservation sweep, a
/// 2 s checkout lease and a 1 s authorization sweep (so the checks after the
/// load need not wait long), and `RUST_LOG` `rust_log`.
pub fn mixed_load_options(rust_log: &str) -> StackOptions {
    StackOptions {
        rust_log: rust_log.into(),
        ..StackOptions::default()
    }
    .without_rate_limits()
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
    )
}

/// The mixed load, running: shoppers racing for less stock than they order
/// (each order retried with its request id), accounts registering, logging
/// in and rotating refresh tokens, cards attached, stock read, restocked
/// and reserved with a short TTL, payments outside orders refunded.
pub struct MixedLoad {
    pub load: Arc<Load>,
    pub shoppers: Vec<Shopper>,
    pub started: Instant,
    workers: tokio::task::JoinSet<()>,
}

impl MixedLoad {
    /// Creates the fixtures (admin and service tokens, the [`SKUS`] with
    /// their stock, six shoppers) and starts the workers, each call with
    /// `deadline`.
    pub async fn start(world: &World, deadline: Duration) -> Self {
        let suite = world.stack.suite();
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
            suite,
            admin,
            service_token,
            deadline,
            stop: AtomicBool::new(false),
            restocking: AtomicBool::new(true),
            tally: Tally::new(),
            acked: Mutex::new(Acked::default()),
            run,
        });

        let started = Instant::now();
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
            "load: {} shoppers ordering 1–2 units of {:?} (stock {:?}, +{RESTOCK} each per restock), 2 accounts workers (register, login, 2 refresh rotations), card attach, stock reads + restocks, {DIRECT_RESERVATION_TTL_SECS} s reservations never committed, a payment outside any order after every third completed order, partly refunded; every call with a {deadline:?} deadline",
            shoppers.len(),
            SKUS.map(|(sku, _)| sku),
            SKUS.map(|(_, units)| units),
        );
        Self {
            load,
            shoppers,
            started,
            workers,
        }
    }

    /// Stops the restocks, lets the shoppers order on until more units were
    /// ordered than ever existed (counting one restock still in flight),
    /// then stops the load and waits for every worker's last operation;
    /// returns how long the load ran.
    pub async fn finish(&mut self) -> Duration {
        let load = &self.load;
        load.restocking.store(false, Ordering::SeqCst);
        load.tally
            .wait_until("more units ordered than exist", OPERATION_DEADLINE, || {
                let acked = load.acked.lock().unwrap();
                acked.ordered_units() > acked.supply() + RESTOCK
            })
            .await;
        load.stop.store(true, Ordering::SeqCst);
        while let Some(worker) = tokio::time::timeout(OPERATION_DEADLINE, self.workers.join_next())
            .await
            .expect("load workers finish their last operation")
        {
            worker.expect("load worker");
        }
        self.started.elapsed()
    }

    /// After [`Self::finish`]: waits until every saga is terminal and the
    /// direct reservations' TTL and a few sweeps have passed, then checks
    /// that every acknowledged write is there (orders terminal, one per
    /// request id; accounts log in; cards, refunds), the stock identities
    /// (nothing oversold or held, every restock counted once), the money
    /// (one charge per completed order, nothing open), the invariant
    /// checker, and the secret scan of every row and log line. Returns the
    /// retried calls by RPC and code.
    pub async fn verify(&self, world: &World, load_time: Duration) -> BTreeMap<String, usize> {
        let load = &self.load;
        let (admin, service_token) = (load.admin.clone(), load.service_token.clone());
        let shoppers = self.shoppers.clone();
        let admin_url = world.admin_url.clone();
        let suite = world.stack.suite();

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
            "sagas: {} steps failed transiently (a dependency down) and were retried, {} orders compensated, {} recovery-worker passes picked up unfinished orders (retries after backoff, orders a failed process left)",
            log_count("saga step failed transiently"),
            log_count("order failed; compensating"),
            log_count("recovery pass")
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
                .unwrap_or_else(|status| {
                    panic!("registered account {email} cannot log in: {status:?}")
                })
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
            "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded' AND order_id IS NOT NULL",
        )
        .await;
        let outside_orders = count(
            &admin_url,
            "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded' AND order_id IS NULL",
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
            "every completed order charged once for its total, and no other order charged"
        );
        assert_eq!(
            outside_orders, acked.payments,
            "one charge per acknowledged payment outside an order"
        );
        assert_eq!(open, 0, "authorizations left open");
        assert!(
            intents_per_order.is_empty(),
            "orders with more than one payment intent: {intents_per_order:?}"
        );
        println!(
            "checked: {completed} completed orders, {succeeded} succeeded order payments each for its order's total, one intent per order, {outside_orders} payments outside orders (one per acknowledged one), no authorization open"
        );

        // The invariant checker, strict.
        let tolerances = assert_audit_clean(&admin_url).await;
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
        retried
    }
}
