//! The server's concurrency limit: a call holds a slot from the moment it
//! is admitted until its response has been sent in full — for a server
//! stream, until the stream ends, not merely until its headers went out
//! (tower's `ConcurrencyLimit` releases at the headers, so open streams did
//! not count). Past the limit a call is answered at once with
//! RESOURCE_EXHAUSTED, ErrorInfo reason `OVERLOADED`, instead of queueing.
//!
//! A slot is taken when a call's headers arrive, so three rules keep one
//! client from holding them all (an outside attacker once filled every slot
//! of every service with 300 calls whose request bodies never finished):
//! - **per client**: one client address (see [`crate::ratelimit`]) holds at
//!   most [`Limits::per_client`] slots;
//! - **a reserve for services**: calls of service principals (verified by
//!   the auth layer, which runs first) may also use [`Limits::service_reserve`]
//!   slots nobody else can take, so calls between services — the revocation
//!   list, a saga's own capture — get through while the public slots are
//!   full;
//! - **a request body deadline**: a request whose body has not ended
//!   [`Limits::body_timeout`] after its headers fails (CANCELLED), freeing
//!   its slot, instead of waiting for the call's own timeout. Bidirectional
//!   streams (server reflection) are exempt: their request body is the
//!   stream.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::Service;

use crate::{auth::Caller, ratelimit::ClientAddr};

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

/// The limits of one [`ConcurrencyLimit`]; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Slots for every caller together.
    pub total: usize,
    /// Slots one client address may hold; `None`: no cap.
    pub per_client: Option<usize>,
    /// Extra slots only service principals may take.
    pub service_reserve: usize,
    /// Longest a request body may take to arrive; `None`: no deadline.
    pub body_timeout: Option<Duration>,
}

impl Limits {
    /// Only a total: no per-client cap, no reserve, no body deadline (a
    /// service's own limit inside the server's).
    pub fn total(total: usize) -> Self {
        Self {
            total,
            per_client: None,
            service_reserve: 0,
            body_timeout: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    public: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ConcurrencyLimit<S> {
    /// At most `limit` calls (streams included) in `inner` at once.
    pub fn new(inner: S, limit: usize) -> Self {
        Self::with_limits(inner, Limits::total(limit))
    }

    /// `inner` within `limits`.
    pub fn with_limits(inner: S, limits: Limits) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared {
                limits,
                public: Arc::new(Semaphore::new(limits.total.max(1))),
                reserve: Arc::new(Semaphore::new(limits.service_reserve)),
                per_client: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// A limited service is routed by its inner service's name, so a service
/// can carry its own limit inside the server's.
impl<S: tonic::server::NamedService> tonic::server::NamedService for ConcurrencyLimit<S> {
    const NAME: &'static str = S::NAME;
}

/// One admitted call's claim: its slot and, if counted, its client's share.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    client: Option<(Arc<Shared>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((shared, client)) = self.client.take() {
            shared.release(client);
        }
    }
}

impl Shared {
    /// A slot for a call of `client` (`service`: a service principal), or
    /// `None` when the call must be shed.
    fn admit(self: &Arc<Self>, client: Option<IpAddr>, service: bool) -> Option<Slot> {
        if service {
            let permit = self
                .reserve
                .clone()
                .try_acquire_owned()
                .or_else(|_| self.public.clone().try_acquire_owned())
                .ok()?;
            return Some(Slot {
                _permit: permit,
                client: None,
            });
        }
        let counted = match (self.limits.per_client, client) {
            (Some(cap), Some(client)) => {
                let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
                let count = counts.entry(client).or_default();
                if *count >= cap {
                    return None;
                }
                *count += 1;
                Some(client)
            }
            _ => None,
        };
        match self.public.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot {
                _permit: permit,
                client: counted.map(|client| (self.clone(), client)),
            }),
            Err(_) => {
                if let Some(client) = counted {
                    self.release(client);
                }
                None
            }
        }
    }

    /// One call of `client` ended (or was refused after being counted).
    fn release(&self, client: IpAddr) {
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&client);
            }
        }
    }
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
        let client = request
            .extensions()
            .get::<ClientAddr>()
            .map(|client| client.key())
            .or_else(|| {
                request
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|info| info.remote_addr())
                    .map(|addr| ClientAddr(addr.ip()).key())
            });
        let service = request
            .extensions()
            .get::<Caller>()
            .is_some_and(Caller::is_service);
        let Some(slot) = self.shared.admit(client, service) else {
            let domain = crate::telemetry::domain_of_path(request.uri().path());
            return Box::pin(async move { Ok(overloaded(domain).into_http()) });
        };
        let domain = crate::telemetry::domain_of_path(request.uri().path());
        let (tripped_tx, tripped) = tokio::sync::oneshot::channel::<()>();
        let request = match self.shared.limits.body_timeout {
            Some(timeout) if !request.uri().path().starts_with("/grpc.reflection.") => {
                request.map(|body| {
                    Body::new(DeadlineBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep(timeout)),
                        tripped: Some(tripped_tx),
                    })
                })
            }
            _ => request,
        };
        let mut inner = crate::server::take_ready(&mut self.inner);
        Box::pin(async move {
            // A body past its deadline ends the call here, with our own
            // answer; the handler (waiting for that body) is dropped.
            let response = tokio::select! {
                response = inner.call(request) => response?,
                Ok(()) = tripped => body_too_slow(domain).into_http(),
            };
            Ok(response.map(|body| {
                Body::new(SlotBody {
                    inner: body,
                    slot: Some(slot),
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its call's slot until it ends.
    struct SlotBody {
        #[pin]
        inner: Body,
        slot: Option<Slot>,
    }
}

impl http_body::Body for SlotBody {
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
            this.slot.take();
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

/// The status of a call whose request body did not arrive in time.
fn body_too_slow(domain: crate::errors::Domain) -> tonic::Status {
    crate::errors::with_reason(
        tonic::Code::DeadlineExceeded,
        domain,
        "REQUEST_BODY_TIMEOUT",
        "the request body did not arrive in time",
        [],
    )
}

pin_project_lite::pin_project! {
    /// A request body that must end before its deadline; past it, it tells
    /// the call (which answers and drops the handler) and yields nothing
    /// more.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        deadline: Pin<Box<tokio::time::Sleep>>,
        tripped: Option<tokio::sync::oneshot::Sender<()>>,
    }
}

impl http_body::Body for DeadlineBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                // Complete in time: the deadline no longer applies.
                this.tripped.take();
                Poll::Ready(None)
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                if let Some(tripped) = this.tripped.take() {
                    let _ = tripped.send(());
                }
                Poll::Pending
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(limits: Limits) -> Arc<Shared> {
        ConcurrencyLimit::with_limits((), limits).shared
    }

    #[test]
    fn one_client_cannot_take_every_slot_and_services_keep_a_reserve() {
        let shared = shared(Limits {
            total: 4,
            per_client: Some(2),
            service_reserve: 1,
            body_timeout: None,
        });
        let greedy: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = shared.admit(Some(greedy), false).expect("first");
        let _b = shared.admit(Some(greedy), false).expect("second");
        assert!(
            shared.admit(Some(greedy), false).is_none(),
            "past its share"
        );
        let _c = shared.admit(Some(other), false).expect("another client");
        let _d = shared.admit(Some(other), false).expect("its second");
        assert!(
            shared
                .admit(Some("192.0.2.3".parse().unwrap()), false)
                .is_none(),
            "the public slots are full"
        );
        let service = shared.admit(None, true).expect("the service reserve");
        assert!(
            shared.admit(None, true).is_none(),
            "reserve and public full"
        );
        drop(service);
        drop(a);
        assert!(
            shared.admit(Some(greedy), false).is_some(),
            "a freed slot and share"
        );
    }

    #[test]
    fn a_refused_call_leaves_its_clients_count_as_it_was() {
        let shared = shared(Limits {
            total: 1,
            per_client: Some(5),
            service_reserve: 0,
            body_timeout: None,
        });
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let held = shared.admit(Some(client), false).expect("the slot");
        for _ in 0..10 {
            assert!(shared.admit(Some(client), false).is_none());
        }
        assert_eq!(shared.per_client.lock().unwrap().get(&client), Some(&1));
        drop(held);
        assert!(shared.per_client.lock().unwrap().is_empty());
    }
}
