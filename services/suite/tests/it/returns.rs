//! Returns and goodwill refunds across the three services: shipped units
//! come back (restocked or written off per line, refunded at their order
//! price, a second receipt a no-op), refunds never promise more than was
//! captured however many race, who may ask, receive and refund, and every
//! flow after checkout — cancellation, return, refund — stopped by a
//! planted crash before any of its steps is finished once by recovery.

use backroom_payment::checkout::saga::Fault;
use backroom_proto::payment::v1 as pb;
use futures_util::future::join_all;
use tonic::Code;

use crate::{
    harness::{Suite, VISA, authed, eur},
    shipments::{assert_audit_clean, completed_order, reason, request_id, ship},
};

fn minor(money: &Option<backroom_proto::common::v1::Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_minor)
}

fn lines(lines: &[(&str, i64)]) -> Vec<pb::LineItem> {
    lines
        .iter()
        .map(|(sku, quantity)| pb::LineItem {
            sku: (*sku).into(),
            quantity: *quantity,
        })
        .collect()
}

pub(crate) async fn request_return(
    suite: &Suite,
    token: &str,
    order: &str,
    units: &[(&str, i64)],
    id: &str,
) -> Result<pb::Return, tonic::Status> {
    suite
        .checkout
        .clone()
        .request_return(authed(
            token,
            pb::RequestReturnRequest {
                parent: order.into(),
                lines: lines(units),
                reason: pb::ReturnReason::Damaged.into(),
                note: "the box was crushed".into(),
                request_id: id.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// ReceiveReturn with (sku, restock, write-off) per line.
pub(crate) async fn receive(
    suite: &Suite,
    token: &str,
    ret: &str,
    decisions: &[(&str, i64, i64)],
) -> Result<pb::Return, tonic::Status> {
    suite
        .checkout
        .clone()
        .receive_return(authed(
            token,
            pb::ReceiveReturnRequest {
                name: ret.into(),
                lines: decisions
                    .iter()
                    .map(|(sku, restock, write_off)| pb::ReturnDisposition {
                        sku: (*sku).into(),
                        restock_quantity: *restock,
                        write_off_quantity: *write_off,
                    })
                    .collect(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) async fn refund(
    suite: &Suite,
    token: &str,
    order: &str,
    amount_minor: i64,
    id: &str,
) -> Result<pb::Order, tonic::Status> {
    suite
        .checkout
        .clone()
        .refund_order(authed(
            token,
            pb::RefundOrderRequest {
                name: order.into(),
                amount: eur(amount_minor),
                reason: "late delivery".into(),
                request_id: id.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn cancel(suite: &Suite, token: &str, order: &str) -> Result<pb::Order, tonic::Status> {
    suite
        .checkout
        .clone()
        .cancel_order(authed(
            token,
            pb::CancelOrderRequest {
                name: order.into(),
                reason: "changed my mind".into(),
                request_id: request_id(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn refunded_by_payment(suite: &Suite, order: &pb::Order) -> i64 {
    minor(&suite.intent(order).await.amount_refunded)
}

#[tokio::test]
async fn a_return_restocks_and_writes_off_per_line_refunds_the_received_units_and_a_second_receipt_is_a_no_op()
 {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    suite.product("CAP", 999, 5).await;
    let ada = suite.customer("return@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 3), ("CAP", 2)]).await;
    // Nothing shipped: nothing to return.
    let status = request_return(&suite, &ada.token, &order.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "NOTHING_TO_RETURN");
    ship(&suite, &suite.warehouse, &order.name, &[], &request_id())
        .await
        .unwrap();
    assert_eq!(suite.level("MUG").await.on_hand, 7);

    // Two mugs and a cap come back; more than shipped does not.
    let status = request_return(
        &suite,
        &ada.token,
        &order.name,
        &[("MUG", 4)],
        &request_id(),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&status), "RETURN_EXCEEDS_SHIPPED");
    let id = request_id();
    let asked = request_return(
        &suite,
        &ada.token,
        &order.name,
        &[("MUG", 2), ("CAP", 1)],
        &id,
    )
    .await
    .unwrap();
    assert_eq!(asked.state, pb::ReturnState::Requested as i32);
    assert!(asked.refund.is_none());
    // A replay is the same return; the units it took are taken.
    let replay = request_return(
        &suite,
        &ada.token,
        &order.name,
        &[("MUG", 2), ("CAP", 1)],
        &id,
    )
    .await
    .unwrap();
    assert_eq!(replay.name, asked.name);
    let status = request_return(
        &suite,
        &ada.token,
        &order.name,
        &[("MUG", 2)],
        &request_id(),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&status), "RETURN_EXCEEDS_SHIPPED");
    let now = suite.order(&order.name).await;
    assert_eq!(
        now.fulfillment_status,
        pb::FulfillmentStatus::PartiallyReturned as i32
    );
    let returned: Vec<i64> = now.lines.iter().map(|l| l.returned_quantity).collect();
    assert_eq!(returned, [2, 1]);

    // Decisions that do not cover the return are refused.
    let status = receive(&suite, &suite.warehouse, &asked.name, &[("MUG", 1, 0)])
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "RECEIPT_MISMATCH");
    // One mug back on the shelf, one written off, the cap restocked.
    let decisions = [("MUG", 1, 1), ("CAP", 1, 0)];
    let received = receive(&suite, &suite.warehouse, &asked.name, &decisions)
        .await
        .unwrap();
    assert_eq!(received.state, pb::ReturnState::Received as i32);
    let refund_due = 2 * 1299 + 999;
    assert_eq!(minor(&received.refund), refund_due);
    let decided: Vec<(i64, i64)> = received
        .lines
        .iter()
        .map(|l| (l.restocked_quantity, l.written_off_quantity))
        .collect();
    assert_eq!(decided, [(1, 1), (1, 0)]);
    let (mug, cap) = (suite.level("MUG").await, suite.level("CAP").await);
    assert_eq!((mug.on_hand, mug.available, mug.committed), (8, 8, 0));
    assert_eq!((cap.on_hand, cap.available, cap.committed), (4, 4, 0));
    let now = suite.order(&order.name).await;
    assert_eq!(minor(&now.refunded), refund_due);
    assert_eq!(
        now.payment_status,
        pb::PaymentStatus::PartiallyRefunded as i32
    );
    assert_eq!(refunded_by_payment(&suite, &order).await, refund_due);

    // A second receipt with the same decisions changes nothing; other
    // decisions are refused.
    let again = receive(&suite, &suite.admin, &asked.name, &decisions)
        .await
        .unwrap();
    assert_eq!(again, received);
    let status = receive(&suite, &suite.admin, &asked.name, &[])
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "RETURN_ALREADY_RECEIVED");
    assert_eq!(refunded_by_payment(&suite, &order).await, refund_due);
    assert_eq!(suite.level("MUG").await.on_hand, 8, "restocked once");

    // The rest comes back too: everything the order shipped is returned.
    let rest = request_return(&suite, &suite.admin, &order.name, &[], &request_id())
        .await
        .unwrap();
    let units: Vec<(String, i64)> = rest
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    assert_eq!(units, [("MUG".to_owned(), 1), ("CAP".to_owned(), 1)]);
    receive(&suite, &suite.warehouse, &rest.name, &[])
        .await
        .unwrap();
    let now = suite.order(&order.name).await;
    assert_eq!(
        now.fulfillment_status,
        pb::FulfillmentStatus::Returned as i32
    );
    let listed = suite
        .checkout
        .clone()
        .list_returns(authed(
            &ada.token,
            pb::ListReturnsRequest {
                parent: order.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.returns.len(), 2);
    // The shipping was paid for a delivery that happened: it stays paid.
    assert_eq!(
        minor(&now.refunded),
        3 * 1299 + 2 * 999,
        "every unit came back"
    );
    assert_eq!(suite.level("MUG").await.on_hand, 9);
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn only_customers_ask_only_warehouses_receive_only_admins_refund_and_the_window_closes() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("ada-return@example.com", VISA).await;
    let eve = suite.customer("eve-return@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 2)]).await;
    ship(&suite, &suite.admin, &order.name, &[], &request_id())
        .await
        .unwrap();
    let service = suite.service_token("payment", "backroom.payment");

    // Another customer and a service do not see the order.
    for token in [&eve.token, &service, &suite.warehouse] {
        let status = request_return(&suite, token, &order.name, &[], &request_id())
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::NotFound, "ORDER_NOT_FOUND".into())
        );
    }
    let ret = request_return(&suite, &ada.token, &order.name, &[], &request_id())
        .await
        .unwrap();
    // Neither a customer nor a service without role fulfillment receives.
    for token in [&ada.token, &eve.token, &service] {
        let status = receive(&suite, token, &ret.name, &[]).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Only admins refund.
    for token in [&ada.token, &eve.token, &service, &suite.warehouse] {
        let status = refund(&suite, token, &order.name, 100, &request_id())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // The warehouse sees the order's returns and shipments; another
    // customer does not.
    let list = |token: String| {
        let mut checkout = suite.checkout.clone();
        let parent = order.name.clone();
        async move {
            checkout
                .list_returns(authed(
                    &token,
                    pb::ListReturnsRequest {
                        parent,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    assert_eq!(
        list(suite.warehouse.clone())
            .await
            .unwrap()
            .into_inner()
            .returns
            .len(),
        1
    );
    assert_eq!(
        list(eve.token.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    // A warehouse places no orders for customers.
    let status = suite
        .checkout
        .clone()
        .place_order(authed(
            &suite.warehouse,
            pb::PlaceOrderRequest {
                customer: ada.name.clone(),
                lines: lines(&[("MUG", 1)]),
                payment_method: ada.card.clone(),
                shipping_address: ada.address.clone(),
                currency_code: "EUR".into(),
                request_id: request_id(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Bad input names its fields.
    let status = suite
        .checkout
        .clone()
        .request_return(authed(
            &ada.token,
            pb::RequestReturnRequest {
                parent: order.name.clone(),
                note: "x".repeat(501),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let fields = backroom_shared::errors::violated_fields(&status);
    for field in ["reason", "note", "request_id"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let status = receive(&suite, &suite.admin, &ret.name, &[("MUG", -1, 3)])
        .await
        .unwrap_err();
    let fields = backroom_shared::errors::violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == "lines[0].restock_quantity"),
        "{fields:?}"
    );
    let status = refund(&suite, &suite.admin, &order.name, 0, "")
        .await
        .unwrap_err();
    let fields = backroom_shared::errors::violated_fields(&status);
    for field in ["amount.amount_minor", "request_id"] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }

    // Thirty days after the last shipment the window closes.
    let second = completed_order(&suite, &ada, &[("MUG", 1)]).await;
    ship(&suite, &suite.admin, &second.name, &[], &request_id())
        .await
        .unwrap();
    suite.clock.advance(chrono::Duration::days(31));
    let status = request_return(&suite, &ada.token, &second.name, &[], &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "RETURN_WINDOW_CLOSED");
    assert_audit_clean(&suite).await;
}

#[tokio::test]
async fn racing_goodwill_refunds_never_promise_more_than_was_captured() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("goodwill@example.com", VISA).await;
    let order = completed_order(&suite, &ada, &[("MUG", 3)]).await;
    let total = minor(&order.total);
    let first = refund(&suite, &suite.admin, &order.name, 500, &request_id())
        .await
        .unwrap();
    assert_eq!(minor(&first.refunded), 500);
    assert_eq!(
        first.payment_status,
        pb::PaymentStatus::PartiallyRefunded as i32
    );
    // Another currency and more than is left are refused.
    let status = suite
        .checkout
        .clone()
        .refund_order(authed(
            &suite.admin,
            pb::RefundOrderRequest {
                name: order.name.clone(),
                amount: Some(backroom_proto::common::v1::Money {
                    currency_code: "USD".into(),
                    amount_minor: 100,
                }),
                reason: "wrong currency".into(),
                request_id: request_id(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CURRENCY_MISMATCH");
    let status = refund(&suite, &suite.admin, &order.name, total, &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "REFUND_EXCEEDS_CAPTURED");

    // 20 admins at once, 400 each, on what is left.
    let left = total - 500;
    let ids: Vec<String> = (0..20).map(|_| request_id()).collect();
    let outcomes = join_all(
        ids.iter()
            .map(|id| refund(&suite, &suite.admin, &order.name, 400, id)),
    )
    .await;
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(reason(refused), "REFUND_EXCEEDS_CAPTURED", "{refused:?}");
    }
    assert_eq!(succeeded, usize::try_from(left / 400).unwrap());
    let refunded = 500 + 400 * i64::try_from(succeeded).unwrap();
    let now = suite.order(&order.name).await;
    assert_eq!(minor(&now.refunded), refunded);
    assert_eq!(refunded_by_payment(&suite, &order).await, refunded);

    // Cancelling the rest refunds only what is left to refund.
    let canceled = cancel(&suite, &ada.token, &order.name).await.unwrap();
    assert_eq!(minor(&canceled.refunded), total);
    assert_eq!(canceled.payment_status, pb::PaymentStatus::Refunded as i32);
    assert_eq!(refunded_by_payment(&suite, &order).await, total);
    assert_eq!(suite.level("MUG").await.available, 10);
    suite.audit().await;
    assert_audit_clean(&suite).await;
}

/// The order of `name` once recovery is done with it — after the callees
/// forgot every idempotency key (as they do after 24 hours), so only the
/// flow's own record of its finished steps keeps a replay from acting twice.
async fn settled(suite: &Suite, name: &str) -> pb::Order {
    for pool in [&suite.inventory_pool, &suite.payment_pool] {
        pool.run(|conn| {
            diesel::RunQueryDsl::execute(diesel::sql_query("DELETE FROM idempotency_keys"), conn)
                .map_err(backroom_shared::db::DbError::from)
        })
        .await
        .unwrap();
    }
    suite.clock.advance(chrono::Duration::minutes(1));
    suite.saga.cancel_pending().await.unwrap();
    suite.saga.receive_pending().await.unwrap();
    suite.saga.refund_pending().await.unwrap();
    suite.order(name).await
}

#[tokio::test]
async fn a_flow_after_checkout_stopped_before_any_step_is_finished_once_by_recovery() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 100).await;
    let ada = suite.customer("flow-crash@example.com", VISA).await;

    // Cancellations: uncommit, refund, finish.
    for step in ["uncommit", "refund", "finish"] {
        let order = completed_order(&suite, &ada, &[("MUG", 2)]).await;
        suite.saga.plant_fault(Fault::BeforeFlowStep(step));
        let stopped = cancel(&suite, &ada.token, &order.name).await.unwrap();
        assert_eq!(minor(&stopped.refunded), 0, "{step}: stopped before done");
        let now = settled(&suite, &order.name).await;
        let total = minor(&order.total);
        assert_eq!(minor(&now.refunded), total, "cancellation, {step}");
        assert_eq!(refunded_by_payment(&suite, &order).await, total, "{step}");
    }
    // Returns: restock, write-off, refund, finish.
    for step in ["restock", "write-off", "refund", "finish"] {
        let order = completed_order(&suite, &ada, &[("MUG", 2)]).await;
        ship(&suite, &suite.warehouse, &order.name, &[], &request_id())
            .await
            .unwrap();
        let ret = request_return(&suite, &ada.token, &order.name, &[], &request_id())
            .await
            .unwrap();
        suite.saga.plant_fault(Fault::BeforeFlowStep(step));
        let stopped = receive(&suite, &suite.warehouse, &ret.name, &[("MUG", 1, 1)])
            .await
            .unwrap();
        assert_eq!(stopped.state, pb::ReturnState::Receiving as i32, "{step}");
        let now = settled(&suite, &order.name).await;
        assert_eq!(minor(&now.refunded), 2000, "return, {step}");
        assert_eq!(refunded_by_payment(&suite, &order).await, 2000, "{step}");
        let again = receive(&suite, &suite.warehouse, &ret.name, &[("MUG", 1, 1)])
            .await
            .unwrap();
        assert_eq!(again.state, pb::ReturnState::Received as i32, "{step}");
    }
    // Goodwill refunds: refund, finish.
    for step in ["refund", "finish"] {
        let order = completed_order(&suite, &ada, &[("MUG", 1)]).await;
        suite.saga.plant_fault(Fault::BeforeFlowStep(step));
        let id = request_id();
        let stopped = refund(&suite, &suite.admin, &order.name, 300, &id)
            .await
            .unwrap();
        assert_eq!(minor(&stopped.refunded), 0, "{step}");
        let now = settled(&suite, &order.name).await;
        assert_eq!(minor(&now.refunded), 300, "refund, {step}");
        // The admin's retry finds it done: nothing more goes back.
        refund(&suite, &suite.admin, &order.name, 300, &id)
            .await
            .unwrap();
        assert_eq!(refunded_by_payment(&suite, &order).await, 300, "{step}");
    }
    // 3 orders of 2 canceled, 4 of 2 shipped with 1 restocked and 1 written
    // off each, 2 of 1 still committed.
    let mug = suite.level("MUG").await;
    assert_eq!(
        (mug.on_hand, mug.available, mug.committed),
        (100 - 4, 100 - 4 - 2, 2)
    );
    suite.audit().await;
    assert_audit_clean(&suite).await;
}
