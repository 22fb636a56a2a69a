//! The server's concurrency limit: a call holds one of `limit` permits from
//! the moment it is admitted until its response has been sent in full —
//! for a server stream, until the stream ends, not merely until its headers
//! went out (tower's `ConcurrencyLimit` releases at the headers, so open
//! streams did not count). Past the limit a call is answered at once with
//! RESOURCE_EXHAUSTED, ErrorInfo reason `OVERLOADED`, instead of queueing.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::Service;

/// The status of a call shed at the concurrency limit, in `domain`.
pub fn overloaded(domain: crate::errors::Domain) -> tonic::Status {
    crate::errors::with_reason(
        tonic::Code::ResourceExhausted,
        domain,
        "OVERLOADED",
        "the server is at its concurrency limit; retry with backoff",
        [],
    )
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> ConcurrencyLimit<S> {
    /// At most `limit` calls (streams included) in `inner` at once.
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }
}

/// A limited service is routed by its inner service's name, so a service
/// can carry its own limit inside the server's.
impl<S: tonic::server::NamedService> tonic::server::NamedService for ConcurrencyLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for ConcurrencyLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = crate::server::ResponseFuture<Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let domain = crate::telemetry::domain_of_path(request.uri().path());
            return Box::pin(async move { Ok(overloaded(domain).into_http()) });
        };
        let mut inner = crate::server::take_ready(&mut self.inner);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| {
                Body::new(PermitBody {
                    inner: body,
                    permit: Some(permit),
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its call's permit until it ends.
    struct PermitBody {
        #[pin]
        inner: Body,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl http_body::Body for PermitBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Ended: free the slot now rather than when hyper drops the body.
            this.permit.take();
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
