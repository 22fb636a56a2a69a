//! Outbound gRPC channels: connect and request timeouts, HTTP/2 keepalive, and
//! the client telemetry layer so every call carries `traceparent`.
//!
//! Wrap the result in a generated client:
//! `AccountServiceClient::new(client::channel(&config)?)`. Idempotent calls
//! (every mutation carrying a request_id, and reads) may go through
//! [`retry_idempotent`]; nothing else is retried.

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

/// Whether a failed call may be retried as is: the server was unreachable,
/// overloaded, or asked for a retry. Never for a definitive answer.
pub fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted
    )
}

/// Runs an idempotent call up to `attempts` times with exponential backoff
/// and jitter (50 ms doubling, at most 1 s) while it fails transiently and
/// the current call's deadline (if any) leaves time. Backoff is backon's, a
/// well-kept library, not ours.
pub async fn retry_idempotent<T, F, Fut>(attempts: usize, call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    use backon::Retryable as _;
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1));
    call.retry(policy)
        .when(|status: &tonic::Status| {
            is_transient(status) && crate::deadline::remaining().is_none_or(|left| !left.is_zero())
        })
        .notify(|status: &tonic::Status, wait: Duration| {
            tracing::debug!(code = ?status.code(), ?wait, "retrying idempotent call");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_definitive_ones_are_not() {
        let mut calls = 0;
        let result = retry_idempotent(5, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(tonic::Status::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let result: Result<(), _> = retry_idempotent(5, || {
            calls += 1;
            async { Err(tonic::Status::failed_precondition("no stock")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::FailedPrecondition);
        assert_eq!(calls, 1);

        let mut calls = 0;
        let result: Result<(), _> = retry_idempotent(3, || {
            calls += 1;
            async { Err(tonic::Status::unavailable("down")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 3, "bounded");
    }
}
