//! An account's addresses through the generated client against a real
//! server and a real Postgres: created, listed, read and deleted by their
//! owner only, at most twenty.
use crate::helpers::{TestApp, address, authed, fields, reason};
use backroom_proto::account::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn addresses_are_created_listed_read_and_deleted_by_their_owner_only() {
    let app = TestApp::spawn().await;
    let (alice, session) = app.customer("home@example.com").await;
    let (_, mallory) = app.customer("mallory@example.com").await;
    let create = |parent: &str, address: pb::Address| pb::CreateAddressRequest {
        parent: parent.into(),
        address: Some(address),
        request_id: String::new(),
    };
    let created = app
        .client()
        .create_address(authed(
            &session.access_token,
            create("accounts/me", address("GB")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        created
            .name
            .starts_with(&format!("{}/addresses/", alice.name))
    );
    assert_eq!(created.country_code, "GB");

    let status = app
        .client()
        .create_address(authed(
            &session.access_token,
            create("accounts/me", address("gb")),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["address.country_code"]);
    let status = app
        .client()
        .create_address(authed(
            &session.access_token,
            create(
                "accounts/me",
                pb::Address {
                    city: String::new(),
                    ..address("GB")
                },
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["address.city"]);

    // Another customer can neither read nor add to it.
    let status = app
        .client()
        .get_address(authed(
            &mallory.access_token,
            pb::GetAddressRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = app
        .client()
        .create_address(authed(
            &mallory.access_token,
            create(&alice.name, address("GB")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let listed = app
        .client()
        .list_addresses(authed(
            &session.access_token,
            pb::ListAddressesRequest {
                parent: "accounts/me".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.addresses, std::slice::from_ref(&created));

    // Checkout reads addresses with a service token.
    let service = app
        .client()
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: "payment".into(),
            client_secret: crate::helpers::PAYMENT_SECRET.into(),
            audience: "backroom.account".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let read = app
        .client()
        .get_address(authed(
            &service.access_token,
            pb::GetAddressRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, created);

    let delete = pb::DeleteAddressRequest {
        name: created.name.clone(),
        request_id: String::new(),
    };
    app.client()
        .delete_address(authed(&session.access_token, delete.clone()))
        .await
        .unwrap();
    let status = app
        .client()
        .delete_address(authed(&session.access_token, delete))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::NotFound, "ADDRESS_NOT_FOUND".into())
    );
}

#[tokio::test]
async fn an_account_keeps_at_most_twenty_addresses() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("many@example.com").await;
    for _ in 0..20 {
        app.client()
            .create_address(authed(
                &session.access_token,
                pb::CreateAddressRequest {
                    parent: "accounts/me".into(),
                    address: Some(address("DE")),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let status = app
        .client()
        .create_address(authed(
            &session.access_token,
            pb::CreateAddressRequest {
                parent: "accounts/me".into(),
                address: Some(address("DE")),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::FailedPrecondition, "ADDRESS_LIMIT_REACHED".into())
    );
}
