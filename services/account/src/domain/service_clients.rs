//! Service principals (client credentials): configured, their secrets kept
//! only hashed, each allowed the audiences it was given and no other.

use super::{Error, Password, passwords::Hasher};

/// A service principal from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClient {
    /// The client id, e.g. `payment`.
    pub id: String,
    /// Argon2id hash of its secret.
    pub secret_hash: String,
    /// The audiences it may ask tokens for.
    pub audiences: Vec<String>,
    /// Its roles beside `service` (e.g. `fulfillment`).
    pub roles: Vec<String>,
}

/// Every configured service principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceClients(Vec<ServiceClient>);

impl From<Vec<ServiceClient>> for ServiceClients {
    fn from(clients: Vec<ServiceClient>) -> Self {
        Self(clients)
    }
}

impl ServiceClients {
    /// The client `client_id` if `secret` is its secret and it may call
    /// `audience`. An unknown client costs a hash too (against the dummy
    /// hash), so timing is no oracle for valid client ids.
    pub async fn authenticate(
        &self,
        hasher: &Hasher,
        client_id: &str,
        secret: &Password,
        audience: &str,
    ) -> Result<&ServiceClient, Error> {
        let client = self.0.iter().find(|c| c.id == client_id);
        let verified = hasher
            .verify_at(
                secret,
                client.map(|c| c.secret_hash.as_str()),
                super::passwords::Priority::Bulk,
            )
            .await?;
        let Some(client) = client.filter(|_| verified.matches) else {
            return Err(Error::InvalidClient);
        };
        if !client.audiences.iter().any(|a| a == audience) {
            return Err(Error::AudienceNotAllowed);
        }
        Ok(client)
    }
}
