//! `TestApp`: a real payment server on 127.0.0.1:0 with its own database, a
//! manual clock, a shared processor simulator, tokens minted by the account
//! crate's issuer, and a connected generated client.

use std::sync::Arc;

use backroom_account::domain::tokens::{SigningKeys, TokenIssuer};
use backroom_payment::{
    Deps, MIGRATIONS, PaymentConfig, SERVICE,
    processor::{ProcessorChoice, Simulator},
    server,
};
use backroom_proto::{
    common::v1::Money,
    payment::v1::{self as pb, payment_service_client::PaymentServiceClient},
};
use backroom_shared::{
    auth::{Verifier, audience},
    client::TracedChannel,
    clock::ManualClock,
    config::ServerConfig,
    db::{DbError, Pool},
    service::Shutdown,
    testing::{TestDb, TestServer},
};
use chrono::Datelike as _;
use diesel::{QueryableByName, RunQueryDsl as _, sql_query, sql_types::Text};
use tonic::Request;
use uuid::Uuid;

pub const FINGERPRINT_KEY: &str = "test-fingerprint-key-0123456789abcdef";

pub const VISA: &str = "4242424242424242";
pub const MASTERCARD: &str = "5555555555554444";
pub const AMEX: &str = "378282246310005";
pub const DISCOVER: &str = "6011111111111117";
pub const DECLINE: &str = "4000000000000002";
pub const INSUFFICIENT: &str = "4000000000009995";
pub const EXPIRED: &str = "4000000000000069";
pub const PROCESSING_ERROR: &str = "4000000000000119";
pub const ALL_TEST_CARDS: [&str; 8] = [
    VISA,
    MASTERCARD,
    AMEX,
    DISCOVER,
    DECLINE,
    INSUFFICIENT,
    EXPIRED,
    PROCESSING_ERROR,
];

pub struct TestApp {
    /// Held: dropping it stops the server.
    _server: TestServer,
    pub client: PaymentServiceClient<TracedChannel>,
    pub clock: ManualClock,
    pub pool: Pool,
    pub db: TestDb,
    pub deps: Deps,
    pub simulator: Arc<Simulator>,
    issuer: TokenIssuer,
}

/// A caller: its token and account name.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub name: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut PaymentConfig)) -> Self {
        let db = TestDb::with_services([(SERVICE, MIGRATIONS)]).await;
        let db_config = db.service_config(SERVICE, MIGRATIONS).await;
        let pool = Pool::new(&db_config, SERVICE);
        let keys = SigningKeys::from_pem(&SigningKeys::generate_pem()).expect("keys");
        let verifier = Arc::new(Verifier::with_keys(
            "backroom",
            audience::PAYMENT,
            &keys.public_keys(),
        ));
        let issuer = TokenIssuer::new(keys, "backroom", chrono::Duration::minutes(15));
        let mut config = PaymentConfig::new(ProcessorChoice::Simulator, FINGERPRINT_KEY);
        config.authorization_sweep_interval_secs = 0;
        // `service()` tokens are this service's own principal, the checkout
        // saga's (no saga runs here; tests act as it).
        config.service_client_id = Some("checkout".into());
        configure(&mut config);
        let clock = ManualClock::new();
        let simulator = Arc::new(Simulator::new());
        let deps = Deps::with(
            &config,
            pool.clone(),
            Arc::new(clock.clone()),
            verifier,
            simulator.clone(),
        )
        .expect("deps");
        let served = TestServer::spawn(server(
            ServerConfig::without_client_limits(),
            deps.clone(),
            Shutdown::default(),
        ))
        .await;
        let client = PaymentServiceClient::new(served.channel.clone());
        Self {
            _server: served,
            client,
            clock,
            pool,
            db,
            deps,
            simulator,
            issuer,
        }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use backroom_shared::clock::Clock as _;
        self.clock.now()
    }

    pub fn client(&self) -> PaymentServiceClient<TracedChannel> {
        self.client.clone()
    }

    fn token(&self, sub: String, roles: &[&str]) -> String {
        // Real time: the verifier checks exp/nbf against the system clock.
        self.issuer
            .issue(
                sub,
                roles.iter().map(|r| (*r).to_owned()).collect(),
                vec![audience::PAYMENT.to_owned()],
                chrono::Utc::now(),
            )
            .expect("issue token")
            .0
    }

    pub fn customer(&self) -> User {
        let id = Uuid::now_v7();
        let name = format!("accounts/{id}");
        User {
            token: self.token(name.clone(), &["customer"]),
            name,
        }
    }

    pub fn admin(&self) -> User {
        let id = Uuid::now_v7();
        let name = format!("accounts/{id}");
        User {
            token: self.token(name.clone(), &["customer", "admin"]),
            name,
        }
    }

    pub fn service(&self) -> User {
        User {
            token: self.token("services/checkout".into(), &["service"]),
            name: String::new(),
        }
    }

    pub async fn attach(
        &self,
        user: &User,
        number: &str,
    ) -> Result<pb::PaymentMethod, tonic::Status> {
        self.client()
            .attach_payment_method(authed(&user.token, attach_request(&user.name, number)))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn create(
        &self,
        user: &User,
        request: pb::CreatePaymentIntentRequest,
    ) -> Result<pb::PaymentIntent, tonic::Status> {
        self.client()
            .create_payment_intent(authed(&user.token, request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn confirm(
        &self,
        user: &User,
        intent: &str,
        payment_method: &str,
        request_id: &str,
    ) -> Result<pb::PaymentIntent, tonic::Status> {
        self.client()
            .confirm_payment_intent(authed(
                &user.token,
                pb::ConfirmPaymentIntentRequest {
                    name: intent.into(),
                    payment_method: payment_method.into(),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A manual-capture intent of `amount` EUR authorized on a Visa.
    pub async fn authorized(&self, user: &User, amount: i64) -> pb::PaymentIntent {
        let method = self.attach(user, VISA).await.expect("attach");
        self.create(
            user,
            pb::CreatePaymentIntentRequest {
                customer: user.name.clone(),
                amount: eur(amount),
                capture_method: pb::CaptureMethod::Manual.into(),
                payment_method: method.name,
                confirm: true,
                ..Default::default()
            },
        )
        .await
        .expect("authorized intent")
    }

    /// An automatic-capture intent of `amount` EUR, succeeded.
    pub async fn captured(&self, user: &User, amount: i64) -> pb::PaymentIntent {
        let method = self.attach(user, VISA).await.expect("attach");
        self.create(
            user,
            pb::CreatePaymentIntentRequest {
                customer: user.name.clone(),
                amount: eur(amount),
                payment_method: method.name,
                confirm: true,
                ..Default::default()
            },
        )
        .await
        .expect("captured intent")
    }

    /// The ledger audit: problems found (empty = healthy).
    pub async fn audit(&self) -> Vec<String> {
        self.pool
            .run(backroom_payment::db::repo::ledger::audit)
            .await
            .expect("audit")
    }

    /// Every Luhn-valid 13–19 digit run stored in any text/bytea column of
    /// any table of schema `payment`, with where it was found. diesel's
    /// migration bookkeeping is skipped: its versions are 14-digit
    /// timestamps, one of which happens to pass Luhn.
    pub async fn stored_card_numbers(&self) -> Vec<String> {
        let url = self.db.admin_url();
        tokio::task::spawn_blocking(move || {
            let mut conn = backroom_shared::db::connect(&url).expect("connect");
            #[derive(QueryableByName)]
            struct Column {
                #[diesel(sql_type = Text)]
                table_name: String,
                #[diesel(sql_type = Text)]
                column_name: String,
                #[diesel(sql_type = Text)]
                data_type: String,
            }
            #[derive(QueryableByName)]
            struct Value {
                #[diesel(sql_type = Text)]
                value: String,
            }
            let columns: Vec<Column> = sql_query(
                "SELECT table_name::text, column_name::text, data_type::text \
                 FROM information_schema.columns WHERE table_schema = 'payment' \
                 AND table_name <> '__diesel_schema_migrations' \
                 AND data_type IN ('text', 'bytea', 'character varying', 'jsonb', 'json', 'ARRAY')",
            )
            .load(&mut conn)
            .expect("columns");
            assert!(columns.len() > 10, "the scan sees the schema");
            let mut found = Vec::new();
            for column in columns {
                let expr = match column.data_type.as_str() {
                    "bytea" => format!("encode(\"{}\", 'escape')", column.column_name),
                    _ => format!("\"{}\"::text", column.column_name),
                };
                let values: Vec<Value> = sql_query(format!(
                    "SELECT {expr} AS value FROM payment.\"{}\" WHERE \"{}\" IS NOT NULL",
                    column.table_name, column.column_name
                ))
                .load(&mut conn)
                .map_err(DbError::from)
                .expect("scan column");
                for value in values {
                    for pan in card_numbers_in(&value.value) {
                        found.push(format!(
                            "{}.{}: {pan}",
                            column.table_name, column.column_name
                        ));
                    }
                }
            }
            found
        })
        .await
        .expect("scan task")
    }
}

/// Luhn-valid runs of 13–19 digits in `text`.
pub fn card_numbers_in(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| (13..=19).contains(&run.len()) && luhn(run))
        .map(str::to_owned)
        .collect()
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

pub fn next_year() -> i32 {
    chrono::Utc::now().year() + 1
}

pub fn attach_request(customer: &str, number: &str) -> pb::AttachPaymentMethodRequest {
    pb::AttachPaymentMethodRequest {
        customer: customer.into(),
        card: Some(pb::Card {
            number: number.into(),
            exp_month: 12,
            exp_year: next_year(),
            cvc: if number.len() == 15 { "1234" } else { "123" }.into(),
            holder_name: "Ada Lovelace".into(),
        }),
        request_id: String::new(),
    }
}

pub fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

pub fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: currency.into(),
        amount_minor,
    })
}

pub fn minor(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(0, |m| m.amount_minor)
}

pub fn request_id() -> String {
    Uuid::new_v4().to_string()
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

/// The ErrorInfo metadata of a status.
pub fn metadata(status: &tonic::Status) -> std::collections::HashMap<String, String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

/// The fields named by a status's BadRequest.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    backroom_shared::errors::violated_fields(status)
}

pub fn status_of(intent: &pb::PaymentIntent) -> pb::PaymentIntentStatus {
    pb::PaymentIntentStatus::try_from(intent.status).unwrap()
}

/// A CreatePaymentIntent for `user` of `amount` EUR on `method` (may be
/// empty), manual or automatic capture.
pub fn create_request(
    user: &User,
    amount: i64,
    method: &str,
    manual: bool,
) -> pb::CreatePaymentIntentRequest {
    pb::CreatePaymentIntentRequest {
        customer: user.name.clone(),
        amount: eur(amount),
        capture_method: if manual {
            pb::CaptureMethod::Manual
        } else {
            pb::CaptureMethod::Automatic
        }
        .into(),
        payment_method: method.into(),
        ..Default::default()
    }
}
