//! Telemetry for tests: an in-process OTLP receiver ([`SpanCollector`]) and
//! a log capture ([`LogCapture`]).

use std::sync::Mutex;

use super::TestServer;
use crate::server::GrpcServer;

/// An in-process OTLP/gRPC trace receiver: point `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or [`crate::config::TelemetryConfig::otlp_endpoint`]) at
/// [`SpanCollector::serve`]'s server and read what was exported.
#[derive(Debug, Clone, Default)]
pub struct SpanCollector {
    spans: std::sync::Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for SpanCollector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                partial_success: None,
            },
        ))
    }
}

impl SpanCollector {
    /// Serves a collector on 127.0.0.1:0.
    pub async fn serve() -> (Self, TestServer) {
        let collector = Self::default();
        let server = TestServer::spawn(GrpcServer::new(crate::config::ServerConfig::default()).add_service(
            opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                collector.clone(),
            ),
        ))
        .await;
        (collector, server)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A string or integer attribute of an exported span.
pub fn span_attribute(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// Lower-case hex of an id.
pub fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Captures every log line of the process (trace level, JSON, with span
/// fields and span events) so a test can search it for secrets. Installs the
/// global subscriber: one per test binary.
#[derive(Debug, Clone, Default)]
pub struct LogCapture(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogCapture {
    /// Installs the capturing global subscriber.
    pub fn install() -> Self {
        let capture = Self::default();
        tracing_subscriber::fmt()
            .json()
            .with_span_list(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_env_filter("trace")
            .with_writer(capture.clone())
            .init();
        capture
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
