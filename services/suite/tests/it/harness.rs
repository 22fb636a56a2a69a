//! `Suite`: the three real services on 127.0.0.1:0 — account, inventory and
//! payment with checkout — sharing one Postgres database (a schema and role
//! each, as in production), tokens verified through the account JWKS, and
//! connected generated clients. The three-service tests of this binary
//! share it; loadgen's tests drive the service binaries as processes
//! instead (`backroom_loadgen::stack`), so it stays here.
//!
//! Over 600 lines: the one fixture every three-service test builds on
//! (servers, clients, tokens, customers, and the audit after each test).

use std::{sync::Arc, time::Duration};

use backroom_account::{AccountConfig, domain::tokens::SigningKeys};
use backroom_payment::{
    CheckoutConfig, CheckoutDeps, PaymentConfig,
    checkout::saga::{Downstream, Saga, SagaConfig},
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
use backroom_shared::{
    auth::{Verifier, audience},
    client::{ClientConfig, TracedChannel, channel},
    clock::{self, ManualClock},
    config::{AuthConfig, Secret, ServerConfig},
    db::{DbError, Pool},
    events::{Events, EventsConfig},
    service::Shutdown,
    store::Store,
    testing::{TestDb, TestServer},
};
use tonic::Request;

pub const ADMIN_EMAIL: &str = "admin@backroom.test";
pub const ADMIN_PASSWORD: &str = "admin password 123";
pub const PASSWORD: &str = "correct horse battery";
pub const VISA: &str = "4242424242424242";
/// The payment principal's client secret (at least 32 characters).
pub const PAYMENT_CLIENT_SECRET: &str = "payment-secret-0123456789abcdefghij";
/// The secret of `warehouse`, a service principal with role fulfillment.
const WAREHOUSE_CLIENT_SECRET: &str = "warehouse-secret-0123456789abcdefghij";
pub const DECLINE: &str = "4000000000000002";
/// CheckoutService's concurrency limit in the suite: the 100 orders of the
/// race test all get in (2 × 100 + 2 ≤ the server's default limit of 256).
pub const RACE_ORDERS: usize = 100;

pub struct Suite {
    pub clock: ManualClock,
    pub account: TestServer,
    pub inventory: tokio::sync::Mutex<Option<TestServer>>,
    pub payment: TestServer,
    pub accounts: AccountServiceClient<TracedChannel>,
    pub stock: InventoryServiceClient<TracedChannel>,
    pub payments: PaymentServiceClient<TracedChannel>,
    pub checkout: CheckoutServiceClient<TracedChannel>,
    pub payment_pool: Pool,
    pub inventory_pool: Pool,
    pub saga: Saga,
    /// The payment service's dependencies (its sweeper, its clock).
    pub payment_deps: backroom_payment::Deps,
    pub admin: String,
    /// A token of `warehouse`, a service principal with role fulfillment
    /// (BACKROOM_SERVICE_CLIENT_ROLES), from IssueServiceToken.
    pub warehouse: String,
    /// The account service's signing keys (PEM), for forging test tokens.
    pub keys_pem: String,
    /// Superuser URL of the database holding the three schemas (audits).
    pub admin_url: String,
    downstream: Downstream,
    payment_store: Store,
}

/// A registered customer with an address and a card.
#[derive(Debug, Clone)]
pub struct Customer {
    pub name: String,
    pub token: String,
    pub address: String,
    pub card: String,
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

impl Suite {
    /// The suite with a saga that never runs its background recovery on its
    /// own (tests call `recover_due` when they mean to).
    pub async fn spawn() -> Self {
        Self::spawn_with(SagaConfig {
            recovery_interval: Duration::from_secs(3600),
            ..SagaConfig::default()
        })
        .await
    }

    pub async fn spawn_with(saga_config: SagaConfig) -> Self {
        Self::spawn_configured(saga_config, |_| {}).await
    }

    /// The suite with `saga_config` and the payment configuration changed by
    /// `configure`.
    pub async fn spawn_configured(
        saga_config: SagaConfig,
        configure: impl FnOnce(&mut PaymentConfig),
    ) -> Self {
        Self::spawn_limited(
            saga_config,
            configure,
            ServerConfig::without_client_limits(),
            RACE_ORDERS,
        )
        .await
    }

    /// The suite with the payment server configured by `server` (its
    /// concurrency limit) and CheckoutService limited to
    /// `checkout_limit` calls in flight.
    pub async fn spawn_limited(
        saga_config: SagaConfig,
        configure: impl FnOnce(&mut PaymentConfig),
        server: ServerConfig,
        checkout_limit: usize,
    ) -> Self {
        Self::spawn_full(
            saga_config,
            configure,
            server,
            checkout_limit,
            EventsConfig::default(),
            &[],
        )
        .await
    }

    /// The suite with every server allowing browsers from `origins` (CORS).
    pub async fn spawn_with_cors(origins: &[String]) -> Self {
        Self::spawn_full(
            SagaConfig {
                recovery_interval: Duration::from_secs(3600),
                ..SagaConfig::default()
            },
            |_| {},
            ServerConfig::without_client_limits(),
            RACE_ORDERS,
            EventsConfig::default(),
            origins,
        )
        .await
    }

    /// The suite with every service's events configured by `events` (a
    /// NATS relay, webhook hosts).
    pub async fn spawn_with_events(events: EventsConfig) -> Self {
        Self::spawn_full(
            SagaConfig {
                recovery_interval: Duration::from_secs(3600),
                ..SagaConfig::default()
            },
            |_| {},
            ServerConfig::without_client_limits(),
            RACE_ORDERS,
            events,
            &[],
        )
        .await
    }

    async fn spawn_full(
        saga_config: SagaConfig,
        configure: impl FnOnce(&mut PaymentConfig),
        server: ServerConfig,
        checkout_limit: usize,
        events: EventsConfig,
        cors: &[String],
    ) -> Self {
        let server = ServerConfig {
            cors_allowed_origins: cors.to_vec(),
            ..server
        };
        let others = ServerConfig {
            cors_allowed_origins: cors.to_vec(),
            ..ServerConfig::without_client_limits()
        };
        let configured = |current: &Events| {
            Events::new(current.pool().clone(), current.source(), events.clone())
        };
        // The three schemas, cloned from one per-process template.
        let db = TestDb::with_services([
            (backroom_account::SERVICE, backroom_account::MIGRATIONS),
            (backroom_inventory::SERVICE, backroom_inventory::MIGRATIONS),
            (backroom_payment::SERVICE, backroom_payment::MIGRATIONS),
        ])
        .await;
        let clock = ManualClock::new();
        let shared_clock: clock::SharedClock = Arc::new(clock.clone());

        // Account: the token issuer; its JWKS verifies everyone's tokens.
        let account_db = db
            .service_config(backroom_account::SERVICE, backroom_account::MIGRATIONS)
            .await;
        let keys_pem = SigningKeys::generate_pem();
        let mut account_config = AccountConfig::with_keys(keys_pem.clone());
        account_config.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
        account_config.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD));
        account_config.service_clients = Some(Secret::new(format!(
            "payment:{PAYMENT_CLIENT_SECRET},warehouse:{WAREHOUSE_CLIENT_SECRET}"
        )));
        account_config.service_client_audiences = Some(
            "payment=backroom.account|backroom.inventory|backroom.payment,warehouse=backroom.payment"
                .into(),
        );
        account_config.service_client_roles = Some("warehouse=fulfillment".into());
        let mut account_deps = backroom_account::Deps::new(
            &AuthConfig::default(),
            &account_config,
            Pool::new(&account_db, backroom_account::SERVICE),
            clock::system(),
        )
        .await
        .unwrap();
        account_deps.events = configured(&account_deps.events);
        backroom_account::bootstrap_admin(&account_deps, &account_config)
            .await
            .unwrap();
        let account =
            TestServer::spawn(backroom_account::server(others.clone(), account_deps)).await;
        let auth = AuthConfig {
            account_endpoint: account.endpoint(),
            ..AuthConfig::default()
        };
        let jwks = |aud: &str| {
            Arc::new(Verifier::from_account_service(
                &auth.jwt_issuer,
                aud,
                channel(&ClientConfig::new(auth.account_endpoint.clone())).unwrap(),
            ))
        };

        // Inventory.
        let mut inventory_db = db
            .service_config(backroom_inventory::SERVICE, backroom_inventory::MIGRATIONS)
            .await;
        inventory_db.pool_size = 8;
        inventory_db.checkout_timeout_ms = 20_000;
        let inventory_pool = Pool::new(&inventory_db, backroom_inventory::SERVICE);
        let mut inventory_deps = backroom_inventory::Deps::new(
            &backroom_inventory::InventoryConfig::default(),
            inventory_pool.clone(),
            shared_clock.clone(),
            jwks(audience::INVENTORY),
        );
        inventory_deps.events = configured(&inventory_deps.events);
        let inventory = TestServer::spawn(backroom_inventory::server(others, inventory_deps)).await;

        // Payment with checkout, which calls its own API over loopback.
        let mut payment_db = db
            .service_config(backroom_payment::SERVICE, backroom_payment::MIGRATIONS)
            .await;
        payment_db.pool_size = 8;
        payment_db.checkout_timeout_ms = 20_000;
        let payment_pool = Pool::new(&payment_db, backroom_payment::SERVICE);
        let mut payment_config = PaymentConfig::new(
            backroom_payment::processor::ProcessorChoice::Simulator,
            "test-fingerprint-key-0123456789abcdef",
        );
        payment_config.service_client_id = Some("payment".into());
        payment_config.service_client_secret = Some(Secret::new(PAYMENT_CLIENT_SECRET));
        configure(&mut payment_config);
        let checkout_config = CheckoutConfig {
            checkout_concurrency_limit: Some(checkout_limit),
            ..CheckoutConfig::new(inventory.endpoint())
        };
        let mut payment_deps = backroom_payment::Deps::with(
            &payment_config,
            payment_pool.clone(),
            shared_clock.clone(),
            jwks(audience::PAYMENT),
            Arc::new(backroom_payment::processor::Simulator::new()),
        )
        .unwrap();
        payment_deps.events = configured(&payment_deps.events);
        let listener = TestServer::bind().await;
        let self_endpoint = format!("http://{}", listener.local_addr().unwrap());
        let checkout = CheckoutDeps::new(
            &auth,
            &payment_config,
            &checkout_config,
            &server,
            &payment_deps,
            &self_endpoint,
            saga_config,
        )
        .unwrap();
        let saga = checkout.saga.clone();
        let payment = TestServer::spawn_on(
            listener,
            backroom_payment::server_with_checkout(
                server,
                payment_deps.clone(),
                checkout,
                Shutdown::default(),
            ),
        )
        .await;

        let accounts = AccountServiceClient::new(account.channel.clone());
        let admin = accounts
            .clone()
            .login(account_pb::LoginRequest {
                email: ADMIN_EMAIL.into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let warehouse = accounts
            .clone()
            .issue_service_token(account_pb::IssueServiceTokenRequest {
                client_id: "warehouse".into(),
                client_secret: WAREHOUSE_CLIENT_SECRET.into(),
                audience: audience::PAYMENT.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let downstream = Downstream {
            account: AccountServiceClient::new(
                channel(&ClientConfig::new(account.endpoint())).unwrap(),
            ),
            inventory: InventoryServiceClient::new(
                channel(&ClientConfig::new(inventory.endpoint())).unwrap(),
            ),
            payment: PaymentServiceClient::new(
                channel(&ClientConfig::new(payment.endpoint())).unwrap(),
            ),
            credentials: Arc::new(backroom_shared::auth::ServiceCredentials::new(
                "payment",
                Secret::new(PAYMENT_CLIENT_SECRET),
                channel(&ClientConfig::new(account.endpoint())).unwrap(),
            )),
        };
        let stock = InventoryServiceClient::new(inventory.channel.clone());
        Self {
            clock,
            stock,
            payments: PaymentServiceClient::new(payment.channel.clone()),
            checkout: CheckoutServiceClient::new(payment.channel.clone()),
            accounts,
            account,
            inventory: tokio::sync::Mutex::new(Some(inventory)),
            payment,
            payment_store: payment_deps.store.clone(),
            payment_pool,
            inventory_pool,
            saga,
            payment_deps,
            admin,
            warehouse,
            keys_pem,
            admin_url: db.admin_url(),
            downstream,
        }
    }

    /// A valid token of the service principal `client_id` (role service)
    /// for `audience`, signed with the account service's key: `payment` is
    /// the checkout saga's own principal, any other id another service.
    pub fn service_token(&self, client_id: &str, audience: &str) -> String {
        let keys = SigningKeys::from_pem(&self.keys_pem).unwrap();
        backroom_account::domain::tokens::TokenIssuer::new(
            keys,
            "backroom",
            chrono::Duration::minutes(15),
        )
        .issue(
            format!("services/{client_id}"),
            vec!["service".to_owned()],
            vec![audience.to_owned()],
            chrono::Utc::now(),
        )
        .unwrap()
        .0
    }

    /// Stops the inventory service (a dependency outage).
    pub async fn inventory_shutdown(&self) {
        if let Some(server) = self.inventory.lock().await.take() {
            server.shutdown().await.unwrap();
        }
    }

    /// A second saga worker, as a restarted payment process would have.
    pub fn restarted_saga(&self) -> Saga {
        Saga::new(
            self.payment_store.clone(),
            self.downstream.clone(),
            // As configured, with the margin CheckoutDeps derived.
            self.saga.config().clone(),
        )
    }

    /// A saga worker with `config` whose PaymentService calls go to
    /// `payment_endpoint` (a dead address: the payment API failing under the
    /// saga, as in an outage of its own service).
    pub fn saga_with(&self, config: SagaConfig, payment_endpoint: &str) -> Saga {
        let mut downstream = self.downstream.clone();
        downstream.payment = PaymentServiceClient::new(
            channel(&ClientConfig::new(payment_endpoint.to_owned())).unwrap(),
        );
        Saga::new(self.payment_store.clone(), downstream, config)
    }

    /// A product with `units` in stock at location "main".
    pub async fn product(&self, sku: &str, price_minor: i64, units: i64) {
        self.stock
            .clone()
            .create_product(authed(
                &self.admin,
                inventory_pb::CreateProductRequest {
                    product: Some(inventory_pb::Product {
                        sku: sku.into(),
                        display_name: format!("Product {sku}"),
                        unit_price: eur(price_minor),
                        weight_grams: 300,
                        active: true,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
        if units > 0 {
            self.stock
                .clone()
                .adjust_stock(authed(
                    &self.admin,
                    inventory_pb::AdjustStockRequest {
                        name: format!("products/{sku}/stockLevels/main"),
                        delta: units,
                        reason: inventory_pb::StockAdjustmentReason::Received as i32,
                        expected_version: 0,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
    }

    /// The stock level of `sku` at "main".
    pub async fn level(&self, sku: &str) -> inventory_pb::StockLevel {
        self.stock
            .clone()
            .get_stock_level(authed(
                &self.admin,
                inventory_pb::GetStockLevelRequest {
                    name: format!("products/{sku}/stockLevels/main"),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Registers a customer with a German address and a card `number`.
    pub async fn customer(&self, email: &str, number: &str) -> Customer {
        let mut accounts = self.accounts.clone();
        let account = accounts
            .register(account_pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: "Customer".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let token = accounts
            .login(account_pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let address = accounts
            .create_address(authed(
                &token,
                account_pb::CreateAddressRequest {
                    parent: "accounts/me".into(),
                    address: Some(account_pb::Address {
                        recipient: "Ada Lovelace".into(),
                        line1: "Unter den Linden 1".into(),
                        city: "Berlin".into(),
                        postal_code: "10117".into(),
                        country_code: "DE".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name;
        let card = self.card(&token, number).await;
        Customer {
            name: account.name,
            token,
            address,
            card,
        }
    }

    /// Attaches another card for a customer.
    pub async fn card(&self, token: &str, number: &str) -> String {
        self.payments
            .clone()
            .attach_payment_method(authed(
                token,
                pb::AttachPaymentMethodRequest {
                    customer: "accounts/me".into(),
                    card: Some(pb::Card {
                        number: number.into(),
                        exp_month: 12,
                        exp_year: 2099,
                        cvc: "123".into(),
                        holder_name: "Ada Lovelace".into(),
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name
    }

    /// PlaceOrder for `customer` with `lines`.
    pub async fn place(
        &self,
        customer: &Customer,
        card: &str,
        lines: &[(&str, i64)],
        request_id: &str,
    ) -> Result<pb::Order, tonic::Status> {
        self.checkout
            .clone()
            .place_order(authed(
                &customer.token,
                pb::PlaceOrderRequest {
                    customer: "accounts/me".into(),
                    lines: lines
                        .iter()
                        .map(|(sku, quantity)| pb::LineItem {
                            sku: (*sku).into(),
                            quantity: *quantity,
                        })
                        .collect(),
                    payment_method: card.into(),
                    shipping_address: customer.address.clone(),
                    currency_code: "EUR".into(),
                    request_id: request_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The payment intent of an order.
    pub async fn intent(&self, order: &pb::Order) -> pb::PaymentIntent {
        self.payments
            .clone()
            .get_payment_intent(authed(
                &self.admin,
                pb::GetPaymentIntentRequest {
                    name: order.payment_intent.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// The order as stored now.
    pub async fn order(&self, name: &str) -> pb::Order {
        self.checkout
            .clone()
            .get_order(authed(
                &self.admin,
                pb::GetOrderRequest { name: name.into() },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Every invariant of the payment schema holds (ledger, intents).
    pub async fn audit(&self) {
        let problems = self
            .payment_pool
            .run(backroom_payment::db::repo::ledger::audit)
            .await
            .unwrap();
        assert!(problems.is_empty(), "ledger audit: {problems:#?}");
    }

    /// Reservation states by order id (from the inventory schema).
    pub async fn reservation_state(&self, order: &pb::Order) -> String {
        let id = order.name.trim_start_matches("orders/").to_owned();
        self.inventory_pool
            .run(move |conn| {
                #[derive(diesel::QueryableByName)]
                struct Row {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    state: String,
                }
                let rows: Vec<Row> = diesel::RunQueryDsl::load(
                    diesel::sql_query(
                        "SELECT state::text AS state FROM reservations WHERE order_id::text = $1",
                    )
                    .bind::<diesel::sql_types::Text, _>(id),
                    conn,
                )?;
                Ok::<_, DbError>(
                    rows.into_iter()
                        .next()
                        .map(|r| r.state)
                        .unwrap_or_else(|| "NONE".into()),
                )
            })
            .await
            .unwrap()
    }
}

/// Sends and receives undecoded protobuf bytes (requests no generated
/// client would send, and any RPC by path).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let remaining = prost::bytes::Buf::remaining(buf);
        Ok(Some(
            prost::bytes::Buf::copy_to_bytes(buf, remaining).to_vec(),
        ))
    }
}

/// Calls `path` (`/pkg.Service/Method`) with the encoded request `body` and
/// the raw `metadata` pairs (appended, so a key may repeat); the answer's
/// status, the response left undecoded. A server-streaming RPC counts as
/// answered once its first message, its status, or 300 ms of an open stream
/// have passed.
pub async fn raw_call(
    channel: TracedChannel,
    path: &str,
    metadata: &[(&str, &str)],
    body: Vec<u8>,
    server_streaming: bool,
) -> Result<(), tonic::Status> {
    raw_call_answer(channel, path, metadata, body, server_streaming)
        .await
        .map(drop)
}

/// [`raw_call`], keeping the answer: the encoded response (a stream's first
/// message), or `None` for a stream still open without one after 300 ms.
pub async fn raw_call_answer(
    channel: TracedChannel,
    path: &str,
    metadata: &[(&str, &str)],
    body: Vec<u8>,
    server_streaming: bool,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = Request::new(body);
    for (key, value) in metadata {
        request.metadata_mut().append(
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    if server_streaming {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
            Ok(first) => first,
            Err(_) => Ok(None),
        }
    } else {
        grpc.unary(request, path, RawCodec)
            .await
            .map(|response| Some(response.into_inner()))
    }
}

/// The code of a [`raw_call`]'s outcome.
pub fn code_of(outcome: &Result<(), tonic::Status>) -> tonic::Code {
    outcome
        .as_ref()
        .map_or_else(tonic::Status::code, |()| tonic::Code::Ok)
}
