//! The shared server bootstrap against real servers on 127.0.0.1:0: health,
//! reflection, graceful shutdown, load shedding and rich errors.

use std::time::Duration;

use backroom_proto::testing::v1::{EchoRequest, echo_service_client::EchoServiceClient};
use backroom_shared::{
    config::ServerConfig,
    errors,
    testing::{TestServer, echo_server},
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn echo_request(message: &str, delay: Duration) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        delay: Some(delay.try_into().unwrap()),
    }
}

#[tokio::test]
async fn health_is_serving_then_flips_to_not_serving_when_shutdown_begins() {
    // The delay keeps the server accepting calls after NOT_SERVING, which is
    // the window load balancers need (and the window this test observes).
    let config = ServerConfig {
        shutdown_delay_ms: 2_000,
        ..ServerConfig::default()
    };
    let mut server = TestServer::spawn(echo_server(config)).await;
    let mut health = HealthClient::new(server.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "backroom.testing.v1.EchoService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || watch.next().await.unwrap().unwrap().status();
    let mut status = next().await;
    if status == ServingStatus::NotServing {
        status = next().await;
    }
    assert_eq!(status, ServingStatus::Serving);

    server.begin_shutdown();
    assert_eq!(next().await, ServingStatus::NotServing);
    // Still answering during the shutdown delay.
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn an_in_flight_call_completes_during_graceful_shutdown() {
    let server = TestServer::spawn(echo_server(ServerConfig::default())).await;
    let mut client = EchoServiceClient::new(server.channel.clone());
    // Make sure the connection is up before the slow call starts.
    client
        .echo(echo_request("warm", Duration::ZERO))
        .await
        .unwrap();

    let slow = tokio::spawn(async move {
        client
            .echo(echo_request("slow", Duration::from_millis(700)))
            .await
    });
    // Let the call reach the server before shutdown begins: the health
    // round trip on the same connection is ordered after the slow request.
    let mut health = HealthClient::new(server.channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    let drained = tokio::spawn(server.shutdown());
    let reply = slow.await.unwrap().expect("in-flight call must complete");
    assert_eq!(reply.into_inner().message, "slow");
    drained.await.unwrap().expect("server drains cleanly");
}

#[tokio::test]
async fn a_rich_error_decodes_on_the_client_with_its_reason_and_field() {
    let server = TestServer::spawn(echo_server(ServerConfig::default())).await;
    let mut client = EchoServiceClient::new(server.channel.clone());
    let status = client
        .echo(EchoRequest {
            message: "x".into(),
            delay: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        errors::reason_of(&status).as_deref(),
        Some("VALIDATION_FAILED")
    );
    assert_eq!(errors::violated_fields(&status), ["delay"]);
    assert!(status.message().contains("delay"), "{}", status.message());
}

#[tokio::test]
async fn past_the_concurrency_limit_calls_are_shed_with_resource_exhausted() {
    let config = ServerConfig {
        concurrency_limit: 1,
        ..ServerConfig::default()
    };
    let server = TestServer::spawn(echo_server(config)).await;
    let mut client = EchoServiceClient::new(server.channel.clone());
    client
        .echo(echo_request("warm", Duration::ZERO))
        .await
        .unwrap();

    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .echo(echo_request("slow", Duration::from_millis(1_500)))
            .await
    });
    // Keep calling until one lands while the slow call holds the only slot.
    let mut shed = None;
    for _ in 0..200 {
        match client.echo(echo_request("fast", Duration::ZERO)).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(status) => {
                shed = Some(status);
                break;
            }
        }
    }
    let shed = shed.expect("a call made while the slot is taken must be shed");
    assert_eq!(shed.code(), Code::ResourceExhausted);
    // The documented reason, in the service's domain (echo: backroom.testing).
    assert_eq!(errors::reason_of(&shed).as_deref(), Some("OVERLOADED"));
    let info = tonic_types::StatusExt::get_details_error_info(&shed).unwrap();
    assert_eq!(info.domain, "backroom.testing");
    assert!(
        slow.await.unwrap().is_ok(),
        "the admitted call still completes"
    );
}

#[tokio::test]
async fn an_oversized_message_is_rejected_not_buffered() {
    let config = ServerConfig {
        max_message_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::spawn(echo_server(config)).await;
    let mut client = EchoServiceClient::new(server.channel.clone());
    let status = client
        .echo(echo_request(&"x".repeat(4096), Duration::ZERO))
        .await
        .unwrap_err();
    // tonic answers OUT_OF_RANGE for a message past the decoding limit.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The server is still fine afterwards.
    client
        .echo(echo_request("ok", Duration::ZERO))
        .await
        .unwrap();
}

#[tokio::test]
async fn reflection_lists_our_services_health_and_reflection_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::spawn(echo_server(ServerConfig::default())).await;

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "backroom.testing.v1.EchoService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Only what this server serves is advertised.
    assert_eq!(names.len(), 4, "{names:?}");

    // google.rpc types are describable (grpcurl decodes error details with them).
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "google.rpc.BadRequest".into(),
            ),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    assert!(
        matches!(
            response,
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_)
        ),
        "{response:?}"
    );
}

/// Echo that answers with the `grpc-timeout` it received.
#[derive(Debug, Clone, Copy)]
struct ReportTimeout;

#[tonic::async_trait]
impl backroom_proto::testing::v1::echo_service_server::EchoService for ReportTimeout {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<backroom_proto::testing::v1::EchoResponse>, tonic::Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Ok(tonic::Response::new(
            backroom_proto::testing::v1::EchoResponse { message: timeout },
        ))
    }
}

/// Echo that relays to a downstream echo with a plain traced client.
#[derive(Debug, Clone)]
struct Relay(EchoServiceClient<backroom_shared::client::TracedChannel>);

#[tonic::async_trait]
impl backroom_proto::testing::v1::echo_service_server::EchoService for Relay {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<backroom_proto::testing::v1::EchoResponse>, tonic::Status> {
        self.0.clone().echo(request.into_inner()).await
    }
}

#[tokio::test]
async fn a_downstream_call_carries_the_callers_remaining_deadline() {
    use backroom_proto::testing::v1::echo_service_server::EchoServiceServer;
    use backroom_shared::{deadline::parse_grpc_timeout, server::GrpcServer};
    let downstream = TestServer::spawn(
        GrpcServer::new(ServerConfig::default()).add_service(EchoServiceServer::new(ReportTimeout)),
    )
    .await;
    let relay = TestServer::spawn(GrpcServer::new(ServerConfig::default()).add_service(
        EchoServiceServer::new(Relay(EchoServiceClient::new(downstream.channel.clone()))),
    ))
    .await;
    let mut request = tonic::Request::new(echo_request("x", Duration::ZERO));
    request.set_timeout(Duration::from_millis(1500));
    let seen = EchoServiceClient::new(relay.channel.clone())
        .echo(request)
        .await
        .unwrap()
        .into_inner()
        .message;
    let budget = parse_grpc_timeout(&seen).unwrap_or_else(|| panic!("downstream saw {seen:?}"));
    assert!(
        budget <= Duration::from_millis(1500) && budget > Duration::ZERO,
        "{budget:?}"
    );

    // Without a caller deadline, nothing is invented.
    let seen = EchoServiceClient::new(relay.channel.clone())
        .echo(echo_request("x", Duration::ZERO))
        .await
        .unwrap()
        .into_inner()
        .message;
    assert_eq!(seen, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_fails_no_call_in_flight_and_refuses_only_after_not_serving() {
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;
    let config = ServerConfig {
        shutdown_delay_ms: 300,
        ..ServerConfig::default()
    };
    let mut server = TestServer::spawn(echo_server(config)).await;
    let mut watch = HealthClient::new(server.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    while watch.next().await.unwrap().unwrap().status() != ServingStatus::Serving {}

    // Eight clients, each on its own connection, calling back to back; every
    // call is recorded with when it started and how it ended.
    let outcomes: Outcomes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let channel = backroom_shared::client::connect(
            &backroom_shared::client::ClientConfig::new(server.endpoint()),
        )
        .await
        .unwrap();
        let (outcomes, stop) = (outcomes.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut client = EchoServiceClient::new(channel);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let result = client
                    .echo(echo_request("load", Duration::from_millis(20)))
                    .await;
                outcomes
                    .lock()
                    .unwrap()
                    .push((started, result.map(|_| ()).map_err(|s| s.code())));
                if result_is_refusal(&outcomes) {
                    break;
                }
            }
        }));
    }
    while outcomes.lock().unwrap().len() < 50 {
        tokio::task::yield_now().await;
    }
    println!("injecting: SIGTERM-equivalent shutdown with 8 clients calling back to back");
    let shutdown_began = Instant::now();
    server.begin_shutdown();
    while watch.next().await.unwrap().unwrap().status() != ServingStatus::NotServing {}
    let not_serving_at = Instant::now();
    for client in clients {
        client.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The open health Watch must not hold the drain for its whole timeout
    // (20 s): the server ends it once the drain starts.
    let drained = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
    assert!(
        drained.is_ok(),
        "an open health Watch held the graceful drain"
    );
    drained.unwrap().unwrap();
    drop(watch);

    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    // Every call that started before shutdown began completed.
    for (started, result) in &outcomes {
        if *started < shutdown_began {
            assert!(
                result.is_ok(),
                "a call in flight when shutdown began failed: {result:?}"
            );
        }
    }
    // Refusals only for calls started after NOT_SERVING was published.
    for (started, result) in &failed {
        assert!(
            *started >= not_serving_at,
            "refused before NOT_SERVING: {result:?}"
        );
        // A call racing the connection's teardown after GOAWAY is failed by
        // the client's transport; tonic reports h2's reset as INTERNAL.
        assert!(
            matches!(
                result,
                Err(Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal)
            ),
            "{result:?}"
        );
    }
    println!(
        "checked: {} calls, {} refused, all after NOT_SERVING; none in flight failed",
        outcomes.len(),
        failed.len()
    );
}

/// Calls recorded by the load clients: when each started, how it ended.
type Outcomes = std::sync::Arc<std::sync::Mutex<Vec<(tokio::time::Instant, Result<(), Code>)>>>;

/// Whether the last recorded call was refused (the client then stops).
fn result_is_refusal(outcomes: &Outcomes) -> bool {
    outcomes
        .lock()
        .unwrap()
        .last()
        .is_some_and(|(_, r)| r.is_err())
}

#[tokio::test]
async fn a_readiness_probe_that_hangs_turns_health_not_serving() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    // Ready at first; then the probe never answers (a database that hangs
    // instead of refusing: frozen, or behind a partition).
    let hang = Arc::new(AtomicBool::new(false));
    let probe_hang = hang.clone();
    let probe: backroom_shared::server::HealthProbe = Arc::new(move || {
        let hang = probe_hang.load(Ordering::Relaxed);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            true
        })
    });
    let server =
        TestServer::spawn(echo_server(ServerConfig::default()).with_health_probe(probe)).await;
    let mut watch = HealthClient::new(server.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    while watch.next().await.unwrap().unwrap().status() != ServingStatus::Serving {}
    println!("injecting: the readiness probe stops answering");
    hang.store(true, Ordering::Relaxed);
    let flipped = tokio::time::timeout(Duration::from_secs(10), async {
        while watch.next().await.unwrap().unwrap().status() != ServingStatus::NotServing {}
    })
    .await;
    assert!(flipped.is_ok(), "a hanging probe left the server SERVING");
    println!("checked: health went NOT_SERVING although the probe never answered");
}

/// A call to Echo whose request body never ends (headers sent, no message):
/// the shape of the attack that once held every slot of every service.
async fn stalled_echo(
    channel: tonic::transport::Channel,
) -> Result<tonic::Response<backroom_proto::testing::v1::EchoResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let never = futures_util::stream::pending::<EchoRequest>();
    grpc.client_streaming(
        Request::new(never),
        http::uri::PathAndQuery::from_static("/backroom.testing.v1.EchoService/Echo"),
        tonic_prost::ProstCodec::<EchoRequest, backroom_proto::testing::v1::EchoResponse>::default(
        ),
    )
    .await
}

fn channel_from(server: &TestServer, source: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .local_address(Some(source.parse().unwrap()))
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_calls_open_cannot_take_every_slot_and_stalled_bodies_are_cut_off() {
    let config = ServerConfig {
        concurrency_limit: 8,
        concurrency_limit_per_client: 3,
        request_body_timeout_ms: 500,
        ..ServerConfig::default()
    };
    let server = TestServer::spawn(echo_server(config)).await;
    let attacker = channel_from(&server, "127.0.0.2");
    let started = std::time::Instant::now();
    let stalled: Vec<_> = (0..10)
        .map(|_| tokio::spawn(stalled_echo(attacker.clone())))
        .collect();
    // Another client is served while the attacker holds its share.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut victim = EchoServiceClient::new(channel_from(&server, "127.0.0.3"));
    victim
        .echo(echo_request("still here", Duration::ZERO))
        .await
        .expect("another client still gets a slot");
    let mut shed = 0;
    let mut cut_off = 0;
    for call in stalled {
        let status = call.await.unwrap().unwrap_err();
        match (status.code(), errors::reason_of(&status).as_deref()) {
            (Code::ResourceExhausted, Some("OVERLOADED")) => shed += 1,
            (Code::DeadlineExceeded, Some("REQUEST_BODY_TIMEOUT")) => cut_off += 1,
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    println!(
        "10 stalled calls from one client: {shed} shed at once, {cut_off} cut off at the body deadline after {:?}",
        started.elapsed()
    );
    assert_eq!((shed, cut_off), (7, 3), "the client's share is 3");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off long before the call timeout"
    );
    // The slots came back: the attacker's own next call is served.
    EchoServiceClient::new(attacker)
        .echo(echo_request("again", Duration::ZERO))
        .await
        .expect("the slots were freed");
}
