//! Limits on the server streams one caller may hold open, and the statuses
//! a stream ends with when the server gives up on it.
//!
//! An open server stream costs the server for its whole life: a slot of
//! the concurrency limit ([`crate::concurrency`]), a queue, work for every
//! update. Without a cap per caller one principal could open streams until
//! the concurrency limit sheds everybody else's calls. [`StreamSlots`]
//! counts the open streams of each principal (the token's `sub`); past the
//! cap the next open is refused at once ([`TooManyStreams`], RESOURCE_EXHAUSTED
//! `TOO_MANY_STREAMS`). The stream itself holds its [`StreamSlot`], so the
//! slot frees exactly when the stream ends or the client goes away.
//!
//! A second cap bounds the streams of all callers together, so that many
//! principals (customers register themselves) with a few streams each
//! cannot fill the concurrency limit either.
//!
//! The caps are per process: behind a load balancer a caller may hold that
//! many streams on each replica.
//!
//! Layout: [`StreamSlots`] and [`StreamSlot`] (the cap), [`TooManyStreams`]
//! (its refusal), [`too_slow`] (the end of a reader that fell too far
//! behind a bounded queue).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tonic::{Code, Status};

use crate::errors::{Domain, with_reason};

/// Open streams per principal, at most `limit` each; see the module docs.
#[derive(Debug)]
pub struct StreamSlots {
    limit: usize,
    total_limit: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream's claim on its caller's slots; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    principal: String,
}

/// A caller already holds its limit of open streams, or the process holds
/// its limit of all callers' streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("at most {limit} open streams per {scope}")]
pub struct TooManyStreams {
    /// The cap.
    pub limit: usize,
    /// Which cap: `caller` or `server`.
    pub scope: &'static str,
}

impl TooManyStreams {
    /// RESOURCE_EXHAUSTED `TOO_MANY_STREAMS` in `domain`, with
    /// `metadata["limit"]` and `metadata["scope"]` (`caller` or `server`).
    pub fn into_status(self, domain: Domain) -> Status {
        let message = if self.scope == "server" {
            format!(
                "the server already serves {} open streams, the most it allows; retry with backoff",
                self.limit
            )
        } else {
            format!(
                "this caller already has {} open streams, the most allowed; close one first",
                self.limit
            )
        };
        with_reason(
            Code::ResourceExhausted,
            domain,
            "TOO_MANY_STREAMS",
            message,
            [
                ("limit".to_owned(), self.limit.to_string()),
                ("scope".to_owned(), self.scope.to_owned()),
            ],
        )
    }
}

/// RESOURCE_EXHAUSTED `STREAM_TOO_SLOW` in `domain`: the stream's reader fell
/// further behind than its bounded queue holds, so the server ended it
/// rather than buffer without bound or hold up other readers.
pub fn too_slow(domain: Domain) -> Status {
    with_reason(
        Code::ResourceExhausted,
        domain,
        "STREAM_TOO_SLOW",
        "the stream's reader fell too far behind; read faster or watch less, then reconnect",
        [],
    )
}

impl StreamSlots {
    /// At most `limit_per_caller` open streams per principal (at least one),
    /// with no cap on all of them together.
    pub fn new(limit_per_caller: usize) -> Arc<Self> {
        Self::with_total_limit(limit_per_caller, usize::MAX)
    }

    /// At most `limit_per_caller` per principal and `total_limit` for all
    /// principals together (each at least one).
    pub fn with_total_limit(limit_per_caller: usize, total_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit_per_caller.max(1),
            total_limit: total_limit.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The cap per principal.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Claims one of `principal`'s slots (a verified token's `sub`, e.g.
    /// `caller.claims.sub`), or refuses when all are taken.
    pub fn acquire(self: &Arc<Self>, principal: &str) -> Result<StreamSlot, TooManyStreams> {
        let principal = principal.to_owned();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.values().sum::<usize>() >= self.total_limit {
            return Err(TooManyStreams {
                limit: self.total_limit,
                scope: "server",
            });
        }
        let count = open.entry(principal.clone()).or_default();
        if *count >= self.limit {
            return Err(TooManyStreams {
                limit: self.limit,
                scope: "caller",
            });
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            principal,
        })
    }

    /// Open streams of `principal` (a token's `sub`).
    pub fn open_for(&self, principal: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(principal).copied().unwrap_or(0)
    }

    /// Open streams of every principal together.
    pub fn total(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values().sum()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            // Forget idle principals, so the map is only as big as the set
            // of callers with open streams.
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_gets_its_own_slots_and_a_dropped_slot_frees_one() {
        let slots = StreamSlots::new(2);
        let first = slots.acquire("accounts/a").unwrap();
        let _second = slots.acquire("accounts/a").unwrap();
        assert_eq!(
            slots.acquire("accounts/a").unwrap_err(),
            TooManyStreams {
                limit: 2,
                scope: "caller"
            }
        );
        let _other = slots.acquire("accounts/b").unwrap();
        assert_eq!((slots.open_for("accounts/a"), slots.total()), (2, 3));
        drop(first);
        assert_eq!(slots.open_for("accounts/a"), 1);
        let _again = slots.acquire("accounts/a").unwrap();
        let status = TooManyStreams {
            limit: 2,
            scope: "caller",
        }
        .into_status("backroom.test");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            crate::errors::reason_of(&status).as_deref(),
            Some("TOO_MANY_STREAMS")
        );
    }

    #[test]
    fn all_callers_together_stay_under_the_total() {
        let slots = StreamSlots::with_total_limit(2, 3);
        let _held: Vec<StreamSlot> = ["accounts/a", "accounts/b", "accounts/c"]
            .iter()
            .map(|p| slots.acquire(p).unwrap())
            .collect();
        assert_eq!(
            slots.acquire("accounts/d").unwrap_err(),
            TooManyStreams {
                limit: 3,
                scope: "server"
            }
        );
    }

    #[test]
    fn idle_principals_are_forgotten() {
        let slots = StreamSlots::new(1);
        drop(slots.acquire("accounts/a").unwrap());
        assert!(slots.open.lock().unwrap().is_empty());
        assert_eq!(StreamSlots::new(0).limit(), 1, "at least one stream");
    }
}
