//! AttachPaymentMethod, GetPaymentMethod, ListPaymentMethods,
//! DetachPaymentMethod: validation, brands, fingerprints, ownership, auth,
//! idempotency.

use crate::helpers::*;
use backroom_proto::payment::v1 as pb;
use prost::Message as _;
use tonic::Code;

#[tokio::test]
async fn attach_keeps_brand_last4_expiry_and_a_keyed_fingerprint_only() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    for (number, brand) in [
        (VISA, pb::CardBrand::Visa),
        (MASTERCARD, pb::CardBrand::Mastercard),
        (AMEX, pb::CardBrand::Amex),
        (DISCOVER, pb::CardBrand::Discover),
    ] {
        let method = app.attach(&ada, number).await.unwrap();
        let card = method.card.unwrap();
        assert_eq!(card.brand, i32::from(brand), "{number}");
        assert_eq!(card.last4, number[number.len() - 4..]);
        assert_eq!((card.exp_month, card.exp_year), (12, next_year()));
        assert_eq!(card.fingerprint.len(), 64);
        assert!(!card.fingerprint.contains(number));
        assert_eq!(method.customer, ada.name);
        assert!(method.name.starts_with("paymentMethods/"));
    }
    // Same card → same fingerprint (spot duplicates), even for another customer.
    let again = app.attach(&app.customer(), VISA).await.unwrap();
    let first = app
        .client()
        .list_payment_methods(authed(
            &ada.token,
            pb::ListPaymentMethodsRequest {
                customer: "accounts/me".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.payment_methods.len(), 4);
    // Newest first.
    assert_eq!(
        first.payment_methods[0].card.as_ref().unwrap().last4,
        "1117"
    );
    let visa = &first.payment_methods[3];
    assert_eq!(
        visa.card.as_ref().unwrap().fingerprint,
        again.card.unwrap().fingerprint
    );
    assert!(app.stored_card_numbers().await.is_empty());
}

#[tokio::test]
async fn attach_rejects_bad_cards_naming_the_field() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let attach = |mutate: fn(&mut pb::Card)| {
        let mut request = attach_request(&ada.name, VISA);
        mutate(request.card.as_mut().unwrap());
        let mut client = app.client();
        let token = ada.token.clone();
        async move {
            client
                .attach_payment_method(authed(&token, request))
                .await
                .unwrap_err()
        }
    };
    let err = attach(|c| c.number = "4242424242424241".into()).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_CARD_NUMBER");
    assert_eq!(fields(&err), ["card.number"]);
    assert!(!err.message().contains("4242424242424241"));
    let err = attach(|c| c.number = "4242abcd".into()).await;
    assert_eq!(reason(&err), "INVALID_CARD_NUMBER");
    let err = attach(|c| c.exp_year = 2020).await;
    assert_eq!(reason(&err), "EXPIRED_CARD");
    assert_eq!(fields(&err), ["card.exp_month"]);
    let err = attach(|c| c.exp_month = 13).await;
    assert_eq!(reason(&err), "VALIDATION_FAILED");
    assert_eq!(fields(&err), ["card.exp_month"]);
    let err = attach(|c| c.cvc = "12".into()).await;
    assert_eq!(fields(&err), ["card.cvc"]);
    let err = attach(|c| c.holder_name = "x".repeat(201)).await;
    assert_eq!(fields(&err), ["card.holder_name"]);
    let err = attach(|c| c.holder_name = format!("card {VISA}")).await;
    assert_eq!(fields(&err), ["card.holder_name"]);
    // Amex needs a 4-digit CVC.
    let mut amex = attach_request(&ada.name, AMEX);
    amex.card.as_mut().unwrap().cvc = "123".into();
    let err = app
        .client()
        .attach_payment_method(authed(&ada.token, amex))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["card.cvc"]);
    let err = app
        .client()
        .attach_payment_method(authed(
            &ada.token,
            pb::AttachPaymentMethodRequest {
                customer: ada.name.clone(),
                card: None,
                request_id: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["card", "request_id"]);
    assert!(app.stored_card_numbers().await.is_empty());
}

#[tokio::test]
async fn attach_is_idempotent_without_storing_the_card() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let mut request = attach_request(&ada.name, VISA);
    request.request_id = request_id();
    let first = app
        .client()
        .attach_payment_method(authed(&ada.token, request.clone()))
        .await
        .unwrap()
        .into_inner();
    let replay = app
        .client()
        .attach_payment_method(authed(&ada.token, request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.encode_to_vec(), replay.encode_to_vec());
    let mut other = request.clone();
    other.card.as_mut().unwrap().number = MASTERCARD.into();
    let err = app
        .client()
        .attach_payment_method(authed(&ada.token, other))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "REQUEST_ID_REUSED");
    // A different CVC is not a different request (the CVC is not kept).
    let mut cvc = request.clone();
    cvc.card.as_mut().unwrap().cvc = "999".into();
    let replay = app
        .client()
        .attach_payment_method(authed(&ada.token, cvc))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.name, first.name);
    assert!(app.stored_card_numbers().await.is_empty());
}

#[tokio::test]
async fn get_list_detach_and_ownership() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    let bob = app.customer();
    let admin = app.admin();
    let method = app.attach(&ada, VISA).await.unwrap();
    let get = |user: &User| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::GetPaymentMethodRequest {
                name: method.name.clone(),
            },
        );
        async move { client.get_payment_method(request).await }
    };
    assert_eq!(get(&ada).await.unwrap().into_inner(), method);
    assert_eq!(get(&admin).await.unwrap().into_inner(), method);
    // Another customer's card is answered as a missing one; a service may
    // not look cards up at all (that depends on the caller only).
    let err = get(&bob).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "PAYMENT_METHOD_NOT_FOUND");
    let err = get(&app.service()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Bob can neither list nor attach for Ada, nor detach her card.
    let err = app
        .client()
        .list_payment_methods(authed(
            &bob.token,
            pb::ListPaymentMethodsRequest {
                customer: ada.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .client()
        .attach_payment_method(authed(&bob.token, attach_request(&ada.name, VISA)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let detach = |user: &User, request_id: String| {
        let mut client = app.client();
        let request = authed(
            &user.token,
            pb::DetachPaymentMethodRequest {
                name: method.name.clone(),
                request_id,
            },
        );
        async move { client.detach_payment_method(request).await }
    };
    let err = detach(&bob, String::new()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::NotFound, "PAYMENT_METHOD_NOT_FOUND")
    );

    // Detach with a request id twice: both succeed; without: NOT_FOUND.
    let id = request_id();
    detach(&ada, id.clone()).await.unwrap();
    detach(&ada, id).await.unwrap();
    let err = detach(&ada, String::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "PAYMENT_METHOD_NOT_FOUND");
    assert_eq!(
        reason(&get(&ada).await.unwrap_err()),
        "PAYMENT_METHOD_NOT_FOUND"
    );
    let listed = app
        .client()
        .list_payment_methods(authed(
            &admin.token,
            pb::ListPaymentMethodsRequest {
                customer: ada.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.payment_methods.is_empty());
}

#[tokio::test]
async fn list_pages_and_rejects_bad_tokens() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    for _ in 0..5 {
        app.attach(&ada, VISA).await.unwrap();
    }
    let list = |page_size: i32, page_token: String| {
        let mut client = app.client();
        let request = authed(
            &ada.token,
            pb::ListPaymentMethodsRequest {
                customer: "accounts/me".into(),
                page_size,
                page_token,
            },
        );
        async move { client.list_payment_methods(request).await }
    };
    let first = list(2, String::new()).await.unwrap().into_inner();
    assert_eq!(first.payment_methods.len(), 2);
    let second = list(2, first.next_page_token).await.unwrap().into_inner();
    let third = list(2, second.next_page_token).await.unwrap().into_inner();
    assert_eq!(third.payment_methods.len(), 1);
    assert!(third.next_page_token.is_empty());
    let err = list(2, "garbage".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["page_token"]);
    let err = list(-1, String::new()).await.unwrap_err();
    assert_eq!(fields(&err), ["page_size"]);
}

#[tokio::test]
async fn a_customer_may_attach_at_most_twenty_cards() {
    let app = TestApp::spawn().await;
    let ada = app.customer();
    for _ in 0..20 {
        app.attach(&ada, VISA).await.unwrap();
    }
    let err = app.attach(&ada, VISA).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PAYMENT_METHOD_LIMIT_REACHED");
}

#[tokio::test]
async fn every_rpc_needs_a_token() {
    let app = TestApp::spawn().await;
    let err = app
        .client()
        .attach_payment_method(attach_request("accounts/me", VISA))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .client()
        .list_payment_intents(pb::ListPaymentIntentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .client()
        .list_payment_intents(authed(
            "not-a-token",
            pb::ListPaymentIntentsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = app
        .client()
        .list_ledger_accounts(pb::ListLedgerAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}
