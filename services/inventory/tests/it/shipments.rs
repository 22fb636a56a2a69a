//! ShipReservation through the generated client against a real server and a
//! real Postgres: committed units leave the building in one or more
//! shipments, never more than a line holds — however many shipments race —
//! and every documented refusal; UncommitReservation returns units that
//! will not ship; RestockReservation and WriteOffReservation take shipped
//! units back, never more than shipped however many race.

use backroom_proto::inventory::v1 as pb;
use futures_util::future::join_all;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, authed, fields, metadata, order_id, units};

fn ship_request(
    order_id: &str,
    lines: &[(&str, i64)],
    request_id: &str,
) -> pb::ShipReservationRequest {
    pb::ShipReservationRequest {
        name: format!("reservations/{order_id}"),
        lines: lines
            .iter()
            .map(|(sku, quantity)| pb::LineItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        request_id: request_id.into(),
    }
}

async fn ship(
    app: &TestApp,
    order_id: &str,
    lines: &[(&str, i64)],
    request_id: &str,
) -> Result<pb::Reservation, tonic::Status> {
    app.client()
        .ship_reservation(authed(
            &app.service,
            ship_request(order_id, lines, request_id),
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// (sku, shipped) of every line.
fn shipped(reservation: &pb::Reservation) -> Vec<(String, i64)> {
    reservation
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.shipped_quantity))
        .collect()
}

#[tokio::test]
async fn committed_units_ship_in_parts_and_leave_on_hand() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.product("CAP", 999, 100).await;
    app.stock("MUG", "main", 10).await;
    app.stock("CAP", "main", 5).await;
    let order = order_id();
    app.reserve(&order, &[("MUG", 3), ("CAP", 2)])
        .await
        .unwrap();
    app.commit(&order).await.unwrap();
    assert_eq!(units(&app, "MUG", "main").await, (10, 7, 0, 3));

    // First shipment: part of one line.
    let first = ship(&app, &order, &[("MUG", 2)], &new_request_id())
        .await
        .unwrap();
    assert_eq!(
        shipped(&first),
        [("MUG".to_owned(), 2), ("CAP".to_owned(), 0)]
    );
    assert_eq!(units(&app, "MUG", "main").await, (8, 7, 0, 1));
    // Second: the rest of both.
    let second_id = new_request_id();
    let second = ship(&app, &order, &[("CAP", 2), ("MUG", 1)], &second_id)
        .await
        .unwrap();
    assert_eq!(
        shipped(&second),
        [("MUG".to_owned(), 3), ("CAP".to_owned(), 2)]
    );
    assert_eq!(units(&app, "MUG", "main").await, (7, 7, 0, 0));
    assert_eq!(units(&app, "CAP", "main").await, (3, 3, 0, 0));
    // A replay of the second shipment is that shipment, not a third.
    let replay = ship(&app, &order, &[("CAP", 2), ("MUG", 1)], &second_id)
        .await
        .unwrap();
    assert_eq!(shipped(&replay), shipped(&second));
    assert_eq!(units(&app, "MUG", "main").await, (7, 7, 0, 0));
    // Nothing is left to ship.
    let status = assert_error(
        ship(&app, &order, &[("MUG", 1)], &new_request_id()).await,
        Code::FailedPrecondition,
        "EXCEEDS_COMMITTED",
    );
    assert_eq!(metadata(&status, "skus"), "MUG");

    // The log has one SHIP movement per shipped line, and replays to the
    // level.
    let movements = app.movements("products/MUG/stockLevels/main").await;
    let ships: Vec<i64> = movements
        .iter()
        .filter(|m| m.kind == pb::StockMovementKind::Ship as i32)
        .map(|m| m.delta_on_hand)
        .collect();
    assert_eq!(ships, [-2, -1]);
    let replayed: i64 = movements.iter().map(|m| m.delta_on_hand).sum();
    assert_eq!(replayed, 7);
    assert!(
        movements
            .iter()
            .filter(|m| m.kind == pb::StockMovementKind::Ship as i32)
            .all(|m| m.delta_committed == m.delta_on_hand && m.delta_available == 0)
    );
}

#[tokio::test]
async fn only_what_a_committed_line_holds_ships_and_refusals_name_the_reason() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.product("CAP", 999, 100).await;
    app.stock("MUG", "main", 10).await;
    app.stock("CAP", "main", 5).await;

    // An ACTIVE (not yet committed) reservation does not ship.
    let active = order_id();
    app.reserve(&active, &[("MUG", 2)]).await.unwrap();
    let status = assert_error(
        ship(&app, &active, &[("MUG", 1)], &new_request_id()).await,
        Code::FailedPrecondition,
        "RESERVATION_NOT_COMMITTED",
    );
    assert_eq!(metadata(&status, "current_state"), "ACTIVE");
    // Nor does a released one.
    app.release(&active).await.unwrap();
    let status = assert_error(
        ship(&app, &active, &[("MUG", 1)], &new_request_id()).await,
        Code::FailedPrecondition,
        "RESERVATION_NOT_COMMITTED",
    );
    assert_eq!(metadata(&status, "current_state"), "RELEASED");

    let order = order_id();
    app.reserve(&order, &[("MUG", 2)]).await.unwrap();
    app.commit(&order).await.unwrap();
    // More than the line holds, and a SKU of another order: both named, and
    // nothing ships.
    let status = assert_error(
        ship(&app, &order, &[("MUG", 3), ("CAP", 1)], &new_request_id()).await,
        Code::FailedPrecondition,
        "EXCEEDS_COMMITTED",
    );
    assert_eq!(metadata(&status, "skus"), "CAP,MUG");
    assert_eq!(units(&app, "MUG", "main").await, (10, 8, 0, 2));
    // An unknown reservation.
    assert_error(
        ship(&app, &order_id(), &[("MUG", 1)], &new_request_id()).await,
        Code::NotFound,
        "RESERVATION_NOT_FOUND",
    );
    // Bad input, each field named; a request id is required.
    let status = assert_error(
        ship(&app, "nope", &[("mug", 0), ("MUG", 1), ("MUG", 1)], "").await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(
        fields(&status),
        [
            "name",
            "request_id",
            "lines[0].sku",
            "lines[0].quantity",
            "lines[2].sku"
        ]
    );
    assert_error(
        ship(&app, &order, &[], &new_request_id()).await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    // Only services ship.
    for token in [&app.customer, &app.admin] {
        let refused = app
            .client()
            .ship_reservation(authed(
                token,
                ship_request(&order, &[("MUG", 1)], &new_request_id()),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    assert_eq!(units(&app, "MUG", "main").await, (10, 8, 0, 2));
}

#[tokio::test]
async fn racing_shipments_never_ship_more_than_the_line_holds() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 30).await;
    let order = order_id();
    app.reserve(&order, &[("MUG", 10)]).await.unwrap();
    app.commit(&order).await.unwrap();
    // 25 shipments of one unit each, at once, on ten committed units.
    let outcomes = join_all((0..25).map(|_| {
        let (app, order) = (&app, &order);
        async move { ship(app, order, &[("MUG", 1)], &new_request_id()).await }
    }))
    .await;
    let shipped_ok = outcomes.iter().filter(|o| o.is_ok()).count();
    for outcome in &outcomes {
        if let Err(status) = outcome {
            assert_eq!(
                crate::helpers::reason(status),
                "EXCEEDS_COMMITTED",
                "{status:?}"
            );
        }
    }
    assert_eq!(shipped_ok, 10);
    assert_eq!(units(&app, "MUG", "main").await, (20, 20, 0, 0));
    let reservation = app
        .client()
        .get_reservation(authed(
            &app.service,
            pb::GetReservationRequest {
                name: format!("reservations/{order}"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped(&reservation), [("MUG".to_owned(), 10)]);
}

async fn uncommit(
    app: &TestApp,
    order_id: &str,
    lines: &[(&str, i64)],
    request_id: &str,
) -> Result<pb::Reservation, tonic::Status> {
    let ship = ship_request(order_id, lines, request_id);
    app.client()
        .uncommit_reservation(authed(
            &app.service,
            pb::UncommitReservationRequest {
                name: ship.name,
                lines: ship.lines,
                request_id: ship.request_id,
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn units_that_will_not_ship_go_back_to_available_and_a_racing_ship_gets_each_unit_or_not() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 30).await;
    let order = order_id();
    app.reserve(&order, &[("MUG", 4)]).await.unwrap();
    app.commit(&order).await.unwrap();
    // One ships, one goes back.
    ship(&app, &order, &[("MUG", 1)], &new_request_id())
        .await
        .unwrap();
    let back_id = new_request_id();
    let back = uncommit(&app, &order, &[("MUG", 1)], &back_id)
        .await
        .unwrap();
    assert_eq!(
        (
            back.lines[0].shipped_quantity,
            back.lines[0].uncommitted_quantity
        ),
        (1, 1)
    );
    // on_hand keeps the returned unit; a replay returns nothing more.
    assert_eq!(units(&app, "MUG", "main").await, (29, 27, 0, 2));
    uncommit(&app, &order, &[("MUG", 1)], &back_id)
        .await
        .unwrap();
    assert_eq!(units(&app, "MUG", "main").await, (29, 27, 0, 2));
    let kinds: Vec<i32> = app
        .movements("products/MUG/stockLevels/main")
        .await
        .iter()
        .map(|m| m.kind)
        .collect();
    assert!(kinds.contains(&(pb::StockMovementKind::Uncommit as i32)));

    // Ship and uncommit race for the last two units, ten of each: each unit
    // goes one way, never both, never neither.
    let races = join_all((0..20).map(|i| {
        let (app, order) = (&app, &order);
        async move {
            if i % 2 == 0 {
                ship(app, order, &[("MUG", 1)], &new_request_id()).await
            } else {
                uncommit(app, order, &[("MUG", 1)], &new_request_id()).await
            }
        }
    }))
    .await;
    assert_eq!(races.iter().filter(|r| r.is_ok()).count(), 2);
    for refused in races.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(crate::helpers::reason(refused), "EXCEEDS_COMMITTED");
    }
    let (on_hand, available, reserved, committed) = units(&app, "MUG", "main").await;
    assert_eq!((reserved, committed), (0, 0));
    assert_eq!(on_hand, available);
    // Every one of the four units went exactly one way.
    let reservation = app
        .client()
        .get_reservation(authed(
            &app.service,
            pb::GetReservationRequest {
                name: format!("reservations/{order}"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let line = &reservation.lines[0];
    assert_eq!(line.shipped_quantity + line.uncommitted_quantity, 4);
    assert_eq!(on_hand, 30 - line.shipped_quantity);
}

/// RestockReservation (`restock`) or WriteOffReservation of `lines`.
async fn take_back(
    app: &TestApp,
    order_id: &str,
    lines: &[(&str, i64)],
    request_id: &str,
    restock: bool,
) -> Result<pb::Reservation, tonic::Status> {
    let req = ship_request(order_id, lines, request_id);
    let mut client = app.client();
    let answer = if restock {
        client
            .restock_reservation(authed(
                &app.service,
                pb::RestockReservationRequest {
                    name: req.name,
                    lines: req.lines,
                    request_id: req.request_id,
                },
            ))
            .await
    } else {
        client
            .write_off_reservation(authed(
                &app.service,
                pb::WriteOffReservationRequest {
                    name: req.name,
                    lines: req.lines,
                    request_id: req.request_id,
                },
            ))
            .await
    };
    answer.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn shipped_units_come_back_restocked_or_written_off_never_more_than_shipped() {
    let app = TestApp::spawn().await;
    app.product("MUG", 1299, 300).await;
    app.stock("MUG", "main", 30).await;
    let order = order_id();
    app.reserve(&order, &[("MUG", 6)]).await.unwrap();
    // Nothing shipped, nothing comes back; a reservation not committed
    // takes nothing back either.
    let status = take_back(&app, &order, &[("MUG", 1)], &new_request_id(), true)
        .await
        .unwrap_err();
    assert_eq!(crate::helpers::reason(&status), "RESERVATION_NOT_COMMITTED");
    app.commit(&order).await.unwrap();
    let status = take_back(&app, &order, &[("MUG", 1)], &new_request_id(), false)
        .await
        .unwrap_err();
    assert_eq!(crate::helpers::reason(&status), "EXCEEDS_SHIPPED");
    ship(&app, &order, &[("MUG", 4)], &new_request_id())
        .await
        .unwrap();
    assert_eq!(units(&app, "MUG", "main").await, (26, 24, 0, 2));

    // One restocked (on_hand and available rise), one written off (no part
    // changes); replays take nothing more.
    let restock_id = new_request_id();
    take_back(&app, &order, &[("MUG", 1)], &restock_id, true)
        .await
        .unwrap();
    take_back(&app, &order, &[("MUG", 1)], &restock_id, true)
        .await
        .unwrap();
    assert_eq!(units(&app, "MUG", "main").await, (27, 25, 0, 2));
    let write_off_id = new_request_id();
    let written = take_back(&app, &order, &[("MUG", 1)], &write_off_id, false)
        .await
        .unwrap();
    take_back(&app, &order, &[("MUG", 1)], &write_off_id, false)
        .await
        .unwrap();
    assert_eq!(units(&app, "MUG", "main").await, (27, 25, 0, 2));
    let line = &written.lines[0];
    assert_eq!(
        (
            line.shipped_quantity,
            line.restocked_quantity,
            line.written_off_quantity
        ),
        (4, 1, 1)
    );
    let movements = app.movements("products/MUG/stockLevels/main").await;
    let kinds: Vec<i32> = movements.iter().map(|m| m.kind).collect();
    assert!(kinds.contains(&(pb::StockMovementKind::Return as i32)));
    let damaged = movements
        .iter()
        .find(|m| m.kind == pb::StockMovementKind::Damaged as i32)
        .unwrap();
    assert_eq!(damaged.note, "1 returned units written off");

    // Twenty take-backs race for the last two shipped units: two succeed.
    let races = join_all((0..20).map(|i| {
        let (app, order) = (&app, &order);
        async move { take_back(app, order, &[("MUG", 1)], &new_request_id(), i % 2 == 0).await }
    }))
    .await;
    assert_eq!(races.iter().filter(|r| r.is_ok()).count(), 2);
    for refused in races.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(crate::helpers::reason(refused), "EXCEEDS_SHIPPED");
    }
    let (on_hand, available, _, committed) = units(&app, "MUG", "main").await;
    assert_eq!(
        (on_hand - available, committed),
        (2, 2),
        "the unshipped two stay committed"
    );
}
