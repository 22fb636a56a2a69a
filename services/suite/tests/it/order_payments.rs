//! An order's payment belongs to the order: the intent checkout creates
//! names its order, and through PaymentService only the checkout saga acts
//! on it — its customer, an admin and any other service are refused with
//! INTENT_MANAGED_BY_ORDER (or ACCESS_DENIED for what a customer may never
//! do), and the authorization-expiry sweeper leaves it to the saga while
//! the order's saga runs. The saga is parked half-way with a planted fault
//! (feature `fault-injection`), the state the attacker's short deadlines
//! produced.

use crate::harness::{self, Customer, Suite, VISA, authed};
use backroom_payment::checkout::saga::{Fault, SagaConfig, State};
use backroom_proto::payment::v1 as pb;
use tonic::Code;

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The ErrorInfo reason and metadata of a refusal.
fn refusal(status: &tonic::Status) -> (Code, String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt as _;
    let info = status.get_error_details().error_info().cloned();
    (
        status.code(),
        info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
        info.map(|i| i.metadata).unwrap_or_default(),
    )
}

/// An order stopped right before the pivot: stock reserved, payment
/// authorized (REQUIRES_CAPTURE), CommitReservation not yet called.
async fn parked_before_the_pivot(suite: &Suite, customer: &Customer) -> pb::Order {
    suite.saga.plant_fault(Fault::Before(State::Committing));
    let order = suite
        .place(customer, &customer.card, &[("MUG", 1)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Committing as i32, "{order:#?}");
    order
}

/// A manual-capture payment of 5 EUR the customer authorizes for
/// themselves, outside any order.
async fn own_authorized_payment(suite: &Suite, customer: &Customer) -> pb::PaymentIntent {
    suite
        .payments
        .clone()
        .create_payment_intent(authed(
            &customer.token,
            pb::CreatePaymentIntentRequest {
                customer: "accounts/me".into(),
                amount: harness::eur(500),
                capture_method: pb::CaptureMethod::Manual as i32,
                payment_method: customer.card.clone(),
                confirm: true,
                request_id: request_id(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn cancel(
    suite: &Suite,
    token: &str,
    intent: &str,
) -> Result<pb::PaymentIntent, tonic::Status> {
    suite
        .payments
        .clone()
        .cancel_payment_intent(authed(
            token,
            pb::CancelPaymentIntentRequest {
                name: intent.into(),
                cancellation_reason: pb::CancellationReason::RequestedByCustomer as i32,
                request_id: request_id(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn confirm(
    suite: &Suite,
    token: &str,
    intent: &str,
) -> Result<pb::PaymentIntent, tonic::Status> {
    suite
        .payments
        .clone()
        .confirm_payment_intent(authed(
            token,
            pb::ConfirmPaymentIntentRequest {
                name: intent.into(),
                payment_method: String::new(),
                request_id: request_id(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn capture(
    suite: &Suite,
    token: &str,
    intent: &str,
) -> Result<pb::PaymentIntent, tonic::Status> {
    suite
        .payments
        .clone()
        .capture_payment_intent(authed(
            token,
            pb::CapturePaymentIntentRequest {
                name: intent.into(),
                amount_to_capture: None,
                request_id: request_id(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn refund(suite: &Suite, token: &str, intent: &str) -> Result<pb::Refund, tonic::Status> {
    suite
        .payments
        .clone()
        .create_refund(authed(
            token,
            pb::CreateRefundRequest {
                parent: intent.into(),
                amount: harness::eur(100),
                reason: pb::RefundReason::RequestedByCustomer as i32,
                request_id: request_id(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_orders_payment_refuses_its_customer_an_admin_and_other_services() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("owned@example.com", VISA).await;
    let order = parked_before_the_pivot(&suite, &ada).await;
    let intent = suite.intent(&order).await;
    assert_eq!(
        intent.status,
        pb::PaymentIntentStatus::RequiresCapture as i32
    );
    assert_eq!(intent.order, order.name, "the intent names its order");
    // The customer sees it, read-only, with its order.
    let own = suite
        .payments
        .clone()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest {
                name: intent.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.order, order.name);

    let other_service = suite.service_token("inventory", "backroom.payment");
    let managed = |status: &tonic::Status, what: &str| {
        let (code, reason, metadata) = refusal(status);
        assert_eq!(
            (code, reason.as_str()),
            (Code::FailedPrecondition, "INTENT_MANAGED_BY_ORDER"),
            "{what}: {status:?}"
        );
        assert_eq!(metadata["order"], order.name, "{what}");
        assert_eq!(metadata["payment_intent"], intent.name, "{what}");
    };
    for (who, token) in [
        ("the customer", ada.token.as_str()),
        ("an admin", suite.admin.as_str()),
        ("another service", other_service.as_str()),
    ] {
        managed(
            &cancel(&suite, token, &intent.name).await.unwrap_err(),
            &format!("cancel by {who}"),
        );
        managed(
            &confirm(&suite, token, &intent.name).await.unwrap_err(),
            &format!("confirm by {who}"),
        );
        let refused = capture(&suite, token, &intent.name).await.unwrap_err();
        if who == "the customer" {
            // A customer never captures anything: refused for the role.
            assert_eq!(
                refusal(&refused).1,
                "ACCESS_DENIED",
                "capture by {who}: {refused:?}"
            );
        } else {
            managed(&refused, &format!("capture by {who}"));
        }
    }
    // Nor may anyone but checkout create an intent for an order.
    for token in [&ada.token, &suite.admin, &other_service] {
        let refused = suite
            .payments
            .clone()
            .create_payment_intent(authed(
                token,
                pb::CreatePaymentIntentRequest {
                    customer: ada.name.clone(),
                    amount: harness::eur(100),
                    payment_method: ada.card.clone(),
                    order: order.name.clone(),
                    request_id: request_id(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refusal(&refused).0, Code::PermissionDenied, "{refused:?}");
    }
    let untouched = suite.intent(&order).await;
    assert_eq!(
        (untouched.status, untouched.amount_capturable),
        (intent.status, intent.amount_capturable),
        "nothing changed the authorization"
    );

    // The saga itself finishes the order.
    suite.clock.advance(chrono::Duration::seconds(31));
    suite.restarted_saga().recover_due().await.unwrap();
    let done = suite.order(&order.name).await;
    assert_eq!(done.state, pb::OrderState::Completed as i32, "{done:#?}");
    let paid = suite.intent(&done).await;
    assert_eq!(paid.status, pb::PaymentIntentStatus::Succeeded as i32);
    assert_eq!(paid.amount_received, done.total);
    // Refunds of the order's payment: the customer for the role, everyone
    // else because the order owns it.
    let refused = refund(&suite, &ada.token, &paid.name).await.unwrap_err();
    assert_eq!(refusal(&refused).1, "ACCESS_DENIED", "{refused:?}");
    for token in [&suite.admin, &other_service] {
        managed(
            &refund(&suite, token, &paid.name).await.unwrap_err(),
            "refund",
        );
    }
    assert_eq!(suite.intent(&done).await.amount_refunded, harness::eur(0));
    assert_eq!(suite.reservation_state(&done).await, "COMMITTED");
    suite.audit().await;

    // A payment of the customer's own, not an order's, stays theirs.
    let own = own_authorized_payment(&suite, &ada).await;
    assert!(own.order.is_empty());
    let canceled = cancel(&suite, &ada.token, &own.name).await.unwrap();
    assert_eq!(canceled.status, pb::PaymentIntentStatus::Canceled as i32);
}

#[tokio::test]
async fn the_sweeper_leaves_an_orders_payment_to_its_running_saga() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("sweep@example.com", VISA).await;
    let order = parked_before_the_pivot(&suite, &ada).await;
    let own = own_authorized_payment(&suite, &ada).await;
    // Both authorizations expire; the sweeper cancels only the one no saga
    // is working on.
    suite
        .clock
        .advance(suite.payment_deps.authorization_ttl + chrono::Duration::seconds(1));
    use backroom_shared::clock::Clock as _;
    let swept =
        backroom_payment::sweep_expired_authorizations(&suite.payment_deps, suite.clock.now())
            .await
            .unwrap();
    assert_eq!(swept, 1);
    let intent = suite.intent(&order).await;
    assert_eq!(
        intent.status,
        pb::PaymentIntentStatus::RequiresCapture as i32,
        "the order's payment is the saga's to settle"
    );
    let own = suite
        .payments
        .clone()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest { name: own.name },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (own.status, own.cancellation_reason),
        (
            pb::PaymentIntentStatus::Canceled as i32,
            pb::CancellationReason::AuthorizationExpired as i32
        )
    );
}

/// The order failed before the pivot and undid everything: FAILED with
/// `reason`, its stock released, its payment canceled, nothing charged.
async fn failed_and_undone(suite: &Suite, order: &pb::Order, reason: &str) -> pb::Order {
    let order = suite.order(&order.name).await;
    assert_eq!(order.state, pb::OrderState::Failed as i32, "{order:#?}");
    let failure = order.failure.clone().unwrap();
    assert_eq!(failure.reason, reason, "{failure:#?}");
    assert_eq!(suite.reservation_state(&order).await, "RELEASED");
    let level = suite.level("MUG").await;
    assert_eq!((level.committed, level.reserved), (0, 0), "{level:#?}");
    let intent = suite.intent(&order).await;
    assert_eq!(intent.status, pb::PaymentIntentStatus::Canceled as i32);
    assert_eq!(intent.amount_received, harness::eur(0));
    suite.audit().await;
    order
}

#[tokio::test]
async fn the_saga_re_reads_the_authorization_before_the_pivot_and_fails_if_it_is_gone() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("reread@example.com", VISA).await;
    let order = parked_before_the_pivot(&suite, &ada).await;
    // While the saga is parked, a service principal — the checkout one, the
    // only caller still allowed to — voids the authorization.
    let checkout = suite.service_token("payment", "backroom.payment");
    let voided = suite
        .payments
        .clone()
        .cancel_payment_intent(authed(
            &checkout,
            pb::CancelPaymentIntentRequest {
                name: order.payment_intent.clone(),
                cancellation_reason: pb::CancellationReason::Abandoned as i32,
                request_id: request_id(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.status, pb::PaymentIntentStatus::Canceled as i32);
    // The saga resumes: it must not commit the stock.
    suite.clock.advance(chrono::Duration::seconds(31));
    suite.restarted_saga().recover_due().await.unwrap();
    let failed = failed_and_undone(&suite, &order, "AUTHORIZATION_LOST").await;
    let failure = failed.failure.unwrap();
    assert_eq!(failure.metadata["payment_intent"], order.payment_intent);
    assert_eq!(
        failure.metadata["status"], "PAYMENT_INTENT_STATUS_CANCELED",
        "{failure:#?}"
    );
}

/// A suite whose authorizations live 10 minutes, shorter than the saga's
/// 15-minute stock reservation: the authorization is what runs out first.
async fn short_authorizations() -> Suite {
    Suite::spawn_configured(
        SagaConfig {
            recovery_interval: std::time::Duration::from_secs(3600),
            ..SagaConfig::default()
        },
        |payment| payment.authorization_ttl_secs = 600,
    )
    .await
}

#[tokio::test]
async fn an_authorization_about_to_expire_is_not_committed_against() {
    let suite = short_authorizations().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("expiring@example.com", VISA).await;
    let order = parked_before_the_pivot(&suite, &ada).await;
    // Four minutes before the hold lapses (the saga wants five, half the
    // lifetime at most): too late to commit and capture.
    suite.clock.advance(chrono::Duration::minutes(6));
    suite.restarted_saga().recover_due().await.unwrap();
    let failed = failed_and_undone(&suite, &order, "AUTHORIZATION_LOST").await;
    assert_eq!(
        failed.failure.unwrap().metadata["cause"],
        "expiring",
        "the saga says why"
    );
}

#[tokio::test]
async fn an_expired_authorization_the_sweeper_left_to_the_saga_fails_the_order() {
    let suite = short_authorizations().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("lapsed@example.com", VISA).await;
    let order = parked_before_the_pivot(&suite, &ada).await;
    suite
        .clock
        .advance(suite.payment_deps.authorization_ttl + chrono::Duration::seconds(1));
    use backroom_shared::clock::Clock as _;
    let sweep =
        || backroom_payment::sweep_expired_authorizations(&suite.payment_deps, suite.clock.now());
    assert_eq!(
        sweep().await.unwrap(),
        0,
        "the running saga's payment is left alone"
    );
    suite.restarted_saga().recover_due().await.unwrap();
    failed_and_undone(&suite, &order, "AUTHORIZATION_LOST").await;
    assert_eq!(sweep().await.unwrap(), 0, "the saga voided it itself");
}

/// An order stopped right after the pivot: stock committed, capture not yet
/// called.
async fn parked_after_the_pivot(suite: &Suite, customer: &Customer) -> pb::Order {
    suite.saga.plant_fault(Fault::Before(State::Capturing));
    let order = suite
        .place(customer, &customer.card, &[("MUG", 1)], &request_id())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Capturing as i32, "{order:#?}");
    assert_eq!(suite.reservation_state(&order).await, "COMMITTED");
    order
}

async fn orders_in(suite: &Suite, state: pb::OrderState) -> Vec<pb::Order> {
    suite
        .checkout
        .clone()
        .list_orders(authed(
            &suite.admin,
            pb::ListOrdersRequest {
                state: state as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .orders
}

#[tokio::test]
async fn a_payment_voided_after_the_pivot_sends_the_order_to_needs_attention_at_once() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("attention@example.com", VISA).await;
    let order = parked_after_the_pivot(&suite, &ada).await;
    let checkout = suite.service_token("payment", "backroom.payment");
    cancel(&suite, &checkout, &order.payment_intent)
        .await
        .expect("the checkout principal may void it");
    suite.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(suite.restarted_saga().recover_due().await.unwrap(), 1);
    let stuck = suite.order(&order.name).await;
    assert_eq!(
        stuck.state,
        pb::OrderState::NeedsAttention as i32,
        "{stuck:#?}"
    );
    let failure = stuck.failure.clone().unwrap();
    assert_eq!(failure.reason, "CAPTURE_REFUSED", "{failure:#?}");
    assert_eq!(failure.metadata["refusal"], "INVALID_STATE");
    assert_eq!(
        failure.metadata["current_state"],
        "PAYMENT_INTENT_STATUS_CANCELED"
    );
    assert_eq!(failure.metadata["payment_intent"], order.payment_intent);
    // The stock stays committed (the goods are promised); nothing was paid.
    assert_eq!(suite.level("MUG").await.committed, 1);
    assert_eq!(suite.intent(&stuck).await.amount_received, harness::eur(0));
    // Terminal for the saga: no worker picks it up again.
    suite.clock.advance(chrono::Duration::minutes(5));
    assert_eq!(suite.restarted_saga().recover_due().await.unwrap(), 0);
    assert_eq!(
        suite.order(&order.name).await.update_time,
        stuck.update_time
    );
    let listed = orders_in(&suite, pb::OrderState::NeedsAttention).await;
    assert_eq!(
        listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        [order.name.as_str()]
    );
    suite.audit().await;
}

#[tokio::test]
async fn a_capture_that_keeps_failing_stops_in_needs_attention_after_the_configured_rounds() {
    let suite = Suite::spawn().await;
    suite.product("MUG", 1000, 10).await;
    let ada = suite.customer("rounds@example.com", VISA).await;
    let order = parked_after_the_pivot(&suite, &ada).await;
    // The worker that resumes it reaches no PaymentService at all.
    let saga = suite.saga_with(
        SagaConfig {
            capture_max_rounds: 3,
            call_attempts: 1,
            ..suite.saga.config().clone()
        },
        "http://127.0.0.1:1",
    );
    let mut rounds = 0;
    let stuck = loop {
        // Past the lease, then past each round's backoff.
        suite.clock.advance(chrono::Duration::minutes(2));
        rounds += saga.recover_due().await.unwrap();
        let now = suite.order(&order.name).await;
        if now.state != pb::OrderState::Capturing as i32 {
            break now;
        }
        assert!(rounds < 10, "still capturing after {rounds} rounds");
    };
    assert_eq!(rounds, 3, "one pickup per round");
    assert_eq!(
        stuck.state,
        pb::OrderState::NeedsAttention as i32,
        "{stuck:#?}"
    );
    let failure = stuck.failure.unwrap();
    assert_eq!(failure.reason, "CAPTURE_RETRIES_EXHAUSTED", "{failure:#?}");
    assert_eq!(failure.metadata["rounds"], "3");
    assert_eq!(failure.metadata["last_code"], "Unavailable");
    // The authorization is intact: nothing was captured or voided.
    let intent = suite.intent(&order).await;
    assert_eq!(
        intent.status,
        pb::PaymentIntentStatus::RequiresCapture as i32
    );
    suite.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(saga.recover_due().await.unwrap(), 0, "never retried again");
}
