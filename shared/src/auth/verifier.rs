//! [`Verifier`]: checks bearer JWTs for one audience.
//!
//! Keys come from a fixed set (the account service verifies with its own
//! keys) or from the account service's JWKS. Fetched keys are refreshed on a
//! schedule (so a key removed from the JWKS stops being trusted within the
//! refresh interval, not at the next restart) and on an unknown `kid`; every
//! fetch attempt, failed or not, starts a quiet period, so a stream of forged
//! kids — or of any token while the account service is down — cannot turn
//! the verifier into a JWKS flooder.
//!
//! After the signature, a token is checked against the [`Revocations`] list
//! when the verifier has one (every service but account, which reads the
//! database itself).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use super::{Claims, LEEWAY_SECS, Principal, ROLE_ADMIN, Revocations, TokenError};

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

/// Least time between two JWKS fetch attempts triggered by unknown kids
/// after a successful fetch (the kid is then most likely forged)…
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// …and after a failed one (the account service is down or starting: try
/// again soon, but at most once a second however many calls arrive).
const MIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How often fetched keys are refreshed even when every kid is known.
pub const DEFAULT_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// When the last fetch was tried, and why it failed if it did.
#[derive(Debug, Default)]
struct FetchState {
    attempted: Option<Instant>,
    failure: Option<String>,
}

enum KeySource {
    Fixed,
    Fetched {
        fetch: KeyFetcher,
        state: Mutex<FetchState>,
    },
}

/// Verifies bearer tokens for one audience; see the module docs.
pub struct Verifier {
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    source: KeySource,
    verified: VerifiedCache,
    revocations: Option<Arc<Revocations>>,
    key_refresh_interval: Duration,
    refreshing: std::sync::atomic::AtomicBool,
}

/// Tokens whose signature already checked out, by SHA-256 of the token, so
/// a client sending the same token on every call pays the Ed25519
/// verification once (it costs about as much as a point read). Expiry,
/// not-before and revocation are checked again on every use; only verified
/// tokens enter; the cache is bounded (cleared when full) and cleared when
/// the key set changes (a token signed by a removed key must stop counting).
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
        // jsonwebtoken's rule: valid while now ≤ exp + leeway and
        // nbf − leeway ≤ now.
        (claims.exp + leeway >= now && claims.nbf - leeway <= now).then_some(claims)
    }

    fn insert(&self, key: [u8; 32], claims: Arc<Claims>) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, claims);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("revocations", &self.revocations.is_some())
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

    fn build(issuer: &str, audience: &str, keys: &[PublicKey], source: KeySource) -> Self {
        Self {
            validation: Self::validation(issuer, audience),
            keys: RwLock::new(decoding_keys(keys)),
            source,
            verified: VerifiedCache::default(),
            revocations: None,
            key_refresh_interval: DEFAULT_KEY_REFRESH_INTERVAL,
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A verifier with a fixed key set (the account service verifies with its
    /// own keys; tests and offline deployments use a configured key).
    pub fn with_keys(issuer: &str, audience: &str, keys: &[PublicKey]) -> Self {
        Self::build(issuer, audience, keys, KeySource::Fixed)
    }

    /// A verifier that fetches keys with `fetch` on first use, on every
    /// refresh (see [`Self::spawn_refresh`]) and when it meets an unknown kid.
    pub fn with_fetcher(issuer: &str, audience: &str, fetch: KeyFetcher) -> Self {
        Self::build(
            issuer,
            audience,
            &[],
            KeySource::Fetched {
                fetch,
                state: Mutex::new(FetchState::default()),
            },
        )
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

    /// The verifier of a service other than account, as configured: keys
    /// from the account service's JWKS (refreshed every
    /// `BACKROOM_JWKS_REFRESH_SECS`), and the revocation list read with this
    /// service's own client credentials (required: without the list a
    /// disabled account's token would work until it expires).
    pub fn for_service(
        auth: &crate::config::AuthConfig,
        audience: &str,
        client_id: Option<&str>,
        client_secret: Option<&crate::config::Secret>,
    ) -> anyhow::Result<Arc<Self>> {
        let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
            anyhow::bail!(
                "verifying tokens needs the account service's revocation list, read with this service's credentials: set BACKROOM_SERVICE_CLIENT_ID and BACKROOM_SERVICE_CLIENT_SECRET"
            );
        };
        let channel = crate::client::channel(&crate::client::ClientConfig::new(
            auth.account_endpoint.clone(),
        ))?;
        let credentials = Arc::new(super::ServiceCredentials::new(
            client_id,
            client_secret.clone(),
            channel.clone(),
        ));
        let revocations = Arc::new(Revocations::from_account_service(
            channel.clone(),
            credentials,
            auth.revocation_policy(),
        ));
        Ok(Arc::new(
            Self::from_account_service(&auth.jwt_issuer, audience, channel)
                .with_revocations(revocations)
                .with_key_refresh_interval(auth.jwks_refresh()),
        ))
    }

    /// Checks every token of a person against `revocations` too.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Refreshes fetched keys every `interval` instead of the default
    /// [`DEFAULT_KEY_REFRESH_INTERVAL`].
    #[must_use]
    pub fn with_key_refresh_interval(mut self, interval: Duration) -> Self {
        self.key_refresh_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// Starts the background refresh of the fetched keys and of the
    /// revocation list, once per verifier (later calls do nothing). The
    /// task holds only a weak reference: it ends when the verifier is
    /// dropped. Must be called inside a tokio runtime.
    pub fn spawn_refresh(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(revocations) = &self.revocations {
            tokio::spawn(Revocations::run(Arc::downgrade(revocations)));
            tokio::spawn(Revocations::follow_events(Arc::downgrade(revocations)));
        }
        if matches!(self.source, KeySource::Fetched { .. }) {
            tokio::spawn(refresh_keys_periodically(
                Arc::downgrade(self),
                self.key_refresh_interval,
            ));
        }
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
        let claims = match self.verified.get(&key) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token).await?);
                self.verified.insert(key, claims.clone());
                claims
            }
        };
        self.check_revocation(&claims).await?;
        Ok(claims)
    }

    /// Whether `claims` (already verified) was revoked since it was issued.
    /// Service principals are never revoked this way; a verifier without a
    /// revocation list accepts everyone.
    pub async fn check_revocation(&self, claims: &Claims) -> Result<(), TokenError> {
        let (Some(revocations), Some(Principal::Account(account))) =
            (&self.revocations, claims.principal())
        else {
            return Ok(());
        };
        revocations
            .check(account, claims.sv, claims.has_role(ROLE_ADMIN))
            .await
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
        if let Some(claims) = self.verify_with_known(&kid, token)? {
            return Ok(claims);
        }
        self.refetch(false).await?;
        self.verify_with_known(&kid, token)?
            .ok_or_else(|| TokenError::Invalid(format!("unknown kid {kid}")))
    }

    fn verify_with_known(&self, kid: &str, token: &str) -> Result<Option<Claims>, TokenError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
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

    /// Fetches the key set again. Unless `scheduled`, at most one attempt per
    /// [`MIN_REFETCH_INTERVAL`] ([`MIN_RETRY_INTERVAL`] after a failure):
    /// within it, the last attempt's outcome stands (its failure is answered
    /// at once, without a fetch).
    async fn refetch(&self, scheduled: bool) -> Result<(), TokenError> {
        let KeySource::Fetched { fetch, state } = &self.source else {
            return Ok(());
        };
        let mut state = state.lock().await;
        let quiet = if state.failure.is_some() {
            MIN_RETRY_INTERVAL
        } else {
            MIN_REFETCH_INTERVAL
        };
        if !scheduled && state.attempted.is_some_and(|at| at.elapsed() < quiet) {
            return match &state.failure {
                Some(failure) => Err(TokenError::KeysUnavailable(failure.clone())),
                None => Ok(()),
            };
        }
        state.attempted = Some(Instant::now());
        match fetch().await {
            Ok(keys) => {
                state.failure = None;
                let fresh = decoding_keys(&keys);
                let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
                let changed = current.len() != fresh.len()
                    || fresh.keys().any(|kid| !current.contains_key(kid));
                *current = fresh;
                drop(current);
                if changed {
                    // A token verified with a key that is gone must not
                    // keep passing from the cache.
                    self.verified.clear();
                    tracing::info!(keys = keys.len(), "verification keys changed");
                }
                Ok(())
            }
            Err(err) => {
                let failure = err.to_string();
                tracing::warn!(%failure, "cannot fetch verification keys");
                state.failure = Some(failure.clone());
                Err(TokenError::KeysUnavailable(failure))
            }
        }
    }
}

/// Refreshes the verifier's keys every `interval` until it is dropped.
async fn refresh_keys_periodically(verifier: Weak<Verifier>, interval: Duration) {
    super::refresh_every(verifier, interval, |verifier| async move {
        // Failures are logged by `refetch`.
        let _ = verifier.refetch(true).await;
    })
    .await;
}
