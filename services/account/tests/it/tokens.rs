//! The shared auth layer, in front of the real account server, refuses
//! every kind of bad token with UNAUTHENTICATED.

use crate::helpers::{TestApp, authed, reason};
use backroom_account::domain::tokens::SigningKeys;
use backroom_proto::account::v1 as pb;
use backroom_shared::auth::Claims;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::Code;

fn claims(sub: &str) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "backroom".into(),
        sub: sub.into(),
        aud: vec!["backroom.account".into()],
        exp: now + 600,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        roles: vec!["customer".into(), "admin".into()],
        sv: 1,
    }
}

fn sign(pem: &str, claims: &Claims, kid: Option<String>) -> String {
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).unwrap();
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&key).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_all_unauthenticated() {
    let app = TestApp::spawn().await;
    let (account, session) = app.customer("target@example.com").await;
    let jwks = app
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let kid = jwks.keys[0].kid.clone();
    let public_key = URL_SAFE_NO_PAD.decode(&jwks.keys[0].x).unwrap();
    let sub = account.name.clone();

    let now = chrono::Utc::now().timestamp();
    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg: none, no signature.
    let none_header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&sub)).unwrap());
    cases.push(("alg none", format!("{none_header}.{body}.")));
    // HS256 "signed" with the public key (algorithm confusion).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    cases.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &claims(&sub), &EncodingKey::from_secret(&public_key)).unwrap(),
    ));
    let pem = &app.keys_pem;
    cases.push((
        "wrong aud",
        sign(
            pem,
            &Claims {
                aud: vec!["backroom.shipping".into()],
                ..claims(&sub)
            },
            Some(kid.clone()),
        ),
    ));
    cases.push((
        "wrong iss",
        sign(
            pem,
            &Claims {
                iss: "evil".into(),
                ..claims(&sub)
            },
            Some(kid.clone()),
        ),
    ));
    cases.push((
        "expired",
        sign(
            pem,
            &Claims {
                exp: now - 120,
                iat: now - 1000,
                nbf: now - 1000,
                ..claims(&sub)
            },
            Some(kid.clone()),
        ),
    ));
    cases.push((
        "not yet valid",
        sign(
            pem,
            &Claims {
                nbf: now + 600,
                ..claims(&sub)
            },
            Some(kid.clone()),
        ),
    ));
    cases.push(("no kid", sign(pem, &claims(&sub), None)));
    let stranger = SigningKeys::generate_pem();
    cases.push((
        "unknown kid",
        sign(&stranger, &claims(&sub), Some("stranger".into())),
    ));
    cases.push((
        "known kid, foreign key",
        sign(&stranger, &claims(&sub), Some(kid.clone())),
    ));
    // Tampered: the real token with its payload swapped.
    let mut parts: Vec<String> = session.access_token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&sub)).unwrap());
    cases.push(("tampered payload", parts.join(".")));
    let mut sig = session.access_token.clone();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    cases.push(("tampered signature", sig));
    cases.push(("garbage", "not.a.jwt".into()));

    for (case, token) in cases {
        let status = app
            .client()
            .get_account(authed(
                &token,
                pb::GetAccountRequest {
                    name: "accounts/me".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        let expected = if case == "expired" {
            "TOKEN_EXPIRED"
        } else {
            "TOKEN_INVALID"
        };
        assert_eq!(reason(&status), expected, "{case}");
    }

    // The genuine token works, and no token at all is TOKEN_MISSING.
    app.client()
        .get_account(authed(
            &session.access_token,
            pb::GetAccountRequest {
                name: "accounts/me".into(),
            },
        ))
        .await
        .unwrap();
    let status = app
        .client()
        .get_account(pb::GetAccountRequest {
            name: "accounts/me".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "TOKEN_MISSING".into())
    );
}

#[tokio::test]
async fn public_methods_need_no_token_and_health_stays_public() {
    let app = TestApp::spawn().await;
    app.client().get_jwks(pb::GetJwksRequest {}).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.server.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

/// A key fetcher reading GetJwks from whichever account server `current`
/// names (so a test can "rotate" the server's keys), counting its calls.
fn jwks_fetcher(
    current: std::sync::Arc<std::sync::Mutex<String>>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> backroom_shared::auth::KeyFetcher {
    std::sync::Arc::new(move || {
        let endpoint = current.lock().unwrap().clone();
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?
                .connect_timeout(std::time::Duration::from_millis(300))
                .connect_lazy();
            let keys = pb::account_service_client::AccountServiceClient::new(channel)
                .get_jwks(pb::GetJwksRequest {})
                .await?
                .into_inner()
                .keys;
            Ok(keys
                .into_iter()
                .map(|k| backroom_shared::auth::PublicKey { kid: k.kid, x: k.x })
                .collect())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_being_trusted_within_the_refresh_interval() {
    use std::sync::{Arc, Mutex, atomic::AtomicUsize};
    let old_key = SigningKeys::generate_pem();
    let new_key = SigningKeys::generate_pem();
    // Before the rotation both keys are published; after it only the new.
    let both = format!("{new_key}{old_key}");
    let before = TestApp::spawn_with(|c| {
        c.jwt_signing_keys = Some(backroom_shared::config::Secret::new(both))
    })
    .await;
    let after = TestApp::spawn_with(|c| {
        c.jwt_signing_keys = Some(backroom_shared::config::Secret::new(new_key.clone()))
    })
    .await;
    let current = Arc::new(Mutex::new(format!("http://{}", before.server.addr)));
    let calls = Arc::new(AtomicUsize::new(0));
    let verifier = Arc::new(
        backroom_shared::auth::Verifier::with_fetcher(
            "backroom",
            "backroom.account",
            jwks_fetcher(current.clone(), calls.clone()),
        )
        .with_key_refresh_interval(std::time::Duration::from_secs(1)),
    );
    verifier.spawn_refresh();
    let kid = SigningKeys::from_pem(&old_key).unwrap().public_keys()[0]
        .kid
        .clone();
    let token = sign(
        &old_key,
        &claims("accounts/0196f0c4-8c1e-7a3e-9d7e-3b5a1c2d4e5f"),
        Some(kid),
    );
    verifier
        .verify(&token)
        .await
        .expect("the old key is still published");

    // The old key leaves the JWKS: tokens it signed stop verifying (the
    // cache of verified tokens included) at the next scheduled refresh.
    *current.lock().unwrap() = format!("http://{}", after.server.addr);
    let rotated = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        match verifier.verify(&token).await {
            Ok(_) => assert!(
                rotated.elapsed() < std::time::Duration::from_secs(5),
                "a removed key is still trusted after {:?}",
                rotated.elapsed()
            ),
            Err(err) => {
                println!("removed key refused after {:?}: {err}", rotated.elapsed());
                assert!(
                    matches!(err, backroom_shared::auth::TokenError::Invalid(_)),
                    "{err:?}"
                );
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_jwks_cannot_be_fetched_unknown_kids_do_not_turn_into_a_fetch_each() {
    use std::sync::{Arc, Mutex, atomic::AtomicUsize};
    // Nothing listens there: every fetch fails at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let current = Arc::new(Mutex::new(format!("http://{}", dead.local_addr().unwrap())));
    drop(dead);
    let calls = Arc::new(AtomicUsize::new(0));
    let verifier = Arc::new(backroom_shared::auth::Verifier::with_fetcher(
        "backroom",
        "backroom.account",
        jwks_fetcher(current, calls.clone()),
    ));
    let stranger = SigningKeys::generate_pem();
    let tokens: Vec<String> = (0..200)
        .map(|n| {
            sign(
                &stranger,
                &claims("accounts/0196f0c4-8c1e-7a3e-9d7e-3b5a1c2d4e5f"),
                Some(format!("random-{n}")),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all(tokens.iter().map(|t| verifier.verify(t))).await;
    let elapsed = started.elapsed();
    let fetches = calls.load(std::sync::atomic::Ordering::SeqCst);
    println!("200 random kids while the JWKS is down: {fetches} fetch(es) in {elapsed:?}");
    assert!(results.iter().all(|r| matches!(
        r,
        Err(backroom_shared::auth::TokenError::KeysUnavailable(_))
    )));
    // At most one fetch per second of the burst (plus the first).
    assert!(
        fetches <= 1 + elapsed.as_secs() as usize,
        "{fetches} fetches in {elapsed:?}"
    );
}
