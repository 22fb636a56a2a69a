//! Every protocol on the gRPC port: gRPC as is, gRPC-Web (`tonic-web`, for
//! browsers), Connect-style unary JSON (`POST /<package>.<Service>/<Method>`
//! with `application/json`) and the REST routes the protos declare with
//! `google.api.http` (AIP-127), over HTTP/1.1 and HTTP/2, with CORS for the
//! origins a deployment allows.
//!
//! A JSON call is not served beside the gRPC stack but through it: the
//! gateway turns it into the gRPC call it describes (the framed request
//! message, the client's headers as metadata, its deadline as
//! `grpc-timeout`, its connection info) and hands that to the same stack a
//! gRPC client meets — telemetry, client address and rate limits, auth,
//! the concurrency limit, the service — then turns the answer into JSON:
//! the response message, or the `google.rpc.Status` (code, message,
//! details with `@type`) with the HTTP status AIP-193 maps its code to.
//! Server streams (WatchStock, WatchEvents) become server-sent events.
//!
//! Layout: [`routes`] (the route table from the descriptors and their
//! `google.api.http` options, path templates), [`transcode`] (JSON ↔
//! messages, the inner call, responses, errors, SSE), [`GatewayLayer`]
//! (the tower layer), [`cors`].

pub mod openapi;
pub mod routes;
pub mod transcode;

use std::{sync::Arc, task::Poll, time::Duration};

use http::{HeaderValue, header};
use http_body_util::{BodyExt as _, Limited};
use prost_reflect::DescriptorPool;
use tonic::{Status, body::Body};
use tower::Service as _;

use self::{
    routes::{BodyRule, RouteTable},
    transcode::{Target, bad, error_response},
};
use crate::{
    config::ServerConfig,
    server::{HttpService, ResponseFuture, take_ready},
};

/// The descriptors of every Backroom API (and the well-known types).
pub fn descriptors() -> &'static DescriptorPool {
    crate::events::api::descriptors()
}

/// What the gateway needs of a server.
#[derive(Debug, Clone)]
struct Settings {
    routes: Arc<RouteTable>,
    /// JSON bodies being read and transcoded at once: bounded like the
    /// calls themselves (the concurrency limit), since a body is read
    /// before its call takes a slot; past it a request is shed.
    reading: Arc<tokio::sync::Semaphore>,
    /// The server's OpenAPI document, served at `/openapi.json`.
    openapi: bytes::Bytes,
    max_body: usize,
    body_timeout: Option<Duration>,
    request_timeout: Duration,
}

/// The layer: gRPC passes through; everything else is served as JSON.
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    settings: Settings,
}

impl GatewayLayer {
    /// The gateway of a server serving `services` (full names) with
    /// `config`'s limits; `Err` when an annotation is malformed.
    pub fn new(services: &[&str], config: &ServerConfig) -> anyhow::Result<Self> {
        let routes =
            RouteTable::new(descriptors(), services).map_err(|err| anyhow::anyhow!(err))?;
        // Titled after the first service's package: `backroom.inventory.v1.…`.
        let title = services
            .first()
            .and_then(|name| name.split('.').nth(1))
            .unwrap_or("backroom");
        let openapi = openapi::document(descriptors(), services, &routes, title);
        Ok(Self {
            settings: Settings {
                routes: Arc::new(routes),
                openapi: bytes::Bytes::from(openapi),
                max_body: config.max_message_bytes,
                reading: Arc::new(tokio::sync::Semaphore::new(config.concurrency_limit.max(1))),
                body_timeout: (config.request_body_timeout_ms > 0)
                    .then(|| Duration::from_millis(config.request_body_timeout_ms)),
                request_timeout: config.request_timeout(),
            },
        })
    }

    /// The REST and Connect routes it serves.
    pub fn routes(&self) -> &RouteTable {
        &self.settings.routes
    }

    /// Wraps `inner` (the gRPC stack): gRPC goes to it as is, gRPC-Web
    /// through `tonic-web`'s translation (which refuses anything else over
    /// HTTP/1.1, so only gRPC-Web is sent its way), everything else is JSON.
    pub fn layer(&self, inner: HttpService) -> HttpService {
        let grpc_web = HttpService::new(
            tower::ServiceBuilder::new()
                .map_err(tower::BoxError::from)
                .map_response(|response: http::Response<_>| response.map(Body::new))
                .layer(tonic_web::GrpcWebLayer::new())
                .service(inner.clone()),
        );
        HttpService::new(Gateway {
            settings: self.settings.clone(),
            inner,
            grpc_web,
        })
    }
}

#[derive(Clone)]
struct Gateway {
    settings: Settings,
    inner: HttpService,
    grpc_web: HttpService,
}

impl tower::Service<http::Request<Body>> for Gateway {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = ResponseFuture<tower::BoxError>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are clones of one stack (cloned per call): ready when it is.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        match content_type(request.headers()) {
            Some(kind) if kind.starts_with("application/grpc-web") => {
                let mut grpc_web = self.grpc_web.clone();
                return Box::pin(async move {
                    std::future::poll_fn(|cx| grpc_web.poll_ready(cx)).await?;
                    grpc_web.call(request).await
                });
            }
            Some(kind) if kind.starts_with("application/grpc") => {
                return Box::pin(inner.call(request));
            }
            _ => {}
        }
        let settings = self.settings.clone();
        Box::pin(async move { Ok(serve_json(settings, inner, request).await) })
    }
}

fn content_type(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Resolves, transcodes and calls; every failure is a JSON error.
async fn serve_json(
    settings: Settings,
    mut inner: HttpService,
    request: http::Request<Body>,
) -> http::Response<Body> {
    if request.method() == http::Method::GET && request.uri().path() == "/openapi.json" {
        let mut response = http::Response::new(Body::new(http_body_util::Full::new(
            settings.openapi.clone(),
        )));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let target = match resolve(&settings, &request) {
        Ok(target) => target,
        Err(response) => return *response,
    };
    let (parts, body) = request.into_parts();
    if target.body != BodyRule::None && !is_json(&parts.headers) && has_body(&parts.headers) {
        let mut response =
            error_response(&bad("content-type", "must be application/json (header)"));
        *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    // The call's deadline: the client's, within the server's own timeout
    // (a little inside it, so this answer, in JSON, comes before the
    // transport's).
    let client = match transcode::client_deadline(&parts.headers) {
        Ok(client) => client,
        Err(status) => return error_response(&status),
    };
    let server = settings
        .request_timeout
        .saturating_sub(Duration::from_millis(100))
        .max(Duration::from_millis(1));
    let deadline = client.map_or(server, |client| client.min(server));
    let started = tokio::time::Instant::now();

    // A declared length over the limit is refused before any of it is read.
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length > settings.max_body as u64)
    {
        return error_response(&bad(
            "body",
            &format!("is larger than {} bytes", settings.max_body),
        ));
    }
    let Ok(reading) = settings.reading.clone().try_acquire_owned() else {
        return error_response(&crate::errors::with_reason(
            tonic::Code::ResourceExhausted,
            transcode::DOMAIN,
            "OVERLOADED",
            "too many requests being read at once; retry shortly",
            [],
        ));
    };
    // A route without a body (GET, DELETE) reads none.
    let body = if target.body == BodyRule::None {
        drop(body);
        bytes::Bytes::new()
    } else {
        match read_body(&settings, body).await {
            Ok(body) => body,
            Err(status) => return error_response(&status),
        }
    };
    let message = match transcode::request_message(&target, &body, parts.uri.query()) {
        Ok(message) => message,
        Err(status) => return error_response(&status),
    };
    drop((body, reading));
    let remaining = deadline.saturating_sub(started.elapsed());
    let call = transcode::grpc_request(parts, &target.method, message, Some(remaining));
    let expired = || {
        error_response(&Status::deadline_exceeded(format!(
            "no answer within the call's deadline ({} ms)",
            deadline.as_millis()
        )))
    };
    if target.method.is_server_streaming() {
        // The deadline bounds the stream's start; the stream itself lives
        // as its RPC allows.
        return match tokio::time::timeout(remaining, inner.call(call)).await {
            Ok(Ok(response)) => transcode::sse_response(target, response),
            Ok(Err(err)) => error_response(&Status::from_error(err)),
            Err(_) => expired(),
        };
    }
    let answered = tokio::time::timeout(remaining, async {
        match inner.call(call).await {
            Ok(response) => transcode::unary_response(&target, response).await,
            Err(err) => error_response(&Status::from_error(err)),
        }
    })
    .await;
    answered.unwrap_or_else(|_| expired())
}

fn has_body(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v != "0")
}

/// The RPC a JSON request is for, or the error response.
fn resolve(
    settings: &Settings,
    request: &http::Request<Body>,
) -> Result<Target, Box<http::Response<Body>>> {
    let path = request.uri().path();
    if request.method() == http::Method::POST
        && let Some(method) = settings.routes.connect.get(path)
    {
        return Ok(Target {
            method: method.clone(),
            body: BodyRule::Whole,
            bound: Vec::new(),
            query: false,
            response_body: None,
        });
    }
    match settings.routes.route(request.method(), path) {
        Ok((route, bound)) => Ok(Target {
            method: route.method.clone(),
            body: route.body.clone(),
            bound,
            query: route.body != BodyRule::Whole,
            response_body: route.response_body.clone(),
        }),
        Err(allowed) if !allowed.is_empty() => {
            let mut response = error_response(&Status::unimplemented(format!(
                "{} is not allowed on {path}; allowed: {}",
                request.method(),
                allowed
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            let allow = allowed
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            Err(Box::new(response))
        }
        Err(_) => {
            let mut response = error_response(&Status::not_found(format!(
                "no route for {} {path} (REST routes are under /v1/…; Connect calls are POST /<package>.<Service>/<Method> with application/json)",
                request.method()
            )));
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            Err(Box::new(response))
        }
    }
}

/// The request body, at most `max_body` bytes, within the body timeout.
async fn read_body(settings: &Settings, body: Body) -> Result<bytes::Bytes, Status> {
    let limit = settings.max_body;
    let collect = Limited::new(body, limit).collect();
    let collected = match settings.body_timeout {
        Some(timeout) => tokio::time::timeout(timeout, collect).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ))
        })?,
        None => collect.await,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(bad("body", &format!("is larger than {limit} bytes")))
        }
        Err(err) => Err(bad("body", &format!("could not be read: {err}"))),
    }
}

/// CORS for the origins a deployment allows (`BACKROOM_CORS_ALLOWED_ORIGINS`):
/// preflights answered before auth, `authorization` and the gRPC-Web and
/// Connect headers allowed, `grpc-status` / `grpc-message` exposed.
pub mod cors {
    use http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};

    /// The layer, or `None` when no origin is allowed.
    pub fn layer(origins: &[String]) -> Option<CorsLayer> {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if origins.is_empty() {
            return None;
        }
        let any = origins.iter().any(|o| o == "*");
        let allow_origin = if any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins)
        };
        let header = HeaderName::from_static;
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header("authorization"),
                    header("content-type"),
                    header("x-grpc-web"),
                    header("x-user-agent"),
                    header("grpc-timeout"),
                    header("connect-protocol-version"),
                    header("connect-timeout-ms"),
                    header("traceparent"),
                    header("tracestate"),
                    header("x-request-id"),
                ])
                .expose_headers([
                    header("grpc-status"),
                    header("grpc-message"),
                    header("grpc-status-details-bin"),
                    header("retry-after"),
                ])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }
}
