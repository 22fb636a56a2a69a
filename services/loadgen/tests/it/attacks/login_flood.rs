//! The login outage: a flood of Register and IssueServiceToken calls with a
//! 5 ms deadline, from several processes. Each call costs a password hash;
//! when abandoned calls still queued their hashes (an unbounded queue), every
//! Login — the admin's too — answered DEADLINE_EXCEEDED for minutes after
//! the flood. Now the hashing queue is bounded (full: RESOURCE_EXHAUSTED at
//! once) and a job whose caller has gone is skipped, so Login works again
//! as soon as the flood stops, and account's memory stays bounded.
//!
//! The per-client rate limit would turn most of this flood away before it
//! reached the hasher (every process here shares 127.0.0.1), so it is off:
//! this test proves the second line of defence on its own.

use std::time::{Duration, Instant};

use backroom_loadgen::stack::{Service, StackOptions};
use backroom_proto::account::v1::{self as pb, account_service_client::AccountServiceClient};

use crate::common::{World, lazy_channel};

/// Flood processes per RPC.
const PROCESSES: usize = 2;
/// How long they flood.
const FLOOD: Duration = Duration::from_secs(10);
/// Each flooding call's deadline.
const FLOOD_DEADLINE_MS: u64 = 5;
/// A normal Login's deadline: it must be answered well within it.
const LOGIN_DEADLINE: Duration = Duration::from_secs(2);

async fn timed_login(
    client: &mut AccountServiceClient<tonic::transport::Channel>,
    email: &str,
    password: &str,
) -> (Result<pb::Session, tonic::Status>, Duration) {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request.set_timeout(LOGIN_DEADLINE);
    let started = Instant::now();
    let result = client.login(request).await.map(tonic::Response::into_inner);
    (result, started.elapsed())
}

fn flood(target: &str, rpc: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_backroom-loadgen"))
        .args([
            "flood",
            "--target",
            target,
            "--rpc",
            rpc,
            "--deadline-ms",
            &FLOOD_DEADLINE_MS.to_string(),
            "--concurrency",
            "64",
            "--duration",
            &FLOOD.as_secs().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a flood process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_short_deadline_hashing_calls_leaves_login_working() {
    let world = World::start(
        "login-flood",
        false,
        StackOptions::default().without_rate_limits(),
    )
    .await;
    let suite = world.stack.suite();
    let mut client = AccountServiceClient::new(lazy_channel(&suite.account));
    let admin_password = suite.admin_password.clone();

    let mut idle = Vec::new();
    for _ in 0..5 {
        let (result, took) =
            timed_login(&mut client, "admin@backroom.local", &admin_password).await;
        result.expect("idle login");
        idle.push(took);
    }
    idle.sort();
    let idle_median = idle[idle.len() / 2];
    let (idle_rss, _) = world.stack.rss_mib(Service::Account);

    let target = world.stack.endpoint(Service::Account);
    let mut floods = Vec::new();
    for _ in 0..PROCESSES {
        floods.push(flood(&target, "register"));
        floods.push(flood(&target, "service-token"));
    }
    let flood_started = Instant::now();
    // Mid-flood a Login may be shed (RESOURCE_EXHAUSTED) but is never left
    // hanging to its deadline.
    tokio::time::sleep(FLOOD / 2).await;
    let (during, during_took) =
        timed_login(&mut client, "admin@backroom.local", &admin_password).await;
    let (during_rss, _) = world.stack.rss_mib(Service::Account);

    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    for child in floods {
        let output = child.wait_with_output().await.expect("flood process");
        assert!(output.status.success(), "a flood process failed");
        let counts: std::collections::BTreeMap<String, u64> =
            serde_json::from_slice(&output.stdout).expect("flood counts as JSON");
        for (key, count) in counts {
            *outcomes.entry(key).or_default() += count;
        }
    }
    let flood_took = flood_started.elapsed();
    let sent: u64 = outcomes.values().sum();
    println!(
        "injected: {} processes × 64 in flight of Register and IssueServiceToken with {FLOOD_DEADLINE_MS} ms deadlines for {:.1} s: {sent} calls, outcomes {outcomes:?}",
        PROCESSES * 2,
        flood_took.as_secs_f64()
    );

    // Right after: Login works, in about its idle time. A client retries a
    // shed call (RESOURCE_EXHAUSTED) with a short backoff, as the protos
    // say; the server may still be tearing down the flood's last calls.
    let stopped = Instant::now();
    let mut shed_after = 0;
    let first = loop {
        let (result, took) =
            timed_login(&mut client, "admin@backroom.local", &admin_password).await;
        match result {
            Ok(_) => break stopped.elapsed(),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                shed_after += 1;
                assert!(
                    stopped.elapsed() < LOGIN_DEADLINE,
                    "Login still shed {:?} after the flood",
                    stopped.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("Login right after the flood failed after {took:?}: {status:?}"),
        }
    };
    let mut after = Vec::new();
    for _ in 0..5 {
        let (result, took) =
            timed_login(&mut client, "admin@backroom.local", &admin_password).await;
        let session = result.unwrap_or_else(|status| {
            panic!("Login after the flood failed after {took:?}: {status:?}")
        });
        assert!(!session.access_token.is_empty());
        after.push(took);
    }
    let (after_rss, peak_rss) = world.stack.rss_mib(Service::Account);
    after.sort();
    println!(
        "checked: idle Login median {idle_median:?}; mid-flood Login {} in {during_took:?}; first Login after the flood succeeded {first:?} after it stopped ({shed_after} shed before), then median of 5 {:?} ({:.1}× idle, fastest {:?}); account RSS idle {idle_rss:.0} MiB, mid-flood {during_rss:.0}, after {after_rss:.0}, peak {peak_rss:.0}",
        match &during {
            Ok(_) => "OK".to_owned(),
            Err(status) => format!(
                "{:?} {:?}",
                status.code(),
                backroom_shared::errors::reason_of(status)
            ),
        },
        after[after.len() / 2],
        after[after.len() / 2].as_secs_f64() / idle_median.as_secs_f64().max(1e-6),
        after[0],
    );
    if let Err(status) = &during {
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "mid-flood a Login is served or shed, never left to time out"
        );
    }
    assert!(
        outcomes.keys().any(|k| k.contains("OVERLOADED")
            || k.starts_with("DeadlineExceeded")
            || k.starts_with("Cancelled")),
        "the flood outran the hashing threads: {outcomes:?}"
    );
    assert!(
        after_rss < idle_rss + 64.0,
        "account's memory stays bounded: {idle_rss:.0} → {after_rss:.0} MiB"
    );
    world.stop().await;
}
