//! Products through the generated client against a real server and a real
//! Postgres: create, read, list, update with etags, and every documented
//! error.

use backroom_proto::{common::v1::Money, inventory::v1 as pb};
use tonic::Code;

use crate::helpers::{TestApp, assert_error, authed, fields, metadata, product};

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
