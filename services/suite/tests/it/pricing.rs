//! Pricing across the three services: VAT by destination and tax category
//! to the cent (Germany, France, the world zone), tax lines frozen on the
//! order when a rate changes, prices per currency, discount codes whose
//! usage limit holds under 100 concurrent orders and whose uses come back
//! when orders are canceled, and a randomized run of orders, refunds and
//! cancellations after which tax payable reconciles to the cent.

use backroom_proto::{
    account::v1 as account_pb, common::v1::Money, inventory::v1 as inventory_pb, payment::v1 as pb,
};
use futures_util::future::join_all;
use tonic::Code;

use crate::{
    harness::{Customer, RACE_ORDERS, Suite, VISA, authed, eur},
    shipments::{assert_audit_clean, reason, request_id},
};

fn minor(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_minor)
}

/// A product of `category` priced `eur` (and `usd`, when given), 300 g,
/// with 500 units at "main".
async fn product(
    suite: &Suite,
    sku: &str,
    eur_minor: i64,
    usd_minor: Option<i64>,
    category: inventory_pb::TaxCategory,
) {
    suite
        .stock
        .clone()
        .create_product(authed(
            &suite.admin,
            inventory_pb::CreateProductRequest {
                product: Some(inventory_pb::Product {
                    sku: sku.into(),
                    display_name: format!("Product {sku}"),
                    unit_price: eur(eur_minor),
                    weight_grams: 300,
                    active: true,
                    tax_category: category as i32,
                    prices: usd_minor
                        .map(|amount_minor| Money {
                            currency_code: "USD".into(),
                            amount_minor,
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    suite
        .stock
        .clone()
        .adjust_stock(authed(
            &suite.admin,
            inventory_pb::AdjustStockRequest {
                name: format!("products/{sku}/stockLevels/main"),
                delta: 500,
                reason: inventory_pb::StockAdjustmentReason::Received as i32,
                expected_version: 0,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

/// WINE (standard rate, 19.99 / USD 21.99) and BOOK (reduced, 4.99).
async fn catalogue(suite: &Suite) {
    product(
        suite,
        "WINE",
        1999,
        Some(2199),
        inventory_pb::TaxCategory::Standard,
    )
    .await;
    product(suite, "BOOK", 499, None, inventory_pb::TaxCategory::Reduced).await;
}

/// Another address of `customer` in `country`.
async fn address(suite: &Suite, customer: &Customer, country: &str) -> String {
    suite
        .accounts
        .clone()
        .create_address(authed(
            &customer.token,
            account_pb::CreateAddressRequest {
                parent: "accounts/me".into(),
                address: Some(account_pb::Address {
                    recipient: "Ada Lovelace".into(),
                    line1: "1 Main Street".into(),
                    city: "Somewhere".into(),
                    postal_code: "12345".into(),
                    country_code: country.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .name
}

/// PlaceOrder to `address` in `currency` with `codes`.
async fn place(
    suite: &Suite,
    customer: &Customer,
    address: &str,
    lines: &[(&str, i64)],
    currency: &str,
    codes: &[&str],
) -> Result<pb::Order, tonic::Status> {
    suite
        .checkout
        .clone()
        .place_order(authed(
            &customer.token,
            pb::PlaceOrderRequest {
                customer: "accounts/me".into(),
                lines: lines
                    .iter()
                    .map(|(sku, quantity)| pb::LineItem {
                        sku: (*sku).into(),
                        quantity: *quantity,
                    })
                    .collect(),
                payment_method: customer.card.clone(),
                shipping_address: address.into(),
                currency_code: currency.into(),
                request_id: request_id(),
                discount_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// (category, rate bp, taxable base, tax, gross) of each tax line.
fn tax_lines(lines: &[inventory_pb::TaxLine]) -> Vec<(i32, i32, i64, i64, i64)> {
    lines
        .iter()
        .map(|t| {
            (
                t.category,
                t.rate_basis_points,
                minor(&t.taxable_base),
                minor(&t.tax),
                minor(&t.gross),
            )
        })
        .collect()
}

const STANDARD: i32 = inventory_pb::TaxCategory::Standard as i32;
const REDUCED: i32 = inventory_pb::TaxCategory::Reduced as i32;

/// The reference basket: 2 × WINE (39.98, standard) + 3 × BOOK (14.97,
/// reduced), 1.5 kg. Worked by hand (half up, per line; shipping split by
/// the lines' amounts with the largest remainder):
/// - DE, shipping 6.90 (domestic, ≤ 5 kg): WINE VAT 3998 × 19/119 =
///   638.32 → 638; BOOK 1497 × 7/107 = 97.93 → 98; shipping 690 splits
///   502.02 / 187.98 → 502 / 188, whose VAT is 80.15 → 80 and 12.30 → 12.
///   Tax lines 19 %: 4500 gross, 718 VAT, 3782 base; 7 %: 1685, 110, 1575.
/// - FR, shipping 14.90 (eu): WINE 3998 × 20/120 = 666.33 → 666; BOOK
///   1497 × 5.5/105.5 = 78.04 → 78; shipping 1490 splits 1084.08 / 405.92 →
///   1084 / 406, VAT 180.67 → 181 and 21.17 → 21. 20 %: 5082, 847, 4235;
///   5.5 %: 1903, 99, 1804.
/// - US (world), shipping 39.90: no VAT at all.
#[tokio::test]
async fn german_french_and_world_orders_carry_the_exact_vat_and_a_rate_change_leaves_them_alone() {
    let suite = Suite::spawn().await;
    catalogue(&suite).await;
    let ada = suite.customer("vat@example.com", VISA).await;
    let basket = [("WINE", 2), ("BOOK", 3)];

    let de = place(&suite, &ada, &ada.address, &basket, "EUR", &[])
        .await
        .unwrap();
    assert_eq!(de.state, pb::OrderState::Completed as i32, "{de:#?}");
    assert_eq!(
        (minor(&de.subtotal), minor(&de.shipping), minor(&de.total)),
        (5495, 690, 6185)
    );
    assert_eq!(minor(&de.tax), 828);
    assert_eq!(minor(&de.shipping_tax), 92);
    assert_eq!(
        tax_lines(&de.tax_lines),
        [
            (STANDARD, 1900, 3782, 718, 4500),
            (REDUCED, 700, 1575, 110, 1685)
        ]
    );
    let line_tax: Vec<(i64, i32)> = de
        .lines
        .iter()
        .map(|l| (minor(&l.tax), l.tax_rate_basis_points))
        .collect();
    assert_eq!(line_tax, [(638, 1900), (98, 700)]);
    // The payment carries the VAT; the ledger books it as payable.
    let intent = suite.intent(&de).await;
    assert_eq!(
        (minor(&intent.tax), minor(&intent.tax_received)),
        (828, 828)
    );

    let paris = address(&suite, &ada, "FR").await;
    let fr = place(&suite, &ada, &paris, &basket, "EUR", &[])
        .await
        .unwrap();
    assert_eq!(fr.state, pb::OrderState::Completed as i32, "{fr:#?}");
    assert_eq!(
        (minor(&fr.shipping), minor(&fr.total), minor(&fr.tax)),
        (1490, 6985, 946)
    );
    assert_eq!(minor(&fr.shipping_tax), 202);
    assert_eq!(
        tax_lines(&fr.tax_lines),
        [
            (STANDARD, 2000, 4235, 847, 5082),
            (REDUCED, 550, 1804, 99, 1903)
        ]
    );

    let boston = address(&suite, &ada, "US").await;
    let us = place(&suite, &ada, &boston, &basket, "EUR", &[])
        .await
        .unwrap();
    assert_eq!(us.state, pb::OrderState::Completed as i32, "{us:#?}");
    assert_eq!(
        (minor(&us.shipping), minor(&us.total), minor(&us.tax)),
        (3990, 9485, 0)
    );
    assert!(us.tax_lines.is_empty(), "{:?}", us.tax_lines);

    // Germany raises its standard rate: new quotes use it, the order
    // placed before keeps the tax lines it was quoted with.
    suite
        .stock
        .clone()
        .create_tax_rate(authed(
            &suite.admin,
            inventory_pb::CreateTaxRateRequest {
                tax_rate: Some(inventory_pb::TaxRate {
                    country_code: "DE".into(),
                    category: STANDARD,
                    rate_basis_points: 2100,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let again = place(&suite, &ada, &ada.address, &basket, "EUR", &[])
        .await
        .unwrap();
    assert_eq!(again.tax_lines[0].rate_basis_points, 2100);
    assert_ne!(minor(&again.tax), 828);
    let kept = suite.order(&de.name).await;
    assert_eq!(minor(&kept.tax), 828);
    assert_eq!(tax_lines(&kept.tax_lines), tax_lines(&de.tax_lines));
    assert_eq!(kept.lines[0].tax_rate_basis_points, 1900);
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_discount_comes_off_before_tax_and_prices_follow_the_order_currency() {
    let suite = Suite::spawn().await;
    catalogue(&suite).await;
    let ada = suite.customer("codes@example.com", VISA).await;
    create_code(&suite, "TENOFF", |code| code.percent_basis_points = 1000).await;
    // 10 % of 54.95 is 5.495 → 5.50, spread 400 / 150 over the lines; VAT
    // is then on 35.98 and 13.47 (574, 88) and the shipping splits
    // 502 / 188 over them as before (80, 12).
    let order = place(
        &suite,
        &ada,
        &ada.address,
        &[("WINE", 2), ("BOOK", 3)],
        "EUR",
        &["tenoff"],
    )
    .await
    .unwrap();
    assert_eq!(order.state, pb::OrderState::Completed as i32, "{order:#?}");
    assert_eq!(order.discount_codes, ["TENOFF"]);
    assert_eq!(
        (
            minor(&order.discount),
            minor(&order.total),
            minor(&order.tax)
        ),
        (550, 5635, 754)
    );
    let discounts: Vec<i64> = order.lines.iter().map(|l| minor(&l.discount)).collect();
    assert_eq!(discounts, [400, 150]);
    assert_eq!(
        tax_lines(&order.tax_lines),
        [
            (STANDARD, 1900, 3446, 654, 4100),
            (REDUCED, 700, 1435, 100, 1535)
        ]
    );
    assert_eq!(order.discounts[0].code, "TENOFF");
    assert_eq!(minor(&suite.intent(&order).await.amount_received), 5635);

    // In dollars: WINE has a USD price, BOOK has none (named).
    let boston = address(&suite, &ada, "US").await;
    let usd = place(&suite, &ada, &boston, &[("WINE", 1)], "USD", &[])
        .await
        .unwrap();
    assert_eq!(usd.state, pb::OrderState::Completed as i32, "{usd:#?}");
    assert_eq!(
        (
            minor(&usd.subtotal),
            minor(&usd.shipping),
            minor(&usd.total)
        ),
        (2199, 2190, 4389)
    );
    let refused = place(&suite, &ada, &boston, &[("BOOK", 1)], "USD", &[])
        .await
        .unwrap();
    assert_eq!(refused.state, pb::OrderState::Failed as i32);
    let failure = refused.failure.unwrap();
    assert_eq!(failure.reason, "CURRENCY_MISMATCH");
    assert_eq!(failure.metadata["skus"], "BOOK");

    // A code that does not exist or does not apply fails the order, and
    // says why.
    create_code(&suite, "BIGSPENDER", |code| {
        code.percent_basis_points = 500;
        code.minimum_subtotal = eur(100_000);
    })
    .await;
    for (codes, why, cause) in [
        (&["NOPE"][..], "DISCOUNT_CODE_NOT_FOUND", None),
        (
            &["BIGSPENDER"][..],
            "DISCOUNT_CODE_NOT_APPLICABLE",
            Some("minimum_subtotal"),
        ),
        (
            &["TENOFF", "BIGSPENDER"][..],
            "DISCOUNT_CODE_NOT_APPLICABLE",
            Some("not_stackable"),
        ),
    ] {
        let failed = place(&suite, &ada, &ada.address, &[("WINE", 1)], "EUR", codes)
            .await
            .unwrap();
        let failure = failed.failure.expect("failed");
        assert_eq!(failure.reason, why, "{codes:?}");
        if let Some(cause) = cause {
            assert_eq!(failure.metadata["cause"], cause, "{codes:?}");
        }
    }
    assert_audit_clean(&suite).await;
}

/// Creates an active code with `set` applied.
async fn create_code(
    suite: &Suite,
    code: &str,
    set: impl FnOnce(&mut inventory_pb::DiscountCode),
) -> inventory_pb::DiscountCode {
    let mut discount = inventory_pb::DiscountCode {
        code: code.into(),
        active: true,
        ..Default::default()
    };
    set(&mut discount);
    suite
        .stock
        .clone()
        .create_discount_code(authed(
            &suite.admin,
            inventory_pb::CreateDiscountCodeRequest {
                discount_code: Some(discount),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn times_used(suite: &Suite, code: &str) -> i64 {
    suite
        .stock
        .clone()
        .get_discount_code(authed(
            &suite.admin,
            inventory_pb::GetDiscountCodeRequest {
                name: format!("discountCodes/{code}"),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .times_used
}

/// Places `n` orders of `customer` with `code` at once; returns the
/// completed ones (each discounted), checking every other failed for want
/// of uses.
async fn rush(suite: &Suite, customer: &Customer, n: usize, code: &str) -> Vec<pb::Order> {
    let codes = [code];
    let placed = join_all((0..n).map(|_| {
        place(
            suite,
            customer,
            &customer.address,
            &[("WINE", 1)],
            "EUR",
            &codes,
        )
    }))
    .await;
    let mut completed = Vec::new();
    for order in placed {
        let order = order.unwrap();
        match pb::OrderState::try_from(order.state).unwrap() {
            pb::OrderState::Completed => {
                assert_eq!(minor(&order.discount), 1000, "{order:#?}");
                completed.push(order);
            }
            pb::OrderState::Failed => {
                let failure = order.failure.unwrap();
                assert_eq!(failure.reason, "DISCOUNT_CODE_NOT_APPLICABLE");
                assert_eq!(failure.metadata["cause"], "exhausted");
            }
            other => panic!("order ended {other:?}: {order:#?}"),
        }
    }
    completed
}

#[tokio::test]
async fn a_code_with_seven_uses_left_discounts_exactly_seven_of_a_hundred_concurrent_orders() {
    let suite = Suite::spawn().await;
    catalogue(&suite).await;
    create_code(&suite, "SEVEN", |code| {
        code.amount = eur(1000);
        code.usage_limit = Some(7);
    })
    .await;
    let ada = suite.customer("rush@example.com", VISA).await;
    let completed = rush(&suite, &ada, RACE_ORDERS, "SEVEN").await;
    assert_eq!(completed.len(), 7);
    assert_eq!(times_used(&suite, "SEVEN").await, 7);

    // Two of them are canceled before anything ships: their uses come
    // back, and exactly two more orders get the code.
    for order in &completed[..2] {
        let canceled = suite
            .checkout
            .clone()
            .cancel_order(authed(
                &suite.admin,
                pb::CancelOrderRequest {
                    name: order.name.clone(),
                    reason: "changed my mind".into(),
                    request_id: request_id(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(canceled.status, pb::OrderStatus::Canceled as i32);
    }
    assert_eq!(times_used(&suite, "SEVEN").await, 5);
    let again = rush(&suite, &ada, 20, "SEVEN").await;
    assert_eq!(again.len(), 2);
    assert_eq!(times_used(&suite, "SEVEN").await, 7);
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_per_customer_limit_holds_against_the_same_customer_racing_itself() {
    let suite = Suite::spawn().await;
    catalogue(&suite).await;
    create_code(&suite, "ONCE", |code| {
        code.percent_basis_points = 2000;
        code.per_customer_limit = Some(1);
    })
    .await;
    let ada = suite.customer("once@example.com", VISA).await;
    let placed = join_all(
        (0..10).map(|_| place(&suite, &ada, &ada.address, &[("BOOK", 1)], "EUR", &["ONCE"])),
    )
    .await;
    let (won, lost): (Vec<_>, Vec<_>) = placed
        .into_iter()
        .map(Result::unwrap)
        .partition(|o| o.state == pb::OrderState::Completed as i32);
    assert_eq!(won.len(), 1);
    for order in lost {
        assert_eq!(order.failure.unwrap().metadata["cause"], "customer_limit");
    }
    // Another customer still may.
    let bob = suite.customer("bob-once@example.com", VISA).await;
    let bobs = place(&suite, &bob, &bob.address, &[("BOOK", 1)], "EUR", &["ONCE"])
        .await
        .unwrap();
    assert_eq!(bobs.state, pb::OrderState::Completed as i32);
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn after_random_orders_refunds_and_cancellations_tax_payable_reconciles_to_the_cent() {
    let suite = Suite::spawn().await;
    catalogue(&suite).await;
    product(&suite, "SALT", 129, None, inventory_pb::TaxCategory::Zero).await;
    create_code(&suite, "FIVE", |code| {
        code.percent_basis_points = 500;
        code.stackable = true;
    })
    .await;
    create_code(&suite, "TWO", |code| {
        code.amount = eur(200);
        code.stackable = true;
    })
    .await;
    let ada = suite.customer("random@example.com", VISA).await;
    let destinations = [
        ada.address.clone(),
        address(&suite, &ada, "FR").await,
        address(&suite, &ada, "AT").await,
        address(&suite, &ada, "US").await,
    ];
    let mut seed: u64 = 0x0bad_5eed;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let skus = ["WINE", "BOOK", "SALT"];
    let code_sets: [&[&str]; 4] = [&[], &["FIVE"], &["TWO"], &["FIVE", "TWO"]];
    for _ in 0..24 {
        let mut lines: Vec<(&str, i64)> = Vec::new();
        for sku in skus {
            if next(3) > 0 {
                lines.push((sku, 1 + i64::try_from(next(4)).unwrap()));
            }
        }
        if lines.is_empty() {
            lines.push(("SALT", 1));
        }
        let to = &destinations[usize::try_from(next(4)).unwrap()];
        let codes = code_sets[usize::try_from(next(4)).unwrap()];
        let order = place(&suite, &ada, to, &lines, "EUR", codes).await.unwrap();
        assert_eq!(order.state, pb::OrderState::Completed as i32, "{order:#?}");
        // The quote's sums reconcile on every order.
        let lines_paid: i64 = order
            .lines
            .iter()
            .map(|l| minor(&l.line_total) - minor(&l.discount))
            .sum();
        assert_eq!(lines_paid + minor(&order.shipping), minor(&order.total));
        let line_tax: i64 = order.lines.iter().map(|l| minor(&l.tax)).sum();
        let grouped: i64 = order.tax_lines.iter().map(|t| minor(&t.tax)).sum();
        assert_eq!(grouped, line_tax + minor(&order.shipping_tax));
        assert_eq!(grouped, minor(&order.tax));
        match next(4) {
            0 => {
                // A goodwill refund of part of it.
                let amount =
                    1 + i64::try_from(next(u64::try_from(minor(&order.total)).unwrap() / 2))
                        .unwrap();
                suite
                    .checkout
                    .clone()
                    .refund_order(authed(
                        &suite.admin,
                        pb::RefundOrderRequest {
                            name: order.name.clone(),
                            amount: eur(amount),
                            reason: "goodwill".into(),
                            request_id: request_id(),
                        },
                    ))
                    .await
                    .unwrap();
            }
            1 => {
                // Canceled whole.
                suite
                    .checkout
                    .clone()
                    .cancel_order(authed(
                        &suite.admin,
                        pb::CancelOrderRequest {
                            name: order.name.clone(),
                            reason: "out of budget".into(),
                            request_id: request_id(),
                        },
                    ))
                    .await
                    .unwrap();
            }
            2 => {
                // A refund, then the rest canceled.
                suite
                    .checkout
                    .clone()
                    .refund_order(authed(
                        &suite.admin,
                        pb::RefundOrderRequest {
                            name: order.name.clone(),
                            amount: eur(1),
                            reason: "a cent".into(),
                            request_id: request_id(),
                        },
                    ))
                    .await
                    .unwrap();
                suite
                    .checkout
                    .clone()
                    .cancel_order(authed(
                        &suite.admin,
                        pb::CancelOrderRequest {
                            name: order.name.clone(),
                            reason: "after all".into(),
                            request_id: request_id(),
                        },
                    ))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    // Every journal balances, each intent's VAT is in proportion, and
    // tax_payable is the VAT orders captured less what refunds reversed.
    assert_audit_clean(&suite).await;
    let booked = suite
        .payments
        .clone()
        .get_ledger_account(authed(
            &suite.admin,
            pb::GetLedgerAccountRequest {
                name: "ledgerAccounts/tax_payable".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(booked.kind, pb::LedgerAccountKind::Liability as i32);
    assert!(
        booked.balances.iter().all(|b| b.amount_minor >= 0),
        "{booked:?}"
    );
}

#[tokio::test]
async fn only_admins_schedule_rates_and_manage_codes_and_bad_input_names_the_field() {
    let suite = Suite::spawn().await;
    let ada = suite.customer("nosy@example.com", VISA).await;
    let mut stock = suite.stock.clone();
    let rate = inventory_pb::CreateTaxRateRequest {
        tax_rate: Some(inventory_pb::TaxRate {
            country_code: "DE".into(),
            category: STANDARD,
            rate_basis_points: 0,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let denied = stock
        .create_tax_rate(authed(&ada.token, rate.clone()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let code = inventory_pb::CreateDiscountCodeRequest {
        discount_code: Some(inventory_pb::DiscountCode {
            code: "FREE".into(),
            percent_basis_points: 10_000,
            active: true,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let denied = stock
        .create_discount_code(authed(&ada.token, code.clone()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    for denied in [
        stock
            .list_discount_codes(authed(
                &ada.token,
                inventory_pb::ListDiscountCodesRequest::default(),
            ))
            .await
            .map(|_| ()),
        stock
            .delete_tax_rate(authed(
                &ada.token,
                inventory_pb::DeleteTaxRateRequest {
                    name: format!("taxRates/{}", uuid::Uuid::new_v4()),
                },
            ))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }

    // A rate in the past, a rate over 100 %, a code with both benefits:
    // INVALID_ARGUMENT naming the field.
    let past = inventory_pb::CreateTaxRateRequest {
        tax_rate: Some(inventory_pb::TaxRate {
            country_code: "DE".into(),
            category: STANDARD,
            rate_basis_points: 10_001,
            start_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let status = stock
        .create_tax_rate(authed(&suite.admin, past))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("tax_rate.rate_basis_points"),
        "{status:?}"
    );
    let both = inventory_pb::CreateDiscountCodeRequest {
        discount_code: Some(inventory_pb::DiscountCode {
            code: "BOTH".into(),
            percent_basis_points: 100,
            amount: eur(100),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let status = stock
        .create_discount_code(authed(&suite.admin, both))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The seeded rates list, and a scheduled rate can be withdrawn before
    // it starts, not after.
    let listed = stock
        .list_tax_rates(authed(
            &ada.token,
            inventory_pb::ListTaxRatesRequest {
                country_code: "FR".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let fr: Vec<(i32, i32)> = listed
        .tax_rates
        .iter()
        .map(|r| (r.category, r.rate_basis_points))
        .collect();
    assert_eq!(
        fr,
        // By category name: reduced, standard, zero.
        [
            (REDUCED, 550),
            (STANDARD, 2000),
            (inventory_pb::TaxCategory::Zero as i32, 0)
        ]
    );
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    let scheduled = stock
        .create_tax_rate(authed(
            &suite.admin,
            inventory_pb::CreateTaxRateRequest {
                tax_rate: Some(inventory_pb::TaxRate {
                    country_code: "FR".into(),
                    category: STANDARD,
                    rate_basis_points: 2100,
                    start_time: Some(prost_types::Timestamp {
                        seconds: later.timestamp(),
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    stock
        .delete_tax_rate(authed(
            &suite.admin,
            inventory_pb::DeleteTaxRateRequest {
                name: scheduled.name.clone(),
            },
        ))
        .await
        .unwrap();
    let seeded = &listed.tax_rates[1];
    let status = stock
        .delete_tax_rate(authed(
            &suite.admin,
            inventory_pb::DeleteTaxRateRequest {
                name: seeded.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TAX_RATE_IN_EFFECT");
}
