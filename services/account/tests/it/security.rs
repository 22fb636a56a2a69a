//! The account service against an attacker: parallel guesses, lockout as a
//! weapon, enumeration, a disabled or demoted admin, rate limits, session
//! lifetime, bootstrap promotion and service-principal configuration. Real
//! server on 127.0.0.1:0, real Postgres, generated clients; several client
//! addresses from 127.0.0.0/8.
//!
//! Over 600 lines: one test per finding of the security review, kept
//! together so the list can be checked against the README's security model.

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, authed, reason};
use backroom_account::{AccountConfig, Deps, bootstrap_admin, db::repo};
use backroom_proto::account::v1 as pb;
use backroom_shared::{
    config::{AuthConfig, Secret, ServerConfig},
    errors::reason_of,
};
use chrono::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const WRONG: &str = "not the password!";

fn login(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

/// (code, reason) of every outcome, counted.
fn tally(outcomes: &[Result<pb::Session, Status>]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for outcome in outcomes {
        let key = match outcome {
            Ok(_) => "OK".to_owned(),
            Err(status) => format!("{:?} {}", status.code(), reason(status)),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

async fn guesses(
    app: &TestApp,
    email: &str,
    passwords: Vec<String>,
) -> Vec<Result<pb::Session, Status>> {
    let calls = passwords.into_iter().map(|password| {
        let mut client = app.client();
        let request = login(email, &password);
        async move { client.login(request).await.map(tonic::Response::into_inner) }
    });
    futures_util::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_past_the_limit_are_refused_without_a_check() {
    let app = TestApp::spawn().await;
    app.register("target@example.com").await;

    // 60 wrong guesses at once from one client: exactly 5 are checked.
    let outcomes = guesses(&app, "target@example.com", vec![WRONG.to_owned(); 60]).await;
    let counts = tally(&outcomes);
    println!("60 concurrent wrong guesses: {counts:?}");
    assert_eq!(
        counts.get("Unauthenticated INVALID_CREDENTIALS"),
        Some(&5),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("PermissionDenied ACCOUNT_LOCKED"),
        Some(&55),
        "{counts:?}"
    );
    // The right password is locked out too, until the lock ends.
    let status = app.login("target@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_LOCKED");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d > std::time::Duration::ZERO)
    );
    app.clock.advance(Duration::seconds(61));
    app.login("target@example.com", PASSWORD)
        .await
        .expect("lock lifted");

    // The attacker's mix: 59 wrong and the right one, all at once. At most
    // five are checked before a success resets the count (and five after),
    // never all of them.
    app.register("mixed@example.com").await;
    let mut passwords = vec![WRONG.to_owned(); 59];
    passwords.insert(30, PASSWORD.to_owned());
    let outcomes = guesses(&app, "mixed@example.com", passwords).await;
    let counts = tally(&outcomes);
    println!("59 wrong + 1 right, concurrently: {counts:?}");
    let checked_wrong = counts
        .get("Unauthenticated INVALID_CREDENTIALS")
        .copied()
        .unwrap_or(0);
    let succeeded = counts.get("OK").copied().unwrap_or(0);
    assert!(checked_wrong <= 5 + 5 * succeeded, "{counts:?}");
    assert!(
        counts
            .get("PermissionDenied ACCOUNT_LOCKED")
            .copied()
            .unwrap_or(0)
            >= 49
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_elsewhere_cannot_lock_the_owner_out_and_the_ceiling_holds_for_new_clients() {
    let app = TestApp::spawn().await;
    app.register("owner@example.com").await;
    let mut attacker = app.client_from("127.0.0.2");
    for _ in 0..5 {
        let _ = attacker.login(login("owner@example.com", WRONG)).await;
    }
    let status = attacker
        .login(login("owner@example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&status),
        "ACCOUNT_LOCKED",
        "the attacker's client is locked"
    );
    // The owner, from their own address, is not.
    app.login("owner@example.com", PASSWORD)
        .await
        .expect("the owner logs in from another address");

    // Guessing spread over many addresses meets the ceiling (50 in the
    // window): then the email is locked for every client it has not logged
    // in from, the right password included.
    let mut spent = 5;
    for n in 3..=60u8 {
        let mut client = app.client_from(&format!("127.0.0.{n}"));
        for _ in 0..4 {
            let _ = client.login(login("owner@example.com", WRONG)).await;
            spent += 1;
        }
    }
    let status = app
        .client_from("127.0.0.200")
        .login(login("owner@example.com", PASSWORD))
        .await
        .unwrap_err();
    println!(
        "{spent} guesses from 59 addresses: a new client gets {:?}",
        reason(&status)
    );
    assert_eq!(reason(&status), "ACCOUNT_LOCKED");
    // The owner's own client, known from its last login, is not bound by
    // the ceiling: the attack does not lock the owner out.
    app.login("owner@example.com", PASSWORD)
        .await
        .expect("the owner's known client logs in past the ceiling lock");
    // Nor is a known client a way round the lock for guesses: five wrong
    // ones from it lock it like any other.
    for _ in 0..5 {
        let _ = app.login("owner@example.com", WRONG).await;
    }
    let status = app.login("owner@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_LOCKED");
    // An admin sees the account-wide lock.
    let admin = app.admin().await;
    let accounts = app
        .client()
        .list_accounts(authed(
            &admin.access_token,
            pb::ListAccountsRequest {
                email_prefix: "owner@".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert!(
        accounts[0].lock_expire_time.is_some(),
        "the ceiling lock is visible"
    );
}

/// (code, reason, message, metadata keys) of a failed login.
fn shape(status: &Status) -> (Code, String, String, Vec<String>) {
    let details = status.get_error_details();
    let mut keys: Vec<String> = details
        .error_info()
        .map(|info| info.metadata.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    (
        status.code(),
        reason(status),
        status.message().to_owned(),
        keys,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_known_emails_answer_alike_in_every_state() {
    let app = TestApp::spawn().await;
    app.register("known@example.com").await;
    let (disabled, _) = app.customer("disabled@example.com").await;
    let admin = app.admin().await;
    app.client()
        .disable_account(authed(
            &admin.access_token,
            pb::DisableAccountRequest {
                name: disabled.name,
                reason: "test".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();

    // A wrong password, an unknown email, and the RIGHT password of a
    // disabled account: one answer.
    let known = app.login("known@example.com", WRONG).await.unwrap_err();
    let unknown = app.login("nobody@example.com", WRONG).await.unwrap_err();
    let right_but_disabled = app
        .login("disabled@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(shape(&known), shape(&unknown));
    assert_eq!(shape(&known), shape(&right_but_disabled));
    assert_eq!(reason(&known), "INVALID_CREDENTIALS");

    // Locked: unknown emails lock exactly like known ones, answering the same.
    for _ in 0..4 {
        let _ = app.login("known@example.com", WRONG).await;
        let _ = app.login("nobody@example.com", WRONG).await;
    }
    let known = app.login("known@example.com", WRONG).await.unwrap_err();
    let unknown = app.login("nobody@example.com", WRONG).await.unwrap_err();
    assert_eq!(reason(&known), "ACCOUNT_LOCKED");
    assert_eq!(shape(&known).0, shape(&unknown).0);
    assert_eq!(shape(&known).1, shape(&unknown).1);
    assert_eq!(shape(&known).3, shape(&unknown).3);
}

async fn list_accounts(app: &TestApp, token: &str) -> Result<usize, Status> {
    app.client()
        .list_accounts(authed(token, pb::ListAccountsRequest::default()))
        .await
        .map(|r| r.into_inner().accounts.len())
}

fn set_roles(name: &str, roles: &[&str]) -> pb::UpdateAccountRequest {
    pb::UpdateAccountRequest {
        account: Some(pb::Account {
            name: name.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["roles".into()],
        }),
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_demoted_admin_keeps_no_power() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let (bea, _) = app.customer("bea@example.com").await;
    app.client()
        .update_account(authed(
            &root.access_token,
            set_roles(&bea.name, &["admin", "customer"]),
        ))
        .await
        .unwrap();
    let bea_admin = app.login("bea@example.com", PASSWORD).await.unwrap();
    assert!(list_accounts(&app, &bea_admin.access_token).await.is_ok());

    // Disabled: her token no longer works, not even to enable herself.
    app.client()
        .disable_account(authed(
            &root.access_token,
            pb::DisableAccountRequest {
                name: bea.name.clone(),
                reason: "left the company".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let status = app
        .client()
        .enable_account(authed(
            &bea_admin.access_token,
            pb::EnableAccountRequest {
                name: "accounts/me".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "TOKEN_REVOKED".into())
    );
    let status = list_accounts(&app, &bea_admin.access_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TOKEN_REVOKED");
    let account = app
        .client()
        .get_account(authed(
            &root.access_token,
            pb::GetAccountRequest {
                name: bea.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        account.state,
        pb::AccountState::Disabled as i32,
        "still disabled"
    );

    // Enabled again: the old token stays revoked.
    app.client()
        .enable_account(authed(
            &root.access_token,
            pb::EnableAccountRequest {
                name: bea.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let status = list_accounts(&app, &bea_admin.access_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TOKEN_REVOKED");

    // Demoted: the token she holds (role admin in its claims) stops
    // counting, and a new one has no admin role.
    let bea_admin = app.login("bea@example.com", PASSWORD).await.unwrap();
    app.client()
        .update_account(authed(
            &root.access_token,
            set_roles(&bea.name, &["customer"]),
        ))
        .await
        .unwrap();
    let status = list_accounts(&app, &bea_admin.access_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TOKEN_REVOKED");
    let bea_customer = app.login("bea@example.com", PASSWORD).await.unwrap();
    let status = list_accounts(&app, &bea_customer.access_token)
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::PermissionDenied, "ACCESS_DENIED".into())
    );
    // A token whose claims say admin is not enough: the database decides.
    let keys = backroom_account::domain::tokens::SigningKeys::from_pem(&app.keys_pem).unwrap();
    let issuer =
        backroom_account::domain::tokens::TokenIssuer::new(keys, "backroom", Duration::minutes(15));
    let (forged_roles, _) = issuer
        .issue_versioned(
            bea.name.clone(),
            vec!["admin".into(), "customer".into()],
            vec!["backroom.account".into()],
            99,
            chrono::Utc::now(),
        )
        .unwrap();
    let status = list_accounts(&app, &forged_roles).await.unwrap_err();
    assert_eq!(reason(&status), "ACCESS_DENIED");

    // An admin cannot change her own roles or enable herself.
    let status = app
        .client()
        .update_account(authed(
            &root.access_token,
            set_roles("accounts/me", &["admin", "customer"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CANNOT_CHANGE_OWN_ROLES");
    let status = app
        .client()
        .enable_account(authed(
            &root.access_token,
            pb::EnableAccountRequest {
                name: "accounts/me".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CANNOT_ENABLE_SELF");
}

async fn revocations(app: &TestApp, token: &str) -> Result<Vec<pb::TokenRevocation>, Status> {
    app.client()
        .list_token_revocations(authed(token, pb::ListTokenRevocationsRequest::default()))
        .await
        .map(|r| r.into_inner().token_revocations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_disables_and_role_changes_are_listed_for_the_verifiers() {
    let app = TestApp::spawn().await;
    let root = app.admin().await;
    let service = app.service_token("inventory", "backroom.account").await;
    let (ann, ann_session) = app.customer("ann@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;
    let (cat, _) = app.customer("cat@example.com").await;
    assert!(revocations(&app, &service).await.unwrap().is_empty());

    app.client()
        .change_password(authed(
            &ann_session.access_token,
            pb::ChangePasswordRequest {
                name: "accounts/me".into(),
                current_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    app.client()
        .disable_account(authed(
            &root.access_token,
            pb::DisableAccountRequest {
                name: bob.name.clone(),
                reason: "test".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    app.client()
        .update_account(authed(
            &root.access_token,
            set_roles(&cat.name, &["admin", "customer"]),
        ))
        .await
        .unwrap();
    let mut listed: Vec<(String, i64)> = revocations(&app, &service)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.account, r.min_security_version))
        .collect();
    listed.sort();
    let mut expected = vec![
        (ann.name.clone(), 2),
        (bob.name.clone(), 2),
        (cat.name.clone(), 2),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    // The old token of Ann is refused here at once.
    let status = app
        .client()
        .get_account(authed(
            &ann_session.access_token,
            pb::GetAccountRequest {
                name: "accounts/me".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TOKEN_REVOKED");

    // Customers may not read the list; admins and services may.
    let (_, customer) = app.customer("dan@example.com").await;
    let status = revocations(&app, &customer.access_token).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        revocations(&app, &root.access_token).await.unwrap().len(),
        3
    );

    // Once every token issued before the changes has expired, the entries go.
    app.clock.advance(Duration::minutes(17));
    assert!(revocations(&app, &service).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_rpcs_answer_resource_exhausted_with_retry_info() {
    // The production defaults: 10 per second, bursts of 20.
    let app = TestApp::spawn_on(ServerConfig::default(), |_| {}).await;
    let mut limited = None;
    for n in 0..40 {
        // Refused before validation or hashing: the bad email costs nothing.
        let status = app.login("not an email", WRONG).await.unwrap_err();
        if status.code() == Code::ResourceExhausted {
            limited = Some((n, status));
            break;
        }
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let (n, status) = limited.expect("the burst runs out");
    println!("rate limited after {n} calls");
    assert!(n >= 19, "the burst of 20 is allowed ({n})");
    assert_eq!(reason_of(&status).as_deref(), Some("RATE_LIMITED"));
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(
        retry.retry_delay.is_some_and(
            |d| d > std::time::Duration::ZERO && d <= std::time::Duration::from_secs(1)
        )
    );
    // Another client, and another method, are not affected.
    let status = app
        .client_from("127.0.0.9")
        .login(login("not an email", WRONG))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = app.client().get_jwks(pb::GetJwksRequest {}).await;
    assert!(status.is_ok(), "GetJwks has its own bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_their_absolute_lifetime_and_expired_rows_are_purged() {
    let app = TestApp::spawn().await;
    let (_, session) = app.customer("long@example.com").await;
    let started = chrono::Utc::now();
    let end = started + Duration::days(90);
    let mut refresh = session.refresh_token;
    let mut refreshed = 0;
    let outcome = loop {
        // Used every 20 days: never idle long enough to expire (30 days).
        app.clock.advance(Duration::days(20));
        match app
            .client()
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: refresh.clone(),
            })
            .await
        {
            Ok(next) => {
                let next = next.into_inner();
                let expires = next.refresh_token_expire_time.unwrap();
                assert!(
                    expires.seconds <= end.timestamp() + 60,
                    "a refresh never reaches past the session's end"
                );
                refresh = next.refresh_token;
                refreshed += 1;
            }
            Err(status) => break status,
        }
        assert!(refreshed < 10, "the session never ended");
    };
    println!("refreshed {refreshed} times, then {:?}", reason(&outcome));
    assert_eq!(refreshed, 4, "day 20, 40, 60, 80 work; day 100 is past 90");
    assert_eq!(reason(&outcome), "REFRESH_TOKEN_EXPIRED");

    // A day after expiry the rows go.
    app.clock.advance(Duration::days(40));
    let now = backroom_shared::clock::Clock::now(&app.clock);
    let purged = app
        .pool
        .run(move |conn| repo::purge_refresh_tokens(conn, now))
        .await
        .unwrap();
    assert!(
        purged >= 5,
        "every token of the ended session is purged ({purged})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_never_promotes_an_existing_account_silently() {
    let app = TestApp::spawn().await;
    app.register("boss@example.com").await;
    let mut config = AccountConfig::with_keys(app.keys_pem.clone());
    config.bootstrap_admin_email = Some("boss@example.com".into());
    config.bootstrap_admin_password = Some(Secret::new("the configured password"));
    let deps = Deps::new(
        &AuthConfig::default(),
        &config,
        app.pool.clone(),
        std::sync::Arc::new(app.clock.clone()),
    )
    .await
    .unwrap();
    let err = bootstrap_admin(&deps, &config).await.unwrap_err();
    assert!(err.to_string().contains("refusing to promote"), "{err}");
    let session = app.login("boss@example.com", PASSWORD).await.unwrap();
    assert!(
        list_accounts(&app, &session.access_token).await.is_err(),
        "not an admin"
    );

    // Asked for explicitly: promoted, and the password stays the owner's.
    config.bootstrap_admin_promote_existing = true;
    bootstrap_admin(&deps, &config).await.unwrap();
    let session = app.login("boss@example.com", PASSWORD).await.unwrap();
    assert!(list_accounts(&app, &session.access_token).await.is_ok());
    assert!(
        app.login("boss@example.com", "the configured password")
            .await
            .is_err()
    );

    // The ordinary restart: the admin exists, nothing changes.
    let mut config = AccountConfig::with_keys(app.keys_pem.clone());
    config.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
    config.bootstrap_admin_password = Some(Secret::new("another password entirely"));
    bootstrap_admin(&deps, &config).await.unwrap();
    app.admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principals_need_listed_audiences_and_long_secrets() {
    let app = TestApp::spawn().await;
    let deps = |clients: &str, audiences: &str| {
        let mut config = AccountConfig::with_keys(app.keys_pem.clone());
        config.service_clients = Some(Secret::new(clients));
        config.service_client_audiences = Some(audiences.into());
        let pool = app.pool.clone();
        let clock = std::sync::Arc::new(app.clock.clone());
        async move { Deps::new(&AuthConfig::default(), &config, pool, clock).await }
    };
    let long = "s".repeat(32);
    let err = deps(&format!("payment:{long}"), "inventory=backroom.account")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no entry for service client payment"),
        "{err}"
    );
    let err = deps("payment:short-secret", "payment=backroom.account")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least 32 characters"), "{err}");
    deps(&format!("payment:{long}"), "payment=backroom.account")
        .await
        .expect("listed, long enough");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_request_ids_are_purged_after_their_retention() {
    let app = TestApp::spawn().await;
    for n in 0..3 {
        app.client()
            .register(pb::RegisterRequest {
                email: format!("keyed{n}@example.com"),
                password: PASSWORD.into(),
                display_name: "Keyed".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .unwrap();
    }
    let now = backroom_shared::clock::Clock::now(&app.clock);
    let kept = app
        .pool
        .run(move |conn| backroom_shared::idempotency::purge_expired(conn, now))
        .await
        .unwrap();
    assert_eq!(kept, 0, "young request ids stay");
    app.clock.advance(Duration::hours(25));
    let now = backroom_shared::clock::Clock::now(&app.clock);
    let purged = app
        .pool
        .run(move |conn| backroom_shared::idempotency::purge_expired(conn, now))
        .await
        .unwrap();
    assert_eq!(purged, 3, "a day later they go");
}
