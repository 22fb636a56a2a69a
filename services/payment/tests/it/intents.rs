//! Payment intents end to end: the state machine, test cards, captures,
//! cancels, refunds, expiry and the journals they post. Bad input,
//! ownership and the database's own guards: [`crate::intent_guards`].
//!
//! Over 600 lines: one state machine, one test per transition family.

use std::collections::HashMap;

use crate::helpers::*;
use backroom_proto::payment::v1 as pb;
use prost::Message as _;
use tonic::Code;

async fn journals(app: &TestApp, intent: &str) -> Vec<pb::Journal> {
    app.client()
        .list_journals(authed(
            &app.admin().token,
            pb::ListJournalsRequest {
                payment_intent: intent.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .journals
}

fn kinds(journals: &[pb::Journal]) -> Vec<pb::JournalKind> {
    journals
        .iter()
        .map(|j| pb::JournalKind::try_from(j.kind).unwrap())
        .collect()
}

async fn balances(app: &TestApp) -> HashMap<String, i64> {
    app.client()
        .list_ledger_accounts(authed(
            &app.service().token,
            pb::ListLedgerAccountsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .ledger_accounts
        .into_iter()
        .map(|a| {
            let eur = a
                .balances
                .iter()
                .find(|b| b.currency_code == "EUR")
                .map_or(0, |b| b.amount_minor);
            (a.code, eur)
        })
        .collect()
}

#[tokio::test]
async fn manual_capture_authorizes_then_captures_partially_and_releases_the_rest() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let service = app.service();
    let method = app.attach(&ada, VISA).await.unwrap();
    let intent = app
        .create(&ada, create_request(&ada, 1000, "", true))
        .await
        .unwrap();
    assert_eq!(
        status_of(&intent),
        pb::PaymentIntentStatus::RequiresPaymentMethod
    );
    let err = app.confirm(&ada, &intent.name, "", "").await.unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_METHOD_REQUIRED");
    let confirmed = app
        .confirm(&ada, &intent.name, &method.name, &request_id())
        .await
        .unwrap();
    assert_eq!(
        status_of(&confirmed),
        pb::PaymentIntentStatus::RequiresCapture
    );
    assert_eq!(minor(&confirmed.amount_capturable), 1000);
    let expires = confirmed.authorization_expire_time.unwrap();
    assert_eq!(
        expires.seconds - confirmed.update_time.unwrap().seconds,
        7 * 24 * 3600
    );
    assert_eq!(balances(&app).await["authorization_holds"], 1000);
    assert_eq!(balances(&app).await["customer_funds"], 1000);

    // Customers cannot capture.
    let capture = |user: &User, amount: Option<backroom_proto::common::v1::Money>| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::CapturePaymentIntentRequest {
                name: intent.name.clone(),
                amount_to_capture: amount,
                request_id: request_id(),
            },
        );
        async move { client.capture_payment_intent(request).await }
    };
    let err = capture(&ada, None).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = capture(&service, eur(1001)).await.unwrap_err();
    assert_eq!(reason(&err), "AMOUNT_EXCEEDS_CAPTURABLE");
    assert_eq!(fields(&err), ["amount_to_capture.amount_minor"]);
    let err = capture(&service, money("USD", 10)).await.unwrap_err();
    assert_eq!(reason(&err), "CURRENCY_MISMATCH");
    assert_eq!(fields(&err), ["amount_to_capture.currency_code"]);
    let captured = capture(&service, eur(600)).await.unwrap().into_inner();
    assert_eq!(status_of(&captured), pb::PaymentIntentStatus::Succeeded);
    assert_eq!(minor(&captured.amount_received), 600);
    assert_eq!(minor(&captured.amount_capturable), 0);
    assert!(captured.authorization_expire_time.is_none());
    let err = capture(&service, None).await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_STATE");
    assert_eq!(
        metadata(&err)["current_state"],
        "PAYMENT_INTENT_STATUS_SUCCEEDED"
    );

    let journals = journals(&app, &intent.name).await;
    assert_eq!(
        kinds(&journals),
        [
            pb::JournalKind::AuthorizationHold,
            pb::JournalKind::Capture,
            pb::JournalKind::Release
        ]
    );
    assert_eq!(journals[1].entries.len(), 4);
    assert_eq!(minor(&journals[2].entries[0].amount), 400);
    let got = app
        .client()
        .get_journal(authed(
            &service.token,
            pb::GetJournalRequest {
                name: journals[1].name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, journals[1]);
    let balances = balances(&app).await;
    assert_eq!(balances["authorization_holds"], 0);
    assert_eq!(balances["customer_funds"], 0);
    assert_eq!(balances["processor_clearing"], 600);
    assert_eq!(balances["merchant_revenue"], 600);
    let account = app
        .client()
        .get_ledger_account(authed(
            &service.token,
            pb::GetLedgerAccountRequest {
                name: "ledgerAccounts/merchant_revenue".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.kind, i32::from(pb::LedgerAccountKind::Revenue));
    assert_eq!(minor(&account.balances.first().cloned()), 600);
    let entries = app
        .client()
        .list_ledger_entries(authed(
            &service.token,
            pb::ListLedgerEntriesRequest {
                ledger_account: "ledgerAccounts/authorization_holds".into(),
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entries.ledger_entries.len(), 2);
    let rest = app
        .client()
        .list_ledger_entries(authed(
            &service.token,
            pb::ListLedgerEntriesRequest {
                ledger_account: "ledgerAccounts/authorization_holds".into(),
                page_size: 2,
                page_token: entries.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.ledger_entries.len(), 1);
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn automatic_capture_then_several_partial_refunds_up_to_the_captured_amount() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let admin = app.admin();
    let intent = app.captured(&ada, 1000).await;
    assert_eq!(status_of(&intent), pb::PaymentIntentStatus::Succeeded);
    assert_eq!(minor(&intent.amount_received), 1000);
    let refund = |user: &User, amount| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::CreateRefundRequest {
                parent: intent.name.clone(),
                amount,
                reason: pb::RefundReason::RequestedByCustomer.into(),
                request_id: request_id(),
            },
        );
        async move { client.create_refund(request).await }
    };
    assert_eq!(
        refund(&ada, eur(1)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let first = refund(&admin, eur(300)).await.unwrap().into_inner();
    assert_eq!(first.status, i32::from(pb::RefundStatus::Succeeded));
    refund(&admin, eur(300)).await.unwrap();
    let err = refund(&admin, eur(401)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "REFUND_EXCEEDS_CAPTURED");
    assert_eq!(metadata(&err)["refundable_minor"], "400");
    let err = refund(&admin, money("GBP", 1)).await.unwrap_err();
    assert_eq!(reason(&err), "CURRENCY_MISMATCH");
    assert_eq!(fields(&err), ["amount.currency_code"]);
    let err = refund(&admin, eur(0)).await.unwrap_err();
    assert_eq!(fields(&err), ["amount.amount_minor"]);
    let rest = refund(&app.service(), None).await.unwrap().into_inner();
    assert_eq!(minor(&rest.amount), 400);
    let err = refund(&admin, None).await.unwrap_err();
    assert_eq!(reason(&err), "REFUND_EXCEEDS_CAPTURED");
    assert_eq!(metadata(&err)["refundable_minor"], "0");

    // The owner reads them; another customer cannot.
    let got = app
        .client()
        .get_refund(authed(
            &ada.token,
            pb::GetRefundRequest {
                name: first.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);
    let bob = app.customer();
    let err = app
        .client()
        .get_refund(authed(
            &bob.token,
            pb::GetRefundRequest {
                name: first.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    // Another customer's refund does not exist, as far as Bob can tell.
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "REFUND_NOT_FOUND")
    );
    let err = app
        .client()
        .get_refund(authed(
            &ada.token,
            pb::GetRefundRequest {
                name: format!("{}/refunds/{}", intent.name, uuid::Uuid::now_v7()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "REFUND_NOT_FOUND");
    let listed = app
        .client()
        .list_refunds(authed(
            &ada.token,
            pb::ListRefundsRequest {
                parent: intent.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.refunds.len(), 3);
    assert_eq!(listed.refunds[0], first);
    let err = app
        .client()
        .list_refunds(authed(
            &bob.token,
            pb::ListRefundsRequest {
                parent: intent.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_INTENT_NOT_FOUND")
    );
    let got = app
        .client()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest {
                name: intent.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minor(&got.amount_refunded), 1000);
    let journals = journals(&app, &intent.name).await;
    assert_eq!(
        kinds(&journals),
        [
            pb::JournalKind::AuthorizationHold,
            pb::JournalKind::Capture,
            pb::JournalKind::Refund,
            pb::JournalKind::Refund,
            pb::JournalKind::Refund
        ]
    );
    assert_eq!(journals[2].refund, first.name);
    let balances = balances(&app).await;
    assert_eq!(balances["processor_clearing"], 0);
    assert_eq!(balances["merchant_revenue"], 0);
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn test_cards_decline_with_the_documented_reasons_and_leave_the_intent_retryable() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let good = app.attach(&ada, MASTERCARD).await.unwrap();
    for (card, expected, decline_code) in [
        (DECLINE, "CARD_DECLINED", "generic_decline"),
        (INSUFFICIENT, "INSUFFICIENT_FUNDS", "insufficient_funds"),
        (EXPIRED, "EXPIRED_CARD", "expired_card"),
    ] {
        let method = app.attach(&ada, card).await.unwrap();
        let intent = app
            .create(&ada, create_request(&ada, 500, &method.name, false))
            .await
            .unwrap();
        assert_eq!(
            status_of(&intent),
            pb::PaymentIntentStatus::RequiresConfirmation
        );
        let id = request_id();
        let err = app.confirm(&ada, &intent.name, "", &id).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{card}");
        assert_eq!(reason(&err), expected);
        let info = metadata(&err);
        assert_eq!(info["decline_code"], decline_code);
        assert_eq!(info["payment_intent"], intent.name);
        // The decline is the request's outcome: replayed as is.
        let replay = app.confirm(&ada, &intent.name, "", &id).await.unwrap_err();
        assert_eq!(reason(&replay), expected);
        assert_eq!(replay.message(), err.message());
        let after = app
            .client()
            .get_payment_intent(authed(
                &ada.token,
                pb::GetPaymentIntentRequest {
                    name: intent.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status_of(&after),
            pb::PaymentIntentStatus::RequiresPaymentMethod
        );
        assert!(after.payment_method.is_empty());
        let error = after.last_payment_error.unwrap();
        assert_eq!(error.code, expected);
        assert_eq!(error.decline_code, decline_code);
        assert_eq!(error.payment_method, method.name);
        // Another card, a new request id: it succeeds.
        let paid = app
            .confirm(&ada, &intent.name, &good.name, &request_id())
            .await
            .unwrap();
        assert_eq!(status_of(&paid), pb::PaymentIntentStatus::Succeeded);
        assert!(paid.last_payment_error.is_none());
    }
    // create with confirm=true: the intent exists after a decline.
    let declining = app.attach(&ada, DECLINE).await.unwrap();
    let mut request = create_request(&ada, 700, &declining.name, false);
    request.confirm = true;
    let err = app.create(&ada, request).await.unwrap_err();
    assert_eq!(reason(&err), "CARD_DECLINED");
    let name = metadata(&err)["payment_intent"].clone();
    let intent = app
        .client()
        .get_payment_intent(authed(&ada.token, pb::GetPaymentIntentRequest { name }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_of(&intent),
        pb::PaymentIntentStatus::RequiresPaymentMethod
    );
    assert_eq!(intent.last_payment_error.unwrap().code, "CARD_DECLINED");
    assert_eq!(app.simulator.counts().authorizations, 3);
    assert!(app.audit().await.is_empty());
    assert!(app.stored_card_numbers().await.is_empty());
}

#[tokio::test]
async fn a_processing_error_is_retried_with_the_same_request_id_without_a_double_charge() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let method = app.attach(&ada, PROCESSING_ERROR).await.unwrap();
    let intent = app
        .create(&ada, create_request(&ada, 2500, &method.name, true))
        .await
        .unwrap();
    let id = request_id();
    let err = app.confirm(&ada, &intent.name, "", &id).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "PROCESSOR_ERROR");
    let after = app
        .client()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest {
                name: intent.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_of(&after),
        pb::PaymentIntentStatus::RequiresConfirmation
    );
    assert_eq!(after.last_payment_error.unwrap().code, "PROCESSOR_ERROR");
    assert!(journals(&app, &intent.name).await.is_empty());
    // The retry runs again (nothing was stored) and finds the same hold.
    let retried = app.confirm(&ada, &intent.name, "", &id).await.unwrap();
    assert_eq!(
        status_of(&retried),
        pb::PaymentIntentStatus::RequiresCapture
    );
    assert!(retried.last_payment_error.is_none());
    let replay = app.confirm(&ada, &intent.name, "", &id).await.unwrap();
    assert_eq!(replay.encode_to_vec(), retried.encode_to_vec());
    assert_eq!(app.simulator.counts().authorizations, 1);
    assert_eq!(
        kinds(&journals(&app, &intent.name).await),
        [pb::JournalKind::AuthorizationHold]
    );
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn cancel_follows_stripes_rules_and_voids_holds() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let service = app.service();
    let cancel = |user: &User, name: &str, reason: pb::CancellationReason| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::CancelPaymentIntentRequest {
                name: name.into(),
                cancellation_reason: reason.into(),
                request_id: request_id(),
            },
        );
        async move { client.cancel_payment_intent(request).await }
    };
    let fresh = app
        .create(&ada, create_request(&ada, 100, "", false))
        .await
        .unwrap();
    let canceled = cancel(&ada, &fresh.name, pb::CancellationReason::Abandoned)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&canceled), pb::PaymentIntentStatus::Canceled);
    assert_eq!(
        canceled.cancellation_reason,
        i32::from(pb::CancellationReason::Abandoned)
    );
    let err = cancel(&ada, &fresh.name, pb::CancellationReason::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_STATE");
    assert_eq!(
        metadata(&err)["current_state"],
        "PAYMENT_INTENT_STATUS_CANCELED"
    );
    let err = app.confirm(&ada, &fresh.name, "", "").await.unwrap_err();
    assert_eq!(
        metadata(&err)["current_state"],
        "PAYMENT_INTENT_STATUS_CANCELED"
    );

    let held = app.authorized(&ada, 800).await;
    let err = cancel(
        &ada,
        &held.name,
        pb::CancellationReason::AuthorizationExpired,
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["cancellation_reason"]);
    let err = cancel(&ada, &held.name, pb::CancellationReason::OrderFailed)
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["cancellation_reason"]);
    let bob = app.customer();
    let err = cancel(&bob, &held.name, pb::CancellationReason::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_INTENT_NOT_FOUND")
    );
    let voided = cancel(&service, &held.name, pb::CancellationReason::OrderFailed)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&voided), pb::PaymentIntentStatus::Canceled);
    assert_eq!(minor(&voided.amount_capturable), 0);
    assert_eq!(
        kinds(&journals(&app, &held.name).await),
        [pb::JournalKind::AuthorizationHold, pb::JournalKind::Release]
    );
    assert_eq!(app.simulator.counts().voids, 1);

    let paid = app.captured(&ada, 100).await;
    let err = cancel(&ada, &paid.name, pb::CancellationReason::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        metadata(&err)["current_state"],
        "PAYMENT_INTENT_STATUS_SUCCEEDED"
    );
    // Refund of an intent that is not succeeded.
    let err = app
        .client()
        .create_refund(authed(
            &service.token,
            pb::CreateRefundRequest {
                parent: held.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_STATE");
    assert_eq!(
        metadata(&err)["current_state"],
        "PAYMENT_INTENT_STATUS_CANCELED"
    );
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn the_sweeper_cancels_expired_authorizations_once_and_capture_refuses_them() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let held = app.authorized(&ada, 900).await;
    let kept = app.authorized(&ada, 100).await;
    app.clock.advance(chrono::Duration::days(3));
    let later = app.authorized(&ada, 50).await;
    app.clock
        .advance(chrono::Duration::days(4) + chrono::Duration::seconds(1));
    let err = app
        .client()
        .capture_payment_intent(authed(
            &app.service().token,
            pb::CapturePaymentIntentRequest {
                name: held.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "AUTHORIZATION_EXPIRED");
    let now = app.now();
    let swept = backroom_payment::sweep_expired_authorizations(&app.deps, now)
        .await
        .unwrap();
    assert_eq!(swept, 2);
    assert_eq!(
        backroom_payment::sweep_expired_authorizations(&app.deps, now)
            .await
            .unwrap(),
        0
    );
    for intent in [&held, &kept] {
        let after = app
            .client()
            .get_payment_intent(authed(
                &ada.token,
                pb::GetPaymentIntentRequest {
                    name: intent.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_of(&after), pb::PaymentIntentStatus::Canceled);
        assert_eq!(
            after.cancellation_reason,
            i32::from(pb::CancellationReason::AuthorizationExpired)
        );
        assert_eq!(
            kinds(&journals(&app, &intent.name).await),
            [pb::JournalKind::AuthorizationHold, pb::JournalKind::Release]
        );
    }
    let still = app
        .client()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest {
                name: later.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&still), pb::PaymentIntentStatus::RequiresCapture);
    assert_eq!(balances(&app).await["authorization_holds"], 50);
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn a_saved_card_that_expired_since_is_declined_as_expired() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let now = app.now();
    let mut request = attach_request(&ada.name, VISA);
    {
        use chrono::Datelike as _;
        let card = request.card.as_mut().unwrap();
        card.exp_month = i32::try_from(now.month()).unwrap();
        card.exp_year = now.year();
    }
    let method = app
        .client()
        .attach_payment_method(authed(&ada.token, request))
        .await
        .unwrap()
        .into_inner();
    app.clock.advance(chrono::Duration::days(62));
    let intent = app
        .create(&ada, create_request(&ada, 100, &method.name, false))
        .await
        .unwrap();
    let err = app.confirm(&ada, &intent.name, "", "").await.unwrap_err();
    assert_eq!(reason(&err), "EXPIRED_CARD");
    assert_eq!(app.simulator.counts().authorizations, 0);
}
