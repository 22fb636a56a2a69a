//! Postgres stopped under load: calls fail fast with UNAVAILABLE (never a
//! hang past the deadline), health reports NOT_SERVING, and within 5 s of
//! Postgres returning the service serves again — with every write a client
//! saw acknowledged still there. Its own cluster (it is stopped mid-test).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backroom_account::{
    AccountConfig, Deps, MIGRATIONS, SERVICE, domain::tokens::SigningKeys, server,
};
use backroom_proto::account::v1::{self as pb, account_service_client::AccountServiceClient};
use backroom_shared::{
    clock,
    config::{AuthConfig, DbConfig, ServerConfig},
    db::{self, Pool},
    testing::{PostgresCluster, TestServer},
};
use diesel::connection::SimpleConnection as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_reports_not_serving_and_recovers_without_losing_acknowledged_writes()
{
    // Durable: an immediate stop must not lose acknowledged commits.
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PostgresCluster::start_durable)
            .await
            .unwrap()
            .unwrap(),
    );
    let (admin, admin_backroom) = (cluster.url("postgres"), cluster.url("backroom"));
    let provisioned = tokio::task::spawn_blocking(move || {
        db::connect(&admin)
            .unwrap()
            .batch_execute("CREATE DATABASE backroom")
            .unwrap();
        db::provision(&admin_backroom, SERVICE, &db::RolePasswords::default()).unwrap()
    })
    .await
    .unwrap();
    db::migrate(&provisioned, SERVICE, MIGRATIONS)
        .await
        .unwrap();
    let config = DbConfig {
        pool_size: 4,
        pool_min_idle: 1,
        checkout_timeout_ms: 300,
        ..provisioned
    };
    let deps = Deps::new(
        &AuthConfig::default(),
        &AccountConfig::with_keys(SigningKeys::generate_pem()),
        Pool::new(&config, SERVICE),
        clock::system(),
    )
    .await
    .unwrap();
    // The writer registers back to back from one address: no rate limit.
    let server_config = ServerConfig {
        rate_limit: backroom_shared::config::RateLimitConfig::unlimited(),
        ..ServerConfig::without_client_limits()
    };
    let app = TestServer::spawn(server(server_config, deps)).await;
    let mut health = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut wait_for = async |wanted: ServingStatus| {
        let started = Instant::now();
        loop {
            let status = tokio::time::timeout(Duration::from_secs(15), health.message())
                .await
                .expect("health changes within 15 s")
                .unwrap()
                .unwrap()
                .status;
            if status == wanted as i32 {
                return started.elapsed();
            }
        }
    };
    wait_for(ServingStatus::Serving).await;

    // A client registering accounts one after another, each call with a 1 s
    // deadline; it records what was acknowledged and how every failure came.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<(Code, Duration)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acknowledged, failures, stop) = (acknowledged.clone(), failures.clone(), stop.clone());
        let mut client = AccountServiceClient::new(app.channel.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let email = format!("writer{n}@example.com");
                let mut request = tonic::Request::new(pb::RegisterRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    display_name: "Writer".into(),
                    request_id: String::new(),
                });
                request.set_timeout(Duration::from_secs(1));
                let started = Instant::now();
                match client.register(request).await {
                    Ok(_) => acknowledged.lock().unwrap().push(email),
                    Err(status) => failures
                        .lock()
                        .unwrap()
                        .push((status.code(), started.elapsed())),
                }
            }
        })
    };
    while acknowledged.lock().unwrap().len() < 10 {
        tokio::task::yield_now().await;
    }

    println!("injecting: Postgres stopped (immediate) under a registration load");
    let outage = Instant::now();
    let paused = cluster.clone();
    tokio::task::spawn_blocking(move || paused.pause().unwrap())
        .await
        .unwrap();
    let flipped = wait_for(ServingStatus::NotServing).await;
    println!(
        "health NOT_SERVING {:?} after the outage began",
        outage.elapsed()
    );
    assert!(flipped < Duration::from_secs(10));
    let failed_during = failures.lock().unwrap().len();
    let resumed = cluster.clone();
    tokio::task::spawn_blocking(move || resumed.resume().unwrap())
        .await
        .unwrap();
    let back = Instant::now();
    println!(
        "injecting: Postgres started again after {:?}",
        outage.elapsed()
    );
    wait_for(ServingStatus::Serving).await;
    let acked_before = acknowledged.lock().unwrap().len();
    while acknowledged.lock().unwrap().len() < acked_before + 5 {
        tokio::task::yield_now().await;
    }
    let recovered = back.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    println!("checked: serving and writing again {recovered:?} after Postgres returned");
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );

    // Every failure was fast and said UNAVAILABLE (or the deadline passed).
    let failures = failures.lock().unwrap().clone();
    assert!(failed_during > 0, "the outage was felt");
    for (code, took) in &failures {
        assert!(
            matches!(
                code,
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ),
            "{code:?} after {took:?}"
        );
        assert!(*took < Duration::from_millis(1500), "a call hung {took:?}");
    }
    println!(
        "checked: {} failed calls, all UNAVAILABLE/deadline within 1.5 s",
        failures.len()
    );

    // No acknowledged write was lost.
    let emails = acknowledged.lock().unwrap().clone();
    let mut client = AccountServiceClient::new(app.channel.clone());
    for email in &emails {
        client
            .login(pb::LoginRequest {
                email: email.clone(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("{email} was acknowledged but is gone: {status:?}"));
    }
    println!(
        "checked: all {} acknowledged registrations present",
        emails.len()
    );
}
