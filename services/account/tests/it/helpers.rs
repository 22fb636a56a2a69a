//! `TestApp`: a real account server on 127.0.0.1:0 with its own database,
//! a manual clock and a connected generated client.

use backroom_account::{
    AccountConfig, Deps, MIGRATIONS, SERVICE, bootstrap_admin, domain::tokens::SigningKeys, server,
};
use backroom_proto::account::v1::{self as pb, account_service_client::AccountServiceClient};
use backroom_shared::{
    client::TracedChannel,
    clock::ManualClock,
    config::{AuthConfig, RateLimitConfig, Secret, ServerConfig},
    db::Pool,
    service::Shutdown,
    testing::{TestDb, TestServer},
};
use std::sync::Arc;
use tonic::Request;

pub const ADMIN_EMAIL: &str = "admin@backroom.test";
pub const ADMIN_PASSWORD: &str = "admin password 123";
pub const PASSWORD: &str = "correct horse battery";
pub const PAYMENT_SECRET: &str = "payment-secret-0123456789abcdefghij";
pub const INVENTORY_SECRET: &str = "inventory-secret-0123456789abcdefgh";

pub struct TestApp {
    pub server: TestServer,
    pub client: AccountServiceClient<TracedChannel>,
    pub clock: ManualClock,
    pub pool: Pool,
    /// The test's own database, dropped with the app.
    _db: TestDb,
    pub keys_pem: String,
    /// Stops the server's background purges when the test ends.
    pub shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose rate limits are off: tests make many calls from one
    /// address on purpose (the rate-limit tests use [`Self::spawn_on`]).
    pub async fn spawn_with(configure: impl FnOnce(&mut AccountConfig)) -> Self {
        let server_config = ServerConfig {
            rate_limit: RateLimitConfig::unlimited(),
            ..ServerConfig::without_client_limits()
        };
        Self::spawn_on(server_config, configure).await
    }

    pub async fn spawn_on(
        server_config: ServerConfig,
        configure: impl FnOnce(&mut AccountConfig),
    ) -> Self {
        let db = TestDb::with_services([(SERVICE, MIGRATIONS)]).await;
        let db_config = db.service_config(SERVICE, MIGRATIONS).await;
        let pool = Pool::new(&db_config, SERVICE);
        let keys_pem = SigningKeys::generate_pem();
        let mut config = AccountConfig::with_keys(keys_pem.clone());
        config.bootstrap_admin_email = Some(ADMIN_EMAIL.into());
        config.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD));
        config.service_clients = Some(Secret::new(format!(
            "payment:{PAYMENT_SECRET},inventory:{INVENTORY_SECRET}"
        )));
        config.service_client_audiences = Some(
            "inventory=backroom.account,payment=backroom.account|backroom.inventory|backroom.payment"
                .into(),
        );
        configure(&mut config);
        let clock = ManualClock::new();
        let deps = Deps::new(
            &AuthConfig::default(),
            &config,
            pool.clone(),
            Arc::new(clock.clone()),
        )
        .await
        .expect("deps");
        bootstrap_admin(&deps, &config)
            .await
            .expect("bootstrap admin");
        let shutdown = deps.shutdown.clone();
        let server = TestServer::spawn(server(server_config, deps)).await;
        let client = AccountServiceClient::new(server.channel.clone());
        Self {
            server,
            client,
            clock,
            pool,
            _db: db,
            keys_pem,
            shutdown,
        }
    }

    pub fn client(&self) -> AccountServiceClient<TracedChannel> {
        self.client.clone()
    }

    /// A client whose connections come from `source` (any 127.0.0.0/8
    /// address reaches the server on 127.0.0.1): another client address.
    pub fn client_from(&self, source: &str) -> AccountServiceClient<tonic::transport::Channel> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.server.addr))
                .expect("endpoint")
                .local_address(Some(source.parse().expect("source address")))
                .connect_lazy();
        AccountServiceClient::new(channel)
    }

    /// A service token for `client_id` (its secret from this kit).
    pub async fn service_token(&self, client_id: &str, audience: &str) -> String {
        let secret = match client_id {
            "payment" => PAYMENT_SECRET,
            _ => INVENTORY_SECRET,
        };
        self.client()
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
                audience: audience.into(),
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token
    }

    pub async fn register(&self, email: &str) -> pb::Account {
        self.client()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: "Test User".into(),
                request_id: String::new(),
            })
            .await
            .expect("register")
            .into_inner()
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::Session, tonic::Status> {
        self.client()
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Registers `email` and logs in.
    pub async fn customer(&self, email: &str) -> (pb::Account, pb::Session) {
        let account = self.register(email).await;
        let session = self.login(email, PASSWORD).await.expect("login");
        (account, session)
    }

    pub async fn admin(&self) -> pb::Session {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .expect("admin login")
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The ErrorInfo reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    backroom_shared::errors::reason_of(status).unwrap_or_default()
}

/// The fields named by a status's BadRequest.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    backroom_shared::errors::violated_fields(status)
}

/// A valid address in `country`.
pub fn address(country: &str) -> pb::Address {
    pb::Address {
        recipient: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country_code: country.into(),
        ..Default::default()
    }
}
