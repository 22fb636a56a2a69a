//! WatchStock under pressure: one poller for every stream (the database
//! cost does not grow with the streams), caps per caller and per client
//! address, streams that count against the concurrency limit, slow readers
//! ended instead of buffered, and streams that end with their caller's
//! token.
//!
//! Over 600 lines: each cap and each way a stream ends needs its own
//! stream setup; they share the helpers at the top.

use std::time::Duration;

use crate::helpers::{Options, TestApp, assert_error, authed, metadata, reason};
use backroom_inventory::{InventoryConfig, api::watch::WatchStats};
use backroom_proto::inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use backroom_shared::config::ServerConfig;
use tonic::{Code, Status, Streaming};

/// Longest wait for any one stream message in these tests.
const PATIENCE: Duration = Duration::from_secs(10);

async fn watch(
    app: &TestApp,
    token: &str,
    skus: &[&str],
) -> Result<Streaming<pb::StockLevel>, Status> {
    watch_with(app.client(), token, skus).await
}

async fn watch_with<C>(
    mut client: InventoryServiceClient<C>,
    token: &str,
    skus: &[&str],
) -> Result<Streaming<pb::StockLevel>, Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    client
        .watch_stock(authed(
            token,
            pb::WatchStockRequest {
                skus: skus.iter().map(|s| (*s).to_owned()).collect(),
                location: String::new(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The next message, failing the test when none comes within [`PATIENCE`].
async fn next(stream: &mut Streaming<pb::StockLevel>) -> Result<pb::StockLevel, Status> {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(level))) => Ok(level),
        Ok(Ok(None)) => panic!("the stream ended without a status"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no stream message within {PATIENCE:?}"),
    }
}

/// Reads until the stream fails; the status and how many levels came first.
async fn end_of(stream: &mut Streaming<pb::StockLevel>) -> (Status, usize) {
    let mut levels = 0;
    loop {
        match next(stream).await {
            Ok(_) => levels += 1,
            Err(status) => return (status, levels),
        }
    }
}

/// Waits until the hub's stats satisfy `done` (they change with every
/// subscription, end and poll); the stats then.
async fn settle(app: &TestApp, done: impl Fn(&WatchStats) -> bool) -> WatchStats {
    let mut stats = app.deps.watch.stats();
    let waited = tokio::time::timeout(PATIENCE, async {
        *stats
            .wait_for(|s| done(s))
            .await
            .expect("the hub outlives the app")
    })
    .await;
    waited.unwrap_or_else(|_| panic!("the hub did not settle: {:?}", *stats.borrow()))
}

async fn get_product(app: &TestApp) -> Result<pb::Product, Status> {
    app.client()
        .get_product(authed(
            &app.customer,
            pb::GetProductRequest {
                name: "products/W".into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Reads until `sku@main` reaches `version`.
async fn until_version(stream: &mut Streaming<pb::StockLevel>, sku: &str, version: i64) {
    loop {
        let level = next(stream).await.expect("a level");
        if level.sku == sku && level.version >= version {
            assert_eq!(level.version, version, "versions arrive in order");
            return;
        }
    }
}

/// Transactions committed in the app's database so far, as Postgres counts
/// them (`pg_stat_database`; each backend reports its counts at most about
/// once a second, so a reading may lag by that much).
async fn transactions(app: &TestApp) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        xact_commit: i64,
    }
    let url = app.db.admin_url();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl as _;
        let mut conn = backroom_shared::db::connect(&url).expect("admin connection");
        diesel::sql_query(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .get_result::<Count>(&mut conn)
        .expect("pg_stat_database")
        .xact_commit
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn fifty_streams_cost_the_database_what_one_does_and_leave_the_pool_to_other_calls() {
    // Two connections and a checkout that gives up quickly.
    // Fifty streams from one address: past the per-address cap, which has
    // its own test.
    let app = TestApp::spawn_with(Options {
        pool_size: 2,
        checkout_timeout_ms: 100,
        config: InventoryConfig {
            watch_streams_per_address: 64,
            ..Options::default().config
        },
        ..Options::default()
    })
    .await;
    let interval = Duration::from_millis(Options::default().config.watch_poll_interval_ms);
    let skus: Vec<String> = (0..10).map(|i| format!("S{i}")).collect();
    let sku_refs: Vec<&str> = skus.iter().map(String::as_str).collect();
    for sku in &skus {
        app.product(sku, 1, 1).await;
        app.stock(sku, "main", 5).await;
    }
    // Four streams per principal (the default cap): thirteen principals.
    let mut streams = Vec::new();
    for _ in 0..13 {
        let token = app.new_customer();
        for _ in 0..4 {
            if streams.len() < 50 {
                streams.push(watch(&app, &token, &sku_refs).await.expect("open"));
            }
        }
    }
    for stream in &mut streams {
        for sku in &skus {
            let level = next(stream).await.expect("snapshot");
            assert_eq!((level.sku.as_str(), level.version), (sku.as_str(), 1));
        }
    }

    // With fifty streams open and nothing changing, the database sees about
    // one query per poll interval, not fifty (before the hub: one
    // transaction per stream per interval, thousands in this window).
    // First let Postgres's per-backend reporting (about once a second)
    // catch up with the openings.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (before, started) = (transactions(&app).await, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let committed = transactions(&app).await - before;
    // Allow a second of reporting lag on each side, and this test's own
    // two readings.
    let polls = (started.elapsed() + Duration::from_secs(2)).as_millis() / interval.as_millis();
    assert!(
        u128::try_from(committed).unwrap() <= polls + 2,
        "{committed} transactions in {:?} with 50 streams (one poller: at most {})",
        started.elapsed(),
        polls + 2
    );

    // Meanwhile reads and writes find a connection at once.
    let reads = (0..20).map(|i| {
        let mut client = app.client();
        let request = authed(
            &app.customer,
            pb::GetStockLevelRequest {
                name: format!("products/S{}/stockLevels/main", i % 10),
            },
        );
        async move { client.get_stock_level(request).await }
    });
    for read in futures_util::future::join_all(reads).await {
        read.expect("a read beside fifty streams");
    }
    app.adjust("S3", "main", 2, 1)
        .await
        .expect("a write beside fifty streams");
    for stream in &mut streams {
        let level = next(stream).await.expect("the change");
        assert_eq!(
            (level.sku.as_str(), level.available, level.version),
            ("S3", 7, 2)
        );
    }
}

#[tokio::test]
async fn a_caller_gets_four_streams_and_the_fifth_is_refused_at_once() {
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.stock("W", "main", 5).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = watch(&app, &app.customer, &["W"]).await.expect("open");
        next(&mut stream).await.expect("snapshot");
        open.push(stream);
    }
    let refused = watch(&app, &app.customer, &["W"]).await;
    let status = assert_error(refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    assert_eq!(metadata(&status, "limit"), "4");

    // Other principals have their own four.
    let mut other = watch(&app, &app.new_customer(), &["W"])
        .await
        .expect("another caller");
    next(&mut other).await.expect("snapshot");
    // The refused open did not disturb the open streams.
    app.adjust("W", "main", 1, 1).await.unwrap();
    for stream in &mut open {
        assert_eq!(next(stream).await.unwrap().version, 2);
    }

    // A slot frees when the client cancels a stream…
    drop(open.pop());
    settle(&app, |s| s.open_streams == 4).await;
    let mut reopened = watch(&app, &app.customer, &["W"])
        .await
        .expect("a freed slot");
    assert_eq!(next(&mut reopened).await.unwrap().version, 2);
    open.push(reopened);
    // …and when the server ends it (here: shutdown ends every stream; the
    // server sends the status whether or not the client reads it).
    app.deps.shutdown.trigger();
    settle(&app, |s| s.open_streams == 0 && s.subscribers == 0).await;
    for stream in open.iter_mut().chain([&mut other]) {
        let (status, _) = end_of(stream).await;
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // After shutdown new streams are refused, and hold nothing.
    assert_error(
        watch(&app, &app.customer, &["W"]).await,
        Code::Unavailable,
        "SERVICE_UNAVAILABLE",
    );
    assert_eq!(settle(&app, |_| true).await.open_streams, 0);
}

#[tokio::test]
async fn one_address_gets_sixteen_streams_whoever_asks() {
    // Free accounts are cheap: one client address holding streams for many
    // principals meets the per-address cap before it can fill the server's.
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.stock("W", "main", 5).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let token = app.new_customer();
        for _ in 0..4 {
            open.push(watch(&app, &token, &["W"]).await.expect("open"));
        }
    }
    let refused = watch(&app, &app.new_customer(), &["W"]).await;
    let status = assert_error(refused, Code::ResourceExhausted, "TOO_MANY_STREAMS");
    assert_eq!(
        (metadata(&status, "scope"), metadata(&status, "limit")),
        ("address".to_owned(), "16".to_owned())
    );
    // Another address has its own sixteen.
    let elsewhere = tonic::transport::Endpoint::from_shared(app.server.endpoint())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut other = watch_with(
        InventoryServiceClient::new(elsewhere),
        &app.new_customer(),
        &["W"],
    )
    .await
    .expect("another address");
    next(&mut other).await.expect("snapshot");
    // A closed stream frees its address's slot.
    drop(open.pop());
    settle(&app, |s| s.open_streams == 16).await;
    let mut reopened = watch(&app, &app.new_customer(), &["W"])
        .await
        .expect("a freed slot");
    next(&mut reopened).await.expect("snapshot");
}

#[tokio::test]
async fn streams_hold_concurrency_slots_until_they_end() {
    let app = TestApp::spawn_with(Options {
        server: ServerConfig {
            concurrency_limit: 3,
            ..ServerConfig::without_client_limits()
        },
        ..Options::default()
    })
    .await;
    app.product("W", 1, 1).await;
    app.stock("W", "main", 5).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = watch(&app, &app.new_customer(), &["W"])
            .await
            .expect("open");
        next(&mut stream).await.expect("snapshot");
        open.push(stream);
    }
    // Three open streams fill the limit: other calls are shed at once.
    assert_error(
        get_product(&app).await,
        Code::ResourceExhausted,
        "OVERLOADED",
    );
    assert_error(
        watch(&app, &app.new_customer(), &["W"]).await,
        Code::ResourceExhausted,
        "OVERLOADED",
    );
    // Closing one frees its slot. (The transport drops the stream and its
    // concurrency permit together, on this test's one thread.)
    drop(open.pop());
    settle(&app, |s| s.open_streams == 2).await;
    get_product(&app).await.expect("a freed slot");
    drop(open);
    settle(&app, |s| s.open_streams == 0).await;
    let all = tokio::join!(get_product(&app), get_product(&app), get_product(&app));
    for served in [all.0, all.1, all.2] {
        served.expect("every slot free again");
    }
}

#[tokio::test]
async fn clients_going_away_leave_no_subscriber_and_the_idle_hub_stops_polling() {
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.product("X", 1, 1).await;
    app.stock("W", "main", 5).await;
    let mut streams = Vec::new();
    for i in 0..12 {
        let skus: &[&str] = if i % 2 == 0 { &["W"] } else { &["W", "X"] };
        streams.push(watch(&app, &app.new_customer(), skus).await.expect("open"));
    }
    // Some have read their snapshot, some not even that.
    for stream in streams.iter_mut().take(6) {
        next(stream).await.expect("snapshot");
    }
    assert_eq!(
        settle(&app, |_| true).await,
        WatchStats {
            subscribers: 12,
            open_streams: 12,
            ..settle(&app, |_| true).await
        }
    );
    drop(streams);
    let idle = settle(&app, |s| s.subscribers == 0 && s.open_streams == 0).await;
    // Nobody watches: no more queries (give it ten poll intervals).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = settle(&app, |_| true).await;
    assert!(
        later.polls <= idle.polls + 1,
        "polled {} times with nobody watching",
        later.polls - idle.polls
    );
    // And it wakes for the next subscriber, who gets a fresh snapshot.
    let mut stream = watch(&app, &app.customer, &["W"]).await.expect("open");
    assert_eq!(next(&mut stream).await.unwrap().available, 5);
}

#[tokio::test]
async fn a_stream_ends_when_its_token_would_no_longer_be_accepted() {
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.stock("W", "main", 5).await;
    // Its exp plus the 60 s leeway every verifier allows comes in about
    // three seconds.
    let (token, refused_at) = app.customer_token_refused_in(Duration::from_secs(3));
    let mut expiring = watch(&app, &token, &["W"]).await.expect("open while valid");
    next(&mut expiring).await.expect("snapshot");
    let mut lasting = watch(&app, &app.customer, &["W"]).await.expect("open");
    next(&mut lasting).await.expect("snapshot");

    let (status, _) = end_of(&mut expiring).await;
    let ended_at = chrono::Utc::now();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::Unauthenticated, "TOKEN_EXPIRED"),
        "{status:?}"
    );
    // Not before the token stopped counting, and within about a second
    // (the revalidation interval) after.
    assert!(
        ended_at >= refused_at,
        "ended at {ended_at}, before {refused_at}"
    );
    assert!(
        ended_at < refused_at + chrono::Duration::seconds(3),
        "ended at {ended_at}, long after {refused_at}"
    );
    // A new call with the token is refused the same way. (The verifier's
    // signature check still admits a token during the very second its exp
    // plus leeway is reached; past that second every check agrees.)
    let agreed = refused_at + chrono::Duration::seconds(1) - chrono::Utc::now();
    if let Ok(wait) = agreed.to_std() {
        tokio::time::sleep(wait).await;
    }
    assert_error(
        watch(&app, &token, &["W"]).await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
    // Streams of valid tokens go on.
    app.adjust("W", "main", 1, 1).await.unwrap();
    assert_eq!(next(&mut lasting).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_reader_that_cannot_keep_up_is_ended_without_holding_up_the_others() {
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.stock("W", "main", 5).await;
    // A connection whose stream window holds about one message: the server
    // can send the slow reader almost nothing until it reads.
    let slow_channel = tonic::transport::Endpoint::from_shared(app.server.endpoint())
        .unwrap()
        .initial_stream_window_size(Some(128))
        .connect()
        .await
        .unwrap();
    let mut slow = watch_with(
        InventoryServiceClient::new(slow_channel),
        &app.customer,
        &["W"],
    )
    .await
    .expect("open");
    let mut fast = watch(&app, &app.new_customer(), &["W"])
        .await
        .expect("open");
    next(&mut fast).await.expect("snapshot");

    // Each change waits for the fast reader to see the one before, so every
    // poll finds one new version; the slow reader reads nothing meanwhile.
    const CHANGES: i64 = 60;
    for version in 1..=CHANGES {
        app.adjust("W", "main", 1, version).await.unwrap();
        until_version(&mut fast, "W", version + 1).await;
    }

    // The hub let go of the slow reader (no more queueing for it); the
    // stream keeps its caller's slot until it has told its client why.
    settle(&app, |s| s.subscribers == 1 && s.open_streams == 2).await;
    let (status, delivered) = end_of(&mut slow).await;
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::ResourceExhausted, "STREAM_TOO_SLOW"),
        "{status:?}"
    );
    settle(&app, |s| s.open_streams == 1).await;
    assert!(
        delivered < usize::try_from(CHANGES).unwrap(),
        "ended before it got every change ({delivered})"
    );
    // The fast reader goes on.
    app.adjust("W", "main", 1, CHANGES + 1).await.unwrap();
    until_version(&mut fast, "W", CHANGES + 2).await;
}

/// Account and inventory as real servers: tokens come from Login and are
/// checked against the account service's JWKS and revocation list.
mod with_accounts {

    use backroom_account::{AccountConfig, domain::tokens::SigningKeys};
    use backroom_inventory::InventoryConfig;
    use backroom_proto::account::v1::{
        self as account_pb, account_service_client::AccountServiceClient,
    };
    use backroom_shared::{
        clock,
        config::{AuthConfig, RateLimitConfig, Secret, ServerConfig},
        db::Pool,
        testing::{TestDb, TestServer},
    };

    use super::*;

    const ADMIN_EMAIL: &str = "admin@backroom.test";
    const ADMIN_PASSWORD: &str = "admin password 123";
    const PASSWORD: &str = "correct horse battery";
    const INVENTORY_SECRET: &str = "inventory-secret-0123456789abcdefghij";

    pub struct Pair {
        pub app: TestApp,
        pub accounts: AccountServiceClient<backroom_shared::client::TracedChannel>,
        _account: TestServer,
    }

    impl Pair {
        pub async fn spawn() -> Self {
            Self::spawn_polling(100).await
        }

        /// With the revocation list polled every `poll_ms`.
        pub async fn spawn_polling(poll_ms: u64) -> Self {
            let db = TestDb::create().await;
            let account_db = db
                .service_config(backroom_account::SERVICE, backroom_account::MIGRATIONS)
                .await;
            let mut config = AccountConfig::with_keys(SigningKeys::generate_pem());
            config.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
            config.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD));
            config.service_clients = Some(Secret::new(format!("inventory:{INVENTORY_SECRET}")));
            config.service_client_audiences = Some("inventory=backroom.account".into());
            let deps = backroom_account::Deps::new(
                &AuthConfig::default(),
                &config,
                Pool::new(&account_db, backroom_account::SERVICE),
                clock::system(),
            )
            .await
            .expect("account deps");
            backroom_account::bootstrap_admin(&deps, &config)
                .await
                .expect("bootstrap admin");
            let account = TestServer::spawn(backroom_account::server(
                ServerConfig {
                    rate_limit: RateLimitConfig::unlimited(),
                    ..ServerConfig::without_client_limits()
                },
                deps,
            ))
            .await;
            let auth = AuthConfig {
                account_endpoint: account.endpoint(),
                revocation_poll_ms: poll_ms,
                ..AuthConfig::default()
            };
            let inventory_config = InventoryConfig {
                service_client_id: Some("inventory".into()),
                service_client_secret: Some(Secret::new(INVENTORY_SECRET)),
                ..Options::default().config
            };
            let verifier =
                backroom_inventory::verifier(&auth, &inventory_config).expect("verifier");
            let mut app = TestApp::spawn_with(Options {
                config: inventory_config,
                verifier: Some(verifier),
                ..Options::default()
            })
            .await;
            let accounts = AccountServiceClient::new(account.channel.clone());
            // The catalogue is written with the bootstrap admin's token.
            app.admin = login(&accounts, ADMIN_EMAIL, ADMIN_PASSWORD).await;
            Self {
                app,
                accounts,
                _account: account,
            }
        }

        /// Registers `email`; its resource name and an access token.
        pub async fn customer(&self, email: &str) -> (String, String) {
            let account = self
                .accounts
                .clone()
                .register(account_pb::RegisterRequest {
                    email: email.into(),
                    password: PASSWORD.into(),
                    display_name: "Customer".into(),
                    request_id: String::new(),
                })
                .await
                .expect("register")
                .into_inner();
            (account.name, login(&self.accounts, email, PASSWORD).await)
        }
    }

    async fn login(
        accounts: &AccountServiceClient<backroom_shared::client::TracedChannel>,
        email: &str,
        password: &str,
    ) -> String {
        accounts
            .clone()
            .login(account_pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_account_is_disabled() {
        let pair = Pair::spawn().await;
        let app = &pair.app;
        app.product("W", 1, 1).await;
        app.stock("W", "main", 5).await;
        let (victim, victim_token) = pair.customer("disabled@example.com").await;
        let (_, other_token) = pair.customer("other@example.com").await;
        let mut disabled = watch(app, &victim_token, &["W"]).await.expect("open");
        next(&mut disabled).await.expect("snapshot");
        let mut other = watch(app, &other_token, &["W"]).await.expect("open");
        next(&mut other).await.expect("snapshot");

        pair.accounts
            .clone()
            .disable_account(authed(
                &app.admin,
                account_pb::DisableAccountRequest {
                    name: victim,
                    reason: "fraud".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("disable");

        let (status, _) = end_of(&mut disabled).await;
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::Unauthenticated, "TOKEN_REVOKED"),
            "{status:?}"
        );
        assert_error(
            watch(app, &victim_token, &["W"]).await,
            Code::Unauthenticated,
            "TOKEN_REVOKED",
        );
        app.adjust("W", "main", 1, 1).await.unwrap();
        assert_eq!(next(&mut other).await.unwrap().version, 2);
    }

    async fn disable(pair: &Pair, name: String) {
        pair.accounts
            .clone()
            .disable_account(authed(
                &pair.app.admin,
                account_pb::DisableAccountRequest {
                    name,
                    reason: "fraud".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("disable");
    }

    /// How long after DisableAccount answered the account's token is first
    /// refused by inventory (it is accepted until then).
    async fn refused_after(pair: &Pair, name: String, token: &str) -> std::time::Duration {
        let app = &pair.app;
        let mut as_customer = app.client.clone();
        let call = |client: &mut backroom_proto::inventory::v1::inventory_service_client::InventoryServiceClient<_>| {
            let request = authed(
                token,
                pb::GetProductRequest {
                    name: "products/W".into(),
                },
            );
            let mut client = client.clone();
            async move { client.get_product(request).await }
        };
        call(&mut as_customer)
            .await
            .expect("the token counts before");
        disable(pair, name).await;
        let disabled = std::time::Instant::now();
        loop {
            match call(&mut as_customer).await {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(reason(&status), "TOKEN_REVOKED", "{status:?}");
                    return disabled.elapsed();
                }
            }
            assert!(
                disabled.elapsed() < std::time::Duration::from_secs(30),
                "never refused"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The bound the README states: with the account events' stream up, a
    /// disabled account's tokens are refused by the other services within
    /// one second (measured: milliseconds). The revocation list is polled
    /// only every minute here, so nothing but the events can meet it.
    #[tokio::test]
    async fn a_disabled_accounts_token_is_refused_within_a_second_from_the_account_events() {
        let pair = Pair::spawn_polling(60_000).await;
        pair.app.product("W", 1, 1).await;
        // A first account proves the stream is following (it may connect
        // after the verifier's first poll).
        let (canary, canary_token) = pair.customer("canary@example.com").await;
        refused_after(&pair, canary, &canary_token).await;
        let (victim, victim_token) = pair.customer("victim@example.com").await;
        let took = refused_after(&pair, victim, &victim_token).await;
        println!("disabled account refused by inventory after {took:?}");
        assert!(
            took < std::time::Duration::from_secs(1),
            "refused after {took:?}, past the stated bound of 1 s"
        );
    }
}
