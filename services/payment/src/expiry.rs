//! The authorization expiry sweeper: uncaptured authorizations past their
//! lifetime are canceled (AUTHORIZATION_EXPIRED) — voided at the processor,
//! the RELEASE journal posted — every `BACKROOM_AUTHORIZATION_SWEEP_INTERVAL_SECS`,
//! until the server shuts down.

use backroom_shared::service::Shutdown;
use chrono::{DateTime, Utc};
use diesel::Connection as _;

use crate::{
    Deps,
    db::repo,
    domain::{Error, intents::CancellationReason},
};

/// How many expired authorizations one sweeper transaction handles.
const SWEEP_BATCH: i64 = 100;

/// Cancels every intent whose uncaptured authorization expired at `now`
/// (reason AUTHORIZATION_EXPIRED), voiding it at the processor and posting
/// the RELEASE journal. Safe on several replicas at once (rows are taken
/// `FOR UPDATE SKIP LOCKED`) and harmless to repeat. Returns how many it
/// canceled.
#[tracing::instrument(skip_all)]
pub async fn sweep_expired_authorizations(
    deps: &Deps,
    now: DateTime<Utc>,
) -> Result<usize, tonic::Status> {
    let mut total = 0;
    loop {
        let engine = deps.engine(now);
        let (canceled, full) = deps
            .store
            .pool()
            .run(move |conn| {
                conn.transaction::<_, Error, _>(|conn| {
                    let expired =
                        repo::intents::lock_expired_authorizations(conn, now, SWEEP_BATCH)?;
                    let full = i64::try_from(expired.len()).unwrap_or(i64::MAX) >= SWEEP_BATCH;
                    let mut canceled = 0;
                    for intent in expired {
                        let id = intent.id;
                        match engine.cancel(conn, intent, CancellationReason::AuthorizationExpired)
                        {
                            Ok(_) => canceled += 1,
                            // The processor is down: the next sweep retries.
                            Err(Error::ProcessorUnavailable { .. }) => {
                                tracing::warn!(intent = %id, "void failed; will retry");
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    Ok((canceled, full))
                })
            })
            .await?;
        total += canceled;
        if !full || canceled == 0 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(canceled = total, "expired authorizations canceled");
    }
    Ok(total)
}

/// Sweeps every `interval` until `shutdown` (spawn it).
pub async fn run_sweeper(deps: Deps, interval: std::time::Duration, shutdown: Shutdown) {
    shutdown
        .until(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = deps.store.now();
                if let Err(err) = sweep_expired_authorizations(&deps, now).await {
                    tracing::warn!(%err, "authorization sweep failed");
                }
            }
        })
        .await;
}
