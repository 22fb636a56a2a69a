//! Discount codes at the reservation: a use is held with the stock, in the
//! same all-or-nothing transaction, and comes back on release, on expiry
//! (at once, before the sweeper runs, when another reservation needs it)
//! and when every unit of a committed reservation is uncommitted; a
//! replay of the same order holds no second use; and concurrent
//! reservations never take more uses than the code has.

use backroom_inventory::db::repo::reservations::sweep_expired;
use backroom_proto::inventory::v1 as pb;
use backroom_shared::clock::Clock as _;
use futures_util::future::join_all;
use tonic::Code;

use crate::helpers::{TestApp, authed, metadata, order_id, reason, reserve_request};

const CUSTOMER: &str = "accounts/0190f1c2-0000-7000-8000-000000000001";

async fn code(app: &TestApp, code: &str, usage_limit: Option<i64>) {
    app.client()
        .create_discount_code(authed(
            &app.admin,
            pb::CreateDiscountCodeRequest {
                discount_code: Some(pb::DiscountCode {
                    code: code.into(),
                    percent_basis_points: 1000,
                    usage_limit,
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
}

async fn times_used(app: &TestApp, code: &str) -> i64 {
    app.client()
        .get_discount_code(authed(
            &app.admin,
            pb::GetDiscountCodeRequest {
                name: format!("discountCodes/{code}"),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .times_used
}

async fn reserve_with(
    app: &TestApp,
    order: &str,
    codes: &[&str],
    ttl_seconds: i64,
) -> Result<pb::Reservation, tonic::Status> {
    let request = pb::ReserveStockRequest {
        discount_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
        customer: CUSTOMER.into(),
        ttl: Some(prost_types::Duration {
            seconds: ttl_seconds,
            nanos: 0,
        }),
        ..reserve_request(order, &[("MUG", 1)])
    };
    app.client()
        .reserve_stock(authed(&app.service, request))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_use_is_held_with_the_stock_and_given_back_when_the_reservation_ends_unsold() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 10).await;
    code(&app, "ONE", Some(1)).await;

    let first = order_id();
    let held = reserve_with(&app, &first, &["one"], 60).await.unwrap();
    assert_eq!(held.discount_codes, ["ONE"]);
    assert_eq!(times_used(&app, "ONE").await, 1);
    // A replay of the same order holds nothing more.
    reserve_with(&app, &first, &["ONE"], 60).await.unwrap();
    assert_eq!(times_used(&app, "ONE").await, 1);
    // The same lines with other codes are another request.
    let reused = reserve_with(&app, &first, &[], 60).await.unwrap_err();
    assert_eq!(reason(&reused), "ORDER_ID_REUSED");

    // No use left: the second order is refused whole, its stock untaken.
    let second = order_id();
    let refused = reserve_with(&app, &second, &["ONE"], 60).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "DISCOUNT_CODE_NOT_APPLICABLE");
    assert_eq!(metadata(&refused, "cause"), "exhausted");
    assert_eq!(app.level("MUG", "main").await.reserved, 1);

    // Released: the use comes back.
    app.release(&first).await.unwrap();
    assert_eq!(times_used(&app, "ONE").await, 0);
    let held = reserve_with(&app, &second, &["ONE"], 60).await.unwrap();
    assert_eq!(held.state, pb::ReservationState::Active as i32);

    // Expired: the next order that needs the use takes it back at once,
    // before any sweep.
    app.clock.advance(chrono::Duration::seconds(61));
    let third = order_id();
    reserve_with(&app, &third, &["ONE"], 60).await.unwrap();
    assert_eq!(times_used(&app, "ONE").await, 1);
    assert_eq!(sweep_expired(&app.pool, app.clock.now()).await.unwrap(), 0);

    // Committed, then every unit uncommitted (the order was canceled before
    // anything shipped): the use comes back too; a shipped order keeps it.
    app.commit(&third).await.unwrap();
    app.client()
        .uncommit_reservation(authed(
            &app.service,
            pb::UncommitReservationRequest {
                name: format!("reservations/{third}"),
                lines: vec![pb::LineItem {
                    sku: "MUG".into(),
                    quantity: 1,
                }],
                request_id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(times_used(&app, "ONE").await, 0);
}

#[tokio::test]
async fn concurrent_reservations_never_take_more_uses_than_a_code_has() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 100).await;
    code(&app, "FIVE", Some(5)).await;
    let outcomes = join_all((0..40).map(|_| {
        let app = &app;
        async move { reserve_with(app, &order_id(), &["FIVE"], 600).await }
    }))
    .await;
    let held = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(held, 5, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(metadata(refused, "cause"), "exhausted", "{refused:?}");
    }
    assert_eq!(times_used(&app, "FIVE").await, 5);
    // Only the five reservations hold stock.
    assert_eq!(app.level("MUG", "main").await.reserved, 5);
}

#[tokio::test]
async fn codes_need_a_customer_and_unknown_codes_are_named() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 10).await;
    let request = pb::ReserveStockRequest {
        discount_codes: vec!["ANY".into()],
        ..reserve_request(&order_id(), &[("MUG", 1)])
    };
    let status = app
        .client()
        .reserve_stock(authed(&app.service, request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("customer"), "{status:?}");
    let missing = reserve_with(&app, &order_id(), &["NOPE"], 60)
        .await
        .unwrap_err();
    assert_eq!(reason(&missing), "DISCOUNT_CODE_NOT_FOUND");
    assert_eq!(metadata(&missing, "code"), "NOPE");
    assert_eq!(app.level("MUG", "main").await.reserved, 0);
}
