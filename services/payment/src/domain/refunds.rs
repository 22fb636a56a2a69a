//! A refund: captured money of a succeeded intent returned to the card,
//! never more in total than was captured (the rule is the engine's,
//! [`super::intents::Engine::refund`]). A refund is visible to whoever sees
//! its intent.

use backroom_shared::{auth::Access, money::Money, paging::PageRequest};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use super::{
    Error, IntentId, RefundId,
    intents::{self, Intent},
};
use crate::db::repo;

backroom_shared::stored_enum!(
    /// Why money was refunded.
    pub RefundReason {
        /// None given.
        Unspecified = "unspecified",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
        /// A duplicate payment.
        Duplicate = "duplicate",
        /// Fraud.
        Fraudulent = "fraudulent",
    }
);

backroom_shared::stored_enum!(
    /// Outcome of a refund.
    pub RefundStatus {
        /// Money returned.
        Succeeded = "succeeded",
        /// Definitively refused.
        Failed = "failed",
    }
);

/// A refund of an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Its id.
    pub id: RefundId,
    /// The intent refunded.
    pub intent: IntentId,
    /// How much, in the intent's currency.
    pub amount: Money,
    /// Its outcome.
    pub status: RefundStatus,
    /// Why.
    pub reason: RefundReason,
    /// The processor's id of the refund.
    pub processor_refund_id: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The VAT it reversed (part of `amount`).
    pub tax: Money,
}

impl Refund {
    /// A succeeded refund of `amount` of `intent`, reversing `tax` of VAT.
    pub fn succeeded(
        intent: &Intent,
        amount: Money,
        tax: Money,
        reason: RefundReason,
        processor_refund_id: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            tax,
            id: RefundId::generate(),
            intent: intent.id,
            amount,
            status: RefundStatus::Succeeded,
            reason,
            processor_refund_id,
            created_at: now,
        }
    }
}

/// CreateRefund, parsed.
#[derive(Debug, Clone, Copy)]
pub struct CreateRefund {
    /// The intent to refund.
    pub intent: IntentId,
    /// How much; none: everything not yet refunded.
    pub amount: Option<Money>,
    /// Why.
    pub reason: RefundReason,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// GetRefund, parsed.
#[derive(Debug, Clone, Copy)]
pub struct GetRefund {
    /// Its intent.
    pub intent: IntentId,
    /// The refund.
    pub refund: RefundId,
}

/// ListRefunds, parsed.
#[derive(Debug, Clone)]
pub struct ListRefunds {
    /// Whose refunds.
    pub intent: IntentId,
    /// Which page.
    pub page: PageRequest,
    /// The last refund of the previous page.
    pub after: Option<RefundId>,
}

/// The refund, if the caller sees its intent; otherwise, and when either is
/// missing, REFUND_NOT_FOUND.
pub fn get(conn: &mut PgConnection, access: Access, cmd: GetRefund) -> Result<Refund, Error> {
    let missing = || Error::RefundNotFound {
        intent: cmd.intent,
        refund: cmd.refund,
    };
    intents::visible(access, repo::intents::get(conn, cmd.intent)?).ok_or_else(missing)?;
    repo::refunds::get(conn, cmd.intent, cmd.refund)?.ok_or_else(missing)
}

/// A page of the refunds of an intent the caller sees.
pub fn list(
    conn: &mut PgConnection,
    access: Access,
    cmd: &ListRefunds,
) -> Result<Vec<Refund>, Error> {
    intents::get(conn, access, cmd.intent)?;
    repo::refunds::list(conn, cmd.intent, &cmd.page, cmd.after)
}
