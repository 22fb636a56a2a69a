//! Who may call what: a token is required everywhere, and admin-only RPCs
//! refuse other callers with the role they require.

use backroom_proto::inventory::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, authed, metadata, product};

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
