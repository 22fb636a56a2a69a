//! Rich gRPC errors: `tonic::Status` carrying `google.rpc` details
//! (`ErrorInfo` with reason + domain, `BadRequest` field violations), built with
//! `tonic_types` so every language's client can decode them.
//!
//! Each service keeps ONE domain `Error` enum and ONE exhaustive mapping to
//! [`Status`]; that mapping uses the constructors here so the wire shape of an
//! error is the same everywhere. Internal causes are logged by
//! [`internal`], never sent.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of a service, e.g. `backroom.account`.
pub type Domain = &'static str;

/// A status with an `ErrorInfo { reason, domain, metadata }` detail.
///
/// `reason` is a stable `UPPER_SNAKE_CASE` identifier documented in the proto;
/// clients branch on it, not on the message.
pub fn with_reason(
    code: Code,
    domain: Domain,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, metadata),
    )
}

/// [`with_reason`] plus a `google.rpc.RetryInfo` saying when to try again
/// (rate limits, locks).
pub fn with_retry_info(
    code: Code,
    domain: Domain,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (String, String)>,
    retry_after: std::time::Duration,
) -> Status {
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    let mut details = ErrorDetails::with_error_info(reason, domain, metadata);
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(code, message, details)
}

/// One invalid request field: the dotted proto path and why it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field in the request, e.g. `card.exp_month`.
    pub field: String,
    /// Human-readable reason; never echoes a secret value.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects field violations while parsing a request, so one response names
/// every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps `result`'s value, or records its violation and returns `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// Records a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Adds several violations.
    pub fn extend(&mut self, violations: impl IntoIterator<Item = FieldViolation>) {
        self.0.extend(violations);
    }

    /// `Err` with every violation, if any.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }

    /// Ends parsing: the values [`Self::check`] kept — a tuple of
    /// `Option`s, each `None` only where a violation was recorded — or
    /// every violation. So a command is built from its fields without an
    /// `unwrap` or `unreachable!`:
    ///
    /// ```
    /// # use backroom_shared::errors::{FieldViolation, Violations};
    /// let mut v = Violations::default();
    /// let a = v.check(Ok::<_, FieldViolation>(1));
    /// let b = v.check(Err::<u8, _>(FieldViolation::new("b", "is required")));
    /// assert_eq!(v.finish_with((a, b)).unwrap_err()[0].field, "b");
    /// ```
    pub fn finish_with<T: Parsed>(self, values: T) -> Result<T::Value, Vec<FieldViolation>> {
        if !self.0.is_empty() {
            return Err(self.0);
        }
        // A `None` without a violation means a parser returned neither a
        // value nor a reason: still the caller's bad input, never a panic.
        values
            .all()
            .ok_or_else(|| vec![FieldViolation::new("request", "is not valid")])
    }
}

/// A tuple of parsed fields (`Option`s) that is either complete or not; see
/// [`Violations::finish_with`].
pub trait Parsed {
    /// The tuple of values.
    type Value;
    /// Every value, if every field parsed.
    fn all(self) -> Option<Self::Value>;
}

impl<A> Parsed for Option<A> {
    type Value = A;
    fn all(self) -> Option<A> {
        self
    }
}

/// The conversions every service's domain `Error` has, for an enum with
/// the variants `Db(DbError)` and `Validation(Vec<FieldViolation>)`:
/// diesel errors and unknown stored values become `Db` (they are the
/// database's failures), one or more field violations become `Validation`.
/// `?` then works on each of them inside repositories and commands.
#[macro_export]
macro_rules! domain_error_conversions {
    ($error:ty) => {
        impl From<diesel::result::Error> for $error {
            fn from(err: diesel::result::Error) -> Self {
                Self::Db(err.into())
            }
        }

        impl From<$crate::stored::UnknownStoredValue> for $error {
            fn from(err: $crate::stored::UnknownStoredValue) -> Self {
                Self::Db(err.into())
            }
        }

        impl From<$crate::errors::FieldViolation> for $error {
            fn from(violation: $crate::errors::FieldViolation) -> Self {
                Self::Validation(vec![violation])
            }
        }

        impl From<Vec<$crate::errors::FieldViolation>> for $error {
            fn from(violations: Vec<$crate::errors::FieldViolation>) -> Self {
                Self::Validation(violations)
            }
        }
    };
}

macro_rules! parsed_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Parsed for ($(Option<$name>,)+) {
            type Value = ($($name,)+);
            #[allow(non_snake_case)]
            fn all(self) -> Option<Self::Value> {
                let ($($name,)+) = self;
                Some(($($name?,)+))
            }
        }
    };
}

parsed_tuple!(A, B);
parsed_tuple!(A, B, C);
parsed_tuple!(A, B, C, D);
parsed_tuple!(A, B, C, D, E);
parsed_tuple!(A, B, C, D, E, F);
parsed_tuple!(A, B, C, D, E, F, G);
parsed_tuple!(A, B, C, D, E, F, G, H);
parsed_tuple!(A, B, C, D, E, F, G, H, I);
parsed_tuple!(A, B, C, D, E, F, G, H, I, J);

/// `INVALID_ARGUMENT` with a `BadRequest` listing every offending field and an
/// `ErrorInfo` with reason `VALIDATION_FAILED`. The message names the fields too,
/// so a person reading grpcurl output sees them without decoding details.
pub fn invalid_argument(domain: Domain, violations: &[FieldViolation]) -> Status {
    invalid_argument_with_reason(domain, "VALIDATION_FAILED", violations)
}

/// At most this many field violations are reported (the rest are counted).
pub const MAX_VIOLATIONS_SHOWN: usize = 20;

/// A field name or description cut to 200 characters.
fn clip(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `INVALID_ARGUMENT` with a specific `ErrorInfo` reason (e.g.
/// `UNKNOWN_AUDIENCE`) and the `BadRequest` field violations.
pub fn invalid_argument_with_reason(
    domain: Domain,
    reason: &str,
    violations: &[FieldViolation],
) -> Status {
    // Bounded: a request with thousands of bad elements must not produce
    // trailers past the peer's header-list limit (the client would see an h2
    // protocol error instead of this status).
    let shown: Vec<(String, String)> = violations
        .iter()
        .take(MAX_VIOLATIONS_SHOWN)
        .map(|v| (clip(&v.field), clip(&v.description)))
        .collect();
    let hidden = violations.len() - shown.len();
    let mut message = shown
        .iter()
        .map(|(field, description)| format!("{field}: {description}"))
        .collect::<Vec<_>>()
        .join("; ");
    if hidden > 0 {
        message.push_str(&format!("; and {hidden} more"));
    }
    let mut details = ErrorDetails::with_error_info(reason, domain, HashMap::new());
    for (field, description) in &shown {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// `INTERNAL` for a cause the client must not see: the cause is logged with its
/// chain (at the current span, so it carries the trace id) and the client gets
/// a fixed message.
pub fn internal(domain: Domain, cause: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(cause), "internal error");
    with_reason(Code::Internal, domain, "INTERNAL", "internal error", [])
}

/// `UNAVAILABLE`: a dependency (database, another service) is down or
/// saturated. Safe to retry with backoff.
pub fn unavailable(domain: Domain, message: impl Into<String>) -> Status {
    with_reason(
        Code::Unavailable,
        domain,
        "SERVICE_UNAVAILABLE",
        message,
        [],
    )
}

/// Formats an error with its whole `source()` chain: `a: b: c`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// What a client reads back from a rich status (used by tests and by our own
/// clients to branch on reasons).
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// The fields named by a status's `BadRequest` detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field_and_names_them_in_the_message() {
        let status = invalid_argument(
            "backroom.test",
            &[
                FieldViolation::new("email", "must contain @"),
                FieldViolation::new("password", "too short"),
            ],
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["email", "password"]);
        assert!(status.message().contains("email: must contain @"));
        assert_eq!(reason_of(&status).as_deref(), Some("VALIDATION_FAILED"));
    }

    #[test]
    fn thousands_of_violations_are_reported_bounded() {
        let many: Vec<FieldViolation> = (0..2000)
            .map(|i| FieldViolation::new(format!("skus[{i}]"), "x".repeat(10_000)))
            .collect();
        let status = invalid_argument("backroom.test", &many);
        assert_eq!(violated_fields(&status).len(), MAX_VIOLATIONS_SHOWN);
        assert!(status.message().ends_with("and 1980 more"));
        assert!(status.message().len() < 5_000, "{}", status.message().len());
    }

    #[test]
    fn internal_never_leaks_the_cause() {
        let cause = std::io::Error::other("password=hunter2 at db.internal:5432");
        let status = internal("backroom.test", &cause);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
        assert!(!format!("{:?}", status.details()).contains("hunter2"));
    }

    #[test]
    fn error_chain_lists_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&err).to_string(), "outer: inner");
    }
}
