//! One trace id spans client → server A → server B, checked with an
//! in-process OTLP/gRPC receiver. It installs the process-global subscriber
//! and propagator, so it counts only the spans of its own trace (other tests
//! of this binary call Echo too).

use backroom_proto::testing::v1::{
    EchoRequest, EchoResponse,
    echo_service_client::EchoServiceClient,
    echo_service_server::{EchoService, EchoServiceServer},
};
use backroom_shared::{
    client::TracedChannel,
    config::{ServerConfig, TelemetryConfig},
    server::GrpcServer,
    telemetry,
    testing::{SpanCollector, TestServer, echo_server, hex_id, span_attribute},
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// Echo that relays every call to a downstream echo server.
#[derive(Debug, Clone)]
struct Relay {
    downstream: EchoServiceClient<TracedChannel>,
}

#[tonic::async_trait]
impl EchoService for Relay {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let mut downstream = self.downstream.clone();
        let reply = downstream.echo(request.into_inner()).await?;
        Ok(Response::new(EchoResponse {
            message: format!("relayed: {}", reply.into_inner().message),
        }))
    }
}

// Multi-threaded: the batch exporter's flush blocks this thread while the
// OTLP channel's connection task must keep running on another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_client_server_and_second_server_with_correct_parents() {
    let (receiver, collector) = SpanCollector::serve().await;
    let guard = telemetry::init(
        "trace-test",
        &TelemetryConfig {
            otlp_endpoint: Some(collector.endpoint()),
            log_filter: "info".into(),
            ..TelemetryConfig::default()
        },
    )
    .unwrap();

    let server_b = TestServer::spawn(echo_server(ServerConfig::default())).await;
    let server_a = TestServer::spawn(GrpcServer::new(ServerConfig::default()).add_service(
        EchoServiceServer::new(Relay {
            downstream: EchoServiceClient::new(server_b.channel.clone()),
        }),
    ))
    .await;

    let root = tracing::info_span!("test-root");
    let trace_id = root.in_scope(telemetry::current_trace_id);
    let reply = async {
        EchoServiceClient::new(server_a.channel.clone())
            .echo(EchoRequest {
                message: "hi".into(),
                delay: None,
            })
            .await
    }
    .instrument(root.clone())
    .await
    .unwrap();
    assert_eq!(reply.into_inner().message, "relayed: hi");
    drop(root);
    guard.flush();

    let spans = receiver.spans();
    let rpc_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "backroom.testing.v1.EchoService/Echo")
        .filter(|s| hex_id(&s.trace_id) == trace_id)
        .collect();
    // test client → A server → A client → B server
    assert_eq!(rpc_spans.len(), 4, "{rpc_spans:#?}");
    for span in &rpc_spans {
        assert_eq!(
            hex_id(&span.trace_id),
            trace_id,
            "every RPC span is in the root's trace"
        );
        assert_eq!(span_attribute(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(span_attribute(span, "rpc.method").as_deref(), Some("Echo"));
        assert_eq!(
            span_attribute(span, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
    }
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let of_kind = |kind: SpanKind| -> Vec<&Span> {
        rpc_spans
            .iter()
            .copied()
            .filter(|s| s.kind == kind as i32)
            .collect()
    };
    let clients = of_kind(SpanKind::Client);
    let servers = of_kind(SpanKind::Server);
    assert_eq!((clients.len(), servers.len()), (2, 2));
    let root_span = spans
        .iter()
        .find(|s| s.name == "test-root")
        .expect("root span exported");
    // Chain: root → client1 → serverA → client2 → serverB.
    let client1 = clients
        .iter()
        .find(|s| s.parent_span_id == root_span.span_id)
        .expect("test client span under root");
    let server_a_span = servers
        .iter()
        .find(|s| s.parent_span_id == client1.span_id)
        .expect("A's server span under the test client span");
    let client2 = clients
        .iter()
        .find(|s| s.parent_span_id == server_a_span.span_id)
        .expect("A's client span under A's server span");
    servers
        .iter()
        .find(|s| s.parent_span_id == client2.span_id)
        .expect("B's server span under A's client span");
}
