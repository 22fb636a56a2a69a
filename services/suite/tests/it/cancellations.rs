//! Cancelling orders across the three services: before any shipment the
//! whole order comes back (stock to available, the total refunded with the
//! shipping), after a partial shipment only the remainder, a cancel racing
//! a shipment gets each unit or not, a cancellation a crash left PENDING is
//! finished once, and only the order's customer or an admin cancels.

use backroom_payment::checkout::{cancellation::CancelOrder, repo};
use backroom_proto::payment::v1 as pb;
use futures_util::future::join_all;
use tonic::Code;

use crate::{
    harness::{Customer, Suite, VISA, authed},
    shipments::{assert_audit_clean, completed_order, reason, request_id, ship},
};

async fn cancel(
    suite: &Suite,
    token: &str,
    order: &str,
    id: &str,
) -> Result<pb::Order, tonic::Status> {
    suite
        .checkout
        .clone()
        .cancel_order(authed(
            token,
            pb::CancelOrderRequest {
                name: order.into(),
                reason: "changed my mind".into(),
                request_id: id.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn minor(money: &Option<backroom_proto::common::v1::Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_minor)
}

async fn refunded_by_payment(suite: &Suite, order: &pb::Order) -> i64 {
    minor(&suite.intent(order).await.amount_refunded)
}

#[tokio::test]
async fn a_cancel_before_any_shipment_returns_the_stock_and_the_whole_total() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.product("CAP", 999, 5).await;
    let ada = suite.customer("cancel@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 2), ("CAP", 1)]).await;
    assert_eq!(order.status, pb::OrderStatus::Open as i32);
    assert_eq!(order.payment_status, pb::PaymentStatus::Paid as i32);
    let total = minor(&order.total);
    assert!(minor(&order.shipping) > 0, "the order pays shipping");

    let id = request_id();
    let canceled = cancel(&suite, &ada.token, &order.name, &id).await.unwrap();
    assert_eq!(canceled.status, pb::OrderStatus::Canceled as i32);
    assert_eq!(canceled.payment_status, pb::PaymentStatus::Refunded as i32);
    assert_eq!(
        minor(&canceled.refunded),
        total,
        "the shipping comes back too"
    );
    let lines: Vec<i64> = canceled.lines.iter().map(|l| l.canceled_quantity).collect();
    assert_eq!(lines, [2, 1]);
    assert_eq!(refunded_by_payment(&suite, &order).await, total);
    let mug = suite.level("MUG").await;
    assert_eq!((mug.on_hand, mug.available, mug.committed), (10, 10, 0));
    // A replay is the same cancellation: nothing is refunded twice.
    let replay = cancel(&suite, &ada.token, &order.name, &id).await.unwrap();
    assert_eq!(minor(&replay.refunded), total);
    assert_eq!(refunded_by_payment(&suite, &order).await, total);
    // Nothing is left to cancel or to ship.
    let status = cancel(&suite, &ada.token, &order.name, &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTHING_TO_CANCEL");
    let status = ship(&suite, &suite.admin, &order.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTHING_TO_SHIP");
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_cancel_after_a_partial_shipment_takes_only_the_remainder() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.product("CAP", 999, 5).await;
    let ada = suite.customer("partial-cancel@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 3), ("CAP", 1)]).await;
    ship(
        &suite,
        &suite.admin,
        &order.name,
        &[("MUG", 1)],
        &request_id(),
    )
    .await
    .unwrap();
    let canceled = cancel(&suite, &suite.admin, &order.name, &request_id())
        .await
        .unwrap();
    // Two mugs and the cap, at their prices; the shipping stays paid.
    assert_eq!(minor(&canceled.refunded), 2 * 1299 + 999);
    assert_eq!(canceled.status, pb::OrderStatus::Completed as i32);
    assert_eq!(
        canceled.payment_status,
        pb::PaymentStatus::PartiallyRefunded as i32
    );
    assert_eq!(
        canceled.fulfillment_status,
        pb::FulfillmentStatus::Fulfilled as i32,
        "everything that will ship has"
    );
    let lines: Vec<(i64, i64)> = canceled
        .lines
        .iter()
        .map(|l| (l.shipped_quantity, l.canceled_quantity))
        .collect();
    assert_eq!(lines, [(1, 2), (0, 1)]);
    assert_eq!(refunded_by_payment(&suite, &order).await, 2 * 1299 + 999);
    let (mug, cap) = (suite.level("MUG").await, suite.level("CAP").await);
    assert_eq!((mug.on_hand, mug.available, mug.committed), (9, 9, 0));
    assert_eq!((cap.on_hand, cap.available, cap.committed), (5, 5, 0));
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn only_the_customer_or_an_admin_cancels_and_only_a_completed_order() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("ada-cancel@example.com", VISA).await;
    let eve = suite.customer("eve-cancel@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 1)]).await;
    for token in [
        eve.token.clone(),
        suite.service_token("payment", "backroom.payment"),
    ] {
        let status = cancel(&suite, &token, &order.name, &request_id())
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::NotFound, "ORDER_NOT_FOUND".to_owned())
        );
    }
    let failed = suite
        .place(&ada, &ada.card, &[("MUG", 50)], &request_id())
        .await
        .unwrap();
    assert_eq!(failed.state, pb::OrderState::Failed as i32);
    assert_eq!(failed.status, pb::OrderStatus::Canceled as i32);
    assert_eq!(failed.payment_status, pb::PaymentStatus::Unpaid as i32);
    let status = cancel(&suite, &ada.token, &failed.name, &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ORDER_NOT_CANCELABLE");
    let status = cancel(&suite, &ada.token, "orders/nope", "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        suite.level("MUG").await.committed,
        1,
        "nothing was canceled"
    );
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_cancel_racing_a_shipment_gets_each_unit_or_not_never_both() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 200).await;
    let ada = suite.customer("race-cancel@example.com", VISA).await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        orders.push(completed_order(&suite, &ada, &[("MUG", 3)]).await);
    }
    // For every order, at once: a shipment of everything left and a cancel.
    let races = join_all(orders.iter().flat_map(|order| {
        let suite = &suite;
        let ada: &Customer = &ada;
        [
            Box::pin(async move {
                ship(suite, &suite.admin, &order.name, &[], &request_id())
                    .await
                    .map(drop)
            })
                as std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>>>>,
            Box::pin(async move {
                cancel(suite, &ada.token, &order.name, &request_id())
                    .await
                    .map(drop)
            }),
        ]
    }))
    .await;
    for refused in races.iter().filter_map(|r| r.as_ref().err()) {
        let why = reason(refused);
        assert!(
            why == "NOTHING_TO_SHIP" || why == "NOTHING_TO_CANCEL",
            "{refused:?}"
        );
    }
    let mut shipped_units = 0;
    for order in &orders {
        let now = suite.order(&order.name).await;
        let line = &now.lines[0];
        assert_eq!(
            line.shipped_quantity + line.canceled_quantity,
            3,
            "{now:#?}"
        );
        assert!(line.shipped_quantity == 0 || line.canceled_quantity == 0);
        shipped_units += line.shipped_quantity;
        // The money agrees with the units: canceled mugs back, and the
        // shipping when nothing shipped.
        let expected = if line.shipped_quantity == 0 {
            minor(&now.total)
        } else {
            0
        };
        assert_eq!(minor(&now.refunded), expected);
        assert_eq!(refunded_by_payment(&suite, &now).await, expected);
    }
    let mug = suite.level("MUG").await;
    assert_eq!(mug.committed, 0);
    assert_eq!(mug.on_hand, 200 - shipped_units);
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn a_cancellation_a_crash_left_pending_is_finished_once_by_recovery() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("crash-cancel@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 2)]).await;
    // The process stored the cancellation, then died before calling
    // inventory and payment.
    let id = request_id();
    let cmd = CancelOrder::try_from(pb::CancelOrderRequest {
        name: order.name.clone(),
        reason: "changed my mind".into(),
        request_id: id.clone(),
    })
    .unwrap();
    suite
        .payment_pool
        .transaction(move |conn| {
            repo::cancellations::begin(conn, &cmd, chrono::Utc::now())
                .map_err(|err| backroom_shared::db::DbError::Other(anyhow::anyhow!("{err}")))
        })
        .await
        .unwrap();
    // Its units are canceled already: nothing ships.
    let status = ship(&suite, &suite.admin, &order.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTHING_TO_SHIP");
    assert_eq!(suite.level("MUG").await.committed, 2, "stock not back yet");

    suite.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(suite.saga.cancel_pending().await.unwrap(), 1);
    assert_eq!(suite.saga.cancel_pending().await.unwrap(), 0);
    let total = minor(&order.total);
    assert_eq!(refunded_by_payment(&suite, &order).await, total);
    assert_eq!(suite.level("MUG").await.committed, 0);
    // The customer's retry finds it done, and refunds nothing more.
    let replay = cancel(&suite, &ada.token, &order.name, &id).await.unwrap();
    assert_eq!(minor(&replay.refunded), total);
    assert_eq!(refunded_by_payment(&suite, &order).await, total);
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn an_order_canceled_mid_checkout_is_compensated_before_the_pivot_and_refunded_past_it() {
    use backroom_payment::checkout::saga::{Fault, State};
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 100).await;
    let ada = suite.customer("mid-checkout@example.com", VISA).await;
    for fault in crate::checkout::fault_points() {
        // The saga stops there (its worker crashed, lease held), and the
        // customer cancels.
        suite.saga.plant_fault(fault);
        let stopped = suite
            .place(&ada, &ada.card, &[("MUG", 2)], &request_id())
            .await
            .unwrap();
        assert!(
            !matches!(
                pb::OrderState::try_from(stopped.state),
                Ok(pb::OrderState::Completed | pb::OrderState::Failed)
            ),
            "{fault:?}: {stopped:#?}"
        );
        let id = request_id();
        let answered = cancel(&suite, &ada.token, &stopped.name, &id)
            .await
            .unwrap();
        // The saga may still hold its lease elsewhere: recovery finishes.
        suite.clock.advance(chrono::Duration::minutes(5));
        suite.saga.recover_due().await.unwrap();
        suite.saga.cancel_pending().await.unwrap();
        let order = suite.order(&stopped.name).await;
        assert_eq!(
            order.status,
            pb::OrderStatus::Canceled as i32,
            "{fault:?}: {answered:#?} then {order:#?}"
        );
        assert!(!order.cancel_requested, "{fault:?}");
        let past_pivot = matches!(
            fault,
            Fault::AfterCall(State::Committing)
                | Fault::Before(State::Capturing)
                | Fault::AfterCall(State::Capturing)
        );
        if past_pivot {
            // Committed and paid before the cancel could stop it: the
            // whole order is canceled and refunded.
            assert_eq!(order.state, pb::OrderState::Completed as i32, "{fault:?}");
            assert_eq!(order.payment_status, pb::PaymentStatus::Refunded as i32);
            assert_eq!(minor(&order.refunded), minor(&order.total), "{fault:?}");
            assert_eq!(
                refunded_by_payment(&suite, &order).await,
                minor(&order.total)
            );
        } else {
            // Compensated: stock released, authorization voided, nothing
            // charged.
            assert_eq!(order.state, pb::OrderState::Failed as i32, "{fault:?}");
            assert_eq!(
                order.failure.as_ref().map(|f| f.reason.as_str()),
                Some("ORDER_CANCELED"),
                "{fault:?}"
            );
            assert_eq!(order.payment_status, pb::PaymentStatus::Unpaid as i32);
        }
        // A retry of the cancel is answered with the order as it is; its
        // request id with another reason is refused.
        let status = suite
            .checkout
            .clone()
            .cancel_order(authed(
                &ada.token,
                pb::CancelOrderRequest {
                    name: stopped.name.clone(),
                    reason: "another reason".into(),
                    request_id: id.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "REQUEST_ID_REUSED", "{fault:?}");
        let replay = cancel(&suite, &ada.token, &stopped.name, &id)
            .await
            .unwrap();
        assert_eq!(replay.status, pb::OrderStatus::Canceled as i32, "{fault:?}");
        let mug = suite.level("MUG").await;
        assert_eq!(
            (mug.on_hand, mug.available, mug.reserved, mug.committed),
            (100, 100, 0, 0),
            "{fault:?}: nothing held"
        );
    }
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn orders_canceled_while_their_place_order_runs_end_canceled_with_nothing_held_or_charged() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 100).await;
    let ada = suite.customer("racing-cancel@example.com", VISA).await;
    // 20 PlaceOrders, and beside them a customer who cancels every order of
    // theirs the moment ListOrders shows it, whatever state it is in.
    // Both retry when checkout sheds (OVERLOADED): 20 orders in all.
    let placed_all = std::sync::atomic::AtomicBool::new(false);
    let placing = async {
        let placed = join_all((0..20).map(|_| {
            let (suite, ada) = (&suite, &ada);
            async move {
                let id = request_id();
                loop {
                    match suite.place(ada, &ada.card, &[("MUG", 1)], &id).await {
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        other => return other,
                    }
                }
            }
        }))
        .await;
        placed_all.store(true, std::sync::atomic::Ordering::SeqCst);
        placed
    };
    // Each order seen is canceled after its own delay (0–285 ms), so the
    // cancels land in every step of checkout.
    let canceling = async {
        let mut seen = std::collections::HashSet::new();
        let mut cancels = futures_util::stream::FuturesUnordered::new();
        loop {
            let done = placed_all.load(std::sync::atomic::Ordering::SeqCst);
            let listed = suite
                .checkout
                .clone()
                .list_orders(authed(
                    &ada.token,
                    pb::ListOrdersRequest {
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            for order in listed.orders {
                if !seen.insert(order.name.clone()) {
                    continue;
                }
                let delay = std::time::Duration::from_millis(15 * (seen.len() as u64 % 20));
                let (suite, ada) = (&suite, &ada);
                cancels.push(async move {
                    tokio::time::sleep(delay).await;
                    loop {
                        match cancel(suite, &ada.token, &order.name, &request_id()).await {
                            Ok(_) => return,
                            Err(status) if status.code() == Code::ResourceExhausted => {
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            }
                            Err(status) => panic!("{status:?}"),
                        }
                    }
                });
            }
            if done && seen.len() == 20 {
                break;
            }
            // The cancels run while the listing goes on.
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(2),
                futures_util::StreamExt::next(&mut cancels),
            )
            .await;
        }
        while futures_util::StreamExt::next(&mut cancels).await.is_some() {}
    };
    let (placed, ()) = tokio::join!(placing, canceling);
    for order in placed {
        order.unwrap();
    }
    suite.clock.advance(chrono::Duration::minutes(5));
    suite.saga.recover_due().await.unwrap();
    suite.saga.cancel_pending().await.unwrap();
    let listed = suite
        .checkout
        .clone()
        .list_orders(authed(
            &ada.token,
            pb::ListOrdersRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 20);
    let failed = listed
        .orders
        .iter()
        .filter(|o| o.state == pb::OrderState::Failed as i32)
        .count();
    println!(
        "checked: {failed} of 20 orders compensated mid-checkout, the rest canceled after completing"
    );
    for order in &listed.orders {
        assert_eq!(order.status, pb::OrderStatus::Canceled as i32, "{order:#?}");
        if order.state == pb::OrderState::Completed as i32 {
            assert_eq!(minor(&order.refunded), minor(&order.total), "{order:#?}");
            assert_eq!(
                refunded_by_payment(&suite, order).await,
                minor(&order.total)
            );
        } else {
            assert_eq!(order.state, pb::OrderState::Failed as i32, "{order:#?}");
            assert_eq!(order.payment_status, pb::PaymentStatus::Unpaid as i32);
        }
    }
    let mug = suite.level("MUG").await;
    assert_eq!(
        (mug.on_hand, mug.available, mug.reserved, mug.committed),
        (100, 100, 0, 0)
    );
    suite.audit().await;
    assert_audit_clean(&suite).await;
}
