//! Sessions: a Login opens a family of refresh tokens; every use rotates
//! the token; a rotated token presented again is reuse and revokes the
//! whole family. A session ends at its absolute lifetime however often it
//! is refreshed. The refresh tokens themselves are `tokens`.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Account, Error};

/// When a session's tokens expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetime {
    /// How long one refresh token lives unused (the idle timeout).
    pub refresh_ttl: Duration,
    /// How long a session lives from its Login, however often refreshed.
    pub max_lifetime: Duration,
}

impl SessionLifetime {
    /// A session opened at `now`: when its first refresh token expires, and
    /// when the session does.
    pub fn opened(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let session_expires_at = now + self.max_lifetime;
        (self.successor(now, session_expires_at), session_expires_at)
    }

    /// When a refresh token issued at `now` in a session that ends at
    /// `session_expires_at` expires: the successor never outlives the
    /// session.
    pub fn successor(
        &self,
        now: DateTime<Utc>,
        session_expires_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        (now + self.refresh_ttl).min(session_expires_at)
    }
}

/// A stored refresh token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// The session it belongs to.
    pub family_id: Uuid,
    /// The session's account.
    pub account_id: Uuid,
    /// When this token stops working unused.
    pub expires_at: DateTime<Utc>,
    /// When it was exchanged for its successor.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When its family was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the session ends.
    pub session_expires_at: DateTime<Utc>,
}

impl RefreshToken {
    /// Why this token, presented at `now`, may not be exchanged, if it may
    /// not: its family was revoked, it was already rotated (reuse: the
    /// caller revokes the family), or it or its session expired.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<Error> {
        if self.revoked_at.is_some() {
            Some(Error::SessionRevoked)
        } else if self.rotated_at.is_some() {
            Some(Error::RefreshTokenReused)
        } else if self.expires_at <= now || self.session_expires_at <= now {
            Some(Error::RefreshTokenExpired)
        } else {
            None
        }
    }
}

/// What presenting a refresh token led to. A rejection may still have
/// changed state (reuse revokes the family), so both outcomes commit.
#[derive(Debug)]
pub enum Rotation {
    /// The token was exchanged for the new one, which expires then; the
    /// session's account.
    Rotated(Account, DateTime<Utc>),
    /// The token was refused, for this reason.
    Rejected(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_never_outlive_their_session() {
        let lifetime = SessionLifetime {
            refresh_ttl: Duration::days(30),
            max_lifetime: Duration::days(90),
        };
        let t0 = Utc::now();
        let (first, session) = lifetime.opened(t0);
        assert_eq!(
            (first, session),
            (t0 + Duration::days(30), t0 + Duration::days(90))
        );
        let late = t0 + Duration::days(80);
        assert_eq!(lifetime.successor(late, session), session);
    }

    #[test]
    fn a_presented_token_is_refused_when_revoked_rotated_or_expired() {
        let now = Utc::now();
        let live = RefreshToken {
            family_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            expires_at: now + Duration::days(1),
            rotated_at: None,
            revoked_at: None,
            session_expires_at: now + Duration::days(2),
        };
        assert!(live.refusal(now).is_none());
        let rotated = RefreshToken {
            rotated_at: Some(now),
            ..live.clone()
        };
        assert!(matches!(
            rotated.refusal(now),
            Some(Error::RefreshTokenReused)
        ));
        // Revocation wins over reuse: the family is already gone.
        let revoked = RefreshToken {
            revoked_at: Some(now),
            ..rotated
        };
        assert!(matches!(revoked.refusal(now), Some(Error::SessionRevoked)));
        let session_over = RefreshToken {
            session_expires_at: now,
            ..live
        };
        assert!(matches!(
            session_over.refusal(now),
            Some(Error::RefreshTokenExpired)
        ));
    }
}
