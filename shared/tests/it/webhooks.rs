//! Webhooks end to end: a real Postgres with the shared migrations, the
//! event feed and the webhook dispatcher started as a service starts them,
//! `WebhookService` behind the real auth layer on 127.0.0.1:0 (tokens signed
//! with a fixed test key), and a real HTTP receiver on 127.0.0.1:0 that
//! checks every delivery's Standard Webhooks signature.

use std::{sync::Arc, time::Duration};

use backroom_proto::{
    events::v1::{self as pb, webhook_service_client::WebhookServiceClient},
    inventory::v1::{Product, ProductCreated, ProductUpdated},
};
use backroom_shared::{
    auth::{AuthLayer, Claims, PublicKey, Verifier, audience},
    client::TracedChannel,
    config::ServerConfig,
    db::{DbError, Pool},
    errors,
    events::{self, Events, EventsConfig, NewEvent, read, webhooks::WebhookApi},
    server::GrpcServer,
    service::Shutdown,
    testing::{Received, TestDb, TestServer, WebhookReceiver},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use diesel::Connection as _;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use prost::Name as _;
use tokio::net::TcpListener;
use tonic::{Code, Request};
use uuid::Uuid;

/// Any service's migrations will do: the events tables come with the
/// shared ones, applied first.
const ALPHA: EmbeddedMigrations = embed_migrations!("tests/migrations/alpha");
const DOMAIN: &str = "backroom.inventory";
/// How long anything asynchronous may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A fixed Ed25519 test key (generated with `openssl genpkey -algorithm
/// ed25519`) and its public half (base64url), so tokens can be signed here
/// without the account service.
const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICxhU3lN0JKvTTtY5RgCz2b4ywDJpO5WdWhVXA+1P+3c
-----END PRIVATE KEY-----
";
const TEST_KEY_X: &str = "2cg20_lKlPypbwrt1njM2NElWh_oJs--iyM8UUGov64";
const TEST_KID: &str = "webhook-test";

/// The service under test: the inventory service's events and webhooks.
struct App {
    events: Events,
    pool: Pool,
    client: WebhookServiceClient<TracedChannel>,
    admin: String,
    _server: TestServer,
    shutdown: Shutdown,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl App {
    async fn spawn(retry_window_secs: u64) -> Self {
        Self::spawn_with(EventsConfig {
            webhook_allowed_hosts: vec!["127.0.0.1".into()],
            webhook_retry_window_secs: retry_window_secs,
            webhook_timeout_ms: 2_000,
            ..EventsConfig::default()
        })
        .await
    }

    async fn spawn_with(config: EventsConfig) -> Self {
        let db = TestDb::with_services([("alpha", ALPHA)]).await;
        let pool = Pool::new(&db.service_config("alpha", ALPHA).await, "alpha");
        let events = Events::new(pool.clone(), "inventory", config);
        let shutdown = Shutdown::default();
        events.start(&shutdown);
        let verifier = Arc::new(Verifier::with_keys(
            "backroom",
            audience::INVENTORY,
            &[PublicKey {
                kid: TEST_KID.into(),
                x: TEST_KEY_X.into(),
            }],
        ));
        let config = ServerConfig::without_client_limits();
        let max = config.max_message_bytes;
        let server = TestServer::spawn(
            GrpcServer::new(config)
                .with_layer(AuthLayer::new(verifier, DOMAIN, &[]))
                .add_service(WebhookApi::new(events.clone(), DOMAIN).into_server(max)),
        )
        .await;
        let client = WebhookServiceClient::new(server.channel.clone());
        // Deliveries run only on the leader: wait until this process is it.
        let mut leader = events.leader();
        tokio::time::timeout(PATIENCE, leader.wait_for(|leads| *leads))
            .await
            .expect("the process takes the feed's lock")
            .unwrap();
        Self {
            events,
            pool,
            client,
            admin: token(&["customer", "admin"]),
            _server: server,
            shutdown,
        }
    }

    /// `message` carrying the admin's token.
    fn admin<T>(&self, message: T) -> Request<T> {
        authed(&self.admin, message)
    }

    async fn create(&self, url: &str, types: &[&str]) -> pb::WebhookEndpoint {
        self.client
            .clone()
            .create_webhook_endpoint(self.admin(pb::CreateWebhookEndpointRequest {
                url: url.into(),
                event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                after_sequence: 0,
            }))
            .await
            .expect("create the endpoint")
            .into_inner()
    }

    async fn endpoint(&self, name: &str) -> pb::WebhookEndpoint {
        let listed = self
            .client
            .clone()
            .list_webhook_endpoints(self.admin(pb::ListWebhookEndpointsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        listed
            .endpoints
            .into_iter()
            .find(|e| e.name == name)
            .expect("the endpoint is listed")
    }

    async fn attempts(&self, endpoint: &str) -> Vec<pb::WebhookAttempt> {
        self.client
            .clone()
            .list_webhook_attempts(self.admin(pb::ListWebhookAttemptsRequest {
                endpoint: endpoint.into(),
                page_size: 100,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .attempts
    }

    /// Records `events` in one transaction and returns them as sequenced.
    async fn record(&self, batch: Vec<NewEvent>) -> Vec<read::StoredEvent> {
        let count = batch.len();
        let before = self
            .pool
            .run(|conn| read::newest(conn).map_err(DbError::from))
            .await
            .unwrap();
        self.pool
            .run(move |conn| {
                conn.transaction(|conn| events::record(conn, chrono::Utc::now(), batch.clone()))
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        let pool = self.pool.clone();
        eventually("the events are sequenced", || {
            let pool = pool.clone();
            async move {
                let rows = pool
                    .run(move |conn| read::after(conn, before, &[], 100).map_err(DbError::from))
                    .await
                    .unwrap();
                (rows.len() == count).then_some(rows)
            }
        })
        .await
    }
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A token of a fresh account with `roles`, for the inventory service.
fn token(roles: &[&str]) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "backroom".into(),
        sub: format!("accounts/{}", Uuid::now_v7()),
        aud: vec![audience::INVENTORY.into()],
        exp: now + 900,
        nbf: now,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        sv: 1,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(TEST_KID.into());
    let key = jsonwebtoken::EncodingKey::from_ed_pem(TEST_KEY_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn product_created(sku: &str) -> NewEvent {
    NewEvent::new(
        format!("products/{sku}"),
        &ProductCreated {
            product: Some(product(sku)),
        },
    )
}

fn product_updated(sku: &str) -> NewEvent {
    NewEvent::new(
        format!("products/{sku}"),
        &ProductUpdated {
            product: Some(product(sku)),
        },
    )
}

fn product(sku: &str) -> Product {
    Product {
        name: format!("products/{sku}"),
        sku: sku.into(),
        display_name: format!("Widget {sku}"),
        weight_grams: 250,
        active: true,
        ..Product::default()
    }
}

/// Waits up to [`PATIENCE`] for `check` to give a value.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `receiver` has taken `count` deliveries.
async fn wait_for_accepted(receiver: &WebhookReceiver, count: usize) -> Vec<Received> {
    eventually(&format!("{count} deliveries arrived"), || async {
        let accepted = receiver.accepted();
        (accepted.len() >= count).then_some(accepted)
    })
    .await
}

fn sequences(events: &[pb::Event]) -> Vec<i64> {
    events.iter().map(|e| e.sequence).collect()
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_sequence_order_signed_the_standard_webhooks_way() {
    let app = App::spawn(60).await;
    // A second replica on the same database: it does not lead, so it
    // delivers nothing (each event must still arrive once).
    let replica = Events::new(app.pool.clone(), "inventory", app.events.config().clone());
    replica.start(&app.shutdown);
    let (all, filtered) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    // Before the endpoints exist: not delivered (after_sequence 0 is "from
    // now on").
    app.record(vec![product_created("OLD-1")]).await;
    let everything = app.create(&all.url, &[]).await;
    let updates = app
        .create(&filtered.url, &[&ProductUpdated::full_name()])
        .await;
    assert!(everything.name.starts_with("webhookEndpoints/"));
    assert_eq!(
        STANDARD
            .decode(everything.secret.strip_prefix("whsec_").unwrap())
            .unwrap()
            .len(),
        32
    );

    let mut recorded = app
        .record(vec![product_created("A-1"), product_updated("A-1")])
        .await;
    recorded.extend(app.record(vec![product_created("B-2")]).await);
    recorded.extend(
        app.record(vec![product_updated("B-2"), product_updated("A-1")])
            .await,
    );

    let delivered: Vec<pb::Event> = wait_for_accepted(&all, recorded.len())
        .await
        .iter()
        .map(|r| {
            assert_eq!(r.path, "/hooks/in");
            let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert!(json["payload"]["product"]["sku"].is_string(), "{json}");
            r.verified(&everything.secret)
        })
        .collect();
    let expected: Vec<i64> = recorded.iter().map(read::StoredEvent::sequence).collect();
    assert_eq!(sequences(&delivered), expected, "in sequence order");
    for (event, row) in delivered.iter().zip(&recorded) {
        assert_eq!(event.id, row.id.to_string());
        assert_eq!(event.source, "inventory");
        assert_eq!(event.subject, row.subject);
        assert_eq!(event.payload.as_ref().unwrap().value, row.payload);
    }

    let updated: Vec<i64> = recorded
        .iter()
        .filter(|row| row.kind == ProductUpdated::full_name())
        .map(read::StoredEvent::sequence)
        .collect();
    let delivered_updates: Vec<pb::Event> = wait_for_accepted(&filtered, updated.len())
        .await
        .iter()
        .map(|r| r.verified(&updates.secret))
        .collect();
    assert_eq!(sequences(&delivered_updates), updated, "only its types");

    // Once: a later event is the barrier; nothing came twice before it.
    let last = app.record(vec![product_updated("C-3")]).await;
    let after = wait_for_accepted(&all, recorded.len() + 1).await;
    let after: Vec<i64> = sequences(
        &after
            .iter()
            .map(|r| r.verified(&everything.secret))
            .collect::<Vec<_>>(),
    );
    assert_eq!(after.len(), recorded.len() + 1, "{after:?}");
    assert_eq!(after.last(), Some(&last[0].sequence()));
    assert!(all.received().iter().all(|r| r.answered == 200));
    assert!(!*replica.leader().borrow(), "one leader at a time");
    eprintln!(
        "a delivery: {}",
        String::from_utf8_lossy(&all.accepted()[0].body)
    );

    let listed = eventually("delivered_sequence reaches the last event", || async {
        let endpoint = app.endpoint(&everything.name).await;
        (endpoint.delivered_sequence == last[0].sequence()).then_some(endpoint)
    })
    .await;
    assert_eq!(listed.secret, "", "the secret is shown at creation only");
    assert_eq!(listed.url, all.url);
    assert_eq!(listed.abandoned_count, 0);
    let attempts = app.attempts(&everything.name).await;
    assert_eq!(attempts.len(), recorded.len() + 1);
    assert!(
        attempts
            .iter()
            .all(|a| a.succeeded && a.http_status == 200 && a.error.is_empty())
    );
    assert_eq!(attempts[0].sequence, last[0].sequence(), "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_everything_in_order_once_it_is_back() {
    let app = App::spawn(60).await;
    let receiver = WebhookReceiver::start().await;
    receiver.answer(503);
    let endpoint = app.create(&receiver.url, &[]).await;
    let recorded = app
        .record(vec![
            product_created("D-1"),
            product_created("D-2"),
            product_created("D-3"),
        ])
        .await;
    let failed = eventually("two attempts failed", || async {
        let attempts = app.attempts(&endpoint.name).await;
        (attempts.len() >= 2).then_some(attempts)
    })
    .await;
    for attempt in &failed {
        assert_eq!(attempt.http_status, 503);
        assert!(!attempt.succeeded);
        assert!(attempt.error.contains("503"), "{}", attempt.error);
        // One at a time, in order: only the first event was tried.
        assert_eq!(attempt.sequence, recorded[0].sequence());
        assert_eq!(attempt.event_id, recorded[0].id.to_string());
    }

    receiver.answer(200);
    let delivered: Vec<pb::Event> = wait_for_accepted(&receiver, recorded.len())
        .await
        .iter()
        .map(|r| r.verified(&endpoint.secret))
        .collect();
    let expected: Vec<i64> = recorded.iter().map(read::StoredEvent::sequence).collect();
    assert_eq!(sequences(&delivered), expected);
    // Every try carried the same webhook-id.
    for refused in receiver.received().iter().filter(|r| r.answered == 503) {
        assert_eq!(
            refused.verified(&endpoint.secret).id,
            recorded[0].id.to_string()
        );
    }

    let attempts = eventually("every attempt is listed", || async {
        let attempts = app.attempts(&endpoint.name).await;
        (attempts.iter().filter(|a| a.succeeded).count() == recorded.len()).then_some(attempts)
    })
    .await;
    let statuses: Vec<i32> = attempts.iter().rev().map(|a| a.http_status).collect();
    let first_ok = statuses.iter().position(|s| *s == 200).unwrap();
    assert!(
        first_ok >= 2 && statuses[..first_ok].iter().all(|s| *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses[first_ok..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    let endpoint = app.endpoint(&endpoint.name).await;
    assert_eq!(endpoint.delivered_sequence, expected[2]);
    assert_eq!(endpoint.abandoned_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_for_the_whole_retry_window_is_given_up_and_can_be_redelivered() {
    let app = App::spawn(2).await;
    let receiver = WebhookReceiver::start().await;
    receiver.answer(500);
    let endpoint = app.create(&receiver.url, &[]).await;
    let given_up = app.record(vec![product_created("E-1")]).await;
    let abandoned = eventually("the delivery is given up", || async {
        let listed = app.endpoint(&endpoint.name).await;
        (listed.abandoned_count == 1).then_some(listed)
    })
    .await;
    assert_eq!(abandoned.delivered_sequence, given_up[0].sequence());
    let tries = app.attempts(&endpoint.name).await;
    assert!(tries.len() >= 2, "retried within the window: {tries:?}");
    assert!(tries.iter().all(|a| a.http_status == 500 && !a.succeeded));

    receiver.answer(200);
    let next = app.record(vec![product_created("E-2")]).await;
    let delivered = wait_for_accepted(&receiver, 1).await;
    assert_eq!(
        delivered[0].verified(&endpoint.secret).sequence,
        next[0].sequence()
    );

    app.client
        .clone()
        .redeliver_webhook_event(app.admin(pb::RedeliverWebhookEventRequest {
            endpoint: endpoint.name.clone(),
            sequence: given_up[0].sequence(),
        }))
        .await
        .expect("redeliver");
    let delivered: Vec<pb::Event> = wait_for_accepted(&receiver, 2)
        .await
        .iter()
        .map(|r| r.verified(&endpoint.secret))
        .collect();
    assert_eq!(
        sequences(&delivered),
        [next[0].sequence(), given_up[0].sequence()]
    );
    assert_eq!(delivered[1].id, given_up[0].id.to_string());
    // Redelivering an event already delivered works too.
    app.client
        .clone()
        .redeliver_webhook_event(app.admin(pb::RedeliverWebhookEventRequest {
            endpoint: endpoint.name.clone(),
            sequence: next[0].sequence(),
        }))
        .await
        .expect("redeliver");
    let delivered = wait_for_accepted(&receiver, 3).await;
    assert_eq!(
        delivered[2].verified(&endpoint.secret).sequence,
        next[0].sequence()
    );

    // What does not exist is NOT_FOUND.
    let missing = app
        .client
        .clone()
        .redeliver_webhook_event(app.admin(pb::RedeliverWebhookEventRequest {
            endpoint: endpoint.name.clone(),
            sequence: next[0].sequence() + 1_000,
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        errors::reason_of(&missing).as_deref(),
        Some("EVENT_NOT_FOUND")
    );
    let missing = app
        .client
        .clone()
        .redeliver_webhook_event(app.admin(pb::RedeliverWebhookEventRequest {
            endpoint: format!("webhookEndpoints/{}", Uuid::now_v7()),
            sequence: next[0].sequence(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        errors::reason_of(&missing).as_deref(),
        Some("WEBHOOK_ENDPOINT_NOT_FOUND")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_is_recorded_with_status_zero_and_why() {
    let app = App::spawn(60).await;
    // A port nothing listens on any more.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let endpoint = app.create(&format!("http://{closed}/in"), &[]).await;
    let recorded = app.record(vec![product_created("F-1")]).await;
    let attempts = eventually("an attempt is recorded", || async {
        let attempts = app.attempts(&endpoint.name).await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await;
    assert_eq!(attempts[0].http_status, 0);
    assert!(!attempts[0].succeeded);
    assert!(!attempts[0].error.is_empty());
    assert_eq!(attempts[0].sequence, recorded[0].sequence());
    assert!(attempts[0].attempt_time.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_checked_admins_only_and_removable() {
    let app = App::spawn(60).await;
    let mut client = app.client.clone();
    let create =
        |url: &str, types: &[&str], after_sequence: i64| pb::CreateWebhookEndpointRequest {
            url: url.into(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            after_sequence,
        };
    let refused_on = async |client: &mut WebhookServiceClient<TracedChannel>,
                            request: pb::CreateWebhookEndpointRequest| {
        let status = client
            .create_webhook_endpoint(app.admin(request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        (
            errors::violated_fields(&status),
            status.message().to_owned(),
        )
    };
    let (fields, message) =
        refused_on(&mut client, create("https://example.com/hooks", &[], 0)).await;
    assert_eq!(fields, ["url"]);
    assert!(
        message.contains("BACKROOM_WEBHOOK_ALLOWED_HOSTS"),
        "{message}"
    );
    for url in [
        "ftp://127.0.0.1/hooks",
        "http://user:secret@127.0.0.1/hooks",
        "http://localhost/hooks",
        "not a url",
        "",
    ] {
        let (fields, _) = refused_on(&mut client, create(url, &[], 0)).await;
        assert_eq!(fields, ["url"], "{url}");
    }
    let (fields, _) = refused_on(
        &mut client,
        create(
            "http://127.0.0.1/hooks",
            &["backroom.payment.v1.OrderPlaced"],
            0,
        ),
    )
    .await;
    assert_eq!(fields, ["event_types[0]"]);
    let (fields, _) = refused_on(&mut client, create("http://127.0.0.1/hooks", &[], -1)).await;
    assert_eq!(fields, ["after_sequence"]);
    let (fields, _) = refused_on(
        &mut client,
        create("http://127.0.0.1/hooks", &[], 1_000_000),
    )
    .await;
    assert_eq!(fields, ["after_sequence"]);

    // Not an admin: refused, whatever the call.
    let customer = token(&["customer"]);
    let status = client
        .create_webhook_endpoint(authed(&customer, create("http://127.0.0.1/hooks", &[], 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(errors::reason_of(&status).as_deref(), Some("ACCESS_DENIED"));
    let status = client
        .list_webhook_endpoints(authed(
            &customer,
            pb::ListWebhookEndpointsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .list_webhook_endpoints(Request::new(pb::ListWebhookEndpointsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Names are checked, removal is final.
    let endpoint = app.create("http://127.0.0.1:9/hooks", &[]).await;
    let status = client
        .delete_webhook_endpoint(authed(
            &customer,
            pb::DeleteWebhookEndpointRequest {
                name: endpoint.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .delete_webhook_endpoint(app.admin(pb::DeleteWebhookEndpointRequest {
            name: "webhookEndpoints/nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(errors::violated_fields(&status), ["name"]);
    client
        .delete_webhook_endpoint(app.admin(pb::DeleteWebhookEndpointRequest {
            name: endpoint.name.clone(),
        }))
        .await
        .unwrap();
    let status = client
        .delete_webhook_endpoint(app.admin(pb::DeleteWebhookEndpointRequest {
            name: endpoint.name.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .list_webhook_attempts(app.admin(pb::ListWebhookAttemptsRequest {
            endpoint: endpoint.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = client
        .list_webhook_endpoints(app.admin(pb::ListWebhookEndpointsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.endpoints.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_empty_allow_list_no_endpoint_can_be_registered() {
    let app = App::spawn_with(EventsConfig::default()).await;
    let status = app
        .client
        .clone()
        .create_webhook_endpoint(app.admin(pb::CreateWebhookEndpointRequest {
            url: "http://127.0.0.1/hooks".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(errors::violated_fields(&status), ["url"]);
    assert!(
        status
            .message()
            .contains("BACKROOM_WEBHOOK_ALLOWED_HOSTS is empty"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_endpoint_limit_creation_fails_and_lists_page() {
    let app = App::spawn(60).await;
    let limit = usize::try_from(backroom_shared::events::webhooks::MAX_ENDPOINTS).unwrap();
    let mut created = Vec::new();
    for i in 0..limit {
        created.push(
            app.create(&format!("http://127.0.0.1:9/hooks/{i}"), &[])
                .await
                .name,
        );
    }
    let status = app
        .client
        .clone()
        .create_webhook_endpoint(app.admin(pb::CreateWebhookEndpointRequest {
            url: "http://127.0.0.1:9/one-too-many".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        errors::reason_of(&status).as_deref(),
        Some("TOO_MANY_WEBHOOK_ENDPOINTS")
    );

    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .client
            .clone()
            .list_webhook_endpoints(app.admin(pb::ListWebhookEndpointsRequest {
                page_size: 30,
                page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.endpoints.iter().all(|e| e.secret.is_empty()));
        listed.extend(page.endpoints.into_iter().map(|e| e.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, created, "every endpoint once, oldest first");
}
