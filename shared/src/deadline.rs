//! Deadline propagation: the deadline of the call being served travels with
//! it (a task-local set by the server telemetry layer from `grpc-timeout`),
//! outbound calls carry the remaining budget as their own `grpc-timeout`,
//! and database work gets a `statement_timeout` no longer than what is left.
//!
//! Work moved to another task (`tokio::spawn`) does not inherit the
//! deadline; [`crate::db::Pool::run`] reads it before leaving the task.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the current call's deadline (or none).
pub async fn scope<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// The current call's deadline, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Time left before the current call's deadline (zero once passed).
pub fn remaining() -> Option<Duration> {
    current().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Parses a `grpc-timeout` header value: 1–8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes a budget as a `grpc-timeout` value in milliseconds (at least 1,
/// at most 8 digits).
pub fn encode_grpc_timeout(budget: Duration) -> String {
    let millis = u64::try_from(budget.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 99_999_999);
    format!("{millis}m")
}

/// Lowers the `grpc-timeout` of an outgoing request to the current call's
/// remaining budget.
pub fn propagate(headers: &mut http::HeaderMap) {
    let Some(remaining) = remaining() else {
        return;
    };
    let own = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    if own.is_none_or(|own| own > remaining)
        && let Ok(value) = http::HeaderValue::from_str(&encode_grpc_timeout(remaining))
    {
        headers.insert("grpc-timeout", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_reject_garbage() {
        assert_eq!(parse_grpc_timeout("50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        for bad in ["", "m", "50", "50x", "123456789m", "-5m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(encode_grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(encode_grpc_timeout(Duration::from_millis(1500)), "1500m");
    }

    #[tokio::test]
    async fn outgoing_calls_carry_the_remaining_budget() {
        let deadline = Instant::now() + Duration::from_millis(300);
        scope(Some(deadline), async {
            let mut headers = http::HeaderMap::new();
            propagate(&mut headers);
            let budget = parse_grpc_timeout(headers["grpc-timeout"].to_str().unwrap()).unwrap();
            assert!(
                budget <= Duration::from_millis(300) && budget > Duration::from_millis(200),
                "{budget:?}"
            );
            // A shorter timeout of the caller's own is kept.
            headers.insert("grpc-timeout", http::HeaderValue::from_static("10m"));
            propagate(&mut headers);
            assert_eq!(headers["grpc-timeout"], "10m");
        })
        .await;
        let mut headers = http::HeaderMap::new();
        propagate(&mut headers);
        assert!(
            headers.get("grpc-timeout").is_none(),
            "no deadline outside a call"
        );
    }
}
