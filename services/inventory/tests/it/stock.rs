//! Stock levels, AdjustStock, the movement log and WatchStock's basic
//! contract through the generated client against a real server and a real
//! Postgres.

use backroom_proto::inventory::v1 as pb;
use futures_util::StreamExt as _;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, authed, fields, metadata};

#[tokio::test]
async fn adjust_stock_is_compare_and_swap_and_logged() {
    let app = TestApp::spawn().await;
    app.product("SOCK", 500, 50).await;
    let created = app.stock("SOCK", "main", 10).await;
    assert_eq!(
        (created.on_hand, created.available, created.version),
        (10, 10, 1)
    );
    assert_eq!(created.name, "products/SOCK/stockLevels/main");

    let again = app.adjust("SOCK", "main", 5, 0).await;
    let status = assert_error(again, Code::Aborted, "VERSION_MISMATCH");
    assert_eq!(metadata(&status, "current_version"), "1");
    let stale = app.adjust("SOCK", "main", 5, 7).await;
    assert_error(stale, Code::Aborted, "VERSION_MISMATCH");
    let missing_level = app.adjust("SOCK", "berlin", 5, 3).await;
    let status = assert_error(missing_level, Code::NotFound, "STOCK_LEVEL_NOT_FOUND");
    assert_eq!(
        metadata(&status, "name"),
        "products/SOCK/stockLevels/berlin"
    );
    let missing_product = app.adjust("NOPE", "main", 5, 0).await;
    assert_error(missing_product, Code::NotFound, "PRODUCT_NOT_FOUND");
    let too_many = app.adjust("SOCK", "main", -11, 1).await;
    let status = assert_error(too_many, Code::FailedPrecondition, "INSUFFICIENT_STOCK");
    assert_eq!(metadata(&status, "skus"), "SOCK");
    assert_eq!(metadata(&status, "available"), "10");
    let negative_new = app.adjust("SOCK", "berlin", -1, 0).await;
    assert_error(negative_new, Code::FailedPrecondition, "INSUFFICIENT_STOCK");

    let lowered = app.adjust("SOCK", "main", -4, 1).await.unwrap();
    assert_eq!(
        (lowered.on_hand, lowered.available, lowered.version),
        (6, 6, 2)
    );
    assert_eq!(app.level("SOCK", "main").await, lowered);

    let log = app.movements("products/SOCK/stockLevels/main").await;
    let summary: Vec<_> = log
        .iter()
        .map(|m| (m.sequence, m.kind, m.delta_on_hand, m.delta_available))
        .collect();
    let adjustment = pb::StockMovementKind::Adjustment as i32;
    assert_eq!(summary, [(1, adjustment, 10, 10), (2, adjustment, -4, -4)]);
    assert_eq!(log[0].reason, pb::StockAdjustmentReason::CycleCount as i32);
    assert_eq!(
        log[1].name,
        "products/SOCK/stockLevels/main/stockMovements/2"
    );
    assert!(log[0].reservation.is_empty());

    // Bad input: every field named at once.
    let status = app
        .client()
        .adjust_stock(authed(
            &app.admin,
            pb::AdjustStockRequest {
                name: "products/SOCK/stockLevels/Main".into(),
                delta: 0,
                reason: 0,
                note: "n".repeat(501),
                expected_version: -1,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    let mut named = fields(&status);
    named.sort();
    assert_eq!(
        named,
        ["delta", "expected_version", "name", "note", "reason"]
    );
    let wrong_sign = app
        .client()
        .adjust_stock(authed(
            &app.admin,
            pb::AdjustStockRequest {
                name: "products/SOCK/stockLevels/main".into(),
                delta: -1,
                reason: pb::StockAdjustmentReason::Received as i32,
                note: String::new(),
                expected_version: 2,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&wrong_sign), ["delta"]);
}

#[tokio::test]
async fn stock_levels_and_movements_list_by_key_with_wildcards() {
    let app = TestApp::spawn().await;
    app.product("A", 1, 1).await;
    app.product("B", 1, 1).await;
    app.stock("B", "main", 1).await;
    app.stock("A", "west", 2).await;
    app.stock("A", "main", 3).await;

    let levels = app.levels().await;
    let keys: Vec<_> = levels
        .iter()
        .map(|l| format!("{}@{}", l.sku, l.location))
        .collect();
    assert_eq!(keys, ["A@main", "A@west", "B@main"]);

    let mut page_token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = app
            .client()
            .list_stock_levels(authed(
                &app.customer,
                pb::ListStockLevelsRequest {
                    parent: "products/A".into(),
                    page_size: 1,
                    page_token,
                    location: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.stock_levels.into_iter().map(|l| l.location));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged, ["main", "west"]);
    let at_main = app
        .client()
        .list_stock_levels(authed(
            &app.customer,
            pb::ListStockLevelsRequest {
                parent: "products/-".into(),
                page_size: 0,
                page_token: String::new(),
                location: "main".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_main.stock_levels.len(), 2);
    let missing = app
        .client()
        .list_stock_levels(authed(
            &app.customer,
            pb::ListStockLevelsRequest {
                parent: "products/NOPE".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_error(missing, Code::NotFound, "PRODUCT_NOT_FOUND");
    let missing = app
        .client()
        .get_stock_level(authed(
            &app.customer,
            pb::GetStockLevelRequest {
                name: "products/A/stockLevels/east".into(),
            },
        ))
        .await;
    assert_error(missing, Code::NotFound, "STOCK_LEVEL_NOT_FOUND");

    let all = app.movements("products/-/stockLevels/-").await;
    assert_eq!(all.len(), 3);
    let of_a = app.movements("products/A/stockLevels/-").await;
    assert_eq!(of_a.len(), 2);
    // One page at a time gives the same sequence as one big page.
    let mut page_token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = app
            .client()
            .list_stock_movements(authed(
                &app.admin,
                pb::ListStockMovementsRequest {
                    parent: "products/-/stockLevels/-".into(),
                    page_size: 1,
                    page_token,
                    reservation: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.stock_movements);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged, all);

    for (parent, code, why) in [
        (
            "products/NOPE/stockLevels/-",
            Code::NotFound,
            "PRODUCT_NOT_FOUND",
        ),
        (
            "products/A/stockLevels/east",
            Code::NotFound,
            "STOCK_LEVEL_NOT_FOUND",
        ),
        (
            "products/-/stockLevels/main",
            Code::InvalidArgument,
            "VALIDATION_FAILED",
        ),
    ] {
        let result = app
            .client()
            .list_stock_movements(authed(
                &app.admin,
                pb::ListStockMovementsRequest {
                    parent: parent.into(),
                    ..Default::default()
                },
            ))
            .await;
        assert_error(result, code, why);
    }
    let customer = app
        .client()
        .list_stock_movements(authed(
            &app.customer,
            pb::ListStockMovementsRequest {
                parent: "products/-/stockLevels/-".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_error(customer, Code::PermissionDenied, "ACCESS_DENIED");
}

#[tokio::test]
async fn watch_stock_sends_the_snapshot_then_each_change() {
    let app = TestApp::spawn().await;
    app.product("W", 1, 1).await;
    app.product("X", 1, 1).await;
    app.stock("W", "main", 5).await;
    app.stock("X", "main", 7).await;
    let mut stream = app
        .client()
        .watch_stock(authed(
            &app.customer,
            pb::WatchStockRequest {
                skus: vec!["W".into()],
                location: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (first.sku.as_str(), first.available, first.version),
        ("W", 5, 1)
    );

    app.adjust("X", "main", 1, 1).await.unwrap(); // not watched
    app.adjust("W", "main", 3, 1).await.unwrap();
    let change = stream.next().await.unwrap().unwrap();
    assert_eq!((change.available, change.version), (8, 2));
    // A level created later at a new location is streamed too.
    app.stock("W", "west", 2).await;
    let created = stream.next().await.unwrap().unwrap();
    assert_eq!((created.location.as_str(), created.on_hand), ("west", 2));

    let unknown = app
        .client()
        .watch_stock(authed(
            &app.customer,
            pb::WatchStockRequest {
                skus: vec!["W".into(), "NOPE".into()],
                location: String::new(),
            },
        ))
        .await;
    let status = assert_error(unknown, Code::NotFound, "PRODUCT_NOT_FOUND");
    assert_eq!(metadata(&status, "skus"), "NOPE");
    let none = app
        .client()
        .watch_stock(authed(
            &app.customer,
            pb::WatchStockRequest {
                skus: vec![],
                location: "Bad".into(),
            },
        ))
        .await;
    let status = assert_error(none, Code::InvalidArgument, "VALIDATION_FAILED");
    assert_eq!(fields(&status), ["skus", "location"]);
    let too_many = app
        .client()
        .watch_stock(authed(
            &app.customer,
            pb::WatchStockRequest {
                skus: (0..101).map(|i| format!("S{i}")).collect(),
                location: String::new(),
            },
        ))
        .await;
    assert_eq!(fields(&too_many.unwrap_err()), ["skus"]);

    // Shutdown ends the stream with UNAVAILABLE.
    app.deps.shutdown.trigger();
    let end = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(end.unwrap().unwrap_err().code(), Code::Unavailable);
}
