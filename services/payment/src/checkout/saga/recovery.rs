//! The recovery worker: every `recovery_interval` it drives each due,
//! unleased, unfinished order — what a crash, a lost lease or a step
//! waiting for its retry left behind — and ships each shipment and
//! finishes each cancellation, received return and goodwill refund a crash
//! or an outage left half-way, until the server shuts down.

use backroom_shared::service::Shutdown;

use super::Saga;
use crate::{checkout::repo, domain::Error};

/// Most orders one recovery pass picks up.
const RECOVERY_BATCH: i64 = 50;

impl Saga {
    /// One recovery pass: drives every due, unleased, unfinished order.
    /// Returns how many it picked up.
    pub async fn recover_due(&self) -> Result<usize, Error> {
        let now = self.now();
        let due = self
            .db(move |conn| repo::leases::due(conn, now, RECOVERY_BATCH))
            .await?;
        for id in &due {
            if let Err(err) = self.drive(*id).await {
                tracing::warn!(order = %id, %err, "recovery could not drive the order");
            }
        }
        Ok(due.len())
    }

    /// Runs [`Self::recover_due`] every `recovery_interval` until `shutdown`
    /// (spawn it).
    pub async fn run_recovery(self, shutdown: Shutdown) {
        let interval = self.inner.config.recovery_interval;
        shutdown
            .until(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // One after the other, each logged on its own.
                    for (what, pass) in [
                        ("orders", self.recover_due().await),
                        ("pending shipments", self.ship_pending().await),
                        ("pending cancellations", self.cancel_pending().await),
                        ("received returns", self.receive_pending().await),
                        ("pending refunds", self.refund_pending().await),
                    ] {
                        match pass {
                            Ok(0) => {}
                            Ok(picked) => tracing::info!(picked, what, "recovery picked up"),
                            Err(err) => tracing::warn!(%err, what, "recovery pass failed"),
                        }
                    }
                }
            })
            .await;
    }
}
