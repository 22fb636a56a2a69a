//! Where an order's saga is ([`State`]), why an order failed ([`Failure`]),
//! and how a step ends when it does not advance the order ([`StepError`]).

use std::collections::BTreeMap;

use tonic::Status;

use crate::domain::Error;

backroom_shared::stored_enum!(
    /// An order's saga state; each non-terminal state names the step in
    /// progress.
    pub State {
        /// Checking account and address, quoting.
        Pending = "PENDING",
        /// Reserving stock.
        Reserving = "RESERVING",
        /// Creating and confirming the payment intent.
        Authorizing = "AUTHORIZING",
        /// Committing the reservation: the pivot.
        Committing = "COMMITTING",
        /// Capturing the payment.
        Capturing = "CAPTURING",
        /// Done.
        Completed = "COMPLETED",
        /// Undoing what was done before the pivot.
        Compensating = "COMPENSATING",
        /// Undone.
        Failed = "FAILED",
        /// Stock committed but the payment cannot be captured: waits for an
        /// operator (terminal for the saga).
        NeedsAttention = "NEEDS_ATTENTION",
    }
);

impl State {
    /// Terminal states: no worker ever touches these again
    /// (NEEDS_ATTENTION waits for an operator).
    pub const TERMINAL: [State; 3] = [State::Completed, State::Failed, State::NeedsAttention];

    /// COMPLETED, FAILED or NEEDS_ATTENTION: no saga worker moves it on.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// Whether the pivot has not happened yet (failures compensate).
    pub fn before_pivot(self) -> bool {
        matches!(
            self,
            State::Pending | State::Reserving | State::Authorizing | State::Committing
        )
    }
}

/// Why an order failed, machine-readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The failing step's ErrorInfo reason.
    pub reason: String,
    /// Safe to show to the customer.
    pub message: String,
    /// The failing step's ErrorInfo metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Failure {
    pub(super) fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// A business failure from a downstream status: its reason and metadata.
    pub(super) fn from_status(status: &Status, fallback: &str) -> Self {
        use tonic_types::StatusExt as _;
        let details = status.get_error_details();
        let info = details.error_info();
        Self {
            reason: info.map_or_else(|| fallback.to_owned(), |i| i.reason.clone()),
            message: status.message().to_owned(),
            metadata: info
                .map(|i| {
                    i.metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// How a step ended, when it did not advance the order.
#[derive(Debug)]
pub(super) enum StepError {
    /// A definitive answer that fails the order (compensate).
    Business(Failure),
    /// After the pivot: the payment cannot be captured (NEEDS_ATTENTION).
    Attention(Failure),
    /// A dependency is down or overloaded: try again later.
    Transient(Status),
    /// Our own database failed: stop; the recovery worker tries again.
    Local(Error),
    /// A planted crash (test builds): stop right here, lease held.
    #[cfg_attr(not(feature = "fault-injection"), expect(dead_code))]
    Crashed,
}

impl From<Error> for StepError {
    fn from(err: Error) -> Self {
        StepError::Local(err)
    }
}
