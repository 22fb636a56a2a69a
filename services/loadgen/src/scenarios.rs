//! Scenarios: what one operation does. Each builds its clients and any
//! fixtures up front (`setup`), then returns the operation the driver runs.
//!
//! | scenario | operation | target |
//! |---|---|---|
//! | `echo` | `EchoService/Echo` | a bare echo baseline (or any echo server) |
//! | `pk-select` | `Echo` whose server reads a row by primary key | the diesel/r2d2 baseline |
//! | `login` | `AccountService/Login` of one of `concurrency` users | account |
//! | `raw-argon2id` | one Argon2id hash (m=19 MiB, t=2, p=1) on the blocking pool, at most one per core | local |
//! | `get-product` | `InventoryService/GetProduct` of a seeded product, customer token | inventory |
//! | `place-order` | `CheckoutService/PlaceOrder` of one unit, one of 8 shoppers | payment (checkout) |
//!
//! The reservation race ([`reserve_race`]) and its raw baseline
//! ([`raw_update_race`]) are one-shot races, not loops; so is
//! [`watch_stock::watch_latency`] (AdjustStock to the WatchStock streams,
//! sequential calls).

pub mod watch_stock;

use std::sync::Arc;

use backroom_proto::{
    account::v1::{LoginRequest, RegisterRequest, account_service_client::AccountServiceClient},
    testing::v1::{EchoRequest, echo_service_client::EchoServiceClient},
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{
    baselines::PK_ROWS,
    driver::{Operation, Recorder},
    fixtures::{self, Suite},
};

/// Every scenario name, for `--help` and parsing.
pub const NAMES: [&str; 7] = [
    "echo",
    "pk-select",
    "login",
    "raw-argon2id",
    "get-product",
    "get-product-json",
    "place-order",
];

/// Where and how hard to drive.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` of the service under test.
    pub endpoint: String,
    /// HTTP/2 connections to spread calls over.
    pub connections: usize,
    /// Operations in flight (sizes fixtures such as users).
    pub concurrency: usize,
}

/// `connections` channels to `endpoint`, each its own HTTP/2 connection.
pub async fn channels(endpoint: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        channels.push(
            Endpoint::from_shared(endpoint.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// Parses a scenario name and prepares it. Scenarios that need fixtures
/// (products, shoppers) need `suite`.
pub async fn setup(
    name: &str,
    target: &Target,
    suite: Option<&Suite>,
) -> anyhow::Result<Operation> {
    let need_suite = || {
        suite.ok_or_else(|| {
            anyhow::anyhow!("scenario {name} needs --admin-password (and the suite's endpoints)")
        })
    };
    match name {
        "echo" => echo(target, false).await,
        "pk-select" => echo(target, true).await,
        "login" => login(target).await,
        "raw-argon2id" => Ok(raw_argon2id()),
        "get-product" => get_product(target, need_suite()?).await,
        "get-product-json" => get_product_json(target, need_suite()?).await,
        "place-order" => place_order(target, need_suite()?).await,
        other => anyhow::bail!("unknown scenario {other:?}; known: {}", NAMES.join(", ")),
    }
}

fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
}

/// A product to read and a shopper's token to read it with.
async fn product_and_reader(suite: &Suite) -> anyhow::Result<(String, String)> {
    let admin = fixtures::admin_token(suite).await?;
    let sku = format!("GET-{}", run_tag());
    fixtures::product(suite, &admin, &sku, 1000).await?;
    let shopper = fixtures::shopper(
        suite,
        &format!("get-{}@example.com", run_tag().to_lowercase()),
    )
    .await?;
    Ok((sku, shopper.token))
}

async fn get_product(target: &Target, suite: &Suite) -> anyhow::Result<Operation> {
    use backroom_proto::inventory::v1::{
        GetProductRequest, inventory_service_client::InventoryServiceClient,
    };
    let (sku, token) = product_and_reader(suite).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        channels(&target.endpoint, target.connections)
            .await?
            .into_iter()
            .map(InventoryServiceClient::new)
            .collect(),
    );
    let (name, token) = (Arc::new(format!("products/{sku}")), Arc::new(token));
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        let request = fixtures::authed(
            &token,
            GetProductRequest {
                name: name.to_string(),
            },
        );
        Box::pin(async move {
            rec.call("InventoryService/GetProduct", client.get_product(request))
                .await;
            rec
        })
    }))
}

/// GetProduct through the REST route (`GET /v1/products/{sku}`, JSON) on the
/// same port, over as many HTTP/2 connections as the gRPC scenario uses: the
/// JSON path's cost per call is the difference of the two.
async fn get_product_json(target: &Target, suite: &Suite) -> anyhow::Result<Operation> {
    let (sku, token) = product_and_reader(suite).await?;
    let clients: Arc<Vec<reqwest::Client>> = Arc::new(
        (0..target.connections.max(1))
            .map(|_| {
                reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .tcp_nodelay(true)
                    .build()
            })
            .collect::<Result<_, _>>()?,
    );
    let url = Arc::new(format!("{}/v1/products/{sku}", target.endpoint));
    let bearer = Arc::new(format!("Bearer {token}"));
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let client = clients[i % clients.len()].clone();
        let request = client
            .get(url.as_str())
            .header("authorization", bearer.as_str());
        Box::pin(async move {
            rec.call("GET /v1/products/{sku} (JSON)", async move {
                let response = request
                    .send()
                    .await
                    .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
                let status = response.status();
                let body = response
                    .bytes()
                    .await
                    .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
                if status.is_success() {
                    return Ok(body);
                }
                // The gateway's error body carries the gRPC code.
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|json| json["code"].as_i64())
                    .and_then(|code| i32::try_from(code).ok())
                    .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
                Err(tonic::Status::new(code, format!("HTTP {status}")))
            })
            .await;
            rec
        })
    }))
}

async fn place_order(target: &Target, suite: &Suite) -> anyhow::Result<Operation> {
    use backroom_proto::payment::v1::{
        LineItem, PlaceOrderRequest, checkout_service_client::CheckoutServiceClient,
    };
    let admin = fixtures::admin_token(suite).await?;
    let sku = format!("ORD-{}", run_tag());
    fixtures::product(suite, &admin, &sku, 10_000_000).await?;
    let tag = run_tag().to_lowercase();
    let mut shoppers = Vec::new();
    for n in 0..8 {
        shoppers.push(fixtures::shopper(suite, &format!("order-{tag}-{n}@example.com")).await?);
    }
    let shoppers = Arc::new(shoppers);
    let clients: Arc<Vec<_>> = Arc::new(
        channels(&target.endpoint, target.connections)
            .await?
            .into_iter()
            .map(CheckoutServiceClient::new)
            .collect(),
    );
    let sku = Arc::new(sku);
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        let shopper = &shoppers[i % shoppers.len()];
        let request = fixtures::authed(
            &shopper.token,
            PlaceOrderRequest {
                customer: "accounts/me".into(),
                lines: vec![LineItem {
                    sku: sku.to_string(),
                    quantity: 1,
                }],
                payment_method: shopper.card.clone(),
                shipping_address: shopper.address.clone(),
                currency_code: "EUR".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        );
        Box::pin(async move {
            let order = rec
                .call("CheckoutService/PlaceOrder", client.place_order(request))
                .await;
            // An order that is not COMPLETED is a failed operation, whatever
            // the RPC status said.
            if let Some(order) = order
                && order.into_inner().state
                    != backroom_proto::payment::v1::OrderState::Completed as i32
            {
                rec.note(
                    "PlaceOrder not completed",
                    Instant::now(),
                    Err(tonic::Code::Aborted),
                );
            }
            rec
        })
    }))
}

/// Result of a one-shot race: how many of `attempts` succeeded, how long it
/// took, and per-call failures by code.
#[derive(Debug, Clone)]
pub struct Race {
    /// Successful reservations.
    pub successes: usize,
    /// Everyone who tried.
    pub attempts: usize,
    /// Wall time of the whole race.
    pub elapsed: std::time::Duration,
    /// Failures that were not the expected shortage.
    pub unexpected: Vec<String>,
}

impl Race {
    /// Attempts per second.
    pub fn rate(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// `attempts` concurrent single-unit ReserveStock calls (as the payment
/// service principal) on a fresh SKU with `units` in stock.
pub async fn reserve_race(
    suite: &Suite,
    connections: usize,
    attempts: usize,
    units: i64,
) -> anyhow::Result<Race> {
    use backroom_proto::inventory::v1::{
        ReservationLine, ReserveStockRequest, inventory_service_client::InventoryServiceClient,
    };
    let admin = fixtures::admin_token(suite).await?;
    let sku = format!("RACE-{}", run_tag());
    fixtures::product(suite, &admin, &sku, units).await?;
    let token = fixtures::service_token(suite, "backroom.inventory").await?;
    let clients: Vec<_> = channels(&suite.inventory, connections)
        .await?
        .into_iter()
        .map(InventoryServiceClient::new)
        .collect();
    let started = Instant::now();
    let calls = (0..attempts).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        let request = fixtures::authed(
            &token,
            ReserveStockRequest {
                order_id: uuid::Uuid::now_v7().to_string(),
                lines: vec![ReservationLine {
                    sku: sku.clone(),
                    quantity: 1,
                    ..Default::default()
                }],
                ttl: Some(prost_types::Duration {
                    seconds: 900,
                    nanos: 0,
                }),
                request_id: String::new(),
                ..Default::default()
            },
        );
        async move { client.reserve_stock(request).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let elapsed = started.elapsed();
    let successes = results.iter().filter(|r| r.is_ok()).count();
    let unexpected = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| backroom_shared::errors::reason_of(s).as_deref() != Some("INSUFFICIENT_STOCK"))
        .map(|s| format!("{:?}: {}", s.code(), s.message()))
        .collect();
    Ok(Race {
        successes,
        attempts,
        elapsed,
        unexpected,
    })
}

/// The limit of [`reserve_race`]: the same race as raw conditional UPDATEs
/// through diesel + r2d2 on the blocking pool, no RPC, no auth, no log.
pub async fn raw_update_race(
    database_url: &str,
    attempts: usize,
    units: i64,
) -> anyhow::Result<Race> {
    use diesel::{RunQueryDsl as _, connection::SimpleConnection as _, sql_query, sql_types::Text};
    let sku = format!("RAW-{}", run_tag());
    let pool = diesel::r2d2::Pool::builder()
        .max_size(10)
        .test_on_check_out(false)
        .build(diesel::r2d2::ConnectionManager::<diesel::PgConnection>::new(database_url))?;
    {
        let pool = pool.clone();
        let sku = sku.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut conn = pool.get()?;
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS bench_stock (sku text PRIMARY KEY, available bigint NOT NULL CHECK (available >= 0))",
            )?;
            sql_query("INSERT INTO bench_stock VALUES ($1, $2)")
                .bind::<Text, _>(sku)
                .bind::<diesel::sql_types::BigInt, _>(units)
                .execute(&mut conn)?;
            Ok(())
        })
        .await??;
    }
    let started = Instant::now();
    let calls = (0..attempts).map(|_| {
        let pool = pool.clone();
        let sku = sku.clone();
        tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let mut conn = pool.get().map_err(|e| e.to_string())?;
            sql_query("UPDATE bench_stock SET available = available - 1 WHERE sku = $1 AND available >= 1")
                .bind::<Text, _>(sku)
                .execute(&mut conn)
                .map(|rows| rows == 1)
                .map_err(|e| e.to_string())
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let elapsed = started.elapsed();
    let mut successes = 0;
    let mut unexpected = Vec::new();
    for result in results {
        match result {
            Ok(Ok(true)) => successes += 1,
            Ok(Ok(false)) => {}
            Ok(Err(err)) => unexpected.push(err),
            Err(join) => unexpected.push(join.to_string()),
        }
    }
    Ok(Race {
        successes,
        attempts,
        elapsed,
        unexpected,
    })
}

async fn echo(target: &Target, point_read: bool) -> anyhow::Result<Operation> {
    let clients: Arc<Vec<EchoServiceClient<Channel>>> = Arc::new(
        channels(&target.endpoint, target.connections)
            .await?
            .into_iter()
            .map(EchoServiceClient::new)
            .collect(),
    );
    let rpc = if point_read {
        "PkSelect/Echo"
    } else {
        "EchoService/Echo"
    };
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        Box::pin(async move {
            let message = if point_read {
                (1 + (i as i64 * 7919) % PK_ROWS).to_string()
            } else {
                "ping".to_owned()
            };
            rec.call(
                rpc,
                client.echo(EchoRequest {
                    message,
                    delay: None,
                }),
            )
            .await;
            rec
        })
    }))
}

/// Registers `count` users `loadgen-<run>-<n>@example.com` (password
/// `loadgen password <n>`), returning their emails.
pub async fn register_users(
    client: &mut AccountServiceClient<Channel>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut emails = Vec::with_capacity(count);
    for n in 0..count {
        let email = format!("loadgen-{}-{n}@example.com", &run[..8]);
        client
            .register(RegisterRequest {
                email: email.clone(),
                password: format!("loadgen password {n}"),
                display_name: format!("Load {n}"),
                request_id: String::new(),
            })
            .await?;
        emails.push(email);
    }
    Ok(emails)
}

async fn login(target: &Target) -> anyhow::Result<Operation> {
    let channels = channels(&target.endpoint, target.connections).await?;
    let mut admin = AccountServiceClient::new(channels[0].clone());
    let users = Arc::new(register_users(&mut admin, target.concurrency.clamp(1, 200)).await?);
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(AccountServiceClient::new)
            .collect(),
    );
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        let n = i % users.len();
        let email = users[n].clone();
        Box::pin(async move {
            rec.call(
                "AccountService/Login",
                client.login(LoginRequest {
                    email,
                    password: format!("loadgen password {n}"),
                }),
            )
            .await;
            rec
        })
    }))
}

/// The raw hash rate the login path is bounded by: the same parameters, the
/// same bound of one hash per core, no RPC and no database.
fn raw_argon2id() -> Operation {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(cores));
    Arc::new(move |i, mut rec: Recorder| {
        let permits = permits.clone();
        Box::pin(async move {
            let started = Instant::now();
            let outcome = match permits.acquire_owned().await {
                Ok(_permit) => tokio::task::spawn_blocking(move || {
                    // Constant, valid parameters.
                    let params = Params::new(19_456, 2, 1, None).expect("valid Argon2 parameters");
                    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                        .hash_password(format!("loadgen password {i}").as_bytes())
                        .map(|_| ())
                })
                .await
                .map_err(|_| tonic::Code::Internal)
                .and_then(|hashed| hashed.map_err(|_| tonic::Code::Internal)),
                Err(_) => Err(tonic::Code::Internal),
            };
            rec.note("raw-argon2id", started, outcome);
            rec
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            endpoint: "http://127.0.0.1:1".into(),
            connections: 1,
            concurrency: 1,
        }
    }

    #[tokio::test]
    async fn unknown_scenarios_are_refused_with_the_known_names() {
        let Err(err) = setup("browse-everything", &target(), None).await else {
            panic!("an unknown scenario was accepted");
        };
        let message = err.to_string();
        for name in NAMES {
            assert!(message.contains(name), "{message}");
        }
    }

    #[tokio::test]
    async fn scenarios_that_need_fixtures_say_so_without_a_suite() {
        for name in ["get-product", "place-order"] {
            let Err(err) = setup(name, &target(), None).await else {
                panic!("{name} ran without fixtures");
            };
            assert!(err.to_string().contains("--admin-password"), "{err}");
        }
    }

    #[test]
    fn a_race_reports_attempts_per_second() {
        let race = Race {
            successes: 100,
            attempts: 200,
            elapsed: std::time::Duration::from_millis(500),
            unexpected: Vec::new(),
        };
        assert!((race.rate() - 400.0).abs() < 1e-9);
    }
}
