//! Shipping orders across the three services: a completed order ships in
//! parts until it is fulfilled, its stock leaves on_hand, racing shipments
//! never claim the same units, a shipment a crash left PENDING is finished
//! once by recovery, and who may ship or see shipments.

use backroom::audit::Tolerances;
use backroom_payment::checkout::{repo, shipment::CreateShipment};
use backroom_proto::payment::v1 as pb;
use futures_util::future::join_all;
use tonic::Code;

use crate::{
    audit::findings,
    harness::{Customer, Suite, VISA, authed},
};

pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn shipment_request(
    order: &str,
    lines: &[(&str, i64)],
    request_id: &str,
) -> pb::CreateShipmentRequest {
    pb::CreateShipmentRequest {
        parent: order.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::LineItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        carrier: "DHL".into(),
        tracking_number: "JJD0099999999".into(),
        request_id: request_id.into(),
    }
}

pub(crate) async fn ship(
    suite: &Suite,
    token: &str,
    order: &str,
    lines: &[(&str, i64)],
    request_id: &str,
) -> Result<pb::Shipment, tonic::Status> {
    suite
        .checkout
        .clone()
        .create_shipment(authed(token, shipment_request(order, lines, request_id)))
        .await
        .map(tonic::Response::into_inner)
}

async fn shipments(
    suite: &Suite,
    token: &str,
    order: &str,
) -> Result<Vec<pb::Shipment>, tonic::Status> {
    suite
        .checkout
        .clone()
        .list_shipments(authed(
            token,
            pb::ListShipmentsRequest {
                parent: order.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().shipments)
}

pub(crate) fn reason(status: &tonic::Status) -> String {
    backroom_shared::errors::reason_of(status).unwrap_or_default()
}

pub(crate) async fn completed_order(
    suite: &Suite,
    who: &Customer,
    lines: &[(&str, i64)],
) -> pb::Order {
    let order = suite
        .place(who, &who.card, lines, &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Completed as i32, "{order:#?}");
    order
}

pub(crate) async fn assert_audit_clean(suite: &Suite) {
    let found = findings(suite, Tolerances::default()).await;
    assert!(found.is_empty(), "audit: {found:#?}");
}

#[tokio::test]
async fn an_order_ships_in_two_parts_until_fulfilled_and_its_stock_leaves_on_hand() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.product("CAP", 999, 4).await;
    let ada = suite.customer("ship@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 3), ("CAP", 2)]).await;
    assert_eq!(
        order.fulfillment_status,
        pb::FulfillmentStatus::Unfulfilled as i32
    );
    let before = (suite.level("MUG").await, suite.level("CAP").await);
    assert_eq!((before.0.on_hand, before.0.committed), (10, 3));

    let first = ship(
        &suite,
        &suite.admin,
        &order.name,
        &[("MUG", 2)],
        &request_id(),
    )
    .await
    .unwrap();
    assert_eq!(first.state, pb::ShipmentState::Shipped as i32);
    let partial = suite.order(&order.name).await;
    assert_eq!(
        partial.fulfillment_status,
        pb::FulfillmentStatus::PartiallyFulfilled as i32
    );
    let shipped: Vec<i64> = partial.lines.iter().map(|l| l.shipped_quantity).collect();
    assert_eq!(shipped, [2, 0]);
    assert_eq!(suite.level("MUG").await.on_hand, 8);

    // The rest, without naming lines; its replay is the same shipment.
    let rest_id = request_id();
    let rest = ship(&suite, &suite.admin, &order.name, &[], &rest_id)
        .await
        .unwrap();
    let lines: Vec<(String, i64)> = rest
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    assert_eq!(lines, [("MUG".to_owned(), 1), ("CAP".to_owned(), 2)]);
    let replay = ship(&suite, &suite.admin, &order.name, &[], &rest_id)
        .await
        .unwrap();
    assert_eq!(replay.name, rest.name);
    let fulfilled = suite.order(&order.name).await;
    assert_eq!(
        fulfilled.fulfillment_status,
        pb::FulfillmentStatus::Fulfilled as i32
    );
    let (mug, cap) = (suite.level("MUG").await, suite.level("CAP").await);
    assert_eq!((mug.on_hand, mug.committed, mug.available), (7, 0, 7));
    assert_eq!((cap.on_hand, cap.committed, cap.available), (2, 0, 2));
    // Nothing is left, and the customer sees both shipments of their order.
    let status = ship(&suite, &suite.admin, &order.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTHING_TO_SHIP");
    let seen = shipments(&suite, &ada.token, &order.name).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.state == pb::ShipmentState::Shipped as i32
                && s.carrier == "DHL"
                && s.name.starts_with(&format!("{}/shipments/", order.name)))
    );
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn only_warehouses_ship_only_what_is_left_of_completed_orders() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.product("CAP", 999, 1).await;
    let ada = suite.customer("ada-ship@example.com", VISA).await;
    let eve = suite.customer("eve-ship@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 2)]).await;

    // A customer — the order's own, or another — cannot ship.
    for who in [&ada, &eve] {
        let status = ship(
            &suite,
            &who.token,
            &order.name,
            &[("MUG", 1)],
            &request_id(),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Nor does a service without role fulfillment.
    let service = suite.service_token("payment", "backroom.payment");
    let status = ship(&suite, &service, &order.name, &[("MUG", 1)], &request_id())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Another customer does not see the order's shipments; its owner does.
    let status = shipments(&suite, &eve.token, &order.name)
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::NotFound, "ORDER_NOT_FOUND".into())
    );
    assert!(
        shipments(&suite, &ada.token, &order.name)
            .await
            .unwrap()
            .is_empty()
    );

    // More than ordered, and a SKU the order does not have.
    let status = ship(
        &suite,
        &suite.admin,
        &order.name,
        &[("MUG", 3), ("CAP", 1)],
        &request_id(),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&status), "SHIPMENT_EXCEEDS_ORDER");
    use tonic_types::StatusExt as _;
    let skus = status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("skus").cloned());
    assert_eq!(skus.as_deref(), Some("CAP,MUG"));
    // A request id names one shipment: other parameters are refused.
    // A warehouse (a service with role fulfillment) ships and sees the
    // shipments.
    let id = request_id();
    ship(&suite, &suite.warehouse, &order.name, &[("MUG", 1)], &id)
        .await
        .unwrap();
    assert_eq!(
        shipments(&suite, &suite.warehouse, &order.name)
            .await
            .unwrap()
            .len(),
        1
    );
    let status = ship(&suite, &suite.warehouse, &order.name, &[("MUG", 2)], &id)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    // A failed order (short of stock) does not ship.
    let short = suite
        .place(&ada, &ada.card, &[("CAP", 5)], &request_id())
        .await
        .unwrap();
    assert_eq!(short.state, pb::OrderState::Failed as i32);
    let status = ship(&suite, &suite.admin, &short.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ORDER_NOT_SHIPPABLE");
    // Bad input names the fields.
    let status = ship(&suite, &suite.admin, "orders/nope", &[("mug", 0)], "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = backroom_shared::errors::violated_fields(&status);
    for field in ["parent", "request_id", "lines[0].sku", "lines[0].quantity"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert_eq!(
        suite.level("MUG").await.on_hand,
        9,
        "one unit shipped in all"
    );
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn racing_shipments_never_claim_the_same_units() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 20).await;
    let ada = suite.customer("race-ship@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 5)]).await;
    let outcomes = join_all((0..20).map(|_| {
        let (suite, name) = (&suite, &order.name);
        async move { ship(suite, &suite.admin, name, &[("MUG", 1)], &request_id()).await }
    }))
    .await;
    let shipped = outcomes.iter().filter(|o| o.is_ok()).count();
    for outcome in &outcomes {
        if let Err(status) = outcome {
            assert_eq!(reason(status), "SHIPMENT_EXCEEDS_ORDER", "{status:?}");
        }
    }
    assert_eq!(shipped, 5);
    let mug = suite.level("MUG").await;
    assert_eq!((mug.on_hand, mug.committed), (15, 0));
    // The shipments come in pages, oldest first, each once.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = suite
            .checkout
            .clone()
            .list_shipments(authed(
                &ada.token,
                pb::ListShipmentsRequest {
                    parent: order.name.clone(),
                    page_size: 2,
                    page_token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.shipments.len() <= 2);
        seen.extend(page.shipments.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted), (5, seen.clone()));
    assert_eq!(
        suite.order(&order.name).await.fulfillment_status,
        pb::FulfillmentStatus::Fulfilled as i32
    );
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_shipment_a_crash_left_pending_is_shipped_once_by_recovery() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("crash-ship@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 4)]).await;
    // The process stored the shipment, then died before calling inventory.
    let id = request_id();
    let cmd = CreateShipment::try_from(shipment_request(&order.name, &[("MUG", 3)], &id)).unwrap();
    let stored = suite
        .payment_pool
        .transaction(move |conn| {
            let now = chrono::Utc::now();
            repo::shipments::begin(conn, &cmd, now)
                .map_err(|err| backroom_shared::db::DbError::Other(anyhow::anyhow!("{err}")))
        })
        .await
        .unwrap();
    // Its units are claimed: only one more can ship meanwhile.
    let status = ship(
        &suite,
        &suite.admin,
        &order.name,
        &[("MUG", 2)],
        &request_id(),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&status), "SHIPMENT_EXCEEDS_ORDER");
    assert_eq!(suite.level("MUG").await.on_hand, 10, "nothing left yet");

    // Recovery finishes it once its grace has passed, and only once.
    suite.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(suite.saga.ship_pending().await.unwrap(), 1);
    assert_eq!(suite.saga.ship_pending().await.unwrap(), 0);
    assert_eq!(suite.level("MUG").await.on_hand, 7);
    // The client's retry with its request id finds it SHIPPED.
    let replay = ship(&suite, &suite.admin, &order.name, &[("MUG", 3)], &id)
        .await
        .unwrap();
    assert_eq!(replay.name, stored.name());
    assert_eq!(replay.state, pb::ShipmentState::Shipped as i32);
    assert_eq!(suite.level("MUG").await.on_hand, 7, "shipped once");
    let line = &suite.order(&order.name).await.lines[0];
    assert_eq!(line.shipped_quantity, 3);
    assert_audit_clean(&suite).await;
}
