//! Outbound gRPC channels: connect and request timeouts, HTTP/2 keepalive, and
//! the client telemetry layer so every call carries `traceparent`.
//!
//! Wrap the result in a generated client:
//! `AccountServiceClient::new(client::channel(&config)?)`.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;

use crate::telemetry::{ClientTelemetry, ClientTelemetryLayer};

/// A traced channel: what generated clients are built on.
pub type TracedChannel = ClientTelemetry<Channel>;

/// How to reach another service.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` of the target.
    pub endpoint: String,
    /// Longest wait for a TCP + HTTP/2 connection.
    pub connect_timeout: Duration,
    /// Default deadline of a call when the caller sets none.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Defaults: 2 s to connect, 10 s per call.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

fn endpoint(config: &ClientConfig) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(config.endpoint.clone())?
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// A lazily connecting traced channel: the first call connects, and a target
/// that is down yields UNAVAILABLE per call rather than failing start-up.
pub fn channel(config: &ClientConfig) -> anyhow::Result<TracedChannel> {
    Ok(ServiceBuilder::new()
        .layer(ClientTelemetryLayer)
        .service(endpoint(config)?.connect_lazy()))
}

/// Connects now (tests use this to fail fast on a bad address).
pub async fn connect(config: &ClientConfig) -> anyhow::Result<TracedChannel> {
    Ok(ServiceBuilder::new()
        .layer(ClientTelemetryLayer)
        .service(endpoint(config)?.connect().await?))
}
