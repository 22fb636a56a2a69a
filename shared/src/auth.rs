//! Authentication and authorization for every service.
//!
//! Layout:
//! - [`Claims`]: what a Backroom access token says (iss, sub, aud, exp, nbf,
//!   iat, jti, roles); [`Caller`] is the verified caller a handler sees.
//! - [`Verifier`]: checks a bearer JWT — EdDSA only (so `alg: none` and
//!   HS256-with-the-public-key are refused), issuer, audience, exp/nbf with
//!   60 s leeway — against a fixed key set or the account service's JWKS
//!   (fetched, cached, refetched once on an unknown `kid`, fail closed).
//! - [`AuthLayer`]: the tower layer every server stacks. Health and
//!   reflection are always public; each service names its other public
//!   methods; every other call without a valid token is UNAUTHENTICATED.
//!   The verified [`Caller`] goes into the request extensions.
//! - [`ServiceCredentials`]: a service's own token (client credentials),
//!   cached until shortly before it expires, for calls to other services.
//!
//! JWT parsing and signature checks are jsonwebtoken's (a well-kept library),
//! not ours.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use uuid::Uuid;

use crate::errors::{Domain, with_reason};

/// Role of every account.
pub const ROLE_CUSTOMER: &str = "customer";
/// Role of administrators.
pub const ROLE_ADMIN: &str = "admin";
/// Role of service principals (calls between services).
pub const ROLE_SERVICE: &str = "service";

/// The token audience of each service.
pub mod audience {
    /// The account service.
    pub const ACCOUNT: &str = "backroom.account";
    /// The inventory service.
    pub const INVENTORY: &str = "backroom.inventory";
    /// The payment (and checkout) service.
    pub const PAYMENT: &str = "backroom.payment";
    /// Every audience; user tokens carry all of them.
    pub const ALL: [&str; 3] = [ACCOUNT, INVENTORY, PAYMENT];
}

/// Longest clock skew tolerated on exp and nbf.
pub const LEEWAY_SECS: u64 = 60;

/// The claims of a Backroom access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `accounts/{uuid}` or `services/{client_id}`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Roles granted.
    pub roles: Vec<String>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A person's account.
    Account(Uuid),
    /// A service principal, by client id.
    Service(String),
}

impl Claims {
    /// The principal named by `sub`, if it is well formed.
    pub fn principal(&self) -> Option<Principal> {
        if let Some(id) = self.sub.strip_prefix("accounts/") {
            Uuid::parse_str(id).ok().map(Principal::Account)
        } else {
            self.sub
                .strip_prefix("services/")
                .filter(|id| !id.is_empty())
                .map(|id| Principal::Service(id.to_owned()))
        }
    }

    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The verified caller of an RPC, put into the request extensions by
/// [`AuthLayer`]. Its `require_*` methods answer PERMISSION_DENIED
/// `ACCESS_DENIED` (with `metadata.required`) in the service's domain.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Arc<Claims>,
    /// The raw bearer token, to forward on behalf of the caller.
    token: Arc<str>,
    domain: Domain,
}

impl Caller {
    /// The caller of `request`, or UNAUTHENTICATED when the method was called
    /// without a token (public methods that still need a caller).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| {
                Status::unauthenticated("this call needs `authorization: Bearer <token>` metadata")
            })
    }

    /// The caller if the request carried a valid token.
    pub fn maybe<T>(request: &tonic::Request<T>) -> Option<Caller> {
        request.extensions().get::<Caller>().cloned()
    }

    /// The caller's account id, if the caller is a person.
    pub fn account_id(&self) -> Option<Uuid> {
        match self.claims.principal() {
            Some(Principal::Account(id)) => Some(id),
            _ => None,
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.claims.has_role(ROLE_ADMIN)
    }

    /// Whether the caller is a service principal.
    pub fn is_service(&self) -> bool {
        self.claims.has_role(ROLE_SERVICE)
            && matches!(self.claims.principal(), Some(Principal::Service(_)))
    }

    /// The bearer token itself (forwarded when acting for the caller).
    pub fn token(&self) -> &str {
        &self.token
    }

    fn denied(&self, required: &str) -> Status {
        with_reason(
            Code::PermissionDenied,
            self.domain,
            "ACCESS_DENIED",
            format!("this call requires {required}"),
            [("required".to_owned(), required.to_owned())],
        )
    }

    /// PERMISSION_DENIED unless the caller has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), Status> {
        if self.claims.has_role(role) {
            Ok(())
        } else {
            Err(self.denied(&format!("role {role}")))
        }
    }

    /// PERMISSION_DENIED unless the caller is a service principal.
    pub fn require_service(&self) -> Result<(), Status> {
        if self.is_service() {
            Ok(())
        } else {
            Err(self.denied("role service"))
        }
    }

    /// PERMISSION_DENIED unless the caller owns `account` or is an admin.
    pub fn require_owner_or_admin(&self, account: Uuid) -> Result<(), Status> {
        if self.account_id() == Some(account) || self.is_admin() {
            Ok(())
        } else {
            Err(self.denied("owner or role admin"))
        }
    }

    /// PERMISSION_DENIED unless the caller owns `account`, is an admin, or is
    /// a service principal.
    pub fn require_owner_admin_or_service(&self, account: Uuid) -> Result<(), Status> {
        if self.account_id() == Some(account) || self.is_admin() || self.is_service() {
            Ok(())
        } else {
            Err(self.denied("owner, role admin or role service"))
        }
    }
}

/// An account named in a request: `accounts/{uuid}`, or `accounts/me` for
/// the caller's own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRef {
    /// The caller's own account.
    Me,
    /// An explicit account.
    Id(Uuid),
}

impl AccountRef {
    /// Parses `accounts/{uuid}` / `accounts/me`; `field` names it in the
    /// violation.
    pub fn parse(field: &str, name: &str) -> Result<Self, crate::errors::FieldViolation> {
        use crate::errors::FieldViolation;
        match name.strip_prefix("accounts/") {
            Some("me") => Ok(Self::Me),
            Some(id) => Uuid::try_parse(id)
                .map(Self::Id)
                .map_err(|_| FieldViolation::new(field, "must be accounts/{uuid} or accounts/me")),
            None if name.is_empty() => Err(FieldViolation::new(field, "is required")),
            None => Err(FieldViolation::new(
                field,
                "must be accounts/{uuid} or accounts/me",
            )),
        }
    }

    /// The account id, resolving `me` against the caller.
    pub fn resolve(
        self,
        field: &str,
        caller: &Caller,
    ) -> Result<Uuid, crate::errors::FieldViolation> {
        match self {
            Self::Id(id) => Ok(id),
            Self::Me => caller.account_id().ok_or_else(|| {
                crate::errors::FieldViolation::new(
                    field,
                    "accounts/me needs a person's token, not a service token",
                )
            }),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization: Bearer …` metadata, or more than one.
    #[error("missing bearer token: send exactly one `authorization: Bearer <token>` header")]
    Missing,
    /// Malformed, wrong algorithm, bad signature, wrong iss/aud, not yet valid,
    /// or signed by an unknown key.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past its exp (plus leeway).
    #[error("token expired")]
    Expired,
    /// The key set could not be fetched to check an unknown kid.
    #[error("cannot fetch verification keys: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    /// The status for this refusal, in `domain`.
    pub fn into_status(self, domain: Domain) -> Status {
        let (code, reason) = match &self {
            TokenError::Missing => (Code::Unauthenticated, "TOKEN_MISSING"),
            TokenError::Invalid(_) => (Code::Unauthenticated, "TOKEN_INVALID"),
            TokenError::Expired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
            TokenError::KeysUnavailable(_) => (Code::Unavailable, "SERVICE_UNAVAILABLE"),
        };
        // The detail of an invalid token is logged, not sent: it would help an
        // attacker probe the verifier.
        if let TokenError::Invalid(detail) = &self {
            tracing::debug!(%detail, "token refused");
        }
        let message = match self {
            TokenError::Invalid(_) => "invalid token".to_owned(),
            other => other.to_string(),
        };
        with_reason(code, domain, reason, message, [])
    }
}

/// One public verification key in JWK terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Key id (`kid` header of the tokens it verifies).
    pub kid: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding.
    pub x: String,
}

/// Fetches the current public keys (the account service's GetJwks).
pub type KeyFetcher = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send>> + Send + Sync,
>;

/// Least time between two refetches triggered by unknown kids, so a stream of
/// forged kids cannot turn the verifier into a JWKS flooder.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

enum KeySource {
    Fixed,
    Fetched {
        fetch: KeyFetcher,
        last_fetch: Mutex<Option<Instant>>,
    },
}

/// Verifies bearer tokens for one audience.
pub struct Verifier {
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    source: KeySource,
    verified: VerifiedCache,
}

/// Tokens whose signature already checked out, by SHA-256 of the token, so
/// a client sending the same token on every call pays the Ed25519
/// verification once (it costs about as much as a point read). Expiry and
/// not-before are checked again on every use; only verified tokens enter;
/// the cache is bounded (cleared when full).
#[derive(Debug, Default)]
struct VerifiedCache(std::sync::Mutex<HashMap<[u8; 32], Arc<Claims>>>);

/// Entries kept before the cache starts over.
const VERIFIED_CACHE_CAPACITY: usize = 10_000;

impl VerifiedCache {
    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<Claims>> {
        let claims = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()?;
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(60);
        (claims.exp + leeway > now && claims.nbf - leeway <= now).then_some(claims)
    }

    fn insert(&self, key: [u8; 32], claims: Arc<Claims>) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, claims);
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .finish_non_exhaustive()
    }
}

fn decoding_keys(keys: &[PublicKey]) -> HashMap<String, DecodingKey> {
    keys.iter()
        .filter_map(|key| match DecodingKey::from_ed_components(&key.x) {
            Ok(decoding) => Some((key.kid.clone(), decoding)),
            Err(err) => {
                tracing::warn!(kid = %key.kid, %err, "ignoring malformed public key");
                None
            }
        })
        .collect()
}

impl Verifier {
    fn validation(issuer: &str, audience: &str) -> Validation {
        // EdDSA only: the algorithm allowlist is what stops `alg: none` and
        // HS256 tokens "signed" with our public key.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation
    }

    /// A verifier with a fixed key set (the account service verifies with its
    /// own keys; tests and offline deployments use a configured key).
    pub fn with_keys(issuer: &str, audience: &str, keys: &[PublicKey]) -> Self {
        Self {
            validation: Self::validation(issuer, audience),
            keys: RwLock::new(decoding_keys(keys)),
            source: KeySource::Fixed,
            verified: VerifiedCache::default(),
        }
    }

    /// A verifier that fetches keys with `fetch` on first use and again
    /// (at most every few seconds) when it meets an unknown kid.
    pub fn with_fetcher(issuer: &str, audience: &str, fetch: KeyFetcher) -> Self {
        Self {
            validation: Self::validation(issuer, audience),
            keys: RwLock::new(HashMap::new()),
            verified: VerifiedCache::default(),
            source: KeySource::Fetched {
                fetch,
                last_fetch: Mutex::new(None),
            },
        }
    }

    /// A verifier reading the JWKS from the account service at `channel`.
    pub fn from_account_service(
        issuer: &str,
        audience: &str,
        channel: crate::client::TracedChannel,
    ) -> Self {
        let fetch: KeyFetcher = Arc::new(move || {
            let mut client =
                backroom_proto::account::v1::account_service_client::AccountServiceClient::new(
                    channel.clone(),
                );
            Box::pin(async move {
                let jwks = client
                    .get_jwks(backroom_proto::account::v1::GetJwksRequest {})
                    .await?
                    .into_inner();
                Ok(jwks
                    .keys
                    .into_iter()
                    .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
                    .map(|k| PublicKey { kid: k.kid, x: k.x })
                    .collect())
            })
        });
        Self::with_fetcher(issuer, audience, fetch)
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_shared(token)
            .await
            .map(|claims| (*claims).clone())
    }

    /// [`Self::verify`], sharing the claims (no copy on a cache hit).
    pub async fn verify_shared(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let key = VerifiedCache::key(token);
        if let Some(claims) = self.verified.get(&key) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_signature(token).await?);
        self.verified.insert(key, claims.clone());
        Ok(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} not allowed",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid header".into()))?;
        if let Some(claims) = self.verify_with_known(&kid, token).await? {
            return Ok(claims);
        }
        self.refetch().await?;
        self.verify_with_known(&kid, token)
            .await?
            .ok_or_else(|| TokenError::Invalid(format!("unknown kid {kid}")))
    }

    async fn verify_with_known(
        &self,
        kid: &str,
        token: &str,
    ) -> Result<Option<Claims>, TokenError> {
        let keys = self.keys.read().await;
        let Some(key) = keys.get(kid) else {
            return Ok(None);
        };
        match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) => Ok(Some(data.claims)),
            Err(err) => match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                _ => Err(TokenError::Invalid(err.to_string())),
            },
        }
    }

    async fn refetch(&self) -> Result<(), TokenError> {
        let KeySource::Fetched { fetch, last_fetch } = &self.source else {
            return Ok(());
        };
        let mut last = last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) {
            return Ok(());
        }
        let keys = fetch()
            .await
            .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
        *last = Some(Instant::now());
        *self.keys.write().await = decoding_keys(&keys);
        tracing::info!(keys = keys.len(), "verification keys refreshed");
        Ok(())
    }
}

/// The bearer token of a request's `authorization` metadata.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    // Two credentials are ambiguous (a proxy may have checked the other
    // one): neither is used.
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

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
    pub fn new(verifier: Arc<Verifier>, domain: Domain, public_methods: &[&'static str]) -> Self {
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
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready inner service is the one we must call; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
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

/// A service principal's credentials and its cached tokens, one per
/// audience, renewed a minute before they expire.
pub struct ServiceCredentials {
    client_id: String,
    client_secret: crate::config::Secret,
    channel: crate::client::TracedChannel,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    /// Credentials redeemed at the account service behind `channel`.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: crate::config::Secret,
        channel: crate::client::TracedChannel,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            channel,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A valid service token for `audience`.
    pub async fn token(&self, audience: &str) -> Result<String, Status> {
        let mut cache = self.cache.lock().await;
        if let Some((token, renew_at)) = cache.get(audience)
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let mut client =
            backroom_proto::account::v1::account_service_client::AccountServiceClient::new(
                self.channel.clone(),
            );
        let issued = client
            .issue_service_token(backroom_proto::account::v1::IssueServiceTokenRequest {
                client_id: self.client_id.clone(),
                client_secret: self.client_secret.expose().to_owned(),
                audience: audience.to_owned(),
            })
            .await?
            .into_inner();
        let lifetime = issued
            .expire_time
            .and_then(|t| {
                let expires = chrono::DateTime::from_timestamp(t.seconds, 0)?;
                (expires - chrono::Utc::now()).to_std().ok()
            })
            .unwrap_or(Duration::ZERO);
        let renew_at = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        cache.insert(audience.to_owned(), (issued.access_token.clone(), renew_at));
        Ok(issued.access_token)
    }

    /// Adds `authorization: Bearer <service token for audience>` to `request`.
    pub async fn authorize<T>(
        &self,
        audience: &str,
        mut request: tonic::Request<T>,
    ) -> Result<tonic::Request<T>, Status> {
        let token = self.token(audience).await?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("service token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "bearer abc ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        headers.append("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None, "two credentials: neither");
    }

    #[test]
    fn principals_parse_from_sub() {
        let id = Uuid::now_v7();
        let mut claims = Claims {
            iss: "i".into(),
            sub: format!("accounts/{id}"),
            aud: vec![],
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: String::new(),
            roles: vec![ROLE_CUSTOMER.into()],
        };
        assert_eq!(claims.principal(), Some(Principal::Account(id)));
        claims.sub = "services/payment".into();
        assert_eq!(
            claims.principal(),
            Some(Principal::Service("payment".into()))
        );
        claims.sub = "accounts/not-a-uuid".into();
        assert_eq!(claims.principal(), None);
        claims.sub = "services/".into();
        assert_eq!(claims.principal(), None);
    }
}
