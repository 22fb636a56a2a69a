//! Scenarios: what one operation does. Each builds its clients and any
//! fixtures up front (`setup`), then returns the operation the driver runs.
//!
//! | scenario | operation | target |
//! |---|---|---|
//! | `echo` | `EchoService/Echo` | a bare echo baseline (or any echo server) |
//! | `pk-select` | `Echo` whose server reads a row by primary key | the diesel/r2d2 baseline |
//! | `login` | `AccountService/Login` of one of `concurrency` users | account |
//! | `raw-argon2id` | one Argon2id hash (m=19 MiB, t=2, p=1) on the blocking pool, at most one per core | local |

use std::sync::Arc;

use backroom_proto::{
    account::v1::{LoginRequest, RegisterRequest, account_service_client::AccountServiceClient},
    testing::v1::{EchoRequest, echo_service_client::EchoServiceClient},
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::{
    baselines::PK_ROWS,
    driver::{Operation, Recorder},
};

/// Every scenario name, for `--help` and parsing.
pub const NAMES: [&str; 4] = ["echo", "pk-select", "login", "raw-argon2id"];

/// Where and how hard to drive.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` of the service under test.
    pub endpoint: String,
    /// HTTP/2 connections to spread calls over.
    pub connections: usize,
    /// Operations in flight (sizes fixtures such as users).
    pub concurrency: usize,
}

/// `connections` channels to `endpoint`, each its own HTTP/2 connection.
pub async fn channels(endpoint: &str, connections: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        channels.push(
            Endpoint::from_shared(endpoint.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// Parses a scenario name and prepares it.
pub async fn setup(name: &str, target: &Target) -> anyhow::Result<Operation> {
    match name {
        "echo" => echo(target, false).await,
        "pk-select" => echo(target, true).await,
        "login" => login(target).await,
        "raw-argon2id" => Ok(raw_argon2id()),
        other => anyhow::bail!("unknown scenario {other:?}; known: {}", NAMES.join(", ")),
    }
}

async fn echo(target: &Target, point_read: bool) -> anyhow::Result<Operation> {
    let clients: Arc<Vec<EchoServiceClient<Channel>>> = Arc::new(
        channels(&target.endpoint, target.connections)
            .await?
            .into_iter()
            .map(EchoServiceClient::new)
            .collect(),
    );
    let rpc = if point_read {
        "PkSelect/Echo"
    } else {
        "EchoService/Echo"
    };
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        Box::pin(async move {
            let message = if point_read {
                (1 + (i as i64 * 7919) % PK_ROWS).to_string()
            } else {
                "ping".to_owned()
            };
            rec.call(
                rpc,
                client.echo(EchoRequest {
                    message,
                    delay: None,
                }),
            )
            .await;
            rec
        })
    }))
}

/// Registers `count` users `loadgen-<run>-<n>@example.com` (password
/// `loadgen password <n>`), returning their emails.
pub async fn register_users(
    client: &mut AccountServiceClient<Channel>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut emails = Vec::with_capacity(count);
    for n in 0..count {
        let email = format!("loadgen-{}-{n}@example.com", &run[..8]);
        client
            .register(RegisterRequest {
                email: email.clone(),
                password: format!("loadgen password {n}"),
                display_name: format!("Load {n}"),
                request_id: String::new(),
            })
            .await?;
        emails.push(email);
    }
    Ok(emails)
}

async fn login(target: &Target) -> anyhow::Result<Operation> {
    let channels = channels(&target.endpoint, target.connections).await?;
    let mut admin = AccountServiceClient::new(channels[0].clone());
    let users = Arc::new(register_users(&mut admin, target.concurrency.clamp(1, 200)).await?);
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .into_iter()
            .map(AccountServiceClient::new)
            .collect(),
    );
    Ok(Arc::new(move |i, mut rec: Recorder| {
        let mut client = clients[i % clients.len()].clone();
        let n = i % users.len();
        let email = users[n].clone();
        Box::pin(async move {
            rec.call(
                "AccountService/Login",
                client.login(LoginRequest {
                    email,
                    password: format!("loadgen password {n}"),
                }),
            )
            .await;
            rec
        })
    }))
}

/// The raw hash rate the login path is bounded by: the same parameters, the
/// same bound of one hash per core, no RPC and no database.
fn raw_argon2id() -> Operation {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(cores));
    Arc::new(move |i, mut rec: Recorder| {
        let permits = permits.clone();
        Box::pin(async move {
            let started = Instant::now();
            let outcome = match permits.acquire_owned().await {
                Ok(_permit) => tokio::task::spawn_blocking(move || {
                    // Constant, valid parameters.
                    let params = Params::new(19_456, 2, 1, None).expect("valid Argon2 parameters");
                    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                        .hash_password(format!("loadgen password {i}").as_bytes())
                        .map(|_| ())
                })
                .await
                .map_err(|_| tonic::Code::Internal)
                .and_then(|hashed| hashed.map_err(|_| tonic::Code::Internal)),
                Err(_) => Err(tonic::Code::Internal),
            };
            rec.note("raw-argon2id", started, outcome);
            rec
        })
    })
}
