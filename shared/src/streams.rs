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
    address_limit: usize,
    open: Mutex<HashMap<String, usize>>,
    by_address: Mutex<HashMap<String, usize>>,
}

/// One open stream's claim on its caller's slots; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    principal: String,
    address: Option<String>,
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
    /// `metadata["limit"]` and `metadata["scope"]` (`caller`, `address` or
    /// `server`).
    pub fn into_status(self, domain: Domain) -> Status {
        let message = if self.scope == "server" {
            format!(
                "the server already serves {} open streams, the most it allows; retry with backoff",
                self.limit
            )
        } else if self.scope == "address" {
            format!(
                "{} streams are already open from this address, the most allowed; close one first",
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
        Self::with_limits(limit_per_caller, usize::MAX, total_limit)
    }

    /// [`Self::with_total_limit`], and at most `limit_per_address` streams
    /// from one client address whoever the principals are (accounts are
    /// free to make: one address must not hold the whole total).
    pub fn with_limits(
        limit_per_caller: usize,
        limit_per_address: usize,
        total_limit: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            limit: limit_per_caller.max(1),
            total_limit: total_limit.max(1),
            address_limit: limit_per_address.max(1),
            open: Mutex::new(HashMap::new()),
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// The cap per principal.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Claims one of `principal`'s slots (a verified token's `sub`, e.g.
    /// `caller.claims.sub`), or refuses when all are taken.
    pub fn acquire(self: &Arc<Self>, principal: &str) -> Result<StreamSlot, TooManyStreams> {
        self.acquire_from(principal, None)
    }

    /// [`Self::acquire`] for a stream from client `address` (its
    /// [`crate::ratelimit::ClientAddr`] key), which holds at most the
    /// per-address limit.
    pub fn acquire_from(
        self: &Arc<Self>,
        principal: &str,
        address: Option<&str>,
    ) -> Result<StreamSlot, TooManyStreams> {
        let principal = principal.to_owned();
        // Lock order: principals, then addresses (the drop takes them
        // one at a time).
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = address
            && by_address.get(address).copied().unwrap_or(0) >= self.address_limit
        {
            return Err(TooManyStreams {
                limit: self.address_limit,
                scope: "address",
            });
        }
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
        if let Some(address) = address {
            *by_address.entry(address.to_owned()).or_default() += 1;
        }
        Ok(StreamSlot {
            slots: self.clone(),
            principal,
            address: address.map(str::to_owned),
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
        drop(open);
        if let Some(address) = &self.address {
            let mut by_address = self
                .slots
                .by_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = by_address.get_mut(address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    by_address.remove(address);
                }
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
    fn one_address_cannot_hold_the_total_with_many_principals() {
        let slots = StreamSlots::with_limits(4, 3, 100);
        let held: Vec<StreamSlot> = (0..3)
            .map(|n| {
                slots
                    .acquire_from(&format!("accounts/{n}"), Some("192.0.2.1"))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            slots
                .acquire_from("accounts/9", Some("192.0.2.1"))
                .unwrap_err(),
            TooManyStreams {
                limit: 3,
                scope: "address"
            }
        );
        assert!(slots.acquire_from("accounts/9", Some("192.0.2.2")).is_ok());
        drop(held);
        assert!(slots.by_address.lock().unwrap().get("192.0.2.1").is_none());
    }

    #[test]
    fn idle_principals_are_forgotten() {
        let slots = StreamSlots::new(1);
        drop(slots.acquire("accounts/a").unwrap());
        assert!(slots.open.lock().unwrap().is_empty());
        assert_eq!(StreamSlots::new(0).limit(), 1, "at least one stream");
    }
}
