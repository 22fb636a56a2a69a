//! A credential flood: back-to-back calls that each cost the account
//! service a password hash (Register, IssueServiceToken with a wrong
//! secret), every one with a deadline far shorter than a hash — the shape
//! of the attack that once left Login timing out for minutes, because each
//! abandoned call still queued its hash. `backroom-loadgen flood` runs one
//! from its own process; the attack tests start several.

use std::{collections::BTreeMap, time::Duration};

use backroom_proto::account::v1::{self as pb, account_service_client::AccountServiceClient};
use backroom_shared::errors::reason_of;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Which RPC the flood calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodRpc {
    /// Register a new account (a fresh email each call).
    Register,
    /// IssueServiceToken for a real client id with a wrong secret.
    ServiceToken,
}

/// One flood.
#[derive(Debug, Clone)]
pub struct FloodPlan {
    /// `http://host:port` of the account service.
    pub target: String,
    /// What to call.
    pub rpc: FloodRpc,
    /// Each call's deadline.
    pub deadline: Duration,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// How long to flood.
    pub duration: Duration,
}

/// The code (and ErrorInfo reason) of one outcome, e.g. `ResourceExhausted
/// OVERLOADED`.
fn outcome(result: &Result<(), tonic::Status>) -> String {
    match result {
        Ok(()) => "Ok".to_owned(),
        Err(status) => match reason_of(status) {
            Some(reason) => format!("{:?} {reason}", status.code()),
            None => format!("{:?}", status.code()),
        },
    }
}

async fn call(
    client: &mut AccountServiceClient<Channel>,
    plan: &FloodPlan,
    n: u64,
) -> Result<(), tonic::Status> {
    match plan.rpc {
        FloodRpc::Register => {
            let mut request = tonic::Request::new(pb::RegisterRequest {
                email: format!("flood-{}-{n}@example.com", uuid::Uuid::new_v4().simple()),
                password: "flood password 1234".into(),
                display_name: "Flood".into(),
                request_id: String::new(),
            });
            request.set_timeout(plan.deadline);
            client.register(request).await.map(|_| ())
        }
        FloodRpc::ServiceToken => {
            let mut request = tonic::Request::new(pb::IssueServiceTokenRequest {
                client_id: "payment".into(),
                client_secret: format!("wrong secret {n:032}"),
                audience: "backroom.account".into(),
            });
            request.set_timeout(plan.deadline);
            client.issue_service_token(request).await.map(|_| ())
        }
    }
}

/// Floods for `plan.duration`; returns how often each outcome came back.
pub async fn run(plan: FloodPlan) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut channels = Vec::new();
    for _ in 0..plan.connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(plan.target.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let until = Instant::now() + plan.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..plan.concurrency.max(1) {
        let mut client = AccountServiceClient::new(channels[worker % channels.len()].clone());
        let plan = plan.clone();
        workers.spawn(async move {
            let mut counts = BTreeMap::<String, u64>::new();
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let result = call(&mut client, &plan, n).await;
                *counts.entry(outcome(&result)).or_default() += 1;
            }
            counts
        });
    }
    let mut total = BTreeMap::new();
    while let Some(counts) = workers.join_next().await {
        for (key, count) in counts? {
            *total.entry(key).or_default() += count;
        }
    }
    Ok(total)
}
