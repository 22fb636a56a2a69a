//! [`ServiceCredentials`]: a service principal's client credentials and the
//! tokens they buy, for calls between services.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use tonic::Status;

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
