//! Products, stock levels, movements, quotes, shipping rules and WatchStock
//! through the generated client against a real server and a real Postgres:
//! happy paths and every documented error.

use crate::helpers::{TestApp, assert_error, authed, fields, metadata, product, reason};
use backroom_proto::{common::v1::Money, inventory::v1 as pb};
use futures_util::StreamExt as _;
use tonic::Code;

#[tokio::test]
async fn products_are_created_read_listed_and_updated_with_etags() {
    let app = TestApp::spawn().await;
    let created = app.product("MUG-1", 1299, 350).await;
    assert_eq!(created.name, "products/MUG-1");
    assert_eq!(created.etag, "\"1\"");
    assert!(created.create_time.is_some());

    let got = app
        .client()
        .get_product(authed(
            &app.customer,
            pb::GetProductRequest {
                name: "products/MUG-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    // Unconditional (no etag) and conditional updates; a stale etag aborts.
    let update = |etag: &str, paths: &[&str], product: pb::Product| pb::UpdateProductRequest {
        product: Some(pb::Product {
            name: "products/MUG-1".into(),
            etag: etag.into(),
            ..product
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        request_id: String::new(),
    };
    let changed = app
        .client()
        .update_product(authed(
            &app.admin,
            update(
                &created.etag,
                &["display_name", "unit_price", "active"],
                pb::Product {
                    display_name: "Big mug".into(),
                    unit_price: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: 1499,
                    }),
                    active: false,
                    ..Default::default()
                },
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.display_name, "Big mug");
    assert_eq!(changed.unit_price.as_ref().unwrap().amount_minor, 1499);
    assert!(!changed.active);
    assert_eq!(changed.description, created.description, "not in the mask");
    assert_eq!(changed.weight_grams, 350);
    assert_ne!(changed.etag, created.etag);

    let stale = app
        .client()
        .update_product(authed(
            &app.admin,
            update(&created.etag, &["description"], pb::Product::default()),
        ))
        .await;
    assert_error(stale, Code::Aborted, "ETAG_MISMATCH");

    let bad_mask = app
        .client()
        .update_product(authed(
            &app.admin,
            update("", &["sku"], pb::Product::default()),
        ))
        .await;
    let status = assert_error(bad_mask, Code::InvalidArgument, "VALIDATION_FAILED");
    assert_eq!(fields(&status), ["update_mask"]);

    let missing = app
        .client()
        .update_product(authed(
            &app.admin,
            pb::UpdateProductRequest {
                product: Some(pb::Product {
                    name: "products/NOPE".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["active".into()],
                }),
                request_id: String::new(),
            },
        ))
        .await;
    let status = assert_error(missing, Code::NotFound, "PRODUCT_NOT_FOUND");
    assert_eq!(metadata(&status, "skus"), "NOPE");

    let missing = app
        .client()
        .get_product(authed(
            &app.customer,
            pb::GetProductRequest {
                name: "products/NOPE".into(),
            },
        ))
        .await;
    assert_error(missing, Code::NotFound, "PRODUCT_NOT_FOUND");
}

#[tokio::test]
async fn create_product_refuses_duplicates_and_replays_request_ids() {
    let app = TestApp::spawn().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = |price: i64| pb::CreateProductRequest {
        product: Some(product("TEE-1", "EUR", price, 200)),
        request_id: request_id.clone(),
    };
    let first = app
        .client()
        .create_product(authed(&app.admin, request(1000)))
        .await
        .unwrap()
        .into_inner();
    let replay = app
        .client()
        .create_product(authed(&app.admin, request(1000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replay);
    let reused = app
        .client()
        .create_product(authed(&app.admin, request(2000)))
        .await;
    assert_error(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    let taken = app
        .client()
        .create_product(authed(
            &app.admin,
            pb::CreateProductRequest {
                product: Some(product("TEE-1", "EUR", 1, 1)),
                request_id: String::new(),
            },
        ))
        .await;
    let status = assert_error(taken, Code::AlreadyExists, "PRODUCT_ALREADY_EXISTS");
    assert_eq!(metadata(&status, "skus"), "TEE-1");
}

#[tokio::test]
async fn bad_product_input_names_every_bad_field() {
    let app = TestApp::spawn().await;
    let status = app
        .client()
        .create_product(authed(
            &app.admin,
            pb::CreateProductRequest {
                product: Some(pb::Product {
                    sku: "bad sku".into(),
                    display_name: " ".into(),
                    description: "x".repeat(5001),
                    unit_price: Some(Money {
                        currency_code: "XYZ".into(),
                        amount_minor: -1,
                    }),
                    weight_grams: -5,
                    ..Default::default()
                }),
                request_id: "not-a-uuid".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut named = fields(&status);
    named.sort();
    assert_eq!(
        named,
        [
            "product.description",
            "product.display_name",
            "product.sku",
            "product.unit_price.amount_minor",
            "product.unit_price.currency_code",
            "product.weight_grams",
            "request_id",
        ]
    );
    let empty_sku = app
        .client()
        .create_product(authed(
            &app.admin,
            pb::CreateProductRequest {
                product: Some(product("", "EUR", 1, 1)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&empty_sku), ["product.sku"]);
}

#[tokio::test]
async fn list_products_filters_pages_by_sku_and_rejects_foreign_tokens() {
    let app = TestApp::spawn().await;
    for sku in ["C-3", "A-1", "E-5", "B-2", "D-4"] {
        app.product(sku, 100, 10).await;
    }
    let client = app.client();
    let list = |page_size: i32, page_token: String, active: Option<bool>, query: &str| {
        let mut client = client.clone();
        let token = app.customer.clone();
        let query = query.to_owned();
        async move {
            client
                .list_products(authed(
                    &token,
                    pb::ListProductsRequest {
                        page_size,
                        page_token,
                        active,
                        query,
                    },
                ))
                .await
        }
    };
    let first = list(2, String::new(), None, "").await.unwrap().into_inner();
    let skus: Vec<_> = first.products.iter().map(|p| p.sku.as_str()).collect();
    assert_eq!(skus, ["A-1", "B-2"]);
    let second = list(2, first.next_page_token.clone(), None, "")
        .await
        .unwrap()
        .into_inner();
    let third = list(2, second.next_page_token.clone(), None, "")
        .await
        .unwrap()
        .into_inner();
    let skus: Vec<_> = second
        .products
        .iter()
        .chain(&third.products)
        .map(|p| p.sku.as_str())
        .collect();
    assert_eq!(skus, ["C-3", "D-4", "E-5"]);
    assert!(third.next_page_token.is_empty());

    // Text filter (case-insensitive, on description too), active filter.
    let found = list(0, String::new(), None, "DESCRIPTION OF c-3")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.products.len(), 1);
    assert_eq!(found.products[0].sku, "C-3");
    let inactive = list(0, String::new(), Some(false), "")
        .await
        .unwrap()
        .into_inner();
    assert!(inactive.products.is_empty());
    let percent = list(0, String::new(), None, "%")
        .await
        .unwrap()
        .into_inner();
    assert!(
        percent.products.is_empty(),
        "LIKE metacharacters are literal"
    );

    // A token from another filter, garbage, a negative size; 1000 is capped.
    let foreign = list(2, first.next_page_token.clone(), Some(true), "").await;
    assert_eq!(fields(&foreign.unwrap_err()), ["page_token"]);
    let garbage = list(2, "garbage".into(), None, "").await;
    assert_eq!(fields(&garbage.unwrap_err()), ["page_token"]);
    let negative = list(-1, String::new(), None, "").await;
    assert_eq!(fields(&negative.unwrap_err()), ["page_size"]);
    let capped = list(1000, String::new(), None, "")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.products.len(), 5);
    let long_query = list(0, String::new(), None, &"q".repeat(101)).await;
    assert_eq!(fields(&long_query.unwrap_err()), ["query"]);
}

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
async fn quotes_follow_the_shipping_rules() {
    let app = TestApp::spawn().await;
    app.product("LIGHT", 1000, 400).await; // 0.4 kg, EUR 10.00
    app.product("HEAVY", 5000, 4000).await; // 4 kg, EUR 50.00
    app.client()
        .create_product(authed(
            &app.admin,
            pb::CreateProductRequest {
                product: Some(product("DOLLAR", "USD", 2500, 1000)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    // (lines, country, currency) -> Ok((zone, weight, shipping)) | Err(reason)
    type Case<'a> = (
        &'a [(&'a str, i64)],
        &'a str,
        &'a str,
        Result<(&'a str, i64, i64), &'a str>,
    );
    let cases: &[Case] = &[
        (&[("LIGHT", 1)], "DE", "EUR", Ok(("domestic", 400, 490))),
        (&[("LIGHT", 2)], "DE", "EUR", Ok(("domestic", 800, 490))),
        (&[("LIGHT", 3)], "DE", "EUR", Ok(("domestic", 1200, 690))),
        (
            &[("HEAVY", 1), ("LIGHT", 2)],
            "FR",
            "EUR",
            Ok(("eu", 4800, 1490)),
        ),
        (&[("HEAVY", 2)], "AT", "EUR", Ok(("eu", 8000, 2990))),
        (&[("HEAVY", 5)], "US", "EUR", Ok(("world", 20000, 7990))),
        (&[("LIGHT", 1)], "JP", "EUR", Ok(("world", 400, 1990))),
        (&[("DOLLAR", 1)], "US", "USD", Ok(("world", 1000, 2190))),
        (&[("DOLLAR", 2)], "CA", "USD", Ok(("world", 2000, 4390))),
        (&[("HEAVY", 6)], "DE", "EUR", Err("NO_SHIPPING_RULE")),
        (&[("DOLLAR", 1)], "DE", "USD", Err("NO_SHIPPING_RULE")),
        (&[("LIGHT", 1)], "DE", "USD", Err("CURRENCY_MISMATCH")),
    ];
    for (lines, country, currency, expected) in cases {
        let result = app
            .client()
            .quote_order(authed(
                &app.customer,
                pb::QuoteOrderRequest {
                    lines: lines
                        .iter()
                        .map(|(sku, quantity)| pb::LineItem {
                            sku: (*sku).into(),
                            quantity: *quantity,
                        })
                        .collect(),
                    destination_country_code: (*country).into(),
                    destination_postal_code: "10115".into(),
                    currency_code: (*currency).into(),
                },
            ))
            .await;
        match expected {
            Ok((zone, weight, shipping)) => {
                let quote = result.unwrap().into_inner();
                let subtotal: i64 = quote
                    .lines
                    .iter()
                    .map(|l| l.unit_price.as_ref().unwrap().amount_minor * l.quantity)
                    .sum();
                assert_eq!(quote.shipping_zone, *zone, "{lines:?} to {country}");
                assert_eq!(quote.total_weight_grams, *weight);
                assert_eq!(quote.shipping.as_ref().unwrap().amount_minor, *shipping);
                assert_eq!(quote.subtotal.as_ref().unwrap().amount_minor, subtotal);
                assert_eq!(
                    quote.total.as_ref().unwrap().amount_minor,
                    subtotal + shipping
                );
                assert_eq!(quote.total.as_ref().unwrap().currency_code, *currency);
                let order: Vec<_> = quote.lines.iter().map(|l| l.sku.as_str()).collect();
                let asked: Vec<_> = lines.iter().map(|(s, _)| *s).collect();
                assert_eq!(order, asked, "lines in request order");
            }
            Err(why) => {
                let status = result.unwrap_err();
                assert_eq!(
                    reason(&status),
                    *why,
                    "{lines:?} to {country} in {currency}"
                );
                assert_eq!(status.code(), Code::FailedPrecondition);
                if *why == "NO_SHIPPING_RULE" {
                    assert_eq!(metadata(&status, "country_code"), *country);
                    assert_eq!(metadata(&status, "currency_code"), *currency);
                }
            }
        }
    }
}

#[tokio::test]
async fn quote_errors_name_the_products_and_fields() {
    let app = TestApp::spawn().await;
    app.product("OK", 100, 10).await;
    app.product("OFF", 100, 10).await;
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
    let quote = |lines: Vec<(&str, i64)>, country: &str, currency: &str| {
        let mut client = app.client();
        let request = authed(
            &app.customer,
            pb::QuoteOrderRequest {
                lines: lines
                    .into_iter()
                    .map(|(sku, quantity)| pb::LineItem {
                        sku: sku.into(),
                        quantity,
                    })
                    .collect(),
                destination_country_code: country.into(),
                destination_postal_code: String::new(),
                currency_code: currency.into(),
            },
        );
        async move { client.quote_order(request).await }
    };
    let status = assert_error(
        quote(vec![("ZZ", 1), ("OK", 1), ("AA", 1)], "DE", "EUR").await,
        Code::NotFound,
        "PRODUCT_NOT_FOUND",
    );
    assert_eq!(metadata(&status, "skus"), "AA,ZZ");
    let status = assert_error(
        quote(vec![("OFF", 1), ("OK", 1)], "DE", "EUR").await,
        Code::FailedPrecondition,
        "PRODUCT_INACTIVE",
    );
    assert_eq!(metadata(&status, "skus"), "OFF");

    let status = quote(vec![("OK", 0), ("OK", 10_001)], "de", "EURO")
        .await
        .unwrap_err();
    assert_eq!(
        fields(&status),
        [
            "lines[0].quantity",
            "lines[1].quantity",
            "lines[1].sku",
            "destination_country_code",
            "currency_code",
        ]
    );
    let status = quote(vec![], "DE", "EUR").await.unwrap_err();
    assert_eq!(fields(&status), ["lines"]);
    let too_many: Vec<(&str, i64)> = vec![("OK", 1); 101];
    let status = quote(too_many, "DE", "EUR").await.unwrap_err();
    assert_eq!(fields(&status), ["lines"]);
    let status = quote(vec![("", 1)], "DE", "EUR").await.unwrap_err();
    assert_eq!(fields(&status), ["lines[0].sku"]);
}

#[tokio::test]
async fn quote_amounts_that_overflow_are_invalid_not_a_panic() {
    let app = TestApp::spawn().await;
    app.product("GOLD", i64::MAX / 2, 1).await;
    let status = app
        .client()
        .quote_order(authed(
            &app.customer,
            pb::QuoteOrderRequest {
                lines: vec![pb::LineItem {
                    sku: "GOLD".into(),
                    quantity: 3,
                }],
                destination_country_code: "DE".into(),
                destination_postal_code: String::new(),
                currency_code: "EUR".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields(&status), ["lines[0].quantity"]);
}

#[tokio::test]
async fn shipping_rules_list_every_zone_with_its_bands() {
    let app = TestApp::spawn().await;
    let rules = app
        .client()
        .list_shipping_rules(authed(
            &app.customer,
            pb::ListShippingRulesRequest {
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let zones: Vec<_> = rules
        .shipping_zones
        .iter()
        .map(|z| z.zone.as_str())
        .collect();
    assert_eq!(zones, ["domestic", "eu"]);
    assert_eq!(rules.shipping_zones[0].country_codes, ["DE"]);
    assert_eq!(rules.shipping_zones[1].country_codes.len(), 26);
    assert_eq!(rules.shipping_zones[0].name, "shippingZones/domestic");
    let bands: Vec<_> = rules.shipping_zones[0]
        .weight_bands
        .iter()
        .map(|b| (b.max_weight_grams, b.price.as_ref().unwrap().amount_minor))
        .collect();
    assert_eq!(bands, [(1000, 490), (5000, 690), (20000, 1290)]);
    let rest = app
        .client()
        .list_shipping_rules(authed(
            &app.customer,
            pb::ListShippingRulesRequest {
                page_size: 2,
                page_token: rules.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.shipping_zones.len(), 1);
    assert_eq!(rest.shipping_zones[0].country_codes, ["*"]);
    let currencies: Vec<_> = rest.shipping_zones[0]
        .weight_bands
        .iter()
        .map(|b| b.price.as_ref().unwrap().currency_code.as_str())
        .collect();
    assert_eq!(currencies, ["EUR", "EUR", "EUR", "USD", "USD", "USD"]);
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn callers_need_a_token_and_the_right_role() {
    let app = TestApp::spawn().await;
    app.product("P", 1, 1).await;
    let no_token = app
        .client()
        .get_product(pb::GetProductRequest {
            name: "products/P".into(),
        })
        .await;
    assert_error(no_token, Code::Unauthenticated, "TOKEN_MISSING");
    let other_audience = app
        .client()
        .get_product(authed(
            &app.token_for("backroom.payment"),
            pb::GetProductRequest {
                name: "products/P".into(),
            },
        ))
        .await;
    assert_eq!(other_audience.unwrap_err().code(), Code::Unauthenticated);

    for token in [&app.customer, &app.service] {
        let create = app
            .client()
            .create_product(authed(
                token,
                pb::CreateProductRequest {
                    product: Some(product("Q", "EUR", 1, 1)),
                    request_id: String::new(),
                },
            ))
            .await;
        let status = assert_error(create, Code::PermissionDenied, "ACCESS_DENIED");
        assert_eq!(metadata(&status, "required"), "role admin");
        let update = app
            .client()
            .update_product(authed(
                token,
                pb::UpdateProductRequest {
                    product: Some(pb::Product {
                        name: "products/P".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["active".into()],
                    }),
                    request_id: String::new(),
                },
            ))
            .await;
        assert_error(update, Code::PermissionDenied, "ACCESS_DENIED");
        let adjust = app
            .client()
            .adjust_stock(authed(
                token,
                pb::AdjustStockRequest {
                    name: "products/P/stockLevels/main".into(),
                    delta: 1,
                    reason: pb::StockAdjustmentReason::Received as i32,
                    ..Default::default()
                },
            ))
            .await;
        assert_error(adjust, Code::PermissionDenied, "ACCESS_DENIED");
    }
    // Reads are open to any authenticated caller, services included.
    app.client()
        .get_product(authed(
            &app.service,
            pb::GetProductRequest {
                name: "products/P".into(),
            },
        ))
        .await
        .unwrap();
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
