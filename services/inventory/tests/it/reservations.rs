//! Reservations through the generated client against a real server and a
//! real Postgres: the lifecycle, every documented error, and expiry with a
//! manual clock (the concurrency guarantees are in `concurrency`).

use backroom_inventory::db::repo::reservations::sweep_expired;
use backroom_proto::inventory::v1 as pb;
use backroom_shared::clock::Clock as _;
use futures_util::future::join_all;
use tonic::Code;

use crate::helpers::{
    TestApp, assert_error, authed, fields, metadata, order_id, reserve_request, units,
};

const ACTIVE: i32 = pb::ReservationState::Active as i32;
const COMMITTED: i32 = pb::ReservationState::Committed as i32;
const RELEASED: i32 = pb::ReservationState::Released as i32;
const EXPIRED: i32 = pb::ReservationState::Expired as i32;

#[tokio::test]
async fn a_reservation_holds_stock_until_committed_or_released_idempotently() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.product("B", 100, 10).await;
    app.stock("A", "main", 10).await;
    app.stock("B", "main", 10).await;

    let sold = order_id();
    let reservation = app.reserve(&sold, &[("B", 2), ("A", 3)]).await.unwrap();
    assert_eq!(reservation.state, ACTIVE);
    assert_eq!(reservation.name, format!("reservations/{sold}"));
    let lines: Vec<_> = reservation
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.quantity, l.location.as_str()))
        .collect();
    assert_eq!(lines, [("B", 2, "main"), ("A", 3, "main")], "request order");
    let expire =
        reservation.expire_time.unwrap().seconds - reservation.create_time.unwrap().seconds;
    assert_eq!(expire, 15 * 60, "default ttl");
    assert_eq!(units(&app, "A", "main").await, (10, 7, 3, 0));

    let committed = app.commit(&sold).await.unwrap();
    assert_eq!(committed.state, COMMITTED);
    assert_eq!(app.commit(&sold).await.unwrap(), committed, "commit twice");
    assert_eq!(units(&app, "A", "main").await, (10, 7, 0, 3));
    assert_error(
        app.release(&sold).await,
        Code::FailedPrecondition,
        "RESERVATION_COMMITTED",
    );

    let returned = order_id();
    app.reserve(&returned, &[("A", 1)]).await.unwrap();
    let released = app.release(&returned).await.unwrap();
    assert_eq!(released.state, RELEASED);
    assert_eq!(
        app.release(&returned).await.unwrap(),
        released,
        "release twice"
    );
    assert_error(
        app.commit(&returned).await,
        Code::FailedPrecondition,
        "RESERVATION_RELEASED",
    );
    assert_eq!(units(&app, "A", "main").await, (10, 7, 0, 3));

    // Reserving again with the same order id returns it as it is now.
    let again = app.reserve(&sold, &[("A", 3), ("B", 2)]).await.unwrap();
    assert_eq!(again.state, COMMITTED);
    assert_eq!(units(&app, "A", "main").await, (10, 7, 0, 3));

    let log = app.movements("products/A/stockLevels/main").await;
    let kinds: Vec<_> = log
        .iter()
        .map(|m| pb::StockMovementKind::try_from(m.kind).unwrap())
        .collect();
    use pb::StockMovementKind::*;
    assert_eq!(kinds, [Adjustment, Reserve, Commit, Reserve, Release]);
    assert_eq!(log[1].reservation, format!("reservations/{sold}"));
    let only_sold = app
        .client()
        .list_stock_movements(authed(
            &app.admin,
            pb::ListStockMovementsRequest {
                parent: "products/-/stockLevels/-".into(),
                reservation: format!("reservations/{sold}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        only_sold.stock_movements.len(),
        4,
        "2 lines × reserve + commit"
    );

    let got = app
        .client()
        .get_reservation(authed(
            &app.admin,
            pb::GetReservationRequest {
                name: format!("reservations/{sold}"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, committed);
}

#[tokio::test]
async fn a_short_line_fails_the_whole_reservation_and_changes_nothing() {
    let app = TestApp::spawn().await;
    for sku in ["A", "B", "C"] {
        app.product(sku, 100, 10).await;
    }
    app.stock("A", "main", 5).await;
    app.stock("B", "main", 1).await;
    app.stock("C", "main", 1).await;
    let before_levels = app.levels().await;
    let before_log = app.movements("products/-/stockLevels/-").await;

    let short = app
        .reserve(&order_id(), &[("C", 2), ("A", 5), ("B", 2)])
        .await;
    let status = assert_error(short, Code::FailedPrecondition, "INSUFFICIENT_STOCK");
    assert_eq!(metadata(&status, "skus"), "B,C");
    assert_eq!(app.levels().await, before_levels);
    assert_eq!(app.movements("products/-/stockLevels/-").await, before_log);
}

#[tokio::test]
async fn reserve_errors_are_the_documented_reasons() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.product("OFF", 100, 10).await;
    app.stock("A", "main", 5).await;
    app.stock("OFF", "main", 5).await;
    app.client()
        .update_product(authed(
            &app.admin,
            pb::UpdateProductRequest {
                product: Some(pb::Product {
                    name: "products/OFF".into(),
                    active: false,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["active".into()],
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();

    let unknown = app
        .reserve(&order_id(), &[("A", 1), ("ZZ", 1), ("YY", 1)])
        .await;
    let status = assert_error(unknown, Code::NotFound, "PRODUCT_NOT_FOUND");
    assert_eq!(metadata(&status, "skus"), "YY,ZZ");
    let inactive = app.reserve(&order_id(), &[("A", 1), ("OFF", 1)]).await;
    let status = assert_error(inactive, Code::FailedPrecondition, "PRODUCT_INACTIVE");
    assert_eq!(metadata(&status, "skus"), "OFF");

    // One order id, one set of lines.
    let order = order_id();
    let first = app.reserve(&order, &[("A", 1)]).await.unwrap();
    let reused = app.reserve(&order, &[("A", 2)]).await;
    let status = assert_error(reused, Code::InvalidArgument, "ORDER_ID_REUSED");
    assert_eq!(fields(&status), ["lines"]);
    let mut at_main = reserve_request(&order, &[("A", 1)]);
    at_main.lines[0].location = "main".into();
    let same = app
        .client()
        .reserve_stock(authed(&app.service, at_main.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, first, "an explicit location matches the one chosen");
    at_main.lines[0].location = "west".into();
    let other = app
        .client()
        .reserve_stock(authed(&app.service, at_main))
        .await;
    assert_error(other, Code::InvalidArgument, "ORDER_ID_REUSED");
    assert_eq!(units(&app, "A", "main").await, (5, 4, 1, 0));

    let unknown = format!("reservations/{}", order_id());
    assert_error(
        app.commit(&unknown["reservations/".len()..]).await,
        Code::NotFound,
        "RESERVATION_NOT_FOUND",
    );
    assert_error(
        app.release(&unknown["reservations/".len()..]).await,
        Code::NotFound,
        "RESERVATION_NOT_FOUND",
    );
    let get = app
        .client()
        .get_reservation(authed(
            &app.service,
            pb::GetReservationRequest { name: unknown },
        ))
        .await;
    assert_error(get, Code::NotFound, "RESERVATION_NOT_FOUND");
}

#[tokio::test]
async fn bad_reserve_input_is_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let reserve = |request: pb::ReserveStockRequest| {
        let mut client = app.client();
        let request = authed(&app.service, request);
        async move { client.reserve_stock(request).await.unwrap_err() }
    };
    let mut request = reserve_request("nope", &[("A", 0), ("A", -1), ("", 1)]);
    request.lines[0].location = "Main".into();
    request.ttl = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    request.request_id = "x".into();
    let status = reserve(request).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "request_id",
            "order_id",
            "lines[0].quantity",
            "lines[1].quantity",
            "lines[1].sku",
            "lines[2].sku",
            "lines[0].location",
            "ttl",
        ]
    );
    let mut too_long = reserve_request(&order_id(), &[("A", 1)]);
    too_long.ttl = Some(prost_types::Duration {
        seconds: 3601,
        nanos: 0,
    });
    assert_eq!(fields(&reserve(too_long).await), ["ttl"]);
    let mut negative = reserve_request(&order_id(), &[("A", 1)]);
    negative.ttl = Some(prost_types::Duration {
        seconds: -5,
        nanos: 0,
    });
    assert_eq!(fields(&reserve(negative).await), ["ttl"]);
    assert_eq!(
        fields(&reserve(reserve_request(&order_id(), &[])).await),
        ["lines"]
    );
    let skus: Vec<String> = (0..101).map(|i| format!("S{i}")).collect();
    let many: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    assert_eq!(
        fields(&reserve(reserve_request(&order_id(), &many)).await),
        ["lines"]
    );
    let big = reserve(reserve_request(&order_id(), &[("A", 10_001)])).await;
    assert_eq!(fields(&big), ["lines[0].quantity"]);
    let bad_name = app
        .client()
        .commit_reservation(authed(
            &app.service,
            pb::CommitReservationRequest {
                name: "orders/x".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&bad_name), ["name"]);
}

#[tokio::test]
async fn only_services_reserve_commit_and_release() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.stock("A", "main", 5).await;
    let order = order_id();
    app.reserve(&order, &[("A", 1)]).await.unwrap();
    let name = format!("reservations/{order}");
    for token in [&app.customer, &app.admin] {
        let reserve = app
            .client()
            .reserve_stock(authed(token, reserve_request(&order_id(), &[("A", 1)])))
            .await;
        let status = assert_error(reserve, Code::PermissionDenied, "ACCESS_DENIED");
        assert_eq!(metadata(&status, "required"), "role service");
        let commit = app
            .client()
            .commit_reservation(authed(
                token,
                pb::CommitReservationRequest {
                    name: name.clone(),
                    request_id: String::new(),
                },
            ))
            .await;
        assert_error(commit, Code::PermissionDenied, "ACCESS_DENIED");
        let release = app
            .client()
            .release_reservation(authed(
                token,
                pb::ReleaseReservationRequest {
                    name: name.clone(),
                    request_id: String::new(),
                },
            ))
            .await;
        assert_error(release, Code::PermissionDenied, "ACCESS_DENIED");
    }
    let customer_get = app
        .client()
        .get_reservation(authed(
            &app.customer,
            pb::GetReservationRequest { name: name.clone() },
        ))
        .await;
    assert_error(customer_get, Code::PermissionDenied, "ACCESS_DENIED");
    app.client()
        .get_reservation(authed(&app.admin, pb::GetReservationRequest { name }))
        .await
        .expect("admins read reservations");
    let anonymous = app
        .client()
        .reserve_stock(reserve_request(&order_id(), &[("A", 1)]))
        .await;
    assert_error(anonymous, Code::Unauthenticated, "TOKEN_MISSING");
    assert_eq!(units(&app, "A", "main").await, (5, 4, 1, 0));
}

#[tokio::test]
async fn a_replayed_request_id_returns_the_first_outcome() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.stock("A", "main", 5).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut request = reserve_request(&order_id(), &[("A", 2)]);
    request.request_id = request_id.clone();
    let first = app
        .client()
        .reserve_stock(authed(&app.service, request.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client()
        .reserve_stock(authed(&app.service, request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    request.order_id = order_id();
    let reused = app
        .client()
        .reserve_stock(authed(&app.service, request))
        .await;
    assert_error(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    assert_eq!(units(&app, "A", "main").await, (5, 3, 2, 0));
}

#[tokio::test]
async fn without_a_location_the_fullest_level_that_covers_the_line_is_used() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.stock("A", "east", 4).await;
    app.stock("A", "west", 4).await;
    app.stock("A", "north", 2).await;
    let first = app.reserve(&order_id(), &[("A", 3)]).await.unwrap();
    assert_eq!(first.lines[0].location, "east", "tie on 4: lowest id");
    let second = app.reserve(&order_id(), &[("A", 3)]).await.unwrap();
    assert_eq!(second.lines[0].location, "west");
    let third = app.reserve(&order_id(), &[("A", 2)]).await.unwrap();
    assert_eq!(third.lines[0].location, "north");
    // 1 + 1 + 0 left: a line is never split.
    let split = app.reserve(&order_id(), &[("A", 2)]).await;
    assert_error(split, Code::FailedPrecondition, "INSUFFICIENT_STOCK");
    let mut pinned = reserve_request(&order_id(), &[("A", 1)]);
    pinned.lines[0].location = "west".into();
    let pinned = app
        .client()
        .reserve_stock(authed(&app.service, pinned))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pinned.lines[0].location, "west");
}

#[tokio::test]
async fn expired_reservations_stop_counting_before_the_sweeper_runs() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.stock("A", "main", 10).await;
    let held = order_id();
    let mut request = reserve_request(&held, &[("A", 10)]);
    request.ttl = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    app.client()
        .reserve_stock(authed(&app.service, request))
        .await
        .unwrap();
    let to_release = order_id();
    let mut short_lived = reserve_request(&to_release, &[("A", 1)]);
    short_lived.ttl = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    assert_error(
        app.client()
            .reserve_stock(authed(&app.service, short_lived))
            .await,
        Code::FailedPrecondition,
        "INSUFFICIENT_STOCK",
    );

    app.clock.advance(chrono::Duration::seconds(60));
    // Reads say EXPIRED at once; commit refuses.
    let got = app
        .client()
        .get_reservation(authed(
            &app.service,
            pb::GetReservationRequest {
                name: format!("reservations/{held}"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, EXPIRED);
    assert_error(
        app.commit(&held).await,
        Code::FailedPrecondition,
        "RESERVATION_EXPIRED",
    );
    // The next reservation that needs the units gets them (EXPIRE recorded).
    let next = order_id();
    app.reserve(&next, &[("A", 10)]).await.unwrap();
    assert_eq!(units(&app, "A", "main").await, (10, 0, 10, 0));
    let kinds: Vec<_> = app
        .movements("products/A/stockLevels/main")
        .await
        .iter()
        .map(|m| pb::StockMovementKind::try_from(m.kind).unwrap())
        .collect();
    use pb::StockMovementKind::*;
    assert_eq!(kinds, [Adjustment, Reserve, Expire, Reserve]);
    // Releasing an expired reservation returns it unchanged.
    assert_eq!(app.release(&held).await.unwrap().state, EXPIRED);
    assert_eq!(sweep_expired(&app.pool, app.clock.now()).await.unwrap(), 0);
    assert_eq!(units(&app, "A", "main").await, (10, 0, 10, 0));
}

#[tokio::test]
async fn the_sweeper_returns_expired_units_exactly_once() {
    let app = TestApp::spawn().await;
    app.product("A", 100, 10).await;
    app.product("B", 100, 10).await;
    app.stock("A", "main", 50).await;
    app.stock("B", "main", 50).await;
    for _ in 0..30 {
        app.reserve(&order_id(), &[("A", 1), ("B", 1)])
            .await
            .unwrap();
    }
    let kept = order_id();
    let mut long = reserve_request(&kept, &[("A", 5)]);
    long.ttl = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    app.client()
        .reserve_stock(authed(&app.service, long))
        .await
        .unwrap();
    // Nothing is due yet.
    assert_eq!(sweep_expired(&app.pool, app.clock.now()).await.unwrap(), 0);

    app.clock.advance(chrono::Duration::minutes(16));
    // Three sweepers at once (three replicas): 30 expired between them.
    let now = app.clock.now();
    let sweeps = join_all((0..3).map(|_| sweep_expired(&app.pool, now))).await;
    let swept: usize = sweeps.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(swept, 30);
    assert_eq!(
        sweep_expired(&app.pool, now).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(units(&app, "A", "main").await, (50, 45, 5, 0));
    assert_eq!(units(&app, "B", "main").await, (50, 50, 0, 0));
    let expires = app
        .movements("products/-/stockLevels/-")
        .await
        .iter()
        .filter(|m| m.kind == pb::StockMovementKind::Expire as i32)
        .count();
    assert_eq!(expires, 60);
    assert_eq!(app.commit(&kept).await.unwrap().state, COMMITTED);
}
