//! Concurrency: duplicate requests never have a second effect, refunds never
//! exceed captures, and a randomized concurrent run leaves a ledger that
//! audits clean and no card number anywhere in the database.

use std::sync::Arc;

use crate::helpers::*;
use backroom_proto::payment::v1 as pb;
use futures_util::future::join_all;
use prost::Message as _;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_with_one_request_id_make_one_intent() {
    let app = Arc::new(TestApp::spawn().await);
    let ada = app.customer();
    let request = pb::CreatePaymentIntentRequest {
        customer: ada.name.clone(),
        amount: eur(4200),
        request_id: request_id(),
        ..Default::default()
    };
    let responses = join_all((0..50).map(|_| {
        let app = Arc::clone(&app);
        let (ada, request) = (ada.clone(), request.clone());
        tokio::spawn(async move { app.create(&ada, request).await })
    }))
    .await;
    let bodies: Vec<Vec<u8>> = responses
        .into_iter()
        .map(|r| r.unwrap().unwrap().encode_to_vec())
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    let listed = app
        .client()
        .list_payment_intents(authed(&ada.token, pb::ListPaymentIntentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.payment_intents.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_confirms_with_one_request_id_authorize_once() {
    let app = Arc::new(TestApp::spawn().await);
    let ada = app.customer();
    let method = app.attach(&ada, VISA).await.unwrap();
    let intent = app
        .create(
            &ada,
            pb::CreatePaymentIntentRequest {
                customer: ada.name.clone(),
                amount: eur(999),
                capture_method: pb::CaptureMethod::Manual.into(),
                payment_method: method.name.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = request_id();
    let responses = join_all((0..50).map(|_| {
        let app = Arc::clone(&app);
        let (ada, name, id) = (ada.clone(), intent.name.clone(), id.clone());
        tokio::spawn(async move { app.confirm(&ada, &name, "", &id).await })
    }))
    .await;
    let bodies: Vec<Vec<u8>> = responses
        .into_iter()
        .map(|r| r.unwrap().unwrap().encode_to_vec())
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(app.simulator.counts().authorizations, 1);
    let holds = app
        .client()
        .list_journals(authed(
            &app.admin().token,
            pb::ListJournalsRequest {
                kind: pb::JournalKind::AuthorizationHold.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(holds.journals.len(), 1);
    // A different request id now finds the intent authorized.
    let err = app
        .confirm(&ada, &intent.name, "", &request_id())
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_STATE");
    assert!(app.audit().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_refunds_of_sixty_on_a_hundred_let_exactly_one_through() {
    let app = Arc::new(TestApp::spawn().await);
    let ada = app.customer();
    let admin = app.admin();
    for _ in 0..5 {
        let intent = app.captured(&ada, 100).await;
        let results = join_all((0..2).map(|_| {
            let app = Arc::clone(&app);
            let (token, parent) = (admin.token.clone(), intent.name.clone());
            tokio::spawn(async move {
                app.client()
                    .create_refund(authed(
                        &token,
                        pb::CreateRefundRequest {
                            parent,
                            amount: eur(60),
                            request_id: request_id(),
                            ..Default::default()
                        },
                    ))
                    .await
            })
        }))
        .await;
        let (ok, refused): (Vec<_>, Vec<_>) = results
            .into_iter()
            .map(|r| r.unwrap())
            .partition(Result::is_ok);
        assert_eq!(ok.len(), 1);
        let err = refused.into_iter().next().unwrap().unwrap_err();
        assert_eq!(reason(&err), "REFUND_EXCEEDS_CAPTURED");
        assert_eq!(metadata(&err)["refundable_minor"], "40");
    }
    assert!(app.audit().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_concurrent_run_keeps_every_invariant() {
    let app = Arc::new(TestApp::spawn().await);
    let admin = app.admin();
    let customers: Vec<User> = (0..4).map(|_| app.customer()).collect();
    let mut methods = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let card = ALL_TEST_CARDS[4 + i % 4];
        let good = app.attach(customer, VISA).await.unwrap();
        let other = app.attach(customer, card).await.unwrap();
        methods.push((good.name, other.name));
    }
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut intents = Vec::new();
    for i in 0..24 {
        let who = i % customers.len();
        let currency = ["EUR", "USD", "JPY"][i % 3];
        let manual = rng.gen_bool(0.6);
        let method = if rng.gen_bool(0.8) {
            methods[who].0.clone()
        } else {
            methods[who].1.clone()
        };
        let intent = app
            .create(
                &customers[who],
                pb::CreatePaymentIntentRequest {
                    customer: customers[who].name.clone(),
                    amount: money(currency, rng.gen_range(1..=5000)),
                    capture_method: if manual {
                        pb::CaptureMethod::Manual
                    } else {
                        pb::CaptureMethod::Automatic
                    }
                    .into(),
                    payment_method: method,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        intents.push((who, currency, intent.name));
    }
    // Each task performs a random sequence of operations on a random intent;
    // many race on the same intent.
    let tasks = (0..48).map(|task| {
        let app = Arc::clone(&app);
        let admin = admin.clone();
        let customers = customers.clone();
        let intents = intents.clone();
        let seed = rng.r#gen::<u64>();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..4 {
                let (who, currency, name) = &intents[(task + rng.gen_range(0..3)) % intents.len()];
                let customer = &customers[*who];
                let mut client = app.client();
                let outcome = match rng.gen_range(0..5) {
                    0 => app
                        .confirm(customer, name, "", &request_id())
                        .await
                        .map(|_| ()),
                    1 => client
                        .capture_payment_intent(authed(
                            &admin.token,
                            pb::CapturePaymentIntentRequest {
                                name: name.clone(),
                                amount_to_capture: if rng.gen_bool(0.5) {
                                    money(currency, rng.gen_range(1..=3000))
                                } else {
                                    None
                                },
                                request_id: request_id(),
                            },
                        ))
                        .await
                        .map(|_| ()),
                    2 => client
                        .create_refund(authed(
                            &admin.token,
                            pb::CreateRefundRequest {
                                parent: name.clone(),
                                amount: money(currency, rng.gen_range(1..=2000)),
                                request_id: request_id(),
                                ..Default::default()
                            },
                        ))
                        .await
                        .map(|_| ()),
                    3 => client
                        .cancel_payment_intent(authed(
                            &customer.token,
                            pb::CancelPaymentIntentRequest {
                                name: name.clone(),
                                request_id: request_id(),
                                ..Default::default()
                            },
                        ))
                        .await
                        .map(|_| ()),
                    _ => client
                        .create_refund(authed(
                            &admin.token,
                            pb::CreateRefundRequest {
                                parent: name.clone(),
                                request_id: request_id(),
                                ..Default::default()
                            },
                        ))
                        .await
                        .map(|_| ()),
                };
                if let Err(status) = outcome {
                    // Only business refusals and retryable processor errors.
                    assert!(
                        matches!(
                            status.code(),
                            Code::FailedPrecondition | Code::InvalidArgument | Code::Unavailable
                        ),
                        "unexpected {status:?}"
                    );
                    assert_ne!(reason(&status), "VALIDATION_FAILED", "{status:?}");
                }
            }
        })
    });
    for result in join_all(tasks).await {
        result.unwrap();
    }
    let problems = app.audit().await;
    assert!(problems.is_empty(), "{problems:#?}");
    // The same invariants through the API.
    let all = app
        .client()
        .list_payment_intents(authed(
            &admin.token,
            pb::ListPaymentIntentsRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.payment_intents.len(), intents.len());
    for intent in &all.payment_intents {
        assert!(minor(&intent.amount_received) <= minor(&intent.amount));
        assert!(minor(&intent.amount_refunded) <= minor(&intent.amount_received));
    }
    let accounts = app
        .client()
        .list_ledger_accounts(authed(
            &admin.token,
            pb::ListLedgerAccountsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut net = std::collections::BTreeMap::<String, i64>::new();
    for account in accounts.ledger_accounts {
        let debit_normal = account.kind == i32::from(pb::LedgerAccountKind::Asset);
        for balance in account.balances {
            let signed = if debit_normal {
                balance.amount_minor
            } else {
                -balance.amount_minor
            };
            *net.entry(balance.currency_code).or_default() += signed;
        }
    }
    assert!(!net.is_empty());
    assert!(net.values().all(|v| *v == 0), "{net:?}");
    // The run moved money every way.
    for kind in [
        pb::JournalKind::AuthorizationHold,
        pb::JournalKind::Capture,
        pb::JournalKind::Release,
        pb::JournalKind::Refund,
    ] {
        let journals = app
            .client()
            .list_journals(authed(
                &admin.token,
                pb::ListJournalsRequest {
                    kind: kind.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!journals.journals.is_empty(), "no {kind:?} journal");
    }
    let stored = app.stored_card_numbers().await;
    assert!(stored.is_empty(), "{stored:?}");
}
