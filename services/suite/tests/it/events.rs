//! Domain events across the three services: a full order life (place →
//! ship → return → refund) leaves its events in every service's feed, in
//! order per subject, gap-free, decodable with the generated types, through
//! ListEvents and WatchEvents alike, in each service's JetStream stream (a
//! `nats-server` of the test's own) and at a webhook receiver; live events reach an open stream; the
//! feed is for services and admins only.

use std::time::Duration;

use backroom_proto::{
    events::v1::{
        self as ev, event_service_client::EventServiceClient,
        webhook_service_client::WebhookServiceClient,
    },
    inventory::v1 as inv,
    payment::v1 as pb,
};
use backroom_shared::{
    client::{ClientConfig, TracedChannel, channel},
    events::EventsConfig,
    testing::{NatsServer, WebhookReceiver, stream_contents},
};
use futures_util::StreamExt as _;
use prost::Name;
use tonic::Code;

use crate::{
    harness::{Suite, VISA, authed},
    returns::{receive, refund, request_return},
    shipments::{assert_audit_clean, completed_order, request_id, ship},
};

pub(crate) fn feed(endpoint: String) -> EventServiceClient<TracedChannel> {
    EventServiceClient::new(channel(&ClientConfig::new(endpoint)).unwrap())
}

pub(crate) async fn inventory_feed(suite: &Suite) -> EventServiceClient<TracedChannel> {
    let endpoint = suite.inventory.lock().await.as_ref().unwrap().endpoint();
    feed(endpoint)
}

/// Every event of a feed, through ListEvents pages.
pub(crate) async fn all_events(
    client: &mut EventServiceClient<TracedChannel>,
    token: &str,
) -> Vec<ev::Event> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_events(authed(
                token,
                ev::ListEventsRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// Waits (up to 20 s) until the feed holds an event `done` accepts, then
/// returns every event.
pub(crate) async fn events_until(
    client: &mut EventServiceClient<TracedChannel>,
    token: &str,
    done: impl Fn(&[ev::Event]) -> bool,
) -> Vec<ev::Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = all_events(client, token).await;
        if done(&events) || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn decode<M: prost::Message + Name + Default>(event: &ev::Event) -> M {
    let payload = event.payload.as_ref().expect("payload");
    assert_eq!(payload.type_url, M::type_url());
    assert_eq!(event.r#type, M::full_name());
    M::decode(payload.value.as_slice()).expect("payload decodes")
}

fn short(event: &ev::Event) -> &str {
    event.r#type.rsplit('.').next().unwrap()
}

fn assert_gap_free(events: &[ev::Event]) {
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap()).collect();
    assert_eq!(sequences, expected, "sequences are 1, 2, 3, … without gaps");
}

/// AdjustStock of `sku` at "main" by `delta`, at its current version.
pub(crate) async fn adjust(suite: &Suite, sku: &str, delta: i64) -> inv::StockLevel {
    let version = suite.level(sku).await.version;
    suite
        .stock
        .clone()
        .adjust_stock(authed(
            &suite.admin,
            inv::AdjustStockRequest {
                name: format!("products/{sku}/stockLevels/main"),
                delta,
                reason: inv::StockAdjustmentReason::Received as i32,
                expected_version: version,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_full_order_life_leaves_its_events_in_order_in_every_feed() {
    let nats = NatsServer::start().await;
    let suite = Suite::spawn_with_events(EventsConfig {
        nats_url: Some(nats.url()),
        webhook_allowed_hosts: vec!["127.0.0.1".into()],
        ..EventsConfig::default()
    })
    .await;
    // A webhook endpoint for every payment event, registered before the
    // order exists.
    let receiver = WebhookReceiver::start().await;
    let endpoint = WebhookServiceClient::new(suite.payment.channel.clone())
        .create_webhook_endpoint(authed(
            &suite.admin,
            ev::CreateWebhookEndpointRequest {
                url: receiver.url.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("events@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 3)]).await;
    ship(&suite, &suite.warehouse, &order.name, &[], &request_id())
        .await
        .unwrap();
    let ret = request_return(
        &suite,
        &ada.token,
        &order.name,
        &[("MUG", 1)],
        &request_id(),
    )
    .await
    .unwrap();
    receive(&suite, &suite.warehouse, &ret.name, &[("MUG", 1, 0)])
        .await
        .unwrap();
    refund(&suite, &suite.admin, &order.name, 100, &request_id())
        .await
        .unwrap();

    // Payment: the order's own events, in the order of its life.
    let mut payment = feed(suite.payment.endpoint());
    let events = events_until(&mut payment, &suite.admin, |events| {
        events.iter().any(|e| short(e) == "OrderRefunded")
    })
    .await;
    assert_gap_free(&events);
    assert!(
        events
            .iter()
            .all(|e| e.source == "payment" && !e.id.is_empty())
    );
    let of_order: Vec<&str> = events
        .iter()
        .filter(|e| e.subject == order.name)
        .map(short)
        .collect();
    assert_eq!(
        of_order,
        [
            "OrderPlaced",
            "OrderCompleted",
            "OrderShipped",
            "OrderReturnRequested",
            "OrderReturnReceived",
            "OrderRefunded"
        ]
    );
    let placed: pb::OrderPlaced =
        decode(events.iter().find(|e| short(e) == "OrderPlaced").unwrap());
    assert_eq!(placed.order.unwrap().name, order.name);
    let refunded: pb::OrderRefunded =
        decode(events.iter().find(|e| short(e) == "OrderRefunded").unwrap());
    assert_eq!(refunded.amount.unwrap().amount_minor, 100);
    assert_eq!(refunded.reason, "late delivery");
    // The intent: authorized, captured, then two refunds (return, goodwill).
    let intent = suite.intent(&order).await;
    let of_intent: Vec<&str> = events
        .iter()
        .filter(|e| e.subject == intent.name)
        .map(short)
        .collect();
    assert_eq!(
        of_intent,
        [
            "PaymentIntentAuthorized",
            "PaymentIntentCaptured",
            "RefundSucceeded",
            "RefundSucceeded"
        ]
    );
    // No card data anywhere: the card number never appears in a payload.
    for event in &events {
        let bytes = &event.payload.as_ref().unwrap().value;
        assert!(
            !String::from_utf8_lossy(bytes).contains(VISA),
            "a payload holds the card number: {event:?}"
        );
    }

    // Inventory: one StockLevelChanged per movement, in the level's version
    // order, and the reservation's life.
    let mut inventory = inventory_feed(&suite).await;
    let events = all_events(&mut inventory, &suite.admin).await;
    assert_gap_free(&events);
    let versions: Vec<i64> = events
        .iter()
        .filter(|e| short(e) == "StockLevelChanged")
        .map(|e| decode::<inv::StockLevelChanged>(e).level.unwrap())
        .filter(|level| level.sku == "MUG")
        .map(|level| level.version)
        .collect();
    let level = suite.level("MUG").await;
    assert_eq!(versions, (1..=level.version).collect::<Vec<_>>());
    let last: inv::StockLevelChanged = decode(
        events
            .iter()
            .rfind(|e| short(e) == "StockLevelChanged")
            .unwrap(),
    );
    assert_eq!(last.level.unwrap().on_hand, level.on_hand);
    assert_eq!(
        last.movement.unwrap().kind,
        inv::StockMovementKind::Return as i32
    );
    let reservation: Vec<&str> = events
        .iter()
        .filter(|e| e.subject.starts_with("reservations/"))
        .map(short)
        .collect();
    assert_eq!(reservation, ["ReservationMade", "ReservationCommitted"]);
    assert!(events.iter().any(|e| short(e) == "ProductCreated"));

    // Account: the registration.
    let mut account = feed(suite.account.endpoint());
    let events = all_events(&mut account, &suite.admin).await;
    assert_gap_free(&events);
    let registered = events
        .iter()
        .filter(|e| short(e) == "AccountRegistered")
        .map(decode::<backroom_proto::account::v1::AccountRegistered>)
        .find(|r| r.account.as_ref().unwrap().email == "events@example.com");
    assert!(registered.is_some(), "{events:#?}");

    // WatchEvents replays the same feed from the start.
    let mut stream = payment
        .watch_events(authed(
            &suite.admin,
            ev::WatchEventsRequest {
                after_sequence: 0,
                types: vec![pb::OrderShipped::full_name()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let shipped = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(shipped.subject, order.name);
    let shipped: pb::OrderShipped = decode(&shipped);
    assert!(shipped.shipment.unwrap().name.starts_with(&order.name));

    // JetStream: each service's stream holds its whole feed, once each, in
    // sequence order, the message id the event id.
    for (source, mut client) in [
        ("account", account),
        ("inventory", inventory),
        ("payment", payment),
    ] {
        let fed = all_events(&mut client, &suite.admin).await;
        let streamed = eventually_streamed(&nats, source, fed.len()).await;
        let ids: Vec<&str> = streamed.iter().map(|(id, _)| id.as_str()).collect();
        let fed_ids: Vec<&str> = fed.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, fed_ids, "{source}: the stream is the feed");
        let streamed: Vec<ev::Event> = streamed.into_iter().map(|(_, e)| e).collect();
        assert_eq!(streamed, fed, "{source}: the same envelopes");
    }

    // The webhook receiver: every payment event, signed, in sequence order.
    let fed = all_events(&mut feed(suite.payment.endpoint()), &suite.admin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.accepted().len() < fed.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered: Vec<ev::Event> = receiver
        .accepted()
        .iter()
        .map(|r| r.verified(&endpoint.secret))
        .collect();
    assert_eq!(
        delivered, fed,
        "the receiver got every payment event in order"
    );
    let refunded: pb::OrderRefunded = decode(
        delivered
            .iter()
            .find(|e| short(e) == "OrderRefunded")
            .unwrap(),
    );
    assert_eq!(refunded.amount.unwrap().amount_minor, 100);
    assert_audit_clean(&suite).await;
}

/// The stream of `source` once it holds `count` messages (up to 20 s).
async fn eventually_streamed(
    nats: &NatsServer,
    source: &str,
    count: usize,
) -> Vec<(String, ev::Event)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let streamed = stream_contents(&nats.url(), source).await;
        if streamed.len() >= count || tokio::time::Instant::now() > deadline {
            return streamed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_live_stream_gets_new_events_as_they_commit_and_the_feed_is_not_for_customers() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let mut inventory = inventory_feed(&suite).await;
    // The stocking's event sequenced first: -1 starts after what is
    // sequenced when the stream opens.
    events_until(&mut inventory, &suite.admin, |events| {
        events.iter().any(|e| short(e) == "StockLevelChanged")
    })
    .await;
    let mut stream = inventory
        .watch_events(authed(
            &suite.admin,
            ev::WatchEventsRequest {
                after_sequence: -1,
                types: vec![inv::StockLevelChanged::full_name()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    adjust(&suite, "MUG", 5).await;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the live event arrives")
        .unwrap()
        .unwrap();
    let changed: inv::StockLevelChanged = decode(&event);
    assert_eq!(changed.movement.unwrap().delta_available, 5);
    assert_eq!(changed.level.unwrap().available, 15);

    let ada = suite.customer("nosy@example.com", VISA).await;
    let status = inventory
        .list_events(authed(&ada.token, ev::ListEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = inventory
        .list_events(authed(
            &suite.admin,
            ev::ListEventsRequest {
                types: vec!["backroom.payment.v1.OrderPlaced".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("types[0]") || format!("{status:?}").contains("types[0]"));
}
