//! `TestApp`: a real inventory server on 127.0.0.1:0 with its own database,
//! a manual clock, tokens minted by the account service's issuer, and a
//! connected generated client. [`Options`] changes the pool, the server
//! config, the inventory config or the verifier for one test.

use std::{sync::Arc, time::Duration};

use backroom_account::domain::tokens::{SigningKeys, TokenIssuer};
use backroom_inventory::{Deps, InventoryConfig, MIGRATIONS, SERVICE, server};
use backroom_proto::{
    common::v1::Money,
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};
use backroom_shared::{
    auth::{Verifier, audience},
    client::TracedChannel,
    clock::ManualClock,
    config::ServerConfig,
    db::Pool,
    testing::{TestDb, TestServer},
};
use tonic::Request;

pub struct TestApp {
    pub server: TestServer,
    pub client: InventoryServiceClient<TracedChannel>,
    pub clock: ManualClock,
    pub pool: Pool,
    pub db: TestDb,
    pub deps: Deps,
    issuer: TokenIssuer,
    pub admin: String,
    pub customer: String,
    pub service: String,
}

/// What [`TestApp::spawn_with`] changes; the defaults are [`TestApp::spawn`]'s.
pub struct Options {
    /// Pooled connections.
    pub pool_size: u32,
    /// Wait for a pooled connection before UNAVAILABLE.
    pub checkout_timeout_ms: u64,
    /// The gRPC server's settings.
    pub server: ServerConfig,
    /// Inventory settings.
    pub config: InventoryConfig,
    /// The verifier; `None`: one with the test issuer's keys and no
    /// revocation list. Tokens minted by [`TestApp`] verify only with that
    /// one.
    pub verifier: Option<Arc<Verifier>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // The concurrency tests put ~200 calls in flight: wait for a
            // connection rather than answer UNAVAILABLE.
            pool_size: 8,
            checkout_timeout_ms: 20_000,
            server: ServerConfig::without_client_limits(),
            config: InventoryConfig {
                // Tests sweep by hand with the manual clock.
                reservation_sweep_interval_ms: 0,
                watch_poll_interval_ms: 20,
                ..InventoryConfig::default()
            },
            verifier: None,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let db = TestDb::with_services([(SERVICE, MIGRATIONS)]).await;
        let mut db_config = db.service_config(SERVICE, MIGRATIONS).await;
        db_config.pool_size = options.pool_size;
        db_config.pool_min_idle = db_config.pool_min_idle.min(options.pool_size);
        db_config.checkout_timeout_ms = options.checkout_timeout_ms;
        let pool = Pool::new(&db_config, SERVICE);
        let keys = SigningKeys::from_pem(&SigningKeys::generate_pem()).expect("keys");
        let verifier = options.verifier.unwrap_or_else(|| {
            Arc::new(Verifier::with_keys(
                "backroom",
                audience::INVENTORY,
                &keys.public_keys(),
            ))
        });
        let issuer = TokenIssuer::new(keys, "backroom", chrono::Duration::minutes(15));
        let clock = ManualClock::new();
        let deps = Deps::new(
            &options.config,
            pool.clone(),
            Arc::new(clock.clone()),
            verifier,
        );
        let server = TestServer::spawn(server(options.server, deps.clone())).await;
        let client = InventoryServiceClient::new(server.channel.clone());
        let token = |sub: String, roles: &[&str]| {
            issuer
                .issue(
                    sub,
                    roles.iter().map(|r| (*r).to_owned()).collect(),
                    vec![audience::INVENTORY.to_owned()],
                    chrono::Utc::now(),
                )
                .expect("token")
                .0
        };
        let admin = token(account(), &["customer", "admin"]);
        let customer = token(account(), &["customer"]);
        let service = token("services/payment".into(), &["service"]);
        Self {
            server,
            client,
            clock,
            pool,
            db,
            deps,
            issuer,
            admin,
            customer,
            service,
        }
    }

    pub fn client(&self) -> InventoryServiceClient<TracedChannel> {
        self.client.clone()
    }

    /// A customer token of a new principal (a fresh account id).
    pub fn new_customer(&self) -> String {
        self.customer_token_issued_at(chrono::Utc::now()).0
    }

    /// A customer token of a new principal whose `exp` plus the
    /// verification leeway (`LEEWAY_SECS`) comes about `refused_in` from
    /// now, and that moment (whole seconds, as in the token): from then on
    /// the token no longer counts. Issued in the past, so that the issuer's
    /// usual lifetime ends there.
    pub fn customer_token_refused_in(
        &self,
        refused_in: Duration,
    ) -> (String, chrono::DateTime<chrono::Utc>) {
        let lifetime = chrono::Duration::minutes(15);
        let leeway = chrono::Duration::seconds(
            i64::try_from(backroom_shared::auth::LEEWAY_SECS).expect("leeway fits"),
        );
        let refused_in = chrono::Duration::from_std(refused_in).expect("short duration");
        let (token, expires) =
            self.customer_token_issued_at(chrono::Utc::now() - lifetime - leeway + refused_in);
        let exp = chrono::DateTime::from_timestamp(expires.timestamp(), 0).expect("a timestamp");
        (token, exp + leeway)
    }

    fn customer_token_issued_at(
        &self,
        issued_at: chrono::DateTime<chrono::Utc>,
    ) -> (String, chrono::DateTime<chrono::Utc>) {
        self.issuer
            .issue(
                account(),
                vec!["customer".into()],
                vec![audience::INVENTORY.to_owned()],
                issued_at,
            )
            .expect("token")
    }

    /// A token for another audience (refused by this service).
    pub fn token_for(&self, aud: &str) -> String {
        self.issuer
            .issue(
                account(),
                vec!["customer".into(), "admin".into()],
                vec![aud.to_owned()],
                chrono::Utc::now(),
            )
            .expect("token")
            .0
    }

    /// Creates an active product priced `price` EUR cents, `weight` grams.
    pub async fn product(&self, sku: &str, price: i64, weight: i64) -> pb::Product {
        self.client()
            .create_product(authed(
                &self.admin,
                pb::CreateProductRequest {
                    product: Some(product(sku, "EUR", price, weight)),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("create product")
            .into_inner()
    }

    /// Creates the level `sku@location` with `units` available.
    pub async fn stock(&self, sku: &str, location: &str, units: i64) -> pb::StockLevel {
        self.adjust(sku, location, units, 0)
            .await
            .expect("create stock level")
    }

    pub async fn adjust(
        &self,
        sku: &str,
        location: &str,
        delta: i64,
        expected_version: i64,
    ) -> Result<pb::StockLevel, tonic::Status> {
        self.client()
            .adjust_stock(authed(
                &self.admin,
                pb::AdjustStockRequest {
                    name: format!("products/{sku}/stockLevels/{location}"),
                    delta,
                    reason: pb::StockAdjustmentReason::CycleCount as i32,
                    note: String::new(),
                    expected_version,
                    request_id: String::new(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn level(&self, sku: &str, location: &str) -> pb::StockLevel {
        self.client()
            .get_stock_level(authed(
                &self.customer,
                pb::GetStockLevelRequest {
                    name: format!("products/{sku}/stockLevels/{location}"),
                },
            ))
            .await
            .expect("get stock level")
            .into_inner()
    }

    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[(&str, i64)],
    ) -> Result<pb::Reservation, tonic::Status> {
        self.client()
            .reserve_stock(authed(&self.service, reserve_request(order_id, lines)))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn commit(&self, order_id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client()
            .commit_reservation(authed(
                &self.service,
                pb::CommitReservationRequest {
                    name: format!("reservations/{order_id}"),
                    request_id: String::new(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn release(&self, order_id: &str) -> Result<pb::Reservation, tonic::Status> {
        self.client()
            .release_reservation(authed(
                &self.service,
                pb::ReleaseReservationRequest {
                    name: format!("reservations/{order_id}"),
                    request_id: String::new(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every movement of every level, oldest first (all pages).
    pub async fn movements(&self, parent: &str) -> Vec<pb::StockMovement> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .list_stock_movements(authed(
                    &self.admin,
                    pb::ListStockMovementsRequest {
                        parent: parent.into(),
                        page_size: 100,
                        page_token,
                        reservation: String::new(),
                    },
                ))
                .await
                .expect("list movements")
                .into_inner();
            all.extend(page.stock_movements);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// Every stock level (all pages).
    pub async fn levels(&self) -> Vec<pb::StockLevel> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .list_stock_levels(authed(
                    &self.customer,
                    pb::ListStockLevelsRequest {
                        parent: "products/-".into(),
                        page_size: 100,
                        page_token,
                        location: String::new(),
                    },
                ))
                .await
                .expect("list levels")
                .into_inner();
            all.extend(page.stock_levels);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }
}

/// (on_hand, available, reserved, committed) of `sku@location`.
pub async fn units(app: &TestApp, sku: &str, location: &str) -> (i64, i64, i64, i64) {
    let l = app.level(sku, location).await;
    (l.on_hand, l.available, l.reserved, l.committed)
}

fn account() -> String {
    format!("accounts/{}", uuid::Uuid::now_v7())
}

pub fn order_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn product(sku: &str, currency: &str, price: i64, weight: i64) -> pb::Product {
    pb::Product {
        sku: sku.into(),
        display_name: format!("Product {sku}"),
        description: format!("The description of {sku}"),
        unit_price: Some(Money {
            currency_code: currency.into(),
            amount_minor: price,
        }),
        weight_grams: weight,
        active: true,
        ..Default::default()
    }
}

pub fn reserve_request(order_id: &str, lines: &[(&str, i64)]) -> pb::ReserveStockRequest {
    pb::ReserveStockRequest {
        order_id: order_id.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::ReservationLine {
                sku: (*sku).into(),
                quantity: *quantity,
                ..Default::default()
            })
            .collect(),
        ttl: None,
        request_id: String::new(),
        ..Default::default()
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    backroom_shared::errors::reason_of(status).unwrap_or_default()
}

/// ErrorInfo metadata of a status.
pub fn metadata(status: &tonic::Status, key: &str) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get(key).cloned())
        .unwrap_or_default()
}

/// The fields named by a status's BadRequest.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    backroom_shared::errors::violated_fields(status)
}

/// Asserts `result` failed with `code` and `reason`.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    expected_reason: &str,
) -> tonic::Status {
    let status = result.expect_err("expected an error");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (code, expected_reason),
        "{status:?}"
    );
    status
}
