//! No password, hash or token ever reaches a log line: the whole account
//! flow runs with every log level and span event captured, then the capture
//! is searched for each secret. The capture is the process's global
//! subscriber: the other tests running meanwhile are searched too.

use crate::helpers::{PASSWORD, TestApp, authed};
use backroom_proto::account::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_hash_or_token_appears_in_any_log_line() {
    let capture = backroom_shared::testing::LogCapture::install();

    let app = TestApp::spawn().await;
    let (account, session) = app.customer("secretive@example.com").await;
    let refreshed = app
        .client()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // A reuse, a failed login and a failed password change log warnings.
    let _ = app
        .client()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await;
    let _ = app
        .login("secretive@example.com", "wrong password 42")
        .await;
    let new_password = "a whole new password";
    let fresh = app.login("secretive@example.com", PASSWORD).await.unwrap();
    app.client()
        .change_password(authed(
            &fresh.access_token,
            pb::ChangePasswordRequest {
                name: account.name.clone(),
                current_password: PASSWORD.into(),
                new_password: new_password.into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let service = app
        .client()
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: "payment".into(),
            client_secret: crate::helpers::PAYMENT_SECRET.into(),
            audience: "backroom.payment".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let hash: String = app
        .pool
        .run(|conn| {
            use backroom_account::db::schema::account::accounts;
            use diesel::{ExpressionMethods as _, QueryDsl as _, RunQueryDsl as _};
            Ok::<_, backroom_shared::db::DbError>(
                accounts::table
                    .filter(accounts::email.eq("secretive@example.com"))
                    .select(accounts::password_hash)
                    .first(conn)?,
            )
        })
        .await
        .unwrap();

    let logs = capture.text();
    assert!(
        logs.lines().count() > 50,
        "the capture saw the flow:\n{logs}"
    );
    assert!(logs.contains("account registered"));
    let secrets = [
        ("password", PASSWORD.to_owned()),
        ("new password", new_password.to_owned()),
        ("wrong password", "wrong password 42".to_owned()),
        ("client secret", crate::helpers::PAYMENT_SECRET.to_owned()),
        ("password hash", hash.clone()),
        (
            "hash salt+digest",
            hash.rsplit('$').next().unwrap().to_owned(),
        ),
        ("access token", session.access_token.clone()),
        ("refreshed access token", refreshed.access_token.clone()),
        ("service token", service.access_token.clone()),
        ("refresh token", session.refresh_token.clone()),
        ("rotated refresh token", refreshed.refresh_token.clone()),
        (
            "signing key",
            app.keys_pem.lines().nth(1).unwrap().to_owned(),
        ),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "{what} found in the logs");
    }
    assert!(
        !logs.contains("$argon2id$"),
        "a password hash found in the logs"
    );
}
