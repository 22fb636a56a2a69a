//! What the tests against the three service binaries share: the world (a
//! durable or fast throwaway Postgres, the three processes, their logs), the
//! mixed load (`load`, `mixed`) with its bookkeeping of every acknowledged
//! write and every call attempt, and the checks after it (every saga terminal, every acknowledged write there, no
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
mod events;
mod load;
mod mixed;

pub use events::*;
pub use load::*;
pub use mixed::*;

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
    assert_audit_clean_with(admin_url, None).await
}

/// [`assert_audit_clean`], with the audit's relay check on: no event
/// unpublished longer than `relay_lag`.
pub async fn assert_audit_clean_with(admin_url: &str, relay_lag: Option<Duration>) -> Tolerances {
    let tolerances = Tolerances {
        grace: SWEEP + Duration::from_secs(1),
        stuck_after: Duration::ZERO,
        relay_lag,
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
