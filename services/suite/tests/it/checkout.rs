//! CheckoutService against the three real services: the saga's happy path,
//! compensation, idempotent replays, crash recovery at every step boundary,
//! a dependency outage, 100 orders racing for 30 units, and a burst of
//! orders past checkout's own concurrency limit.
//!
//! Over 600 lines: every saga outcome against the same three services;
//! the trace test is in `checkout_trace`, the attacks in `attack_surface`.

use std::time::Duration;

use crate::harness::{DECLINE, Suite, VISA, authed};
use backroom_payment::checkout::saga::{Fault, SagaConfig, State};
use backroom_proto::payment::v1 as pb;
use tonic::Code;

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn an_order_completes_commits_stock_captures_payment_and_balances_the_ledger() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("ada@example.com", VISA).await;

    let order = suite
        .place(&ada, &ada.card, &[("MUG", 2)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Completed as i32, "{order:#?}");
    assert_eq!(order.subtotal.as_ref().unwrap().amount_minor, 2598);
    assert_eq!(
        order.shipping.as_ref().unwrap().amount_minor,
        490,
        "domestic, under 1 kg"
    );
    assert_eq!(order.total.as_ref().unwrap().amount_minor, 3088);
    assert_eq!(
        order.shipping_address_snapshot.as_ref().unwrap().city,
        "Berlin"
    );
    assert!(order.failure.is_none());

    let level = suite.level("MUG").await;
    assert_eq!(
        (
            level.on_hand,
            level.available,
            level.reserved,
            level.committed
        ),
        (10, 8, 0, 2)
    );
    let intent = suite.intent(&order).await;
    assert_eq!(intent.status, pb::PaymentIntentStatus::Succeeded as i32);
    assert_eq!(intent.amount_received.unwrap().amount_minor, 3088);
    assert_eq!(suite.reservation_state(&order).await, "COMMITTED");
    suite.audit().await;

    // The customer reads and lists it; another customer does not see it.
    let mine = suite
        .checkout
        .clone()
        .list_orders(authed(&ada.token, pb::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.orders, std::slice::from_ref(&order));
    let bob = suite.customer("bob@example.com", VISA).await;
    let status = suite
        .checkout
        .clone()
        .get_order(authed(
            &bob.token,
            pb::GetOrderRequest {
                name: order.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let theirs = suite
        .checkout
        .clone()
        .list_orders(authed(&bob.token, pb::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.orders.is_empty());
    let status = suite
        .checkout
        .clone()
        .list_orders(authed(
            &bob.token,
            pb::ListOrdersRequest {
                customer: ada.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_declined_card_fails_the_order_releases_stock_and_captures_nothing() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 5).await;
    let ada = suite.customer("declined@example.com", DECLINE).await;
    let order = suite
        .place(&ada, &ada.card, &[("MUG", 2)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Failed as i32);
    let failure = order.failure.clone().unwrap();
    assert_eq!(failure.reason, "CARD_DECLINED");
    let level = suite.level("MUG").await;
    assert_eq!(
        (level.available, level.reserved, level.committed),
        (5, 0, 0),
        "stock released"
    );
    assert_eq!(suite.reservation_state(&order).await, "RELEASED");
    let intent = suite.intent(&order).await;
    assert_eq!(intent.status, pb::PaymentIntentStatus::Canceled as i32);
    assert_eq!(intent.amount_received.map_or(0, |m| m.amount_minor), 0);
    suite.audit().await;
}

#[tokio::test]
async fn an_order_dearer_than_one_payment_fails_with_its_reason_before_any_stock_is_held() {
    // The most one payment collects is 99,999,999 minor units; a unit may
    // cost that much, two may not be bought at once.
    let suite = Suite::spawn().await;
    suite.product("GOLD", 99_999_999, 5).await;
    let ada = suite.customer("rich@example.com", VISA).await;
    let order = suite
        .place(&ada, &ada.card, &[("GOLD", 2)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Failed as i32);
    let failure = order.failure.unwrap();
    assert_eq!(failure.reason, "ORDER_TOO_LARGE");
    assert_eq!(
        failure.metadata.get("max_minor").map(String::as_str),
        Some("99999999")
    );
    assert!(order.payment_intent.is_empty(), "no intent was created");
    assert_eq!(
        suite.level("GOLD").await.available,
        5,
        "nothing was reserved"
    );
    suite.audit().await;
}

#[tokio::test]
async fn insufficient_stock_fails_the_order_without_any_authorization() {
    let suite = Suite::spawn().await;
    suite.product("RARE", 5000, 1).await;
    let ada = suite.customer("short@example.com", VISA).await;
    let order = suite
        .place(&ada, &ada.card, &[("RARE", 2)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Failed as i32);
    let failure = order.failure.unwrap();
    assert_eq!(failure.reason, "INSUFFICIENT_STOCK");
    assert!(
        failure
            .metadata
            .get("skus")
            .is_some_and(|skus| skus.contains("RARE")),
        "{:?}",
        failure.metadata
    );
    assert!(order.payment_intent.is_empty(), "no intent was created");
    let intents = suite
        .payments
        .clone()
        .list_payment_intents(authed(&ada.token, pb::ListPaymentIntentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(intents.payment_intents.is_empty());
    assert_eq!(suite.level("RARE").await.available, 1);
}

#[tokio::test]
async fn unknown_products_and_bad_requests_are_named() {
    let suite = Suite::spawn().await;
    let ada = suite.customer("bad@example.com", VISA).await;
    let order = suite
        .place(&ada, &ada.card, &[("GHOST", 1)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.failure.unwrap().reason, "PRODUCT_NOT_FOUND");

    for (lines, card, request_id, field) in [
        (vec![], ada.card.clone(), request_id(), "lines"),
        (
            vec![("A", 0)],
            ada.card.clone(),
            request_id(),
            "lines[0].quantity",
        ),
        (
            vec![("A", 1), ("A", 2)],
            ada.card.clone(),
            request_id(),
            "lines[1].sku",
        ),
        (
            vec![("A", 1)],
            "cards/x".to_owned(),
            request_id(),
            "payment_method",
        ),
        (
            vec![("A", 1)],
            ada.card.clone(),
            String::new(),
            "request_id",
        ),
    ] {
        let status = suite
            .place(&ada, &card, &lines, &request_id)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(backroom_shared::errors::violated_fields(&status), [field]);
    }
    // Someone else's card is not a payment method of this customer.
    let bob = suite.customer("bob2@example.com", VISA).await;
    let status = suite
        .place(&ada, &bob.card, &[("A", 1)], &request_id())
        .await
        .unwrap_err();
    assert_eq!(
        (
            status.code(),
            backroom_shared::errors::reason_of(&status).unwrap()
        ),
        (Code::NotFound, "PAYMENT_METHOD_NOT_FOUND".into())
    );
    // Nor is someone else's address.
    let mut wrong = ada.clone();
    wrong.address = bob.address.clone();
    let status = suite
        .place(&wrong, &ada.card, &[("A", 1)], &request_id())
        .await
        .unwrap_err();
    assert_eq!(
        backroom_shared::errors::violated_fields(&status),
        ["shipping_address"]
    );
    // No token, no order.
    let status = suite
        .checkout
        .clone()
        .place_order(pb::PlaceOrderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn replaying_place_order_concurrently_makes_one_order_and_one_charge() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("replay@example.com", VISA).await;
    let id = request_id();
    let calls = (0..10).map(|_| suite.place(&ada, &ada.card, &[("MUG", 1)], &id));
    let orders: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let names: std::collections::BTreeSet<_> = orders.iter().map(|o| o.name.clone()).collect();
    assert_eq!(names.len(), 1, "one order");
    let done = suite.order(&orders[0].name).await;
    assert_eq!(done.state, pb::OrderState::Completed as i32);
    // Once more, sequentially: the same order.
    let again = suite
        .place(&ada, &ada.card, &[("MUG", 1)], &id)
        .await
        .unwrap();
    assert_eq!(again.name, done.name);
    // Same id, other parameters: refused.
    let status = suite
        .place(&ada, &ada.card, &[("MUG", 2)], &id)
        .await
        .unwrap_err();
    assert_eq!(
        backroom_shared::errors::reason_of(&status).as_deref(),
        Some("REQUEST_ID_REUSED")
    );

    let intents = suite
        .payments
        .clone()
        .list_payment_intents(authed(&ada.token, pb::ListPaymentIntentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(intents.payment_intents.len(), 1, "one charge");
    assert_eq!(suite.level("MUG").await.committed, 1);
    suite.audit().await;
}

/// Every place a crash can stop the saga: before each step, and after each
/// step's remote call but before its result was stored.
pub(crate) fn fault_points() -> Vec<Fault> {
    let steps = [
        State::Pending,
        State::Reserving,
        State::Authorizing,
        State::Committing,
        State::Capturing,
    ];
    steps
        .iter()
        .flat_map(|state| [Fault::Before(*state), Fault::AfterCall(*state)])
        .collect()
}

#[tokio::test]
async fn a_saga_stopped_at_any_step_boundary_is_finished_by_recovery_with_nothing_left_held() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 100).await;
    let ada = suite.customer("crash@example.com", VISA).await;
    let declined = suite.card(&ada.token, DECLINE).await;
    for (n, fault) in fault_points().into_iter().enumerate() {
        for (card, outcome) in [
            (&ada.card, pb::OrderState::Completed),
            (&declined, pb::OrderState::Failed),
        ] {
            // A declined card never reaches the pivot: crash points after it
            // do not apply.
            if outcome == pb::OrderState::Failed
                && matches!(
                    fault,
                    Fault::Before(State::Committing | State::Capturing)
                        | Fault::AfterCall(
                            State::Authorizing | State::Committing | State::Capturing
                        )
                )
            {
                continue;
            }
            suite.saga.plant_fault(fault);
            let stopped = suite
                .place(&ada, card, &[("MUG", 1)], &request_id())
                .await
                .unwrap();
            assert!(
                !matches!(
                    pb::OrderState::try_from(stopped.state),
                    Ok(pb::OrderState::Completed | pb::OrderState::Failed)
                ),
                "#{n} {fault:?}: the saga should have stopped, got {:?}",
                stopped.state
            );
            // The process "restarts": a new worker, the dead one's lease runs out.
            suite.clock.advance(chrono::Duration::seconds(31));
            let recovered = suite.restarted_saga().recover_due().await.unwrap();
            assert!(recovered >= 1, "#{n} {fault:?}: recovery picked it up");
            let order = suite.order(&stopped.name).await;
            assert_eq!(order.state, outcome as i32, "#{n} {fault:?}: {order:#?}");
            let reservation = suite.reservation_state(&order).await;
            let intent = if order.payment_intent.is_empty() {
                None
            } else {
                Some(suite.intent(&order).await)
            };
            match outcome {
                pb::OrderState::Completed => {
                    assert_eq!(reservation, "COMMITTED", "#{n} {fault:?}");
                    assert_eq!(
                        intent.unwrap().status,
                        pb::PaymentIntentStatus::Succeeded as i32,
                        "#{n} {fault:?}"
                    );
                }
                _ => {
                    assert!(
                        matches!(reservation.as_str(), "RELEASED" | "NONE"),
                        "#{n} {fault:?}: {reservation}"
                    );
                    if let Some(intent) = intent {
                        assert_eq!(
                            intent.status,
                            pb::PaymentIntentStatus::Canceled as i32,
                            "#{n} {fault:?}: no authorization left open"
                        );
                    }
                }
            }
        }
    }
    // Exactly the completed orders hold stock, and the ledger balances.
    let completed = suite
        .checkout
        .clone()
        .list_orders(authed(
            &suite.admin,
            pb::ListOrdersRequest {
                page_size: 100,
                state: pb::OrderState::Completed as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .orders
        .len() as i64;
    let level = suite.level("MUG").await;
    assert_eq!(
        (level.committed, level.reserved, level.available),
        (completed, 0, 100 - completed)
    );
    suite.audit().await;
}

#[tokio::test]
async fn with_inventory_down_an_order_fails_cleanly_and_is_never_charged() {
    let suite = Suite::spawn_with(SagaConfig {
        recovery_interval: Duration::from_secs(3600),
        place_order_wait: Duration::from_secs(2),
        call_attempts: 2,
        max_rounds: 2,
        ..SagaConfig::default()
    })
    .await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("outage@example.com", VISA).await;
    // Inventory goes away.
    suite.inventory_shutdown().await;
    let order = suite
        .place(&ada, &ada.card, &[("MUG", 1)], &request_id())
        .await
        .unwrap();
    assert_ne!(
        order.state,
        pb::OrderState::Completed as i32,
        "no stock service, no order"
    );
    // The saga retries with backoff, then gives up and compensates.
    for _ in 0..3 {
        suite.clock.advance(chrono::Duration::minutes(2));
        suite.saga.recover_due().await.unwrap();
    }
    let order = suite.order(&order.name).await;
    assert_eq!(order.state, pb::OrderState::Failed as i32, "{order:#?}");
    assert_eq!(order.failure.unwrap().reason, "DEPENDENCY_UNAVAILABLE");
    assert!(
        order.payment_intent.is_empty(),
        "never charged without stock"
    );
}

#[tokio::test]
async fn a_hundred_orders_racing_for_thirty_units_complete_exactly_thirty() {
    let suite = Suite::spawn().await;
    suite.product("HOT", 500, 30).await;
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(suite.customer(&format!("racer{i}@example.com"), VISA).await);
    }
    let ids: Vec<String> = (0..100).map(|_| request_id()).collect();
    let calls = ids.iter().enumerate().map(|(i, id)| {
        let customer = &customers[i % customers.len()];
        suite.place(customer, &customer.card, &[("HOT", 1)], id)
    });
    let orders: Vec<pb::Order> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every order is accepted"))
        .collect();
    let completed = orders
        .iter()
        .filter(|o| o.state == pb::OrderState::Completed as i32)
        .count();
    let failed: Vec<_> = orders
        .iter()
        .filter(|o| o.state == pb::OrderState::Failed as i32)
        .collect();
    let odd: Vec<_> = orders
        .iter()
        .filter(|o| o.state != pb::OrderState::Completed as i32)
        .filter(|o| {
            o.failure
                .as_ref()
                .is_none_or(|f| f.reason != "INSUFFICIENT_STOCK")
        })
        .map(|o| (o.state, o.failure.clone()))
        .collect();
    assert!(odd.is_empty(), "{odd:#?}");
    assert_eq!(completed, 30);
    assert_eq!(failed.len(), 70);
    assert!(
        failed
            .iter()
            .all(|o| o.failure.as_ref().unwrap().reason == "INSUFFICIENT_STOCK")
    );
    let level = suite.level("HOT").await;
    assert_eq!(
        (level.available, level.reserved, level.committed),
        (0, 0, 30)
    );
    // Charges equal completed orders.
    let mut charged = 0;
    for order in &orders {
        if !order.payment_intent.is_empty() {
            let intent = suite.intent(order).await;
            if intent.status == pb::PaymentIntentStatus::Succeeded as i32 {
                charged += 1;
            }
        }
    }
    assert_eq!(charged, 30);
    suite.audit().await;
}

#[tokio::test]
async fn a_burst_of_orders_past_checkouts_limit_is_shed_and_payment_service_keeps_answering() {
    // 2 × 3 + 2 = 8: three orders in flight and their sagas' calls to
    // PaymentService leave it two slots however many orders arrive.
    let server = backroom_shared::config::ServerConfig {
        concurrency_limit: 8,
        ..Default::default()
    };
    let suite = Suite::spawn_limited(
        SagaConfig {
            recovery_interval: Duration::from_secs(3600),
            ..SagaConfig::default()
        },
        |_| {},
        server,
        3,
    )
    .await;
    suite.product("BURST", 500, 100).await;
    let ada = suite.customer("burst@example.com", VISA).await;
    let shed = |outcome: &Result<pb::Order, tonic::Status>| {
        outcome.as_ref().is_err_and(|status| {
            status.code() == Code::ResourceExhausted
                && backroom_shared::errors::reason_of(status).as_deref() == Some("OVERLOADED")
        })
    };
    let first_shed = tokio::sync::Notify::new();
    let burst = (0..12).map(|_| async {
        let outcome = suite
            .place(&ada, &ada.card, &[("BURST", 1)], &request_id())
            .await;
        if shed(&outcome) {
            first_shed.notify_one();
        }
        outcome
    });
    // Once orders are being shed, the customer's PaymentService calls are
    // still served, one after another, while the admitted orders run.
    let customer_calls = async {
        first_shed.notified().await;
        for _ in 0..20 {
            suite
                .payments
                .clone()
                .list_payment_methods(authed(
                    &ada.token,
                    pb::ListPaymentMethodsRequest {
                        customer: "accounts/me".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("PaymentService answers during a burst of orders");
        }
    };
    let (outcomes, ()) = tokio::join!(futures_util::future::join_all(burst), customer_calls);
    let completed: Vec<&pb::Order> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .collect();
    let shed_count = outcomes.iter().filter(|outcome| shed(outcome)).count();
    assert_eq!(
        completed.len() + shed_count,
        outcomes.len(),
        "every order is served or shed at once: {outcomes:#?}"
    );
    assert!(shed_count >= 1, "twelve orders at once exceed a limit of 3");
    assert!(!completed.is_empty(), "admitted orders are served");
    // The admitted orders' sagas got their PaymentService calls through.
    for order in completed {
        assert_eq!(order.state, pb::OrderState::Completed as i32, "{order:#?}");
        assert_eq!(
            suite.intent(order).await.status,
            pb::PaymentIntentStatus::Succeeded as i32
        );
    }
    suite.audit().await;
}

#[tokio::test]
async fn a_caller_who_gives_up_does_not_park_its_order_or_the_stock_it_holds() {
    // Recovery never runs on its own here: only the caller's own drive can
    // finish the order. A caller that hangs up after a few milliseconds
    // used to leave it (and its reservation) mid-saga until a worker's
    // lease ran out.
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 3).await;
    let ada = suite.customer("ada@example.com", VISA).await;
    // The caller may give up so early that no order exists yet (nothing is
    // held then); it tries again with more patience until one does.
    let mut patience = Duration::from_millis(15);
    let (order, started) = 'placed: loop {
        let mut request = authed(
            &ada.token,
            pb::PlaceOrderRequest {
                customer: "accounts/me".into(),
                lines: vec![pb::LineItem {
                    sku: "MUG".into(),
                    quantity: 1,
                }],
                payment_method: ada.card.clone(),
                shipping_address: ada.address.clone(),
                currency_code: "EUR".into(),
                request_id: request_id(),
                ..Default::default()
            },
        );
        request.set_timeout(patience);
        let gave_up = suite.checkout.clone().place_order(request).await;
        assert!(
            gave_up.is_err(),
            "the caller hung up before the saga finished"
        );
        let started = std::time::Instant::now();
        loop {
            let orders = suite
                .checkout
                .clone()
                .list_orders(authed(
                    &ada.token,
                    pb::ListOrdersRequest {
                        customer: "accounts/me".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .orders;
            if let Some(order) = orders.iter().find(|o| {
                o.state == pb::OrderState::Completed as i32
                    || o.state == pb::OrderState::Failed as i32
            }) {
                break 'placed (order.clone(), started);
            }
            if orders.is_empty() && started.elapsed() > Duration::from_secs(2) {
                assert!(
                    patience < Duration::from_secs(1),
                    "no order was ever stored"
                );
                patience *= 2;
                continue 'placed;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the order stayed mid-saga after its caller left: {orders:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    println!(
        "order {} after the caller left: {:?}",
        order.state,
        started.elapsed()
    );
    assert_eq!(order.state, pb::OrderState::Completed as i32);
    suite.audit().await;
}
