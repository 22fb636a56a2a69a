//! Payment intents refused: bad input names the field, customers only see
//! and touch their own intents, unknown resources are NOT_FOUND with their
//! reason, and the database itself refuses unbalanced journals and ledger
//! edits.

use crate::helpers::*;
use backroom_proto::payment::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let create = |request: pb::CreatePaymentIntentRequest| app.create(&ada, request);
    let base = create_request(&ada, 100, "", false);
    let cases: Vec<(pb::CreatePaymentIntentRequest, Vec<&str>)> = vec![
        (
            pb::CreatePaymentIntentRequest {
                amount: eur(0),
                ..base.clone()
            },
            vec!["amount.amount_minor"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                amount: eur(-5),
                ..base.clone()
            },
            vec!["amount.amount_minor"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                amount: eur(100_000_000),
                ..base.clone()
            },
            vec!["amount.amount_minor"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                amount: money("XYZ", 100),
                ..base.clone()
            },
            vec!["amount.currency_code"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                amount: None,
                ..base.clone()
            },
            vec!["amount"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                customer: "bob".into(),
                ..base.clone()
            },
            vec!["customer"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                description: "d".repeat(1001),
                ..base.clone()
            },
            vec!["description"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                description: format!("card {VISA}"),
                ..base.clone()
            },
            vec!["description"],
        ),
        // A card number spelled to slip past a digits-only filter.
        (
            pb::CreatePaymentIntentRequest {
                description: "card 4242.4242.4242.4242".into(),
                ..base.clone()
            },
            vec!["description"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                description: "card ４２４２ ４２４２ ４２４２ ４２４２".into(),
                ..base.clone()
            },
            vec!["description"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                metadata: [("note".into(), "٤٢٤٢/٤٢٤٢/٤٢٤٢/٤٢٤٢".into())].into(),
                ..base.clone()
            },
            vec!["metadata"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                payment_method: "cards/1".into(),
                ..base.clone()
            },
            vec!["payment_method"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                capture_method: 9,
                ..base.clone()
            },
            vec!["capture_method"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                request_id: "x".into(),
                ..base.clone()
            },
            vec!["request_id"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                metadata: (0..21).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..base.clone()
            },
            vec!["metadata"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                metadata: [("k".repeat(41), "v".into())].into(),
                ..base.clone()
            },
            vec!["metadata"],
        ),
        (
            pb::CreatePaymentIntentRequest {
                metadata: [("order".into(), "v".repeat(501))].into(),
                ..base.clone()
            },
            vec!["metadata[order]"],
        ),
    ];
    for (request, expected) in cases {
        let err = create(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "VALIDATION_FAILED");
        assert_eq!(fields(&err), expected);
    }
    let err = app
        .client()
        .list_payment_intents(authed(
            &ada.token,
            pb::ListPaymentIntentsRequest {
                page_token: "bogus".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["page_token"]);
    let err = app
        .client()
        .get_payment_intent(authed(
            &ada.token,
            pb::GetPaymentIntentRequest {
                name: "paymentIntents/x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["name"]);
    let mut confirm = create_request(&ada, 100, "", false);
    confirm.confirm = true;
    let err = create(confirm).await.unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_METHOD_REQUIRED");
    // Metadata within limits round-trips.
    let ok = create(pb::CreatePaymentIntentRequest {
        metadata: [("order".into(), "orders/42".into())].into(),
        description: "two books".into(),
        ..base
    })
    .await
    .unwrap();
    assert_eq!(ok.metadata["order"], "orders/42");
}

/// The id in a NOT_FOUND status's `name` metadata.
fn missing_id(status: &tonic::Status) -> String {
    metadata(status)["name"]
        .trim_start_matches("paymentIntents/")
        .to_owned()
}

#[tokio::test]
async fn customers_only_see_and_touch_their_own_intents() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let bob = app.customer();
    let admin = app.admin();
    let service = app.service();
    let ada_card = app.attach(&ada, VISA).await.unwrap();
    let bob_card = app.attach(&bob, VISA).await.unwrap();
    let intent = app
        .create(&ada, create_request(&ada, 100, &ada_card.name, true))
        .await
        .unwrap();
    let get = |user: &User| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::GetPaymentIntentRequest {
                name: intent.name.clone(),
            },
        );
        async move { client.get_payment_intent(request).await }
    };
    get(&ada).await.unwrap();
    get(&admin).await.unwrap();
    get(&service).await.unwrap();
    // To Bob, Ada's intent is answered exactly like one that does not exist.
    let err = get(&bob).await.unwrap_err();
    let missing = app
        .client()
        .get_payment_intent(authed(
            &bob.token,
            pb::GetPaymentIntentRequest {
                name: format!("paymentIntents/{}", uuid::Uuid::now_v7()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (missing.code(), reason(&missing))
    );
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message().replace(&intent.name, "<name>"),
        missing.message().replace(
            &format!("paymentIntents/{}", missing_id(&missing)),
            "<name>"
        )
    );
    let err = app
        .confirm(&bob, &intent.name, &bob_card.name, "")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_INTENT_NOT_FOUND")
    );
    // Ada cannot pay with Bob's card (it is not hers: not found), nor create
    // intents for Bob (naming his account: denied).
    let err = app
        .confirm(&ada, &intent.name, &bob_card.name, "")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_METHOD_NOT_FOUND")
    );
    let err = app
        .create(&ada, create_request(&bob, 100, "", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A service may create for any customer, but only with that customer's card.
    let for_bob = app
        .create(&service, create_request(&bob, 100, &bob_card.name, true))
        .await
        .unwrap();
    assert_eq!(for_bob.customer, bob.name);
    let err = app
        .create(&service, create_request(&bob, 100, &ada_card.name, true))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_METHOD_NOT_FOUND");

    let list = |user: &User, customer: &str| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::ListPaymentIntentsRequest {
                customer: customer.into(),
                ..Default::default()
            },
        );
        async move { client.list_payment_intents(request).await }
    };
    let own = list(&ada, "").await.unwrap().into_inner();
    assert_eq!(own.payment_intents.len(), 1);
    assert_eq!(
        list(&bob, "accounts/me")
            .await
            .unwrap()
            .into_inner()
            .payment_intents
            .len(),
        1
    );
    assert_eq!(
        list(&bob, &ada.name).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        list(&admin, "")
            .await
            .unwrap()
            .into_inner()
            .payment_intents
            .len(),
        2
    );
    let succeeded = app
        .client()
        .list_payment_intents(authed(
            &service.token,
            pb::ListPaymentIntentsRequest {
                status: pb::PaymentIntentStatus::RequiresConfirmation.into(),
                customer: ada.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(succeeded.payment_intents.len(), 1);

    // The ledger is for admin and services.
    let err = app
        .client()
        .list_journals(authed(&ada.token, pb::ListJournalsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .client()
        .list_ledger_accounts(authed(&ada.token, pb::ListLedgerAccountsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn unknown_resources_are_not_found_with_their_reason() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let missing = uuid::Uuid::now_v7();
    let err = app
        .client()
        .get_payment_intent(authed(
            &admin.token,
            pb::GetPaymentIntentRequest {
                name: format!("paymentIntents/{missing}"),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_INTENT_NOT_FOUND")
    );
    let err = app
        .confirm(&admin, &format!("paymentIntents/{missing}"), "", "")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_INTENT_NOT_FOUND");
    let err = app
        .create(
            &admin,
            create_request(&admin, 10, &format!("paymentMethods/{missing}"), false),
        )
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_METHOD_NOT_FOUND");
    let err = app
        .client()
        .list_refunds(authed(
            &admin.token,
            pb::ListRefundsRequest {
                parent: format!("paymentIntents/{missing}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_INTENT_NOT_FOUND");
    let err = app
        .client()
        .get_journal(authed(
            &admin.token,
            pb::GetJournalRequest {
                name: format!("journals/{missing}"),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "JOURNAL_NOT_FOUND");
    let err = app
        .client()
        .get_ledger_account(authed(
            &admin.token,
            pb::GetLedgerAccountRequest {
                name: "ledgerAccounts/nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "LEDGER_ACCOUNT_NOT_FOUND");
    let err = app
        .client()
        .list_ledger_entries(authed(
            &admin.token,
            pb::ListLedgerEntriesRequest {
                ledger_account: "ledgerAccounts/nope".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "LEDGER_ACCOUNT_NOT_FOUND");
    // A detached card cannot pay.
    let method = app.attach(&admin, VISA).await.unwrap();
    let intent = app
        .create(&admin, create_request(&admin, 10, &method.name, false))
        .await
        .unwrap();
    app.client()
        .detach_payment_method(authed(
            &admin.token,
            pb::DetachPaymentMethodRequest {
                name: method.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let err = app.confirm(&admin, &intent.name, "", "").await.unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_METHOD_NOT_FOUND");
    let accounts = app
        .client()
        .list_ledger_accounts(authed(
            &admin.token,
            pb::ListLedgerAccountsRequest {
                page_size: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = accounts
        .ledger_accounts
        .iter()
        .map(|a| a.code.as_str())
        .collect();
    assert_eq!(
        codes,
        ["authorization_holds", "customer_funds", "merchant_revenue"]
    );
    let rest = app
        .client()
        .list_ledger_accounts(authed(
            &admin.token,
            pb::ListLedgerAccountsRequest {
                page_size: 3,
                page_token: accounts.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.ledger_accounts[0].code, "processor_clearing");
}

#[tokio::test]
async fn the_database_refuses_unbalanced_journals_and_ledger_edits() {
    use diesel::{Connection as _, connection::SimpleConnection as _};
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let intent = app.captured(&ada, 100).await;
    let id = intent.name.trim_start_matches("paymentIntents/").to_owned();
    let outcome = app
        .pool
        .run(move |conn| {
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                conn.batch_execute(&format!(
                    "INSERT INTO journals (id, payment_intent_id, kind, created_at) \
                     VALUES (gen_random_uuid(), '{id}', 'release', now()); \
                     INSERT INTO ledger_entries (journal_id, ledger_account, direction, currency, amount, created_at) \
                     SELECT id, 'customer_funds', 'debit', 'EUR', 5, now() FROM journals WHERE kind = 'release'"
                ))
            })
            .map_err(backroom_shared::db::DbError::from)
        })
        .await;
    assert!(outcome.is_err(), "an unbalanced journal committed");
    let edit = app
        .pool
        .run(|conn| {
            conn.batch_execute("UPDATE ledger_entries SET amount = amount + 1")
                .map_err(backroom_shared::db::DbError::from)
        })
        .await;
    assert!(edit.is_err(), "a ledger entry was edited");
    assert!(app.audit().await.is_empty());
}

#[tokio::test]
async fn a_replay_with_several_metadata_entries_is_the_same_request() {
    // The fingerprint a request id is bound to is the request's encoding.
    // Proto maps once decoded into HashMaps, whose order changes with each
    // instance: a replay with a few metadata entries encoded differently
    // and was refused as REQUEST_ID_REUSED.
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let card = app.attach(&ada, "4242424242424242").await.unwrap();
    let request = pb::CreatePaymentIntentRequest {
        request_id: request_id(),
        metadata: (0..8)
            .map(|i| (format!("key-{i}"), format!("value {i}")))
            .collect(),
        ..create_request(&ada, 1500, &card.name, true)
    };
    let first = app.create(&ada, request.clone()).await.unwrap();
    for _ in 0..5 {
        let replay = app.create(&ada, request.clone()).await.unwrap();
        assert_eq!(replay.name, first.name);
    }
}
