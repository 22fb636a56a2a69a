//! Logs, traces and RED metrics for every service, and the tower layers that
//! carry one trace across every gRPC hop.
//!
//! Layout:
//! - [`init`]: the global `tracing` subscriber (JSON or pretty logs + the
//!   OpenTelemetry layer), the W3C trace-context propagator, OTLP/gRPC export
//!   when an endpoint is configured, and the Prometheus exporter. Returns a
//!   [`TelemetryGuard`] that flushes spans on shutdown.
//! - [`RpcTelemetryLayer`]: server side. Extracts `traceparent` from the
//!   request metadata, opens the server span (OpenTelemetry RPC semantic
//!   conventions: `rpc.system`, `rpc.service`, `rpc.method`,
//!   `rpc.grpc.status_code`), records the final gRPC status from headers or
//!   trailers, and counts the call in `rpc_server_*` metrics.
//! - [`ClientTelemetryLayer`]: client side. Opens a client span, injects its
//!   context as `traceparent` into the outgoing metadata, same metrics as
//!   `rpc_client_*`.
//!
//! Every log line inside a call carries the call's `trace_id` (a field of the
//! RPC span, printed with the span list).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{global, trace::TraceContextExt as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes
/// buffered spans to the collector. Dropping it also shuts down.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests call this before asserting).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.force_flush()
        {
            tracing::warn!(%err, "flushing spans failed");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry shutdown failed: {err}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Targets whose spans must never reach the OpenTelemetry layer: the OTLP
/// exporter itself talks gRPC, and tracing its own transport would loop.
const TRANSPORT_TARGETS: [&str; 4] = ["h2", "hyper", "tonic", "tower"];

/// Installs the global subscriber, propagator and exporters. Call once, inside
/// the tokio runtime (the OTLP exporter and the metrics listener need it).
pub fn init(service_name: &str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let service_name = config
        .service_name
        .as_deref()
        .unwrap_or(service_name)
        .to_owned();

    let mut provider = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.clone())
            .build(),
    );
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    // Spans are always built (so log lines carry a trace id) even when no
    // endpoint is set; they are simply not exported then.
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, service_name);
    global::set_tracer_provider(provider.clone());

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !TRANSPORT_TARGETS
                .iter()
                .any(|target| meta.target().starts_with(target))
        }));
    let use_json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let fmt_layer = if use_json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(false)
            .with_span_list(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(EnvFilter::try_new(&config.log_filter)?)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;

    if let Some(addr) = config.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&LATENCY_BUCKETS)?
            .install()?;
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// Histogram buckets for call durations, in seconds (1 ms … 10 s).
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The trace id of the current span, as 32 hex digits (for tests and error
/// reports).
pub fn current_trace_id() -> String {
    Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

/// The current span's W3C `traceparent` (`00-<trace>-<span>-<flags>`), or
/// empty when there is no valid span context (recorded with events).
pub fn current_traceparent() -> String {
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return String::new();
    }
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
}

/// `/pkg.Service/Method` split per the RPC semantic conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcName {
    /// Fully qualified service, e.g. `backroom.account.v1.AccountService`.
    pub service: String,
    /// Method, e.g. `Login`.
    pub method: String,
}

impl RpcName {
    /// Parses a gRPC request path; anything unexpected is kept whole as the
    /// service with an empty method, so odd paths are still counted.
    pub fn from_path(path: &str) -> Self {
        let trimmed = path.trim_start_matches('/');
        match trimmed.split_once('/') {
            Some((service, method)) => Self {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            None => Self {
                service: trimmed.to_owned(),
                method: String::new(),
            },
        }
    }

    /// `service/method`, the OpenTelemetry span name for RPCs.
    pub fn span_name(&self) -> String {
        format!("{}/{}", self.service, self.method)
    }

    /// Health checks and reflection are infrastructure: their spans are at
    /// DEBUG so probes every few seconds do not flood the trace store.
    fn is_infrastructure(&self) -> bool {
        self.service.starts_with("grpc.")
    }
}

/// Which end of the call a span and its metrics describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

fn rpc_span(side: Side, rpc: &RpcName) -> Span {
    let name = rpc.span_name();
    let kind = match side {
        Side::Server => "server",
        Side::Client => "client",
    };
    macro_rules! span_at {
        ($level:expr) => {
            tracing::span!(
                $level,
                "rpc",
                otel.name = %name,
                otel.kind = kind,
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = %rpc.service,
                rpc.method = %rpc.method,
                rpc.grpc.status_code = Empty,
                trace_id = Empty,
            )
        };
    }
    if rpc.is_infrastructure() {
        span_at!(tracing::Level::DEBUG)
    } else {
        span_at!(tracing::Level::INFO)
    }
}

/// Records the outcome of one call exactly once: on the span (status code,
/// error status per the semantic conventions) and in the RED metrics.
#[derive(Debug)]
struct CallObserver {
    side: Side,
    rpc: RpcName,
    span: Span,
    started: Instant,
    finished: bool,
}

impl CallObserver {
    fn new(side: Side, rpc: RpcName, span: Span) -> Self {
        Self {
            side,
            rpc,
            span,
            started: Instant::now(),
            finished: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        self.span.record("rpc.grpc.status_code", code as i32);
        // Semantic conventions: on the server only codes that mean a server
        // fault are errors; on the client every non-OK code is.
        let is_error = match self.side {
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            Side::Client => code != Code::Ok,
        };
        if is_error {
            self.span.record("otel.status_code", "ERROR");
        }
        let labels = [
            ("rpc_service", self.rpc.service.clone()),
            ("rpc_method", self.rpc.method.clone()),
            ("grpc_code", format!("{code:?}")),
        ];
        match self.side {
            Side::Server => {
                metrics::counter!("rpc_server_requests_total", &labels).increment(1);
                metrics::histogram!("rpc_server_duration_seconds", &labels).record(elapsed);
            }
            Side::Client => {
                metrics::counter!("rpc_client_requests_total", &labels).increment(1);
                metrics::histogram!("rpc_client_duration_seconds", &labels).record(elapsed);
            }
        }
    }
}

impl Drop for CallObserver {
    fn drop(&mut self) {
        // Dropped unfinished: the call was abandoned (client went away,
        // deadline hit, connection reset) before a status was sent.
        self.finish(Code::Cancelled);
    }
}

/// The `grpc-status` header or trailer, if present.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32)
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's final status when the
    /// `grpc-status` trailer goes by (or when the body is dropped early).
    #[derive(Debug)]
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        observer: Option<CallObserver>,
    }
}

impl<B> http_body::Body for ObservedBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(observer) = this.observer.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                        observer.finish(code);
                    }
                }
                Poll::Ready(Some(Err(_))) => observer.finish(Code::Internal),
                // A stream that ends without a status trailer is a protocol
                // error on the peer's side.
                Poll::Ready(None) => observer.finish(Code::Unknown),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Server-side tracing + metrics layer. Sits outermost in the server stack so
/// that shed and rejected calls are traced and counted too.
#[derive(Debug, Clone, Default)]
pub struct RpcTelemetryLayer;

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

/// See [`RpcTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTelemetry<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness errors surface on `call` instead (tower's load shed and
        // concurrency limit are always ready; see the server stack).
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = RpcName::from_path(request.uri().path());
        let span = rpc_span(Side::Server, &rpc);
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Err only when no OpenTelemetry layer is installed (plain tests).
        let _ = span.set_parent(parent);
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));

        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::deadline::parse_grpc_timeout)
            .map(|budget| tokio::time::Instant::now() + budget);
        let mut observer = CallObserver::new(Side::Server, rpc, span.clone());
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let result =
                crate::deadline::scope(deadline, tracing::Instrument::instrument(future, span))
                    .await;
            let response = match result {
                Ok(response) => response,
                // An error from an inner layer: answered here so it is traced
                // and counted, with tonic's own mapping. (Load shedding is
                // not an error: the concurrency limit answers OVERLOADED
                // itself.)
                Err(err) => tonic::Status::from_error(err.into()).into_http(),
            };
            if let Some(code) = grpc_status(response.headers()) {
                observer.finish(code);
            }
            Ok(response.map(|inner| ObservedBody {
                inner,
                observer: Some(observer),
            }))
        })
    }
}

/// The `ErrorInfo` domain of the service a gRPC path belongs to.
pub(crate) fn domain_of_path(path: &str) -> crate::errors::Domain {
    domain_of(&RpcName::from_path(path).service)
}

/// The `ErrorInfo` domain of a service (`backroom.account.v1.AccountService`
/// → `backroom.account`); `backroom` for health, reflection and the rest.
fn domain_of(service: &str) -> crate::errors::Domain {
    const DOMAINS: [&str; 4] = [
        "backroom.account",
        "backroom.inventory",
        "backroom.payment",
        "backroom.testing",
    ];
    DOMAINS
        .into_iter()
        .find(|domain| {
            service
                .strip_prefix(domain)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .unwrap_or("backroom")
}

/// Client-side tracing + metrics layer: wrap a `tonic::transport::Channel` in
/// it (see `crate::client`) so every outgoing call carries `traceparent`.
#[derive(Debug, Clone, Default)]
pub struct ClientTelemetryLayer;

impl<S> Layer<S> for ClientTelemetryLayer {
    type Service = ClientTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTelemetry { inner }
    }
}

/// See [`ClientTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ClientTelemetry<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ClientTelemetry<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError> + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = tower::BoxError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let rpc = RpcName::from_path(request.uri().path());
        let span = rpc_span(Side::Client, &rpc);
        let context = span.context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()));
        });
        crate::deadline::propagate(request.headers_mut());
        let mut observer = CallObserver::new(Side::Client, rpc, span.clone());
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let result = tracing::Instrument::instrument(future, span).await;
            match result {
                Ok(response) => {
                    if let Some(code) = grpc_status(response.headers()) {
                        observer.finish(code);
                    }
                    Ok(response.map(|inner| ObservedBody {
                        inner,
                        observer: Some(observer),
                    }))
                }
                Err(err) => {
                    observer.finish(Code::Unavailable);
                    Err(Box::new(transport_failure(err.into())) as tower::BoxError)
                }
            }
        })
    }
}

/// The status for a call that got no response from the server: tonic's
/// reading of the transport error, except that a reset or broken
/// connection (which tonic reports as INTERNAL or UNKNOWN) is UNAVAILABLE —
/// the server never answered, so callers treat it as transient.
fn transport_failure(err: tower::BoxError) -> tonic::Status {
    let status = tonic::Status::from_error(err);
    match status.code() {
        Code::Internal | Code::Unknown => {
            tonic::Status::unavailable(format!("connection failed: {}", status.message()))
        }
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_paths_split_into_service_and_method() {
        let rpc = RpcName::from_path("/backroom.account.v1.AccountService/Login");
        assert_eq!(rpc.service, "backroom.account.v1.AccountService");
        assert_eq!(rpc.method, "Login");
        assert_eq!(rpc.span_name(), "backroom.account.v1.AccountService/Login");
        assert!(!rpc.is_infrastructure());
        assert!(RpcName::from_path("/grpc.health.v1.Health/Check").is_infrastructure());
        assert_eq!(RpcName::from_path("/odd").method, "");
    }

    #[test]
    fn a_call_without_a_response_is_unavailable_unless_tonic_knows_better() {
        let broken = transport_failure(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unavailable, "{broken:?}");
        let timed_out = transport_failure(Box::new(tonic::Status::deadline_exceeded("late")));
        assert_eq!(timed_out.code(), Code::DeadlineExceeded);
    }

    #[test]
    fn grpc_status_reads_the_numeric_code() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&headers), Some(Code::NotFound));
    }

    #[test]
    fn a_finished_call_is_counted_once_with_its_code() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut observer = CallObserver::new(
                Side::Server,
                RpcName::from_path("/pkg.Svc/Do"),
                Span::none(),
            );
            observer.finish(Code::NotFound);
            drop(observer); // must not count a second, CANCELLED call
        });
        let rendered = handle.render();
        assert!(
            rendered.contains(
                r#"rpc_server_requests_total{rpc_service="pkg.Svc",rpc_method="Do",grpc_code="NotFound"} 1"#
            ),
            "{rendered}"
        );
        assert!(!rendered.contains("Cancelled"), "{rendered}");
    }
}
