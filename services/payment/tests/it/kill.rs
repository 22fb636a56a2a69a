//! kill -9 of the payment process (which runs the checkout saga) in the
//! middle of 30 concurrent orders for 20 units: after a restart, clients
//! retrying with their request ids get their orders, the recovery worker
//! finishes every saga, and every invariant holds — no oversell, no double
//! charge, nothing held for a failed order, the ledger balanced. Then the
//! order's life after checkout is killed mid-way twice more: shipments and
//! cancellations, then goodwill refunds and returns (restocked and written
//! off); each is finished once, and stock and money agree.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use backroom_account::{AccountConfig, domain::tokens::SigningKeys};
use backroom_proto::{
    account::v1::{self as account_pb, account_service_client::AccountServiceClient},
    common::v1::Money,
    inventory::v1::{self as inventory_pb, inventory_service_client::InventoryServiceClient},
    payment::v1::{
        self as pb, checkout_service_client::CheckoutServiceClient,
        payment_service_client::PaymentServiceClient,
    },
};
use backroom_shared::{
    auth::{Verifier, audience},
    client::{ClientConfig, channel},
    clock,
    config::{AuthConfig, Secret, ServerConfig},
    db::{DbError, Pool},
    testing::{TestDb, TestServer},
};
use tonic::Code;

use crate::helpers::authed;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The payment binary as a child process, killable with SIGKILL.
fn start_payment(env: &[(&str, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backroom-payment"));
    command
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("start backroom-payment")
}

async fn wait_serving(endpoint: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "payment not SERVING within 60 s"
        );
        let Ok(connected) = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .unwrap()
            .connect()
            .await
        else {
            tokio::task::yield_now().await;
            continue;
        };
        let mut watch = HealthClient::new(connected)
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(reply)) = watch.message().await {
            if reply.status == ServingStatus::Serving as i32 {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_payment_process_mid_checkout_loses_nothing_and_doubles_nothing() {
    let db = TestDb::create().await;
    // Account and inventory in process; payment as a real process to kill.
    let account_db = db
        .service_config(backroom_account::SERVICE, backroom_account::MIGRATIONS)
        .await;
    let mut account_config = AccountConfig::with_keys(SigningKeys::generate_pem());
    account_config.bootstrap_admin_email = Some("admin@backroom.test".into());
    account_config.bootstrap_admin_password = Some(Secret::new("admin password 123"));
    account_config.service_clients =
        Some(Secret::new("payment:payment-secret-0123456789abcdefghij"));
    account_config.service_client_audiences =
        Some("payment=backroom.account|backroom.inventory|backroom.payment".into());
    let account_deps = backroom_account::Deps::new(
        &AuthConfig::default(),
        &account_config,
        Pool::new(&account_db, backroom_account::SERVICE),
        clock::system(),
    )
    .await
    .unwrap();
    backroom_account::bootstrap_admin(&account_deps, &account_config)
        .await
        .unwrap();
    let account = TestServer::spawn(backroom_account::server(
        ServerConfig::without_client_limits(),
        account_deps,
    ))
    .await;
    let verifier = |aud: &str| {
        Arc::new(Verifier::from_account_service(
            "backroom",
            aud,
            channel(&ClientConfig::new(account.endpoint())).unwrap(),
        ))
    };
    let mut inventory_db = db
        .service_config(backroom_inventory::SERVICE, backroom_inventory::MIGRATIONS)
        .await;
    inventory_db.checkout_timeout_ms = 20_000;
    let inventory_pool = Pool::new(&inventory_db, backroom_inventory::SERVICE);
    let inventory = TestServer::spawn(backroom_inventory::server(
        ServerConfig::without_client_limits(),
        backroom_inventory::Deps::new(
            &backroom_inventory::InventoryConfig::default(),
            inventory_pool.clone(),
            clock::system(),
            verifier(audience::INVENTORY),
        ),
    ))
    .await;
    let payment_db = db
        .service_config(backroom_payment::SERVICE, backroom_payment::MIGRATIONS)
        .await;
    let payment_pool = Pool::new(&payment_db, backroom_payment::SERVICE);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let payment_endpoint = format!("http://127.0.0.1:{port}");
    let env = vec![
        ("DATABASE_URL", payment_db.database_url.expose().to_owned()),
        ("RUN_MIGRATIONS", "false".to_owned()),
        ("BACKROOM_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("BACKROOM_ACCOUNT_ENDPOINT", account.endpoint()),
        ("BACKROOM_INVENTORY_ENDPOINT", inventory.endpoint()),
        ("BACKROOM_SERVICE_CLIENT_ID", "payment".to_owned()),
        (
            "BACKROOM_SERVICE_CLIENT_SECRET",
            "payment-secret-0123456789abcdefghij".to_owned(),
        ),
        (
            "BACKROOM_CARD_FINGERPRINT_KEY",
            "kill-test-fingerprint-key-0123456789".to_owned(),
        ),
        ("BACKROOM_PAYMENT_PROCESSOR", "simulator".to_owned()),
        ("BACKROOM_CHECKOUT_LEASE_SECS", "2".to_owned()),
        ("BACKROOM_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;

    // Fixtures: 20 units, 10 customers with an address and a card.
    let mut accounts = AccountServiceClient::new(account.channel.clone());
    let admin = accounts
        .login(account_pb::LoginRequest {
            email: "admin@backroom.test".into(),
            password: "admin password 123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut stock = InventoryServiceClient::new(inventory.channel.clone());
    stock
        .create_product(authed(
            &admin,
            inventory_pb::CreateProductRequest {
                product: Some(inventory_pb::Product {
                    sku: "KILL".into(),
                    display_name: "Kill test".into(),
                    unit_price: Some(Money {
                        currency_code: "EUR".into(),
                        amount_minor: 500,
                    }),
                    weight_grams: 100,
                    active: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    stock
        .adjust_stock(authed(
            &admin,
            inventory_pb::AdjustStockRequest {
                name: "products/KILL/stockLevels/main".into(),
                delta: 20,
                reason: inventory_pb::StockAdjustmentReason::Received as i32,
                expected_version: 0,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let payment_channel = || channel(&ClientConfig::new(payment_endpoint.clone())).unwrap();
    let mut customers = Vec::new();
    for n in 0..10 {
        let email = format!("kill{n}@example.com");
        accounts
            .register(account_pb::RegisterRequest {
                email: email.clone(),
                password: "correct horse battery".into(),
                display_name: "K".into(),
                request_id: String::new(),
            })
            .await
            .unwrap();
        let token = accounts
            .login(account_pb::LoginRequest {
                email,
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let address = accounts
            .create_address(authed(
                &token,
                account_pb::CreateAddressRequest {
                    parent: "accounts/me".into(),
                    address: Some(account_pb::Address {
                        recipient: "K".into(),
                        line1: "Strasse 1".into(),
                        city: "Berlin".into(),
                        postal_code: "10115".into(),
                        country_code: "DE".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name;
        let card = PaymentServiceClient::new(payment_channel())
            .attach_payment_method(authed(
                &token,
                pb::AttachPaymentMethodRequest {
                    customer: "accounts/me".into(),
                    card: Some(pb::Card {
                        number: "4242424242424242".into(),
                        exp_month: 12,
                        exp_year: 2099,
                        cvc: "123".into(),
                        holder_name: "K".into(),
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name;
        customers.push((token, address, card));
    }

    // 30 orders for 20 units; each client retries with its request id until
    // it gets an answer (the process is killed under them).
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (token, address, card) = customers[i % customers.len()].clone();
        let endpoint = payment_endpoint.clone();
        let placed = placed.clone();
        clients.spawn(async move {
            let request_id = uuid::Uuid::new_v4().to_string();
            loop {
                let mut checkout = CheckoutServiceClient::new(
                    channel(&ClientConfig::new(endpoint.clone())).unwrap(),
                );
                let result = checkout
                    .place_order(authed(
                        &token,
                        pb::PlaceOrderRequest {
                            customer: "accounts/me".into(),
                            lines: vec![pb::LineItem {
                                sku: "KILL".into(),
                                quantity: 1,
                            }],
                            payment_method: card.clone(),
                            shipping_address: address.clone(),
                            currency_code: "EUR".into(),
                            request_id: request_id.clone(),
                            ..Default::default()
                        },
                    ))
                    .await;
                match result {
                    Ok(order) => {
                        placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return order.into_inner().name;
                    }
                    Err(status)
                        if matches!(
                            status.code(),
                            Code::Unavailable | Code::Unknown | Code::Cancelled
                        ) =>
                    {
                        tokio::task::yield_now().await
                    }
                    // The server sheds with RESOURCE_EXHAUSTED ("retry with
                    // backoff") while the restarted process fills up again.
                    Err(status) if status.code() == Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(status) => panic!("order refused: {status:?}"),
                }
            }
        });
    }
    while placed.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        tokio::task::yield_now().await;
    }
    println!("injecting: kill -9 of backroom-payment with orders in flight");
    payment.kill().unwrap();
    payment.wait().unwrap();
    payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;
    println!("injecting: backroom-payment restarted");
    let mut names = Vec::new();
    while let Some(name) = clients.join_next().await {
        names.push(name.unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30, "one order per request id");

    // The recovery worker finishes every saga.
    let mut checkout = CheckoutServiceClient::new(payment_channel());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let orders = loop {
        let listed = checkout
            .list_orders(authed(
                &admin,
                pb::ListOrdersRequest {
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .orders;
        let terminal = |o: &pb::Order| {
            o.state == pb::OrderState::Completed as i32 || o.state == pb::OrderState::Failed as i32
        };
        if listed.len() == 30 && listed.iter().all(terminal) {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sagas still unfinished after 60 s"
        );
        tokio::task::yield_now().await;
    };
    payment.kill().unwrap();
    payment.wait().unwrap();

    let completed: Vec<_> = orders
        .iter()
        .filter(|o| o.state == pb::OrderState::Completed as i32)
        .collect();
    println!(
        "checked: all 30 orders terminal, {} completed",
        completed.len()
    );
    assert_eq!(completed.len(), 20, "every unit sold once, none twice");
    let level = stock
        .get_stock_level(authed(
            &admin,
            inventory_pb::GetStockLevelRequest {
                name: "products/KILL/stockLevels/main".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (level.available, level.reserved, level.committed),
        (0, 0, 20),
        "no oversell, nothing held"
    );
    // Ledger and intents: balanced, one capture per completed order, no
    // authorization left open.
    let problems = payment_pool
        .run(backroom_payment::db::repo::ledger::audit)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let (succeeded, open): (i64, i64) = payment_pool
        .run(|conn| {
            #[derive(diesel::QueryableByName)]
            struct Counts {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                succeeded: i64,
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                open: i64,
            }
            let counts: Counts = diesel::RunQueryDsl::get_result(
                diesel::sql_query(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                            count(*) FILTER (WHERE status IN ('requires_capture', 'processing')) AS open
                     FROM payment_intents",
                ),
                conn,
            )?;
            Ok::<_, DbError>((counts.succeeded, counts.open))
        })
        .await
        .unwrap();
    assert_eq!(
        (succeeded, open),
        (20, 0),
        "charges equal completed orders, no authorization open"
    );
    println!(
        "checked: 20 charges for 20 completed orders, no open authorization, ledger balanced, stock 0/0/20"
    );
    // The order's life after checkout, killed mid-way too: half the orders
    // ship (the admin as the warehouse), half are canceled by their own
    // customer, every call retried with its request id until answered, and
    // the process is killed -9 under them.
    payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;
    let mut owners = std::collections::HashMap::new();
    for (token, _, _) in &customers {
        let me = accounts
            .get_account(authed(
                token,
                account_pb::GetAccountRequest {
                    name: "accounts/me".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .name;
        owners.insert(me, token.clone());
    }
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for (i, order) in completed.iter().enumerate() {
        let (name, endpoint, settled) = (
            order.name.clone(),
            payment_endpoint.clone(),
            settled.clone(),
        );
        let token = if i % 2 == 0 {
            admin.clone()
        } else {
            owners[&order.customer].clone()
        };
        clients.spawn(async move {
            let request_id = uuid::Uuid::new_v4().to_string();
            until_answered(&endpoint, |mut checkout| {
                let (token, name, request_id) = (token.clone(), name.clone(), request_id.clone());
                async move {
                    if i % 2 == 0 {
                        checkout
                            .create_shipment(authed(
                                &token,
                                pb::CreateShipmentRequest {
                                    parent: name,
                                    lines: Vec::new(),
                                    carrier: "DHL".into(),
                                    tracking_number: format!("KILL{i}"),
                                    request_id,
                                },
                            ))
                            .await
                            .map(drop)
                    } else {
                        checkout
                            .cancel_order(authed(
                                &token,
                                pb::CancelOrderRequest {
                                    name,
                                    reason: "kill test".into(),
                                    request_id,
                                },
                            ))
                            .await
                            .map(drop)
                    }
                }
            })
            .await;
            settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    while settled.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        tokio::task::yield_now().await;
    }
    println!("injecting: kill -9 of backroom-payment with shipments and cancellations in flight");
    payment.kill().unwrap();
    payment.wait().unwrap();
    payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;
    while clients.join_next().await.is_some() {}
    // Whatever the kill left PENDING, the restarted process finishes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending = count(
            &payment_pool,
            "SELECT (SELECT count(*) FROM shipments WHERE state = 'PENDING')
                  + (SELECT count(*) FROM cancellations WHERE state = 'PENDING') AS n",
        )
        .await;
        if pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} shipments or cancellations still pending after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    payment.kill().unwrap();
    payment.wait().unwrap();
    let level = stock
        .get_stock_level(authed(
            &admin,
            inventory_pb::GetStockLevelRequest {
                name: "products/KILL/stockLevels/main".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            level.on_hand,
            level.available,
            level.reserved,
            level.committed
        ),
        (10, 10, 0, 0),
        "ten shipped once, ten back once"
    );
    let problems = payment_pool
        .run(backroom_payment::db::repo::ledger::audit)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let refunded = count(
        &payment_pool,
        "SELECT coalesce(sum(amount_refunded), 0)::bigint AS n FROM payment_intents",
    )
    .await;
    let canceled_totals: i64 = completed
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, o)| o.total.as_ref().map_or(0, |m| m.amount_minor))
        .sum();
    assert_eq!(
        refunded, canceled_totals,
        "each canceled order refunded once, in full"
    );
    println!(
        "checked: after kill -9 mid shipments and cancellations: 10 shipped once, 10 canceled and refunded once ({refunded} minor units), stock 10/10/0/0, ledger balanced"
    );

    // Returns and goodwill refunds, killed mid-way: every shipped order gets
    // a goodwill refund of 100 from the admin, then its customer returns its
    // unit and the admin receives it — restocked for half the orders,
    // written off for the others — each call retried with its request id.
    payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;
    let settled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for (i, order) in completed.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let (name, endpoint, settled, admin) = (
            order.name.clone(),
            payment_endpoint.clone(),
            settled.clone(),
            admin.clone(),
        );
        let owner = owners[&order.customer].clone();
        clients.spawn(async move {
            let refund_id = uuid::Uuid::new_v4().to_string();
            until_answered(&endpoint, |mut checkout| {
                let (admin, name, refund_id) = (admin.clone(), name.clone(), refund_id.clone());
                async move {
                    checkout
                        .refund_order(authed(
                            &admin,
                            pb::RefundOrderRequest {
                                name,
                                amount: Some(Money {
                                    currency_code: "EUR".into(),
                                    amount_minor: 100,
                                }),
                                reason: "kill test goodwill".into(),
                                request_id: refund_id,
                            },
                        ))
                        .await
                        .map(drop)
                }
            })
            .await;
            let return_id = uuid::Uuid::new_v4().to_string();
            let ret = until_answered(&endpoint, |mut checkout| {
                let (owner, name, return_id) = (owner.clone(), name.clone(), return_id.clone());
                async move {
                    checkout
                        .request_return(authed(
                            &owner,
                            pb::RequestReturnRequest {
                                parent: name,
                                reason: pb::ReturnReason::NoLongerNeeded.into(),
                                request_id: return_id,
                                ..Default::default()
                            },
                        ))
                        .await
                        .map(|r| r.into_inner().name)
                }
            })
            .await;
            let (restock, write_off) = if i % 4 == 0 { (1, 0) } else { (0, 1) };
            until_answered(&endpoint, |mut checkout| {
                let (admin, ret) = (admin.clone(), ret.clone());
                async move {
                    checkout
                        .receive_return(authed(
                            &admin,
                            pb::ReceiveReturnRequest {
                                name: ret,
                                lines: vec![pb::ReturnDisposition {
                                    sku: "KILL".into(),
                                    restock_quantity: restock,
                                    write_off_quantity: write_off,
                                }],
                            },
                        ))
                        .await
                        .map(drop)
                }
            })
            .await;
            settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    while settled.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        tokio::task::yield_now().await;
    }
    println!("injecting: kill -9 of backroom-payment with returns and refunds in flight");
    payment.kill().unwrap();
    payment.wait().unwrap();
    payment = start_payment(&env);
    wait_serving(&payment_endpoint).await;
    while clients.join_next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending = count(
            &payment_pool,
            "SELECT (SELECT count(*) FROM returns WHERE state <> 'RECEIVED')
                  + (SELECT count(*) FROM order_refunds WHERE state = 'PENDING') AS n",
        )
        .await;
        if pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} returns or refunds unfinished after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    payment.kill().unwrap();
    payment.wait().unwrap();
    let level = stock
        .get_stock_level(authed(
            &admin,
            inventory_pb::GetStockLevelRequest {
                name: "products/KILL/stockLevels/main".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Orders 0, 4, 8, 12, 16 restocked their unit; the other five wrote
    // theirs off.
    assert_eq!(
        (level.on_hand, level.available, level.committed),
        (15, 15, 0),
        "five restocked once, five written off once"
    );
    let problems = payment_pool
        .run(backroom_payment::db::repo::ledger::audit)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let refunded_now = count(
        &payment_pool,
        "SELECT coalesce(sum(amount_refunded), 0)::bigint AS n FROM payment_intents",
    )
    .await;
    let orders_say = count(
        &payment_pool,
        "SELECT coalesce(sum(refunded_minor), 0)::bigint AS n FROM orders",
    )
    .await;
    let expected = refunded + 10 * (100 + 500);
    assert_eq!(
        (refunded_now, orders_say),
        (expected, expected),
        "each goodwill refund and each returned unit refunded once"
    );
    println!(
        "checked: after kill -9 mid returns and refunds: 10 refunds of 100 and 10 returns of 500 paid once ({refunded_now} minor units in all, the orders agree), stock 15/15/0, ledger balanced"
    );
}

/// Calls `call` on a fresh client of `endpoint` until it gets an answer:
/// a server being killed or restarting (UNAVAILABLE, UNKNOWN, CANCELLED) or
/// shedding (RESOURCE_EXHAUSTED) is retried; any other refusal fails the
/// test.
async fn until_answered<T, F, Fut>(endpoint: &str, mut call: F) -> T
where
    F: FnMut(CheckoutServiceClient<backroom_shared::client::TracedChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        let checkout =
            CheckoutServiceClient::new(channel(&ClientConfig::new(endpoint.to_owned())).unwrap());
        match call(checkout).await {
            Ok(answer) => return answer,
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) =>
            {
                tokio::task::yield_now().await
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("refused: {status:?}"),
        }
    }
}

/// A bigint `n` selected by `sql` through `pool`.
async fn count(pool: &Pool, sql: &'static str) -> i64 {
    pool.run(move |conn| {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let found: Count = diesel::RunQueryDsl::get_result(diesel::sql_query(sql), conn)?;
        Ok::<_, DbError>(found.n)
    })
    .await
    .unwrap()
}
