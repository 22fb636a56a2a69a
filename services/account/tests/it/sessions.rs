//! Sessions through the generated client against a real server and a real
//! Postgres: Login and its lockout, refresh rotation, Logout,
//! ChangePassword, and service principals' tokens.
use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, authed, fields, reason};
use backroom_proto::account::v1 as pb;
use backroom_shared::auth::{Claims, Verifier, audience};
use chrono::Duration;
use diesel::{QueryDsl as _, RunQueryDsl as _};
use tonic::Code;

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
