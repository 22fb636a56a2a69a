//! [`AuthLayer`]: the tower layer that verifies the bearer token of every
//! call and puts the [`Caller`] into the request extensions.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{Caller, TokenError, Verifier, bearer_token};
use crate::errors::Domain;

/// The auth tower layer; see the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    domain: Domain,
    public_methods: Arc<[&'static str]>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("domain", &self.domain)
            .field("public_methods", &self.public_methods)
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// `public_methods` are gRPC paths (`/pkg.Service/Method`) callable
    /// without a token; a valid token on them still yields a [`Caller`].
    /// Starts the verifier's background refresh (keys, revocation list) when
    /// called inside a tokio runtime (servers are built in one).
    pub fn new(verifier: Arc<Verifier>, domain: Domain, public_methods: &[&'static str]) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() {
            verifier.spawn_refresh();
        }
        Self {
            verifier,
            domain,
            public_methods: public_methods.into(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Service<http::Request<Body>> for Auth<S>
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
        let mut inner = crate::server::take_ready(&mut self.inner);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path();
            let public = path.starts_with("/grpc.") || layer.public_methods.contains(&path);
            let token = bearer_token(request.headers()).map(str::to_owned);
            match (token, public) {
                (None, true) => {}
                (None, false) => {
                    return Ok(TokenError::Missing.into_status(layer.domain).into_http());
                }
                (Some(token), public) => match layer.verifier.verify_shared(&token).await {
                    Ok(claims) => {
                        request.extensions_mut().insert(Caller {
                            claims,
                            token: token.into(),
                            domain: layer.domain,
                            verifier: layer.verifier.clone(),
                        });
                    }
                    // A bad token on a public method is ignored, not fatal:
                    // the method does not need it.
                    Err(_) if public => {}
                    Err(err) => return Ok(err.into_status(layer.domain).into_http()),
                },
            }
            inner.call(request).await
        })
    }
}
