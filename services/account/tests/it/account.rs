//! AccountService's accounts through the generated client against a real
//! server and a real Postgres: registration, reading and updating an
//! account, the admin's list, disabling and enabling, and NOT_FOUND for
//! what is missing. Sessions are in `sessions`, addresses in `addresses`.
use crate::helpers::{PASSWORD, TestApp, address, authed, fields, reason};
use backroom_proto::account::v1 as pb;
use diesel::{QueryDsl as _, RunQueryDsl as _};
use tonic::Code;

#[tokio::test]
async fn register_normalises_the_email_and_returns_an_active_customer() {
    let app = TestApp::spawn().await;
    let account = app.register("  Ada.Lovelace@Example.COM ").await;
    assert_eq!(account.email, "ada.lovelace@example.com");
    assert!(account.name.starts_with("accounts/"));
    assert_eq!(account.roles, ["customer"]);
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert!(!account.etag.is_empty());
    // The normalised email logs in whatever its case.
    app.login("ADA.LOVELACE@example.com", PASSWORD)
        .await
        .unwrap();
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_create_exactly_one_account() {
    let app = TestApp::spawn().await;
    let variants = [
        "race@example.com",
        " RACE@example.com",
        "Race@Example.com  ",
        "\trace@EXAMPLE.COM",
    ];
    let calls = (0..50).map(|i| {
        let mut client = app.client();
        let email = variants[i % variants.len()].to_owned();
        async move {
            client
                .register(pb::RegisterRequest {
                    email,
                    password: PASSWORD.into(),
                    display_name: format!("racer {i}"),
                    request_id: String::new(),
                })
                .await
        }
    });
    let mut results = futures_util::future::join_all(calls).await;
    // Registrations queue a password hash each, in the bulk share of the
    // hashing queue: past it they are shed (RESOURCE_EXHAUSTED OVERLOADED),
    // and a client retries them with backoff, as the protos say.
    for (i, result) in results.iter_mut().enumerate() {
        while matches!(result, Err(s) if s.code() == Code::ResourceExhausted && reason(s) == "OVERLOADED")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            *result = app
                .client()
                .register(pb::RegisterRequest {
                    email: variants[i % variants.len()].to_owned(),
                    password: PASSWORD.into(),
                    display_name: format!("racer {i}"),
                    request_id: String::new(),
                })
                .await;
        }
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists && reason(s) == "EMAIL_TAKEN"))
        .count();
    assert_eq!((ok, taken), (1, 49), "{results:?}");
}

#[tokio::test]
async fn a_replayed_register_returns_the_first_response_and_a_reused_id_is_refused() {
    let app = TestApp::spawn().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = |email: &str| pb::RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        display_name: "Once".into(),
        request_id: request_id.clone(),
    };
    let first = app
        .client()
        .register(request("once@example.com"))
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client()
        .register(request(" ONCE@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a replay returns the stored response");
    let status = app
        .client()
        .register(request("other@example.com"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn stored_hashes_are_argon2id_with_the_required_parameters() {
    let app = TestApp::spawn().await;
    app.register("hash@example.com").await;
    let hashes: Vec<String> = app
        .pool
        .run(|conn| {
            use backroom_account::db::schema::account::accounts;
            Ok::<_, backroom_shared::db::DbError>(
                accounts::table.select(accounts::password_hash).load(conn)?,
            )
        })
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2, "the bootstrap admin and the new account");
    for hash in hashes {
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains(PASSWORD));
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let register =
        |email: &str, password: &str, display_name: &str, request_id: &str| pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            display_name: display_name.into(),
            request_id: request_id.into(),
        };
    let cases = [
        (register("not-an-email", PASSWORD, "x", ""), "email"),
        (register("", PASSWORD, "x", ""), "email"),
        (register("a@example.com", "short", "x", ""), "password"),
        (
            register("a@example.com", &"p".repeat(129), "x", ""),
            "password",
        ),
        (
            register("longpass1@example.com", "LongPass1@example.com", "x", ""),
            "password",
        ),
        (register("a@example.com", PASSWORD, "", ""), "display_name"),
        (
            register("a@example.com", PASSWORD, &"n".repeat(101), ""),
            "display_name",
        ),
        (
            register("a@example.com", PASSWORD, "x", "not-a-uuid"),
            "request_id",
        ),
        (
            register(
                &format!("{}@example.com", "a".repeat(300)),
                PASSWORD,
                "x",
                "",
            ),
            "email",
        ),
    ];
    for (request, field) in cases {
        let status = app.client().register(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason(&status), "VALIDATION_FAILED");
        assert_eq!(fields(&status), [field], "{status:?}");
    }
    // Nothing was stored by the rejected calls.
    let admin = app.admin().await;
    let list = app
        .client()
        .list_accounts(authed(
            &admin.access_token,
            pb::ListAccountsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.accounts.len(), 1, "only the bootstrap admin");

    for (size, token, field) in [(-1, "", "page_size"), (10, "garbage!", "page_token")] {
        let status = app
            .client()
            .list_accounts(authed(
                &admin.access_token,
                pb::ListAccountsRequest {
                    page_size: size,
                    page_token: token.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), fields(&status)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
}

#[tokio::test]
async fn owners_read_and_update_their_account_with_etags_and_nobody_else_does() {
    let app = TestApp::spawn().await;
    let (alice, alice_session) = app.customer("alice@example.com").await;
    let (bob, bob_session) = app.customer("bob@example.com").await;

    let me = app
        .client()
        .get_account(authed(
            &alice_session.access_token,
            pb::GetAccountRequest {
                name: "accounts/me".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me, alice);

    // A customer cannot read or change another account.
    let status = app
        .client()
        .get_account(authed(
            &alice_session.access_token,
            pb::GetAccountRequest {
                name: bob.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "ACCESS_DENIED".into())
    );
    let update = |account: &pb::Account, display_name: &str, etag: &str, paths: &[&str]| {
        pb::UpdateAccountRequest {
            account: Some(pb::Account {
                name: account.name.clone(),
                display_name: display_name.into(),
                roles: vec!["customer".into(), "admin".into()],
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            request_id: String::new(),
        }
    };
    let status = app
        .client()
        .update_account(authed(
            &alice_session.access_token,
            update(&bob, "Hacked", "", &["display_name"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The owner updates with the current etag; a stale etag is ABORTED.
    let renamed = app
        .client()
        .update_account(authed(
            &alice_session.access_token,
            update(&alice, "Alice L.", &alice.etag, &["display_name"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Alice L.");
    assert_ne!(renamed.etag, alice.etag);
    let status = app
        .client()
        .update_account(authed(
            &alice_session.access_token,
            update(&alice, "Again", &alice.etag, &["display_name"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Aborted, "ETAG_MISMATCH".into())
    );
    // Owners cannot grant themselves roles; bad masks are named.
    let status = app
        .client()
        .update_account(authed(
            &alice_session.access_token,
            update(&alice, "x", "", &["roles"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = app
        .client()
        .update_account(authed(
            &alice_session.access_token,
            update(&alice, "x", "", &["email"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["update_mask"]);

    // An admin can read and change anyone, roles included.
    let admin = app.admin().await;
    let read = app
        .client()
        .get_account(authed(
            &admin.access_token,
            pb::GetAccountRequest {
                name: bob.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.email, "bob@example.com");
    let promoted = app
        .client()
        .update_account(authed(
            &admin.access_token,
            update(&bob, "", "", &["roles"]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.roles, ["admin", "customer"]);
    drop(bob_session);

    let status = app
        .client()
        .get_account(authed(
            &admin.access_token,
            pb::GetAccountRequest {
                name: format!("accounts/{}", uuid::Uuid::now_v7()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::NotFound, "ACCOUNT_NOT_FOUND".into())
    );
}

#[tokio::test]
async fn admins_list_accounts_in_pages_and_customers_cannot() {
    let app = TestApp::spawn().await;
    let (_, customer) = app.customer("c0@example.com").await;
    for i in 1..5 {
        app.register(&format!("c{i}@example.com")).await;
    }
    let status = app
        .client()
        .list_accounts(authed(
            &customer.access_token,
            pb::ListAccountsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let admin = app.admin().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client()
            .list_accounts(authed(
                &admin.access_token,
                pb::ListAccountsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    email_prefix: "c".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts.into_iter().map(|a| a.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        (0..5)
            .map(|i| format!("c{i}@example.com"))
            .collect::<Vec<_>>()
    );

    // A token is bound to its filters.
    let first = app
        .client()
        .list_accounts(authed(
            &admin.access_token,
            pb::ListAccountsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let status = app
        .client()
        .list_accounts(authed(
            &admin.access_token,
            pb::ListAccountsRequest {
                page_size: 1,
                page_token: first.next_page_token,
                email_prefix: "c".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["page_token"]);
}

#[tokio::test]
async fn a_disabled_account_can_neither_log_in_nor_refresh_until_enabled() {
    let app = TestApp::spawn().await;
    let (account, session) = app.customer("disabled@example.com").await;
    let admin = app.admin().await;
    let disable = |name: &str| pb::DisableAccountRequest {
        name: name.into(),
        reason: "chargebacks".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let status = app
        .client()
        .disable_account(authed(&session.access_token, disable(&account.name)))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "customers cannot disable"
    );

    let disabled = app
        .client()
        .disable_account(authed(&admin.access_token, disable(&account.name)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.state, pb::AccountState::Disabled as i32);
    assert_eq!(disabled.disable_reason, "chargebacks");
    // The right password of a disabled account answers exactly like a wrong
    // one: the answer must not confirm the password.
    let status = app
        .login("disabled@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "INVALID_CREDENTIALS".into())
    );
    // The access token it still holds stops working at once.
    let status = app
        .client()
        .get_account(authed(
            &session.access_token,
            pb::GetAccountRequest {
                name: "accounts/me".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "TOKEN_REVOKED".into())
    );
    let status = app
        .client()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = app
        .client()
        .disable_account(authed(&admin.access_token, disable("accounts/me")))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CANNOT_DISABLE_SELF");

    let enabled = app
        .client()
        .enable_account(authed(
            &admin.access_token,
            pb::EnableAccountRequest {
                name: account.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enabled.state, pb::AccountState::Active as i32);
    app.login("disabled@example.com", PASSWORD).await.unwrap();
}

#[tokio::test]
async fn admin_calls_on_missing_accounts_and_addresses_are_not_found() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let ghost = format!("accounts/{}", uuid::Uuid::now_v7());
    let ghost_address = format!("{ghost}/addresses/{}", uuid::Uuid::now_v7());
    let token = admin.access_token.as_str();
    let mut client = app.client();
    let mut checks: Vec<(&str, tonic::Status, &str)> = Vec::new();
    checks.push((
        "UpdateAccount",
        client
            .update_account(authed(
                token,
                pb::UpdateAccountRequest {
                    account: Some(pb::Account {
                        name: ghost.clone(),
                        display_name: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        "ACCOUNT_NOT_FOUND",
    ));
    checks.push((
        "DisableAccount",
        client
            .disable_account(authed(
                token,
                pb::DisableAccountRequest {
                    name: ghost.clone(),
                    reason: "r".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        "ACCOUNT_NOT_FOUND",
    ));
    checks.push((
        "EnableAccount",
        client
            .enable_account(authed(
                token,
                pb::EnableAccountRequest {
                    name: ghost.clone(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        "ACCOUNT_NOT_FOUND",
    ));
    checks.push((
        "CreateAddress",
        client
            .create_address(authed(
                token,
                pb::CreateAddressRequest {
                    parent: ghost.clone(),
                    address: Some(address("FR")),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err(),
        "ACCOUNT_NOT_FOUND",
    ));
    checks.push((
        "ListAddresses",
        client
            .list_addresses(authed(
                token,
                pb::ListAddressesRequest {
                    parent: ghost.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err(),
        "ACCOUNT_NOT_FOUND",
    ));
    checks.push((
        "GetAddress",
        client
            .get_address(authed(
                token,
                pb::GetAddressRequest {
                    name: ghost_address,
                },
            ))
            .await
            .unwrap_err(),
        "ADDRESS_NOT_FOUND",
    ));
    for (rpc, status, expected) in checks {
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::NotFound, expected.to_owned()),
            "{rpc}: {status:?}"
        );
    }
}
