//! Free goods: a customer places orders — many with deadlines so short that
//! the call ends while the saga is half-way, which parks the order until its
//! lease runs out and the recovery worker resumes it — and meanwhile lists
//! their own payment intents and cancels, confirms, captures and refunds the
//! ones checkout created for those orders; an admin token tries to cancel,
//! capture and refund them too. Before the fix the saga committed the stock
//! anyway, then retried a capture of a canceled authorization forever:
//! orders stuck in CAPTURING, stock committed, nothing paid.
//!
//! Checked afterwards: every order is terminal — COMPLETED with its total
//! captured once and its stock committed, or FAILED with its stock released
//! and nothing held or charged; none needs attention (nobody could break a
//! payment, so none may); every call on an order's payment was refused with
//! the documented reason (INTENT_MANAGED_BY_ORDER naming the order, or
//! ACCESS_DENIED for what a customer may never do) and none succeeded; no
//! stock is committed without a capture; nothing oversold or charged twice;
//! `backroom audit` finds nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use backroom_loadgen::{fixtures, stack::Service};
use backroom_proto::{
    common::v1::Money,
    payment::v1::{
        self as pb, checkout_service_client::CheckoutServiceClient,
        payment_service_client::PaymentServiceClient,
    },
};
use backroom_shared::errors::reason_of;
use tonic::{Code, Status};

use crate::common::{
    SWEEP, World, assert_audit_clean, call, call_within, count, counts, lazy_channel,
    mixed_load_options, request_id,
};

const SKU: &str = "FREE-GOODS-MUG";
/// Units in stock: fewer than the orders ask for, so some fail for stock.
const STOCK: i64 = 20;
/// How long the customer keeps ordering.
const LOAD: Duration = Duration::from_secs(3);
/// Concurrent order loops of the customer.
const ORDERERS: usize = 2;
/// Deadlines of the orders placed with a short one (every other order): the
/// call ends at some step of the saga, which parks until its lease expires.
const SHORT_DEADLINES_MS: [u64; 7] = [30, 60, 90, 120, 150, 200, 300];
/// How long the orders may take to become terminal after the load (a parked
/// order waits out its 2 s lease and the recovery worker's pass).
const SETTLE: Duration = Duration::from_secs(30);

/// One call the attackers made on an order's payment intent.
#[derive(Debug, Clone)]
struct Attack {
    who: &'static str,
    rpc: &'static str,
    /// The intent's status when it was listed.
    seen: pb::PaymentIntentStatus,
    /// `orders/{id}` the intent belongs to (its metadata, set by checkout).
    order: String,
    code: Code,
    reason: String,
    /// ErrorInfo.metadata["order"] of the refusal.
    refusal_order: String,
}

fn outcome<T>(result: &Result<tonic::Response<T>, Status>) -> (Code, String, String) {
    use tonic_types::StatusExt as _;
    match result {
        Ok(_) => (Code::Ok, String::new(), String::new()),
        Err(status) => (
            status.code(),
            reason_of(status).unwrap_or_default(),
            status
                .get_error_details()
                .error_info()
                .and_then(|info| info.metadata.get("order").cloned())
                .unwrap_or_default(),
        ),
    }
}

/// What the customer's order loops saw.
#[derive(Debug, Default)]
struct Placed {
    /// PlaceOrder calls, by deadline kind and outcome code.
    calls: BTreeMap<String, usize>,
}

async fn place_orders(
    suite: fixtures::Suite,
    customer: fixtures::Shopper,
    stop: Arc<AtomicBool>,
    placed: Arc<Mutex<Placed>>,
    n: usize,
) {
    let checkout = CheckoutServiceClient::new(lazy_channel(&suite.payment));
    let mut round = n;
    while !stop.load(Ordering::SeqCst) {
        round += ORDERERS;
        let short = round.is_multiple_of(2);
        let deadline = if short {
            Duration::from_millis(SHORT_DEADLINES_MS[(round / 2) % SHORT_DEADLINES_MS.len()])
        } else {
            crate::common::CALL_DEADLINE
        };
        let request = call_within(
            &customer.token,
            pb::PlaceOrderRequest {
                customer: "accounts/me".into(),
                lines: vec![pb::LineItem {
                    sku: SKU.into(),
                    quantity: 1,
                }],
                payment_method: customer.card.clone(),
                shipping_address: customer.address.clone(),
                currency_code: "EUR".into(),
                request_id: request_id(),
                ..Default::default()
            },
            deadline,
        );
        let result = checkout.clone().place_order(request).await;
        let kind = if short {
            "short deadline"
        } else {
            "8 s deadline"
        };
        let code = match &result {
            Ok(order) => format!(
                "OK {}",
                pb::OrderState::try_from(order.get_ref().state).map_or("?", |s| s.as_str_name())
            ),
            Err(status) => format!("{:?}", status.code()),
        };
        *placed
            .lock()
            .unwrap()
            .calls
            .entry(format!("{kind}: {code}"))
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The customer (and an admin token) go after the payments of the
/// customer's orders: list them by status, then act on each, once per
/// status seen.
async fn attack_payments(
    suite: fixtures::Suite,
    customer: fixtures::Shopper,
    admin: String,
    stop: Arc<AtomicBool>,
    attacks: Arc<Mutex<Vec<Attack>>>,
) {
    let payments = PaymentServiceClient::new(lazy_channel(&suite.payment));
    let mut done: BTreeSet<(String, &'static str, &'static str, i32)> = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        for status in [
            pb::PaymentIntentStatus::RequiresCapture,
            pb::PaymentIntentStatus::RequiresConfirmation,
            pb::PaymentIntentStatus::RequiresPaymentMethod,
            pb::PaymentIntentStatus::Succeeded,
        ] {
            let Ok(listed) = payments
                .clone()
                .list_payment_intents(call(
                    &customer.token,
                    pb::ListPaymentIntentsRequest {
                        customer: "accounts/me".into(),
                        status: status as i32,
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await
            else {
                continue;
            };
            for intent in listed.into_inner().payment_intents {
                let Some(order) = intent.metadata.get("order").cloned() else {
                    continue;
                };
                let name = intent.name.clone();
                let moves: Vec<(&'static str, &'static str)> = match status {
                    pb::PaymentIntentStatus::RequiresCapture => vec![
                        ("customer", "CancelPaymentIntent"),
                        ("customer", "CapturePaymentIntent"),
                        ("admin", "CancelPaymentIntent"),
                        ("admin", "CapturePaymentIntent"),
                    ],
                    pb::PaymentIntentStatus::Succeeded => {
                        vec![("customer", "CreateRefund"), ("admin", "CreateRefund")]
                    }
                    _ => vec![
                        ("customer", "ConfirmPaymentIntent"),
                        ("customer", "CancelPaymentIntent"),
                    ],
                };
                for (who, rpc) in moves {
                    if !done.insert((name.clone(), who, rpc, status as i32)) {
                        continue;
                    }
                    let token = if who == "admin" {
                        &admin
                    } else {
                        &customer.token
                    };
                    let mut client = payments.clone();
                    let (code, reason, refusal_order) = match rpc {
                        "CancelPaymentIntent" => outcome(
                            &client
                                .cancel_payment_intent(call(
                                    token,
                                    pb::CancelPaymentIntentRequest {
                                        name: name.clone(),
                                        cancellation_reason:
                                            pb::CancellationReason::RequestedByCustomer as i32,
                                        request_id: request_id(),
                                    },
                                ))
                                .await,
                        ),
                        "CapturePaymentIntent" => outcome(
                            &client
                                .capture_payment_intent(call(
                                    token,
                                    pb::CapturePaymentIntentRequest {
                                        name: name.clone(),
                                        amount_to_capture: None,
                                        request_id: request_id(),
                                    },
                                ))
                                .await,
                        ),
                        "ConfirmPaymentIntent" => outcome(
                            &client
                                .confirm_payment_intent(call(
                                    token,
                                    pb::ConfirmPaymentIntentRequest {
                                        name: name.clone(),
                                        payment_method: customer.card.clone(),
                                        request_id: request_id(),
                                    },
                                ))
                                .await,
                        ),
                        _ => outcome(
                            &client
                                .create_refund(call(
                                    token,
                                    pb::CreateRefundRequest {
                                        parent: name.clone(),
                                        amount: Some(Money {
                                            currency_code: "EUR".into(),
                                            amount_minor: 100,
                                        }),
                                        reason: pb::RefundReason::RequestedByCustomer as i32,
                                        request_id: request_id(),
                                    },
                                ))
                                .await,
                        ),
                    };
                    attacks.lock().unwrap().push(Attack {
                        who,
                        rpc,
                        seen: status,
                        order: order.clone(),
                        code,
                        reason,
                        refusal_order,
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_orders_payment_mid_checkout_gets_no_free_goods() {
    let world = World::start("free-goods", false, mixed_load_options("info")).await;
    let suite = world.stack.suite();
    let admin = fixtures::admin_token(&suite).await.expect("admin login");
    fixtures::product(&suite, &admin, SKU, STOCK)
        .await
        .expect("product");
    let customer = fixtures::shopper(&suite, "free-goods@example.com")
        .await
        .expect("customer");

    let stop_orders = Arc::new(AtomicBool::new(false));
    let stop_attacks = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(Mutex::new(Placed::default()));
    let attacks = Arc::new(Mutex::new(Vec::new()));
    let mut orderers = tokio::task::JoinSet::new();
    for n in 0..ORDERERS {
        orderers.spawn(place_orders(
            suite.clone(),
            customer.clone(),
            stop_orders.clone(),
            placed.clone(),
            n,
        ));
    }
    let attacker = tokio::spawn(attack_payments(
        suite.clone(),
        customer.clone(),
        admin.clone(),
        stop_attacks.clone(),
        attacks.clone(),
    ));
    println!(
        "injected: one customer places 1-unit orders of {SKU} ({STOCK} in stock) from {ORDERERS} loops for {LOAD:?}, every other one with a deadline of {SHORT_DEADLINES_MS:?} ms (the call ends mid-saga; the saga parks until its 2 s lease expires and recovery resumes it); meanwhile the customer lists their own intents by status and cancels / captures (REQUIRES_CAPTURE), confirms with their card / cancels (REQUIRES_CONFIRMATION, REQUIRES_PAYMENT_METHOD) and refunds (SUCCEEDED) every one checkout created for an order, and an admin token cancels, captures and refunds them too"
    );
    tokio::time::sleep(LOAD).await;
    stop_orders.store(true, Ordering::SeqCst);
    while let Some(joined) = orderers.join_next().await {
        joined.expect("order loop");
    }

    // Every order terminal, while the attack goes on.
    let admin_url = world.admin_url.clone();
    let unfinished = "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state NOT IN ('COMPLETED', 'FAILED', 'NEEDS_ATTENTION')";
    let settle = Instant::now();
    while count(&admin_url, unfinished).await > 0 {
        assert!(
            settle.elapsed() < SETTLE,
            "orders still unfinished {SETTLE:?} after the load (state, stock reservation, payment intent): {:?}",
            counts(
                &admin_url,
                "SELECT o.state || ' / ' || coalesce(r.state, '-') || ' / ' || coalesce(i.status, '-') AS label, count(*) AS n
                 FROM payment.orders o
                 LEFT JOIN inventory.reservations r ON r.order_id = o.id
                 LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
                 GROUP BY 1 ORDER BY 1"
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_in = settle.elapsed();
    stop_attacks.store(true, Ordering::SeqCst);
    attacker.await.expect("attacker");
    // Releases of failed orders' stock are swept within a sweep interval.
    tokio::time::sleep(SWEEP * 3).await;

    let placed = std::mem::take(&mut placed.lock().unwrap().calls);
    let attacks = std::mem::take(&mut *attacks.lock().unwrap());
    println!("PlaceOrder calls by deadline and outcome: {placed:?}");
    println!(
        "every order terminal {} ms after the load",
        settled_in.as_millis()
    );
    let mut tried: BTreeMap<String, usize> = BTreeMap::new();
    for attack in &attacks {
        *tried
            .entry(format!(
                "{} {} on {} -> {:?} {}",
                attack.who,
                attack.rpc,
                attack.seen.as_str_name(),
                attack.code,
                attack.reason
            ))
            .or_default() += 1;
    }
    println!("attacks on orders' payments: {tried:#?}");

    // The attack happened: payments were caught authorized mid-checkout.
    let on_authorized = attacks
        .iter()
        .filter(|a| a.seen == pb::PaymentIntentStatus::RequiresCapture && a.who == "customer")
        .count();
    assert!(
        on_authorized > 0,
        "the customer never caught an order's payment in REQUIRES_CAPTURE: the test proved nothing"
    );
    // Every call was refused with the documented reason, naming the order.
    for attack in &attacks {
        let customer_forbidden = attack.who == "customer"
            && matches!(attack.rpc, "CapturePaymentIntent" | "CreateRefund");
        if customer_forbidden {
            assert_eq!(
                (attack.code, attack.reason.as_str()),
                (Code::PermissionDenied, "ACCESS_DENIED"),
                "{attack:?}"
            );
        } else {
            assert_eq!(
                (attack.code, attack.reason.as_str()),
                (Code::FailedPrecondition, "INTENT_MANAGED_BY_ORDER"),
                "{attack:?}"
            );
            assert_eq!(attack.refusal_order, attack.order, "{attack:?}");
        }
    }
    println!(
        "checked: all {} calls on orders' payments refused ({on_authorized} by the customer on authorized payments mid-checkout): cancel/confirm by the customer and cancel/capture/refund by the admin with FAILED_PRECONDITION INTENT_MANAGED_BY_ORDER naming the order, capture/refund by the customer with PERMISSION_DENIED ACCESS_DENIED; none succeeded",
        attacks.len()
    );

    // Every order terminal and whole.
    let states: BTreeMap<String, i64> = counts(
        &admin_url,
        "SELECT state || coalesce(' ' || failure_reason, '') AS label, count(*) AS n FROM payment.orders GROUP BY 1 ORDER BY 1",
    )
    .await
    .into_iter()
    .collect();
    let orders: i64 = states.values().sum();
    assert!(orders > 0, "no order was placed");
    assert!(
        states
            .keys()
            .all(|s| s.starts_with("COMPLETED") || s.starts_with("FAILED")),
        "orders neither COMPLETED nor FAILED: {states:?}"
    );
    let completed = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders WHERE state = 'COMPLETED'",
    )
    .await;
    let completed_whole = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders o
         JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
         JOIN inventory.reservations r ON r.order_id = o.id
         WHERE o.state = 'COMPLETED' AND i.status = 'succeeded' AND i.amount_received = o.total_minor
           AND i.amount_refunded = 0 AND r.state = 'COMMITTED'",
    )
    .await;
    assert_eq!(
        completed_whole, completed,
        "every COMPLETED order captured its total once, refunded nothing, and committed its stock"
    );
    let failed_holding = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.orders o
         LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
         LEFT JOIN inventory.reservations r ON r.order_id = o.id
         WHERE o.state = 'FAILED'
           AND (i.status IN ('requires_capture', 'processing', 'succeeded') OR r.state IN ('ACTIVE', 'COMMITTED'))",
    )
    .await;
    assert_eq!(failed_holding, 0, "FAILED orders holding stock or money");
    println!(
        "checked: all {orders} orders terminal: {states:?}; every COMPLETED one paid its total once with its stock committed, no FAILED one holds stock, an authorization or a charge, none needs attention"
    );

    // Stock: committed only for paid orders; nothing oversold or held.
    let level: BTreeMap<String, i64> = counts(
        &admin_url,
        &format!(
            "SELECT unnest(ARRAY['available', 'reserved', 'committed', 'on_hand']) AS label, unnest(ARRAY[available, reserved, committed, on_hand]) AS n FROM inventory.stock_levels WHERE sku = '{SKU}' AND location = 'main'"
        ),
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(level["on_hand"], STOCK, "{level:?}");
    assert_eq!(
        level["committed"], completed,
        "committed units are the completed orders' units: {level:?}"
    );
    assert_eq!(level["reserved"], 0, "units still held: {level:?}");
    assert_eq!(level["available"] + level["committed"], STOCK, "{level:?}");
    let committed_unpaid = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM inventory.reservations r
         LEFT JOIN payment.orders o ON o.id = r.order_id
         LEFT JOIN payment.payment_intents i ON 'paymentIntents/' || i.id = o.payment_intent
         WHERE r.state = 'COMMITTED' AND (i.status IS DISTINCT FROM 'succeeded' OR o.state IS DISTINCT FROM 'COMPLETED')",
    )
    .await;
    assert_eq!(committed_unpaid, 0, "stock committed without a capture");
    println!(
        "checked: {SKU} on_hand {STOCK} = available {} + committed {} (the {completed} completed orders), reserved 0; no stock committed without a capture",
        level["available"], level["committed"]
    );

    // Money: one charge per completed order, nothing else, nothing open.
    let succeeded = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status = 'succeeded'",
    )
    .await;
    let open = count(
        &admin_url,
        "SELECT '' AS label, count(*) AS n FROM payment.payment_intents WHERE status IN ('requires_capture', 'processing', 'requires_confirmation')",
    )
    .await;
    let doubled = counts(
        &admin_url,
        "SELECT metadata::jsonb ->> 'order' AS label, count(*) AS n FROM payment.payment_intents WHERE metadata::jsonb ? 'order' GROUP BY 1 HAVING count(*) > 1",
    )
    .await;
    assert_eq!(succeeded, completed, "charges other than completed orders'");
    assert_eq!(open, 0, "authorizations left open");
    assert!(doubled.is_empty(), "orders with two payments: {doubled:?}");
    println!(
        "checked: {succeeded} charges, one per completed order; no authorization left open; one payment intent per order"
    );

    // The invariant checker, strict.
    let tolerances = assert_audit_clean(&admin_url).await;
    println!(
        "checked: backroom audit (grace {:?}, stuck after 0 s): {} checks, no findings",
        tolerances.grace,
        backroom::audit::check_names().len()
    );

    // The payment process said loudly that its payments are simulated.
    let log = world
        .stack
        .log_path(Service::Payment)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    assert!(
        log.contains("PAYMENTS ARE SIMULATED"),
        "no start-up warning about the simulator in the payment log"
    );
    println!("checked: the payment process warned at start-up that its processor is the simulator");
    world.stop().await;
}
