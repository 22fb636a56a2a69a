//! Per-client rate limits, and who the client is.
//!
//! [`RateLimitLayer`] sits in front of auth on every server. For every call
//! it works out the client's address ([`ClientAddr`], put into the request
//! extensions for handlers such as Login's lockout): the peer address, or —
//! when the peer is a configured trusted proxy — the right-most address in
//! `x-forwarded-for` that is not itself a trusted proxy (the standard way to
//! read that header without letting clients forge it). IPv6 clients are
//! keyed by their /64, since a single host can pick any address inside it.
//!
//! The RPCs a service names (its public and credential RPCs) then get one
//! token bucket per (method, client): `BACKROOM_RATE_LIMIT_PER_SEC` calls per
//! second with bursts of `BACKROOM_RATE_LIMIT_BURST`. Past it a call is
//! answered at once with RESOURCE_EXHAUSTED, ErrorInfo reason `RATE_LIMITED`
//! and a `google.rpc.RetryInfo` saying when the next call would pass. The
//! buckets are `governor`'s keyed GCRA limiter (a well-kept library), not
//! ours; idle buckets are pruned as the key count grows.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};
use ipnet::IpNet;
use tonic::{Code, body::Body};
use tower::{Layer, Service};

use crate::config::RateLimitConfig;

/// The client a call came from (see the module docs), in the request
/// extensions of every call that passed a [`RateLimitLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// What per-client limits key this client by: an IPv4 address as is,
    /// an IPv6 one by its /64 (one host can use any address in it).
    pub fn key(self) -> IpAddr {
        bucket_key(self.0)
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The client of `request`: what the [`RateLimitLayer`] found, else the
/// peer address, else `None` (in-process calls without a socket).
pub fn client_addr<T>(request: &tonic::Request<T>) -> Option<ClientAddr> {
    request
        .extensions()
        .get::<ClientAddr>()
        .copied()
        .or_else(|| request.remote_addr().map(|peer| ClientAddr(peer.ip())))
}

/// The address a bucket is keyed by: IPv4 as is, IPv6 by its /64.
fn bucket_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// The client of a call from `peer` with `headers`, trusting
/// `x-forwarded-for` only from `trusted` proxies.
pub fn resolve_client(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));
    if !is_trusted(&peer) {
        return ClientAddr(peer);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect();
    // Right to left: each trusted proxy appended the address it saw; the
    // first hop that is not one of ours is the client (anything left of it
    // the client could have written itself).
    hops.iter()
        .rev()
        .find(|hop| !is_trusted(hop))
        .copied()
        .map_or(ClientAddr(peer), ClientAddr)
}

/// Buckets pruned once this many keys exist.
const PRUNE_ABOVE_KEYS: usize = 10_000;

struct Limits {
    limiter: Option<DefaultKeyedRateLimiter<(usize, IpAddr)>>,
    methods: Vec<&'static str>,
    trusted: Vec<IpNet>,
    calls: AtomicU64,
}

/// The rate-limit tower layer; see the module docs.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Arc<Limits>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("methods", &self.limits.methods)
            .field("limited", &self.limits.limiter.is_some())
            .field("trusted_proxies", &self.limits.trusted)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Limits `methods` (gRPC paths, `/pkg.Service/Method`) per client as
    /// `config` says; every call still gets its [`ClientAddr`].
    pub fn new(config: &RateLimitConfig, methods: &[&'static str]) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_sec).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limits: Arc::new(Limits {
                limiter,
                methods: methods.to_vec(),
                trusted: config.trusted_proxies.clone(),
                calls: AtomicU64::new(0),
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// `Some(wait)` when the call must be refused.
    fn exceeded(&self, path: &str, client: ClientAddr) -> Option<std::time::Duration> {
        let limiter = self.limiter.as_ref()?;
        let method = self.methods.iter().position(|m| *m == path)?;
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && limiter.len() > PRUNE_ABOVE_KEYS
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&(method, client.key()))
            .err()
            .map(|not_until| {
                not_until.wait_time_from(governor::clock::DefaultClock::default().now())
            })
    }
}

impl<S> Service<http::Request<Body>> for RateLimit<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|addr| addr.ip());
        let client = peer.map(|peer| resolve_client(peer, request.headers(), &self.limits.trusted));
        let refused = client.and_then(|client| {
            self.limits
                .exceeded(request.uri().path(), client)
                .map(|wait| (client, wait))
        });
        if let Some((client, wait)) = refused {
            let domain = crate::telemetry::domain_of_path(request.uri().path());
            tracing::info!(%client, wait_ms = wait.as_millis(), "rate limited");
            let wait = wait.max(std::time::Duration::from_millis(1));
            let status = crate::errors::with_retry_info(
                Code::ResourceExhausted,
                domain,
                "RATE_LIMITED",
                format!(
                    "too many calls from this client; retry in {} ms",
                    wait.as_millis()
                ),
                [("retry_after_ms".to_owned(), wait.as_millis().to_string())],
                wait,
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if let Some(client) = client {
            request.extensions_mut().insert(client);
        }
        let mut inner = crate::server::take_ready(&mut self.inner);
        Box::pin(async move { inner.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client =
            |peer: IpAddr, values: &[&str]| resolve_client(peer, &headers(values), &trusted).0;
        // Not a proxy of ours: its header is ignored.
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client(stranger, &["198.51.100.1"]), stranger);
        // Through our proxy: the right-most untrusted hop, not a forged left one.
        assert_eq!(
            client(proxy, &["6.6.6.6, 198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client(proxy, &["6.6.6.6", "198.51.100.1, 10.0.0.7"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Nothing usable: the proxy itself.
        assert_eq!(client(proxy, &["garbage"]), proxy);
        assert_eq!(client(proxy, &[]), proxy);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_key(a), bucket_key(b));
        assert_ne!(bucket_key(a), bucket_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(bucket_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let config = RateLimitConfig {
            rate_limit_per_sec: 1,
            rate_limit_burst: 3,
            trusted_proxies: Vec::new(),
        };
        let layer = RateLimitLayer::new(&config, &["/p.S/Login"]);
        let one = ClientAddr("192.0.2.1".parse().unwrap());
        let two = ClientAddr("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(layer.limits.exceeded("/p.S/Login", one), None);
        }
        let wait = layer
            .limits
            .exceeded("/p.S/Login", one)
            .expect("over the burst");
        assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_secs(1));
        assert_eq!(
            layer.limits.exceeded("/p.S/Login", two),
            None,
            "other clients unaffected"
        );
        assert_eq!(
            layer.limits.exceeded("/p.S/Other", one),
            None,
            "other methods unlimited"
        );
        let off = RateLimitLayer::new(&RateLimitConfig::unlimited(), &["/p.S/Login"]);
        for _ in 0..100 {
            assert_eq!(off.limits.exceeded("/p.S/Login", one), None);
        }
    }
}
