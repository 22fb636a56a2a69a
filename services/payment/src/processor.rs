//! The card processor behind a trait, and the built-in [`Simulator`].
//!
//! Every call that moves money takes an idempotency key chosen by the
//! service so that a retry after a lost response never moves money twice:
//! `{intent}/authorize/{attempt}`, `{intent}/capture`, `{intent}/void`,
//! `{intent}/refund/{n}`.
//!
//! The calls are synchronous and run inside the caller's database
//! transaction (on the blocking pool), which is right for the in-process
//! simulator. A networked processor would make them async and move the call
//! out of the transaction (PROCESSING committed first, a recovery worker
//! settling intents left there).
//!
//! ## Test cards (any future expiry, any CVC)
//!
//! | number | outcome |
//! |---|---|
//! | 4242424242424242 (Visa), 5555555555554444 (Mastercard), 378282246310005 (Amex), 6011111111111117 (Discover) | authorized and captured |
//! | 4000000000000002 | declined: `CARD_DECLINED` / `generic_decline` |
//! | 4000000000009995 | declined: `INSUFFICIENT_FUNDS` / `insufficient_funds` |
//! | 4000000000000069 | declined: `EXPIRED_CARD` / `expired_card` |
//! | 4000000000000119 | `PROCESSOR_ERROR` (UNAVAILABLE) on the FIRST authorization attempt of an intent: the simulator authorizes but the response is "lost"; a retry (same idempotency key) returns that same authorization, so retrying never double-charges |
//! | any other Luhn-valid number | authorized and captured |
//!
//! Which processor a process uses is configuration:
//! `BACKROOM_PAYMENT_PROCESSOR` ([`ProcessorChoice`]), required to serve and
//! without a default, so no deployment approves test cards by accident.
//!
//! The simulator's "vault" is the token itself, as with Stripe's test tokens
//! (`tok_chargeDeclined`): `tokenize` classifies the number and returns
//! `tok_sim_{outcome}_{random}`; the number is dropped at once. Tokens
//! therefore survive restarts and work on every replica. Authorizations,
//! captures, voids and refunds are remembered in memory (24 h) for
//! idempotency and for tests to count.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use uuid::Uuid;

use backroom_shared::money::Money;

use crate::domain::{DeclineKind, card::CardNumber};

/// The processor's reference to a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorCard {
    /// Opaque token, stored with the payment method.
    pub token: String,
}

/// An authorization to place a hold.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    /// The card's token.
    pub token: &'a str,
    /// The hold.
    pub amount: Money,
    /// Same key → same authorization.
    pub idempotency_key: &'a str,
}

/// A placed hold (empty: none known; the processor refuses it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    /// The processor's id.
    pub id: String,
}

/// The processor could not answer (retryable; the outcome is unknown to us).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor unavailable: {0}")]
pub struct ProcessorUnavailable(pub String);

/// Why an authorization did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// A definitive decline.
    #[error("declined: {0:?}")]
    Declined(DeclineKind),
    /// No answer; retry with the same key.
    #[error(transparent)]
    Unavailable(#[from] ProcessorUnavailable),
}

/// A card processor. Implementations must honour the idempotency keys.
pub trait Processor: Send + Sync + std::fmt::Debug {
    /// Vaults a card; the caller drops the number afterwards.
    fn tokenize(&self, number: &CardNumber) -> Result<ProcessorCard, ProcessorUnavailable>;
    /// Places a hold of `amount` on the card.
    fn authorize(&self, request: AuthorizeRequest<'_>) -> Result<Authorization, AuthorizeError>;
    /// Captures `amount` of an authorization, releasing the rest.
    fn capture(
        &self,
        authorization: &Authorization,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<(), ProcessorUnavailable>;
    /// Releases an authorization entirely.
    fn void(
        &self,
        authorization: &Authorization,
        idempotency_key: &str,
    ) -> Result<(), ProcessorUnavailable>;
    /// Returns `amount` of captured money; the processor's refund id.
    fn refund(
        &self,
        authorization: &Authorization,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<String, ProcessorUnavailable>;
}

/// The card processors this build can use, chosen by
/// `BACKROOM_PAYMENT_PROCESSOR`. Only the simulator exists today; a real
/// processor becomes another variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessorChoice {
    /// The built-in [`Simulator`]: decides by test card, approves any other
    /// Luhn-valid number, and moves no money. Development and tests only.
    Simulator,
}

impl ProcessorChoice {
    /// The configuration value (`simulator`).
    pub fn name(self) -> &'static str {
        match self {
            ProcessorChoice::Simulator => "simulator",
        }
    }

    /// A processor of this kind, ready to use.
    pub fn build(self) -> Arc<dyn Processor> {
        match self {
            ProcessorChoice::Simulator => Arc::new(Simulator::new()),
        }
    }
}

/// Outcome class of a simulated card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeed,
    Decline(DeclineKind),
    ProcessingError,
}

impl Outcome {
    fn of(number: &str) -> Self {
        match number {
            "4000000000000002" => Outcome::Decline(DeclineKind::Generic),
            "4000000000009995" => Outcome::Decline(DeclineKind::InsufficientFunds),
            "4000000000000069" => Outcome::Decline(DeclineKind::ExpiredCard),
            "4000000000000119" => Outcome::ProcessingError,
            _ => Outcome::Succeed,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Outcome::Succeed => "ok",
            Outcome::Decline(DeclineKind::Generic) => "generic",
            Outcome::Decline(DeclineKind::InsufficientFunds) => "funds",
            Outcome::Decline(DeclineKind::ExpiredCard) => "expired",
            Outcome::ProcessingError => "procerr",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        let tag = token.strip_prefix("tok_sim_")?.split('_').next()?;
        [
            Outcome::Succeed,
            Outcome::Decline(DeclineKind::Generic),
            Outcome::Decline(DeclineKind::InsufficientFunds),
            Outcome::Decline(DeclineKind::ExpiredCard),
            Outcome::ProcessingError,
        ]
        .into_iter()
        .find(|o| o.tag() == tag)
    }
}

/// How long the simulator remembers an idempotency key.
const MEMORY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
struct Book {
    /// Authorization id by idempotency key.
    authorizations: HashMap<String, (Instant, String)>,
    captures: HashMap<String, Instant>,
    voids: HashMap<String, Instant>,
    /// Refund id by idempotency key.
    refunds: HashMap<String, (Instant, String)>,
}

impl Book {
    fn prune(&mut self, now: Instant) {
        let fresh = |at: &Instant| now.duration_since(*at) < MEMORY;
        self.authorizations.retain(|_, (at, _)| fresh(at));
        self.captures.retain(|_, at| fresh(at));
        self.voids.retain(|_, at| fresh(at));
        self.refunds.retain(|_, (at, _)| fresh(at));
    }
}

/// Counts of distinct money movements the simulator performed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulatorCounts {
    /// Authorizations placed.
    pub authorizations: usize,
    /// Captures.
    pub captures: usize,
    /// Voids.
    pub voids: usize,
    /// Refunds.
    pub refunds: usize,
}

/// The built-in processor simulator (see the module docs for its cards).
#[derive(Debug, Default)]
pub struct Simulator {
    book: Mutex<Book>,
}

impl Simulator {
    /// A simulator with an empty book.
    pub fn new() -> Self {
        Self::default()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book holds plain maps; a poisoned lock still holds them.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the simulator did so far (tests count double charges with it).
    pub fn counts(&self) -> SimulatorCounts {
        let book = self.book();
        SimulatorCounts {
            authorizations: book.authorizations.len(),
            captures: book.captures.len(),
            voids: book.voids.len(),
            refunds: book.refunds.len(),
        }
    }
}

impl Processor for Simulator {
    fn tokenize(&self, number: &CardNumber) -> Result<ProcessorCard, ProcessorUnavailable> {
        let outcome = Outcome::of(number.expose());
        Ok(ProcessorCard {
            token: format!("tok_sim_{}_{}", outcome.tag(), letters_only(Uuid::new_v4())),
        })
    }

    fn authorize(&self, request: AuthorizeRequest<'_>) -> Result<Authorization, AuthorizeError> {
        let outcome = Outcome::from_token(request.token)
            .ok_or_else(|| ProcessorUnavailable("unknown card token".into()))?;
        let now = Instant::now();
        let mut book = self.book();
        if let Some((_, id)) = book.authorizations.get(request.idempotency_key) {
            return Ok(Authorization { id: id.clone() });
        }
        match outcome {
            Outcome::Decline(kind) => Err(AuthorizeError::Declined(kind)),
            Outcome::Succeed | Outcome::ProcessingError => {
                book.prune(now);
                let id = format!("auth_sim_{}", letters_only(Uuid::new_v4()));
                book.authorizations
                    .insert(request.idempotency_key.to_owned(), (now, id.clone()));
                if outcome == Outcome::ProcessingError {
                    // The hold is placed but the answer is "lost": the
                    // caller must retry with the same key.
                    return Err(ProcessorUnavailable("processing_error".into()).into());
                }
                Ok(Authorization { id })
            }
        }
    }

    fn capture(
        &self,
        _authorization: &Authorization,
        _amount: Money,
        idempotency_key: &str,
    ) -> Result<(), ProcessorUnavailable> {
        self.book()
            .captures
            .entry(idempotency_key.to_owned())
            .or_insert_with(Instant::now);
        Ok(())
    }

    fn void(
        &self,
        _authorization: &Authorization,
        idempotency_key: &str,
    ) -> Result<(), ProcessorUnavailable> {
        self.book()
            .voids
            .entry(idempotency_key.to_owned())
            .or_insert_with(Instant::now);
        Ok(())
    }

    fn refund(
        &self,
        _authorization: &Authorization,
        _amount: Money,
        idempotency_key: &str,
    ) -> Result<String, ProcessorUnavailable> {
        let mut book = self.book();
        let (_, id) = book
            .refunds
            .entry(idempotency_key.to_owned())
            .or_insert_with(|| {
                (
                    Instant::now(),
                    format!("re_sim_{}", letters_only(Uuid::new_v4())),
                )
            });
        Ok(id.clone())
    }
}

/// A UUID's 128 random bits spelled with the letters a–p: no digit runs, so
/// a token can never look like a card number to a PAN scanner.
fn letters_only(id: Uuid) -> String {
    id.as_bytes()
        .iter()
        .flat_map(|byte| [byte >> 4, byte & 0x0f])
        .map(|nibble| char::from(b'a' + nibble))
        .collect()
}

#[cfg(test)]
mod tests {
    use backroom_shared::money::Currency;

    use super::*;

    #[test]
    fn simulator_tokens_hold_no_digit_runs() {
        for _ in 0..100 {
            let token = letters_only(Uuid::new_v4());
            assert_eq!(token.len(), 32);
            assert!(token.chars().all(|c| ('a'..='p').contains(&c)), "{token}");
        }
    }

    fn authorize(sim: &Simulator, pan: &str, key: &str) -> Result<Authorization, AuthorizeError> {
        let number = CardNumber::parse("n", pan).unwrap();
        let card = sim.tokenize(&number).unwrap();
        assert!(!card.token.contains(pan));
        sim.authorize(AuthorizeRequest {
            token: &card.token,
            amount: Money::new(Currency::parse("c", "EUR").unwrap(), 100),
            idempotency_key: key,
        })
    }

    #[test]
    fn test_cards_decide_outcomes() {
        let sim = Simulator::new();
        assert!(authorize(&sim, "4242424242424242", "a").is_ok());
        assert_eq!(
            authorize(&sim, "4000000000000002", "b"),
            Err(AuthorizeError::Declined(DeclineKind::Generic))
        );
        assert_eq!(
            authorize(&sim, "4000000000009995", "c"),
            Err(AuthorizeError::Declined(DeclineKind::InsufficientFunds))
        );
        assert_eq!(
            authorize(&sim, "4000000000000069", "d"),
            Err(AuthorizeError::Declined(DeclineKind::ExpiredCard))
        );
        assert_eq!(sim.counts().authorizations, 1);
    }

    #[test]
    fn a_processing_error_is_retried_without_a_second_hold() {
        let sim = Simulator::new();
        let number = CardNumber::parse("n", "4000000000000119").unwrap();
        let card = sim.tokenize(&number).unwrap();
        let request = AuthorizeRequest {
            token: &card.token,
            amount: Money::new(Currency::parse("c", "EUR").unwrap(), 100),
            idempotency_key: "pi/authorize/0",
        };
        assert!(matches!(
            sim.authorize(request),
            Err(AuthorizeError::Unavailable(_))
        ));
        let first = sim.authorize(request).unwrap();
        assert_eq!(sim.authorize(request).unwrap(), first);
        assert_eq!(sim.counts().authorizations, 1);
    }
}
