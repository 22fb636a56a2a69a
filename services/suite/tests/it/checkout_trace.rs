//! One trace per order: PlaceOrder and every downstream call and database
//! transaction, across the three services, in one trace with correct
//! parent/child links — checked with an in-process OTLP receiver. It
//! installs the binary's global subscriber (the only test here that does)
//! and reads only the spans of its own trace.

use std::collections::HashMap;

use crate::harness::{Suite, VISA};
use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    config::TelemetryConfig,
    telemetry,
    testing::{SpanCollector, hex_id, span_attribute},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracing::Instrument as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_order_and_every_downstream_call_share_one_trace_with_correct_parents() {
    let (collector, collector_server) = SpanCollector::serve().await;
    let guard = telemetry::init(
        "checkout-trace-test",
        &TelemetryConfig {
            otlp_endpoint: Some(collector_server.endpoint()),
            log_filter: "info".into(),
            ..TelemetryConfig::default()
        },
    )
    .unwrap();

    let suite = Suite::spawn().await;
    suite.product("MUG", 1299, 10).await;
    let ada = suite.customer("traced@example.com", VISA).await;

    let root = tracing::info_span!("checkout-client");
    let trace_id = root.in_scope(telemetry::current_trace_id);
    let order = suite
        .place(
            &ada,
            &ada.card,
            &[("MUG", 1)],
            &uuid::Uuid::new_v4().to_string(),
        )
        .instrument(root.clone())
        .await
        .unwrap();
    assert_eq!(order.state, pb::OrderState::Completed as i32);
    drop(root);
    guard.flush();

    let spans: Vec<_> = collector
        .spans()
        .into_iter()
        .filter(|s| hex_id(&s.trace_id) == trace_id)
        .collect();
    let by_id: HashMap<Vec<u8>, _> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    let server_names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "backroom.payment.v1.CheckoutService/PlaceOrder",
        "backroom.payment.v1.PaymentService/GetPaymentMethod",
        "backroom.account.v1.AccountService/GetAccount",
        "backroom.account.v1.AccountService/GetAddress",
        "backroom.inventory.v1.InventoryService/QuoteOrder",
        "backroom.inventory.v1.InventoryService/ReserveStock",
        "backroom.payment.v1.PaymentService/CreatePaymentIntent",
        "backroom.payment.v1.PaymentService/ConfirmPaymentIntent",
        "backroom.inventory.v1.InventoryService/CommitReservation",
        "backroom.payment.v1.PaymentService/CapturePaymentIntent",
    ] {
        assert!(
            server_names.contains(&expected),
            "{expected} missing from the trace: {server_names:#?}"
        );
    }

    // Parents: the root client span → PlaceOrder's server span; every other
    // server span's parent is a client span of the same RPC whose chain leads
    // back to PlaceOrder.
    let place_order = servers
        .iter()
        .find(|s| s.name.ends_with("/PlaceOrder"))
        .unwrap();
    let root_span = spans
        .iter()
        .find(|s| s.name == "checkout-client")
        .expect("root exported");
    let client_of_place_order = by_id[&place_order.parent_span_id];
    assert_eq!(client_of_place_order.kind, SpanKind::Client as i32);
    assert_eq!(client_of_place_order.parent_span_id, root_span.span_id);
    for server in servers.iter().filter(|s| s.span_id != place_order.span_id) {
        let parent = by_id
            .get(&server.parent_span_id)
            .unwrap_or_else(|| panic!("{}: parent not in the trace", server.name));
        assert_eq!(
            parent.kind,
            SpanKind::Client as i32,
            "{}'s parent is a client span",
            server.name
        );
        assert_eq!(
            parent.name, server.name,
            "the client span names the same RPC"
        );
        // Walk up to PlaceOrder.
        let mut cursor = *parent;
        let mut hops = 0;
        while cursor.span_id != place_order.span_id {
            cursor = by_id
                .get(&cursor.parent_span_id)
                .unwrap_or_else(|| panic!("{}: chain broken at {}", server.name, cursor.name));
            hops += 1;
            assert!(hops < 50, "no cycle");
        }
        assert_eq!(
            span_attribute(server, "rpc.system").as_deref(),
            Some("grpc")
        );
    }
    // Database work is in the trace too (repository spans).
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for expected in ["insert_order", "acquire_lease", "advance"] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
}
