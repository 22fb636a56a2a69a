//! Builds and runs every Backroom gRPC server the same way.
//!
//! What every server gets:
//! - `grpc.health.v1.Health`: NOT_SERVING until the readiness probe first
//!   passes, re-probed while running, NOT_SERVING again the moment shutdown
//!   begins;
//! - server reflection v1 AND v1alpha (grpcurl 1.8 speaks only v1alpha), with
//!   our descriptors plus health and `google.rpc` so every type is describable;
//! - every protocol on the one port ([`crate::gateway`]): gRPC, gRPC-Web,
//!   Connect-style JSON and the protos' REST routes, HTTP/1.1 and HTTP/2,
//!   CORS for the allowed origins;
//! - the layer stack (see [`GrpcServer::serve`]): telemetry, then the
//!   service's extra layers (rate limits, auth), then the concurrency limit
//!   (streams count until they end); tonic's own per-call timeout wraps it
//!   all;
//! - graceful shutdown: on the shutdown future, health flips, calls keep being
//!   accepted for the shutdown delay, then the listener closes and in-flight
//!   calls drain (bounded by the drain timeout).
//!
//! [`GrpcServer::serve`] takes a bound listener and a shutdown future, so
//! tests bind `127.0.0.1:0`, spawn, and stop it at will.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::server::TcpIncoming,
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder};

use crate::{config::ServerConfig, telemetry::RpcTelemetryLayer};

/// A readiness check: true when the service can do its work (e.g. its
/// database answers).
pub type HealthProbe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// How often the readiness probe runs while serving.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The health handle of a running server, for tests and for services that
/// know more about their own readiness.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<Vec<&'static str>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("services", &self.services)
            .finish()
    }
}

impl Health {
    /// Ends every open health `Watch` stream (by dropping the statuses'
    /// senders); a new Check or Watch then answers NOT_FOUND. Only for the
    /// drain, after NOT_SERVING has been published and the delay has passed.
    async fn end_watches(&self) {
        let mut reporter = self.reporter.clone();
        reporter.clear_service_status("").await;
        for service in self.services.iter() {
            reporter.clear_service_status(service).await;
        }
    }

    /// Sets the status of every served service and of the whole server
    /// (the empty service name, which Kubernetes probes by default).
    pub async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in self.services.iter() {
            self.reporter.set_service_status(service, status).await;
        }
    }
}

/// The future of a boxed middleware call (our tower layers' `Future`).
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

/// The service `poll_ready` made ready, swapped out for a clone: a tower
/// middleware must call the instance it polled, and leave a fresh one for
/// the next call.
pub fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The boxed HTTP service the extra layers wrap.
pub type HttpService =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tower::BoxError>;

/// A type-erased layer over [`HttpService`] (so servers with and without auth
/// have one type).
type ExtraLayer = Arc<dyn Fn(HttpService) -> HttpService + Send + Sync>;

/// One gRPC server: the services it serves, its config and its extra layers.
pub struct GrpcServer {
    config: ServerConfig,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    probe: Option<HealthProbe>,
    layers: Vec<ExtraLayer>,
    /// RPCs rate-limited per client (see [`crate::ratelimit`]).
    rate_limited: Vec<&'static str>,
    health: Health,
    health_service: HealthGrpc,
}

type HealthGrpc =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("config", &self.config)
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A server with no services yet.
    pub fn new(config: ServerConfig) -> Self {
        let reporter = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        Self {
            config,
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            probe: None,
            layers: Vec::new(),
            rate_limited: Vec::new(),
            health: Health {
                reporter,
                services: Arc::new(Vec::new()),
            },
            health_service,
        }
    }

    /// Adds a tonic service (a generated `*Server`). Call the generated
    /// server's `max_decoding_message_size(config.max_message_bytes)` first.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.health.services = Arc::new(self.service_names.clone());
        self.routes.add_service(service);
        self
    }

    /// Sets the readiness probe; without one the server is SERVING as soon as
    /// it listens.
    pub fn with_health_probe(mut self, probe: HealthProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Adds a layer between telemetry and load shedding (the auth layer goes
    /// here, so rejected calls are traced but never take a concurrency slot).
    /// Layers added first sit outermost.
    pub fn with_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HttpService> + Send + Sync + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
        <L::Service as Service<http::Request<Body>>>::Error: Into<tower::BoxError>,
    {
        self.layers.push(Arc::new(move |inner| {
            HttpService::new(
                ServiceBuilder::new()
                    .map_err(Into::into)
                    .service(layer.layer(inner)),
            )
        }));
        self
    }

    /// Rate-limits `methods` (gRPC paths) per client address, as the
    /// server config's rate-limit settings say. Every call gets its
    /// [`crate::ratelimit::ClientAddr`] either way.
    pub fn with_rate_limits(mut self, methods: &[&'static str]) -> Self {
        self.rate_limited.extend_from_slice(methods);
        self
    }

    /// The health handle (valid before and while serving).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The config this server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    ///
    /// Layer order, outermost first, and why:
    /// 1. tonic's per-call timeout (min of config and the client's
    ///    `grpc-timeout`) — bounds everything below;
    /// 2. [`RpcTelemetryLayer`] — every call gets a span and is counted, even
    ///    the ones rejected below;
    /// 3. the client's address and its rate limits ([`crate::ratelimit`]),
    ///    then the extra layers (auth) — cheap rejections before any slot is
    ///    taken;
    /// 4. the concurrency limit ([`crate::concurrency`]) — past the limit a
    ///    call is answered RESOURCE_EXHAUSTED at once instead of queueing
    ///    without bound; a server stream holds its slot until it ends; one
    ///    client holds at most its share; service principals keep a reserve.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let health = self.health.clone();
        health.set_all(ServingStatus::NotServing).await;

        let mut routes = self.routes;
        routes
            .add_service(self.health_service)
            .add_service(reflection_builder(&self.service_names).build_v1()?)
            .add_service(reflection_builder(&self.service_names).build_v1alpha()?);

        let limits = self.config.concurrency_limits();
        let client_layer =
            crate::ratelimit::RateLimitLayer::new(&self.config.rate_limit, &self.rate_limited);
        let layers = Arc::new(self.layers);
        let gateway = crate::gateway::GatewayLayer::new(&self.service_names, &self.config)?;
        let cors = crate::gateway::cors::layer(&self.config.cors_allowed_origins);
        let stack = tower::layer::layer_fn(move |routes: Routes| {
            let mut service = HttpService::new(
                ServiceBuilder::new()
                    .map_err(|never: Infallible| match never {})
                    .service(crate::concurrency::ConcurrencyLimit::with_limits(
                        routes, limits,
                    )),
            );
            for layer in layers.iter().rev() {
                service = layer(service);
            }
            // Who the client is (and its rate limits) before anything else
            // of ours: auth and the concurrency limit read it.
            let service = HttpService::new(client_layer.layer(service));
            let grpc = HttpService::new(
                ServiceBuilder::new()
                    .map_err(|never: Infallible| match never {})
                    .map_response(|response: http::Response<_>| response.map(Body::new))
                    .service(RpcTelemetryLayer.layer(service)),
            );
            // Outside the gRPC stack, and calling into it: JSON (REST and
            // Connect) transcoded to gRPC, gRPC-Web translated to gRPC,
            // CORS preflights answered before anything else.
            let web = gateway.layer(grpc);
            match &cors {
                Some(cors) => HttpService::new(
                    ServiceBuilder::new()
                        .map_response(|response: http::Response<_>| response.map(Body::new))
                        .layer(cors.clone())
                        .service(web),
                ),
                None => web,
            }
        });

        let local_addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            // HTTP/1.1 beside HTTP/2: browsers (gRPC-Web) and JSON clients.
            .accept_http1(true)
            .timeout(self.config.request_timeout())
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(stack)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);

        let prober = tokio::spawn(run_probe(health.clone(), self.probe));
        tracing::info!(%local_addr, services = ?self.service_names, "serving");

        tokio::select! {
            result = &mut server => {
                prober.abort();
                health.set_all(ServingStatus::NotServing).await;
                return result.map_err(Into::into);
            }
            () = shutdown => {}
        }

        // Shutdown, step 1: tell load balancers and probes first.
        prober.abort();
        health.set_all(ServingStatus::NotServing).await;
        tracing::info!(delay = ?self.config.shutdown_delay(), "shutdown: NOT_SERVING published");
        // Step 2: keep serving while they stop routing to us.
        tokio::select! {
            result = &mut server => return result.map_err(Into::into),
            () = tokio::time::sleep(self.config.shutdown_delay()) => {}
        }
        // Step 3: close the listener, send GOAWAY, let in-flight calls finish.
        // Health Watch streams would count as in flight until the drain
        // timeout; they have seen NOT_SERVING, so they end now.
        health.end_watches().await;
        let _ = stop_tx.send(());
        match tokio::time::timeout(self.config.drain_timeout(), server).await {
            Ok(result) => {
                tracing::info!("shutdown: drained");
                result.map_err(Into::into)
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.config.drain_timeout(), "shutdown: drain timed out, abandoning calls");
                Ok(())
            }
        }
    }
}

/// Keeps the health status in line with the readiness probe until aborted.
async fn run_probe(health: Health, probe: Option<HealthProbe>) {
    let Some(probe) = probe else {
        health.set_all(ServingStatus::Serving).await;
        return;
    };
    let mut last = None;
    loop {
        // A database that hangs rather than refuses (frozen, partitioned)
        // must still turn the service NOT_SERVING: an unanswered probe is a
        // failed one.
        let ready = tokio::time::timeout(PROBE_INTERVAL, probe())
            .await
            .unwrap_or(false);
        if last != Some(ready) {
            tracing::info!(ready, "readiness changed");
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_all(status).await;
            last = Some(ready);
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (ctrl-c).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Reflection over every Backroom descriptor plus health and `google.rpc`
/// (so error details decode), advertising only what this server serves.
fn reflection_builder(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(backroom_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .chain(served.iter().copied())
    .fold(builder, |builder, name| builder.with_service_name(name))
}
