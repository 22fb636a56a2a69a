//! AccountService through the generated client against a real server and
//! a real Postgres: every RPC, its happy path and its documented errors.

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, authed, fields, reason};
use backroom_proto::account::v1 as pb;
use backroom_shared::auth::{Claims, Verifier, audience};
use chrono::Duration;
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
async fn login_issues_an_eddsa_token_with_the_documented_claims() {
    let app = TestApp::spawn().await;
    let (account, session) = app.customer("claims@example.com").await;
    assert_eq!(session.token_type, "Bearer");
    assert_eq!(session.account, account.name);
    assert_eq!(session.refresh_token.len(), 43, "256 bits, base64url");

    let header = jsonwebtoken::decode_header(&session.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwks = app
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let key = &jwks.keys[0];
    assert_eq!(
        (
            key.kty.as_str(),
            key.crv.as_str(),
            key.alg.as_str(),
            key.r#use.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));

    let verifier = Verifier::with_keys(
        "backroom",
        audience::INVENTORY,
        &[backroom_shared::auth::PublicKey {
            kid: key.kid.clone(),
            x: key.x.clone(),
        }],
    );
    let claims: Claims = verifier.verify(&session.access_token).await.unwrap();
    assert_eq!(claims.iss, "backroom");
    assert_eq!(claims.sub, account.name);
    assert_eq!(claims.aud, audience::ALL);
    assert_eq!(claims.exp - claims.iat, 15 * 60);
    assert_eq!(claims.nbf, claims.iat);
    assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    assert_eq!(claims.roles, ["customer"]);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_answer_identically() {
    let app = TestApp::spawn().await;
    app.register("known@example.com").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    let wrong = app
        .login("known@example.com", "wrong password!")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        (unknown.code(), unknown.message()),
        (wrong.code(), wrong.message())
    );
    assert_eq!(reason(&unknown), "INVALID_CREDENTIALS");
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn five_failures_lock_the_account_for_a_growing_wait_and_success_resets() {
    let app = TestApp::spawn().await;
    app.register("locked@example.com").await;
    for _ in 0..5 {
        let status = app
            .login("locked@example.com", "wrong password!")
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "INVALID_CREDENTIALS");
    }
    // Locked: even the right password is refused, without being checked.
    let status = app.login("locked@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "ACCOUNT_LOCKED".into())
    );
    let info = status_metadata(&status);
    assert_eq!(info.get("retry_after").map(String::as_str), Some("60"));

    // The lock lifts after a minute.
    app.clock.advance(Duration::seconds(61));
    app.login("locked@example.com", PASSWORD)
        .await
        .expect("lock lifted");

    // Success reset the count: four failures do not lock again...
    for _ in 0..4 {
        app.login("locked@example.com", "wrong password!")
            .await
            .unwrap_err();
    }
    app.login("locked@example.com", PASSWORD)
        .await
        .expect("not locked after 4");
    // ...and the wait grows only with consecutive locks.
    for _ in 0..5 {
        app.login("locked@example.com", "wrong password!")
            .await
            .unwrap_err();
    }
    let status = app.login("locked@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_LOCKED");
    app.clock.advance(Duration::seconds(61));
    app.login("locked@example.com", PASSWORD)
        .await
        .expect("first lock again lasts a minute");
}

#[tokio::test]
async fn consecutive_locks_wait_longer() {
    let app = TestApp::spawn().await;
    app.register("twice@example.com").await;
    for _ in 0..5 {
        app.login("twice@example.com", "wrong password!")
            .await
            .unwrap_err();
    }
    app.clock.advance(Duration::seconds(61));
    for _ in 0..5 {
        app.login("twice@example.com", "wrong password!")
            .await
            .unwrap_err();
    }
    app.clock.advance(Duration::seconds(61));
    let status = app.login("twice@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(
        reason(&status),
        "ACCOUNT_LOCKED",
        "the second lock lasts two minutes"
    );
    app.clock.advance(Duration::seconds(60));
    app.login("twice@example.com", PASSWORD)
        .await
        .expect("lifted after two minutes");
}

fn status_metadata(status: &tonic::Status) -> std::collections::HashMap<String, String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_hash_with_old_parameters_is_rehashed_on_login() {
    use argon2::{Argon2, Params, PasswordHasher as _};
    use backroom_account::db::schema::account::accounts;
    use diesel::ExpressionMethods as _;
    let app = TestApp::spawn().await;
    app.register("old@example.com").await;
    let old = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::new(4096, 1, 1, None).unwrap(),
    )
    .hash_password(PASSWORD.as_bytes())
    .unwrap()
    .to_string();
    let stored_old = old.clone();
    app.pool
        .run(move |conn| {
            diesel::update(accounts::table.filter(accounts::email.eq("old@example.com")))
                .set(accounts::password_hash.eq(stored_old))
                .execute(conn)?;
            Ok::<_, backroom_shared::db::DbError>(())
        })
        .await
        .unwrap();
    app.login("old@example.com", PASSWORD)
        .await
        .expect("old hash still verifies");
    let now: String = app
        .pool
        .run(|conn| {
            Ok::<_, backroom_shared::db::DbError>(
                accounts::table
                    .filter(accounts::email.eq("old@example.com"))
                    .select(accounts::password_hash)
                    .first(conn)?,
            )
        })
        .await
        .unwrap();
    assert!(now.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{now}");
    app.login("old@example.com", PASSWORD)
        .await
        .expect("new hash verifies");
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_rotated_token_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let (_, first) = app.customer("rotate@example.com").await;
    let refresh = |token: &str| {
        let mut client = app.client();
        let token = token.to_owned();
        async move {
            client
                .refresh_session(pb::RefreshSessionRequest {
                    refresh_token: token,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let second = refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    let third = refresh(&second.refresh_token).await.unwrap();

    // Reuse of the first (rotated) token: refused, and the family dies…
    let status = refresh(&first.refresh_token).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "REFRESH_TOKEN_REUSED".into())
    );
    // …including the newest token.
    let status = refresh(&third.refresh_token).await.unwrap_err();
    assert_eq!(reason(&status), "SESSION_REVOKED");
    // Another session of the same account is untouched.
    let other = app.login("rotate@example.com", PASSWORD).await.unwrap();
    refresh(&other.refresh_token)
        .await
        .expect("other family still valid");

    let status = refresh("not-a-token").await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_REFRESH_TOKEN");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_at_most_one_succeed() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("concurrent@example.com").await;
    let calls = (0..10).map(|_| {
        let mut client = app.client();
        let token = session.refresh_token.clone();
        async move {
            client
                .refresh_session(pb::RefreshSessionRequest {
                    refresh_token: token,
                })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok <= 1, "{ok} refreshes succeeded");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("expired@example.com").await;
    app.clock.advance(Duration::days(31));
    let status = app
        .client()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "REFRESH_TOKEN_EXPIRED");
}

#[tokio::test]
async fn logout_revokes_the_session_and_reveals_nothing_about_unknown_tokens() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("logout@example.com").await;
    app.client()
        .logout(pb::LogoutRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap();
    let status = app
        .client()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "SESSION_REVOKED");
    app.client()
        .logout(pb::LogoutRequest {
            refresh_token: "unknown".into(),
        })
        .await
        .expect("unknown tokens log out quietly");
    let status = app
        .client()
        .logout(pb::LogoutRequest::default())
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["refresh_token"]);
}

#[tokio::test]
async fn change_password_needs_the_current_one_and_revokes_every_session() {
    let app = TestApp::spawn().await;
    let (account, session) = app.customer("change@example.com").await;
    let other = app.login("change@example.com", PASSWORD).await.unwrap();
    let change = |current: &str, new: &str| pb::ChangePasswordRequest {
        name: "accounts/me".into(),
        current_password: current.into(),
        new_password: new.into(),
        request_id: String::new(),
    };
    let status = app
        .client()
        .change_password(authed(
            &session.access_token,
            change("wrong password!", "brand new password"),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::InvalidArgument, "INVALID_CREDENTIALS".into())
    );
    assert_eq!(fields(&status), ["current_password"]);
    let status = app
        .client()
        .change_password(authed(&session.access_token, change(PASSWORD, "short")))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["new_password"]);
    let status = app
        .client()
        .change_password(authed(
            &session.access_token,
            change(PASSWORD, "change@example.com"),
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["new_password"]);

    app.client()
        .change_password(authed(
            &session.access_token,
            change(PASSWORD, "brand new password"),
        ))
        .await
        .unwrap();
    for token in [session.refresh_token, other.refresh_token] {
        let status = app
            .client()
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "SESSION_REVOKED");
    }
    assert!(app.login("change@example.com", PASSWORD).await.is_err());
    app.login("change@example.com", "brand new password")
        .await
        .unwrap();

    // Nobody else changes it, not even an admin.
    let admin = app.admin().await;
    let status = app
        .client()
        .change_password(authed(
            &admin.access_token,
            pb::ChangePasswordRequest {
                name: account.name,
                ..change("brand new password", "admin chosen password")
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
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

fn address(country: &str) -> pb::Address {
    pb::Address {
        recipient: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country_code: country.into(),
        ..Default::default()
    }
}

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

#[tokio::test]
async fn service_principals_get_service_tokens_for_known_audiences_only() {
    let app = TestApp::spawn().await;
    let issue = |id: &str, secret: &str, audience: &str| pb::IssueServiceTokenRequest {
        client_id: id.into(),
        client_secret: secret.into(),
        audience: audience.into(),
    };
    let token = app
        .client()
        .issue_service_token(issue(
            "inventory",
            crate::helpers::INVENTORY_SECRET,
            "backroom.account",
        ))
        .await
        .unwrap()
        .into_inner();
    let jwks = app
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = jwks
        .keys
        .iter()
        .map(|k| backroom_shared::auth::PublicKey {
            kid: k.kid.clone(),
            x: k.x.clone(),
        })
        .collect();
    let claims = Verifier::with_keys("backroom", audience::ACCOUNT, &keys)
        .verify(&token.access_token)
        .await
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.roles.as_slice()),
        ("services/inventory", &["service".to_owned()][..])
    );
    assert_eq!(claims.aud, ["backroom.account"]);

    for (id, secret) in [
        ("inventory", "wrong-secret-123"),
        ("nobody", crate::helpers::INVENTORY_SECRET),
    ] {
        let status = app
            .client()
            .issue_service_token(issue(id, secret, "backroom.account"))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::Unauthenticated, "INVALID_CLIENT".into())
        );
    }
    let status = app
        .client()
        .issue_service_token(issue(
            "inventory",
            crate::helpers::INVENTORY_SECRET,
            "backroom.shipping",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::InvalidArgument, "UNKNOWN_AUDIENCE".into())
    );
    assert_eq!(fields(&status), ["audience"]);

    let status = app
        .client()
        .issue_service_token(issue(
            "inventory",
            crate::helpers::INVENTORY_SECRET,
            "backroom.payment",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "AUDIENCE_NOT_ALLOWED".into())
    );
    app.client()
        .issue_service_token(issue(
            "payment",
            crate::helpers::PAYMENT_SECRET,
            "backroom.inventory",
        ))
        .await
        .expect("payment may ask for the audiences it was given");

    // A service token is not a customer: it cannot list accounts.
    let status = app
        .client()
        .list_accounts(authed(
            &token.access_token,
            pb::ListAccountsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let _ = ADMIN_EMAIL;
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

#[tokio::test]
async fn change_password_failures_count_towards_the_lock() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("guess@example.com").await;
    let attempt = |current: &str| pb::ChangePasswordRequest {
        name: "accounts/me".into(),
        current_password: current.into(),
        new_password: "a different password".into(),
        request_id: String::new(),
    };
    for _ in 0..5 {
        let status = app
            .client()
            .change_password(authed(&session.access_token, attempt("wrong password!")))
            .await
            .unwrap_err();
        assert_eq!(reason(&status), "INVALID_CREDENTIALS");
    }
    let status = app
        .client()
        .change_password(authed(&session.access_token, attempt(PASSWORD)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "ACCOUNT_LOCKED".into())
    );
}
