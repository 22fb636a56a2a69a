//! QuoteOrder and ListShippingRules through the generated client against a
//! real server and a real Postgres: prices, shipping bands, and every
//! documented error.

use backroom_proto::inventory::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, authed, fields, metadata, product, reason};

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
                    ..Default::default()
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
                ..Default::default()
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
async fn quote_amounts_cannot_overflow_because_a_price_past_one_payment_is_refused() {
    // A unit once could cost i64::MAX / 2, and three of them overflowed the
    // quote. A price is now at most what one payment collects, so the
    // dearest basket (100 lines × 10,000 units × 99,999,999) is ~10^14.
    let app = TestApp::spawn().await;
    let refused = app
        .client()
        .create_product(authed(
            &app.admin,
            pb::CreateProductRequest {
                product: Some(product("GOLD", "EUR", i64::MAX / 2, 1)),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(fields(&refused), ["product.unit_price.amount_minor"]);

    app.product("GOLD", 99_999_999, 0).await;
    let quote = app
        .client()
        .quote_order(authed(
            &app.customer,
            pb::QuoteOrderRequest {
                lines: vec![pb::LineItem {
                    sku: "GOLD".into(),
                    quantity: 10_000,
                }],
                destination_country_code: "DE".into(),
                destination_postal_code: String::new(),
                currency_code: "EUR".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        quote.subtotal.map(|m| m.amount_minor),
        Some(999_999_990_000)
    );
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
