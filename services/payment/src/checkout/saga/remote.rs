//! The one way the saga calls another service (account, inventory, and
//! this service's own PaymentService): [`Saga::remote`] sends the message
//! with the service's token for the callee's audience and a 10 s timeout,
//! retries transient failures boundedly, and sorts the outcome into what
//! the step judges (a definitive answer) and what makes the step wait
//! ([`StepError::Transient`]). Every mutation carries a request id derived
//! from the order and the step ([`step_request_id`]), so retries and
//! replays after a crash have no second effect.

use std::{future::Future, time::Duration};

use backroom_shared::{client::retry_idempotent, errors::reason_of};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Request, Response, Status};

use super::{Saga, state::StepError};
use crate::domain::{Error, OrderId};

/// A request id derived from the order and the step: stable across retries
/// and crashes, so every downstream effect happens once.
pub fn step_request_id(order: OrderId, step: &str) -> String {
    derived_request_id(order.uuid(), step)
}

/// A request id derived from a flow's id (an order, a cancellation) and
/// its step: the same for every retry and every replay after a crash.
pub fn derived_request_id(flow: uuid::Uuid, step: &str) -> String {
    let digest = Sha256::digest([flow.as_bytes().as_slice(), step.as_bytes()].concat());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Codes that mean the call did not get a definitive answer.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
    ) || reason_of(status).as_deref() == Some("PROCESSOR_ERROR")
}

impl Saga {
    /// Calls `method` on (a clone of) `client` with `message`, as this
    /// service for `audience`; see the module docs. `Ok(Err(status))` is a
    /// definitive refusal for the step to judge.
    pub(super) async fn remote<C, M, T, F, Fut>(
        &self,
        client: &C,
        audience: &'static str,
        message: M,
        method: F,
    ) -> Result<Result<T, Status>, StepError>
    where
        C: Clone,
        M: Clone,
        F: Fn(C, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let attempt = || {
            let (client, message) = (client.clone(), message.clone());
            let method = &method;
            async move {
                let mut request = Request::new(message);
                request.set_timeout(Duration::from_secs(10));
                let request = self
                    .inner
                    .downstream
                    .credentials
                    .authorize(audience, request)
                    .await?;
                method(client, request).await.map(Response::into_inner)
            }
        };
        match retry_idempotent(self.inner.config.call_attempts, attempt).await {
            Ok(value) => Ok(Ok(value)),
            Err(status) if is_transient(&status) => Err(StepError::Transient(status)),
            Err(status) => Ok(Err(status)),
        }
    }
}

/// How a call of a flow after checkout (a shipment, a cancellation) ended,
/// for the flow to record: these flows never compensate or need
/// attention, so the saga's other step outcomes do not occur.
pub(super) enum Reply<T> {
    /// A definitive answer.
    Answered(T),
    /// A definitive refusal.
    Refused(Status),
    /// No definitive answer yet: the flow stays PENDING for a retry.
    Unanswered(Status),
}

/// Sorts [`Saga::remote`]'s outcome into a [`Reply`]; our own database
/// failing is the error.
pub(super) fn reply<T>(outcome: Result<Result<T, Status>, StepError>) -> Result<Reply<T>, Error> {
    match outcome {
        Ok(Ok(value)) => Ok(Reply::Answered(value)),
        Ok(Err(status)) => Ok(Reply::Refused(status)),
        Err(StepError::Transient(status)) => Ok(Reply::Unanswered(status)),
        Err(StepError::Local(err)) => Err(err),
        Err(other) => Err(Error::Db(backroom_shared::db::DbError::Other(
            anyhow::anyhow!("a saga outcome a flow after checkout cannot have: {other:?}"),
        ))),
    }
}
