//! The lockout bypass: 60 parallel Logins for one account, 59 wrong
//! passwords and the right one. When the lock was checked before hashing
//! and the failure recorded after, all 59 wrong ones were checked (the
//! lockout is 5) and the right one logged in. Now each attempt is counted
//! before its check: however many arrive at once, at most 5 per client are
//! checked. And the lock is per client, so the attacker's guesses do not
//! lock the owner out from their own address (targeted lockout).
//!
//! The per-client rate limit (a burst of 20) would refuse most of the 60
//! before the lockout saw them; it is off so the lockout is what is tested.

use backroom_loadgen::stack::{Service, StackOptions};
use backroom_proto::account::v1::{self as pb, account_service_client::AccountServiceClient};
use backroom_shared::errors::reason_of;

use crate::common::{World, lazy_channel};

const PASSWORD: &str = "the right password";

fn client_from(endpoint: &str, source: &str) -> AccountServiceClient<tonic::transport::Channel> {
    AccountServiceClient::new(
        tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .local_address(Some(source.parse().expect("source address")))
            .connect_lazy(),
    )
}

fn login(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

fn outcome(result: &Result<tonic::Response<pb::Session>, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".into(),
        Err(status) => reason_of(status).unwrap_or_else(|| format!("{:?}", status.code())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_get_at_most_the_lockout_and_cannot_lock_the_owner_out() {
    let world = World::start(
        "lockout",
        false,
        StackOptions::default().without_rate_limits(),
    )
    .await;
    let endpoint = world.stack.endpoint(Service::Account);
    let mut owner = AccountServiceClient::new(lazy_channel(&endpoint));
    for email in ["victim@example.com", "owner@example.com"] {
        owner
            .register(pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: "Victim".into(),
                request_id: String::new(),
            })
            .await
            .expect("register");
    }

    // 59 wrong and the right one, all at once, from the attacker's address.
    let attacker = client_from(&endpoint, "127.0.0.2");
    let calls = (0..60).map(|n| {
        let mut client = attacker.clone();
        let password = if n == 30 {
            PASSWORD.to_owned()
        } else {
            format!("wrong guess {n}")
        };
        async move { client.login(login("victim@example.com", &password)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for result in &results {
        *counts.entry(outcome(result)).or_default() += 1;
    }
    let checked = counts.get("INVALID_CREDENTIALS").copied().unwrap_or(0);
    let logged_in = counts.get("OK").copied().unwrap_or(0);
    println!(
        "injected: 60 concurrent Logins for one account from 127.0.0.2, 59 wrong and the right one: {counts:?}"
    );
    // At most 5 checks before a success resets the count (and 5 after).
    assert!(checked <= 5 + 5 * logged_in, "{counts:?}");
    assert!(
        counts.get("ACCOUNT_LOCKED").copied().unwrap_or(0) >= 49,
        "{counts:?}"
    );

    // Targeted lockout: the attacker locks the owner's email — for itself.
    let mut attacker = client_from(&endpoint, "127.0.0.3");
    for n in 0..5 {
        let _ = attacker
            .login(login("owner@example.com", &format!("wrong {n}")))
            .await;
    }
    let refused = attacker.login(login("owner@example.com", PASSWORD)).await;
    assert_eq!(
        outcome(&refused),
        "ACCOUNT_LOCKED",
        "the attacker's address is locked"
    );
    let owner_login = owner.login(login("owner@example.com", PASSWORD)).await;
    println!(
        "checked: {checked} wrong passwords checked, {logged_in} logins; 5 failures from 127.0.0.3 lock it there ({}), the owner from 127.0.0.1: {}",
        outcome(&refused),
        outcome(&owner_login)
    );
    owner_login.expect("the owner logs in from their own address");
    world.stop().await;
}
