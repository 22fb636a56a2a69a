//! The failed-login policy, applied to counters keyed by email and client
//! (see `db::repo::throttles`): `max_failures` attempts within `window` from
//! one client lock the email for that client; `ceiling` attempts from all
//! clients together lock it for everyone (against guessing spread over many
//! addresses). Each consecutive lock waits twice as long as the one before
//! (`base_lock`, 2×, 4×, … capped at `max_lock`). A successful login resets
//! the client's counters and marks it known: for `trusted_for` after that,
//! the ceiling lock does not apply to it (its own lock still does), so an
//! attacker who triggers the ceiling locks out new clients, not the owner's
//! usual one.
//!
//! Attempts are counted when they begin, before the password is checked
//! (and uncounted when no check happened, e.g. the hashing queue was full):
//! that is what bounds the checks however many guesses arrive at once.
//! Keying by client is the OWASP answer to targeted lockout: five requests
//! from an attacker no longer lock the owner out everywhere, only the
//! ceiling does, and it takes ten times as many.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest as _, Sha256};

use super::Email;

/// The key an email's counters are stored under: its SHA-256, so the table
/// holds no address anyone typed in, known or not.
pub fn email_hash(email: &Email) -> [u8; 32] {
    Sha256::digest(email.as_str().as_bytes()).into()
}

/// The policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Attempts from one client that trigger a lock for that client.
    pub max_failures: i32,
    /// Attempts from all clients together that trigger a lock for everyone.
    pub ceiling: i32,
    /// The window the failures must fall in.
    pub window: Duration,
    /// The first lock's length.
    pub base_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// How long after a successful login its client is exempt from the
    /// ceiling lock.
    pub trusted_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            ceiling: 50,
            window: Duration::minutes(15),
            base_lock: Duration::minutes(1),
            max_lock: Duration::hours(1),
            trusted_for: Duration::days(30),
        }
    }
}

/// Whether an attempt may check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes; it has been counted.
    Granted,
    /// No: locked until then (for this client, or for every client).
    Locked(DateTime<Utc>),
}

/// The lockout counters of one (email, client) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginFailures {
    /// Failures in the current window.
    pub count: i32,
    /// When the current window started.
    pub window_start: Option<DateTime<Utc>>,
    /// Locked until this time, if set and in the future.
    pub locked_until: Option<DateTime<Utc>>,
    /// Consecutive locks so far.
    pub lock_count: i32,
}

impl LoginFailures {
    /// The lock in force at `now`, if any.
    pub fn lock_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }
}

impl LockoutPolicy {
    /// Whether a client whose last successful login was `last_success` is
    /// still known at `now`.
    pub fn trusts(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_success.is_some_and(|at| now - at < self.trusted_for)
    }

    /// The counters of one client after one more attempt at `now`.
    pub fn after_failure(&self, state: LoginFailures, now: DateTime<Utc>) -> LoginFailures {
        self.after_attempt(state, now, self.max_failures)
    }

    /// The counters after one more attempt at `now`, locking once `limit`
    /// attempts fell within the window.
    pub fn after_attempt(
        &self,
        mut state: LoginFailures,
        now: DateTime<Utc>,
        limit: i32,
    ) -> LoginFailures {
        let in_window = state
            .window_start
            .is_some_and(|start| now - start < self.window);
        if in_window {
            state.count += 1;
        } else {
            state.count = 1;
            state.window_start = Some(now);
        }
        if state.count >= limit {
            let doubling = u32::try_from(state.lock_count.clamp(0, 20)).unwrap_or(20);
            let wait = self
                .base_lock
                .checked_mul(1 << doubling)
                .unwrap_or(self.max_lock)
                .min(self.max_lock);
            state.locked_until = Some(now + wait);
            state.lock_count += 1;
            state.count = 0;
            state.window_start = None;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_the_window_lock_for_a_growing_wait() {
        let policy = LockoutPolicy::default();
        let t0 = Utc::now();
        let mut state = LoginFailures::default();
        for i in 0..4 {
            state = policy.after_failure(state, t0 + Duration::seconds(i));
            assert_eq!(state.lock_at(t0), None);
        }
        state = policy.after_failure(state, t0 + Duration::seconds(4));
        assert_eq!(
            state.lock_at(t0 + Duration::seconds(5)),
            Some(t0 + Duration::seconds(64))
        );

        // The next lock waits twice as long.
        let t1 = t0 + Duration::minutes(2);
        for i in 0..5 {
            state = policy.after_failure(state, t1 + Duration::seconds(i));
        }
        assert_eq!(
            state.locked_until,
            Some(t1 + Duration::seconds(4) + Duration::minutes(2))
        );
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let policy = LockoutPolicy::default();
        let t0 = Utc::now();
        let mut state = LoginFailures::default();
        for i in 0..4 {
            state = policy.after_failure(state, t0 + Duration::minutes(i));
        }
        state = policy.after_failure(state, t0 + Duration::minutes(20));
        assert_eq!(state.count, 1);
        assert_eq!(state.locked_until, None);
    }

    #[test]
    fn the_wait_is_capped() {
        let policy = LockoutPolicy::default();
        let state = LoginFailures {
            count: 4,
            window_start: Some(Utc::now()),
            locked_until: None,
            lock_count: 30,
        };
        let now = Utc::now();
        let after = policy.after_failure(state, now);
        assert_eq!(after.locked_until, Some(now + Duration::hours(1)));
    }
}
