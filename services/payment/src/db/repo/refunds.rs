//! The `refunds` table.

use backroom_shared::paging::PageRequest;
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;

use crate::{
    db::{models::RefundRow, schema::payment::refunds},
    domain::{Error, IntentId, RefundId, refunds::Refund},
    events,
};

/// Inserts a refund.
#[instrument(skip_all, fields(intent = %refund.intent, refund = %refund.id))]
pub fn insert(conn: &mut PgConnection, refund: &Refund) -> Result<(), Error> {
    diesel::insert_into(refunds::table)
        .values(RefundRow::from(refund))
        .execute(conn)?;
    if refund.status == crate::domain::refunds::RefundStatus::Succeeded {
        events::refund_succeeded(conn, refund)?;
    }
    Ok(())
}

/// How many refunds an intent has (sequences the processor's keys).
#[instrument(skip_all, fields(intent = %intent))]
pub fn count(conn: &mut PgConnection, intent: IntentId) -> Result<i64, Error> {
    Ok(refunds::table
        .filter(refunds::payment_intent_id.eq(intent.uuid()))
        .count()
        .get_result(conn)?)
}

/// A refund of an intent.
#[instrument(skip_all, fields(intent = %intent, refund = %id))]
pub fn get(
    conn: &mut PgConnection,
    intent: IntentId,
    id: RefundId,
) -> Result<Option<Refund>, Error> {
    refunds::table
        .find(id.uuid())
        .filter(refunds::payment_intent_id.eq(intent.uuid()))
        .select(RefundRow::as_select())
        .first(conn)
        .optional()?
        .map(Refund::try_from)
        .transpose()
}

/// An intent's refunds, oldest first.
#[instrument(skip_all, fields(intent = %intent))]
pub fn list(
    conn: &mut PgConnection,
    intent: IntentId,
    page: &PageRequest,
    after: Option<RefundId>,
) -> Result<Vec<Refund>, Error> {
    let mut query = refunds::table
        .filter(refunds::payment_intent_id.eq(intent.uuid()))
        .select(RefundRow::as_select())
        .order(refunds::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(refunds::id.gt(after.uuid()));
    }
    query
        .load(conn)?
        .into_iter()
        .map(Refund::try_from)
        .collect()
}
