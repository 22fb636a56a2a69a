//! Token material: the Ed25519 signing keys (from PEM), access-token JWTs,
//! service tokens, and opaque refresh tokens (stored only as hashes).

use backroom_shared::{
    auth::{Claims, PublicKey, ROLE_SERVICE, audience},
    names,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::{Account, Error};

/// One signing key: its id, the jsonwebtoken key, and the public half.
#[derive(Clone)]
struct KeyPair {
    kid: String,
    encoding: EncodingKey,
    public: PublicKey,
}

/// The configured signing keys: the first signs, all are published (so a
/// key can be rotated in before it signs and kept after it stops signing).
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<KeyPair>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// RFC 7638 thumbprint of an Ed25519 JWK: a stable key id.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

impl SigningKeys {
    /// Parses one or more PKCS#8 PEM Ed25519 private keys, concatenated.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        let keys = pem
            .split(BEGIN)
            .map(str::trim)
            .filter(|block| !block.is_empty())
            .map(|block| {
                let signing = SigningKey::from_pkcs8_pem(&format!("{BEGIN}\n{block}\n"))
                    .map_err(|e| anyhow::anyhow!("not a PKCS#8 Ed25519 private key: {e}"))?;
                Self::pair(&signing)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!keys.is_empty(), "no private key in the PEM text");
        Ok(Self { keys })
    }

    fn pair(signing: &SigningKey) -> anyhow::Result<KeyPair> {
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
        let kid = thumbprint(&x);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encode key: {e}"))?;
        Ok(KeyPair {
            kid: kid.clone(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: PublicKey { kid, x },
        })
    }

    /// A fresh key as PKCS#8 PEM (for `backroom up` and tests).
    pub fn generate_pem() -> String {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        // Encoding a freshly generated key cannot fail.
        signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_default()
    }

    /// The public keys, signing key first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|k| k.public.clone()).collect()
    }

    fn signer(&self) -> &KeyPair {
        // `from_pem` guarantees at least one key.
        &self.keys[0]
    }
}

/// Signs access tokens.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keys: SigningKeys,
    issuer: String,
    /// Lifetime of access and service tokens.
    pub access_ttl: Duration,
}

impl TokenIssuer {
    /// An issuer signing with `keys` as `issuer`.
    pub fn new(keys: SigningKeys, issuer: impl Into<String>, access_ttl: Duration) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            access_ttl,
        }
    }

    /// The signing keys (for the JWKS and the local verifier).
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// The issuer name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A user's access token for `account`: its roles as the database
    /// holds them, every audience, its current security version.
    pub fn issue_for_account(
        &self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), Error> {
        self.issue_versioned(
            names::name("accounts", account.id),
            account.role_names(),
            audience::ALL.iter().map(|a| (*a).to_owned()).collect(),
            account.security_version,
            now,
        )
    }

    /// A service token for the principal `client_id` with role `service`
    /// and its `roles`, for `audience` only.
    pub fn issue_for_service(
        &self,
        client_id: &str,
        roles: &[String],
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), Error> {
        self.issue(
            names::name("services", client_id),
            std::iter::once(ROLE_SERVICE.to_owned())
                .chain(roles.iter().cloned())
                .collect(),
            vec![audience.to_owned()],
            now,
        )
    }

    /// Signs a token for `sub` with `roles`, valid for `audiences`, from
    /// `now`, under the initial security version (a fresh account's; service
    /// principals are never revoked by version).
    pub fn issue(
        &self,
        sub: String,
        roles: Vec<String>,
        audiences: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), Error> {
        self.issue_versioned(sub, roles, audiences, 1, now)
    }

    /// [`Self::issue`] under the account's current security version `sv`.
    pub fn issue_versioned(
        &self,
        sub: String,
        roles: Vec<String>,
        audiences: Vec<String>,
        sv: i64,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), Error> {
        let expires = now + self.access_ttl;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub,
            aud: audiences,
            exp: expires.timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: Uuid::new_v4().to_string(),
            roles,
            sv,
        };
        let signer = self.keys.signer();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|e| Error::Internal(anyhow::anyhow!("sign token: {e}")))?;
        Ok((token, expires))
    }
}

/// A new opaque refresh token (256 random bits, base64url) and its hash.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// The stored form of a refresh token. A plain SHA-256 suffices: the token
/// has 256 bits of entropy, so there is nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backroom_shared::auth::Verifier;

    #[tokio::test]
    async fn issued_tokens_verify_with_the_published_keys() {
        let pem = format!(
            "{}{}",
            SigningKeys::generate_pem(),
            SigningKeys::generate_pem()
        );
        let keys = SigningKeys::from_pem(&pem).unwrap();
        assert_eq!(keys.public_keys().len(), 2);
        let issuer = TokenIssuer::new(keys.clone(), "backroom", Duration::minutes(15));
        let (token, _) = issuer
            .issue(
                "accounts/x".into(),
                vec!["customer".into()],
                vec!["backroom.account".into()],
                Utc::now(),
            )
            .unwrap();
        let verifier = Verifier::with_keys("backroom", "backroom.account", &keys.public_keys());
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(claims.sub, "accounts/x");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            Some(keys.public_keys()[0].kid.as_str())
        );
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_refresh_token(&a), hash_a);
    }

    #[test]
    fn garbage_pem_is_refused() {
        assert!(SigningKeys::from_pem("").is_err());
        assert!(
            SigningKeys::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }
}
