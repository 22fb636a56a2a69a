//! The `payment_intents` table: every state change of one intent is
//! serialised by [`lock`]'s row lock.

use backroom_shared::paging::PageRequest;
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;

use crate::{
    checkout::saga::State,
    db::{
        models::IntentRow,
        schema::payment::{orders, payment_intents},
    },
    domain::{
        CustomerId, Error, IntentId, OrderId,
        intents::{Intent, IntentStatus},
    },
    events,
};

/// Inserts an intent.
#[instrument(skip_all, fields(intent = %intent.id))]
pub fn insert(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    diesel::insert_into(payment_intents::table)
        .values(IntentRow::from(intent))
        .execute(conn)?;
    Ok(())
}

/// Saves every mutable field of an intent.
#[instrument(skip_all, fields(intent = %intent.id))]
pub fn update(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    let row = IntentRow::from(intent);
    let before: String = payment_intents::table
        .find(row.id)
        .select(payment_intents::status)
        .first(conn)?;
    diesel::update(payment_intents::table.find(row.id))
        .set(&row)
        .execute(conn)?;
    events::intent_changed(conn, IntentStatus::from_stored(&before)?, intent)
}

/// Records a failed authorization attempt, unless the intent moved on
/// meanwhile (only a confirmable intent is overwritten).
#[instrument(skip_all, fields(intent = %intent.id))]
pub fn record_failed_attempt(conn: &mut PgConnection, intent: &Intent) -> Result<(), Error> {
    let row = IntentRow::from(intent);
    diesel::update(
        payment_intents::table
            .find(row.id)
            .filter(payment_intents::status.eq_any([
                IntentStatus::RequiresPaymentMethod.as_str(),
                IntentStatus::RequiresConfirmation.as_str(),
            ])),
    )
    .set(&row)
    .execute(conn)?;
    Ok(())
}

/// An intent.
#[instrument(skip_all, fields(intent = %id))]
pub fn get(conn: &mut PgConnection, id: IntentId) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .find(id.uuid())
        .select(IntentRow::as_select())
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// An intent, its row locked until the transaction ends: every state change
/// of one intent is serialised here.
#[instrument(skip_all, fields(intent = %id))]
pub fn lock(conn: &mut PgConnection, id: IntentId) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .find(id.uuid())
        .select(IntentRow::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// Intents, newest first, optionally of one customer / in one status.
#[instrument(skip_all, fields(customer = customer.map(tracing::field::display)))]
pub fn list(
    conn: &mut PgConnection,
    customer: Option<CustomerId>,
    status: Option<IntentStatus>,
    page: &PageRequest,
    after: Option<IntentId>,
) -> Result<Vec<Intent>, Error> {
    let mut query = payment_intents::table
        .select(IntentRow::as_select())
        .order(payment_intents::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(customer) = customer {
        query = query.filter(payment_intents::customer_id.eq(customer.uuid()));
    }
    if let Some(status) = status {
        query = query.filter(payment_intents::status.eq(status.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(payment_intents::id.lt(after.uuid()));
    }
    query
        .load(conn)?
        .into_iter()
        .map(Intent::try_from)
        .collect()
}

/// The customer of order `id`, if it exists.
#[instrument(skip_all, fields(order = %id))]
pub fn order_customer(conn: &mut PgConnection, id: OrderId) -> Result<Option<CustomerId>, Error> {
    Ok(orders::table
        .find(id.uuid())
        .select(orders::customer_id)
        .first(conn)
        .optional()?
        .map(CustomerId::from_uuid))
}

/// The payment intent of order `id`, if checkout created one.
#[instrument(skip_all, fields(order = %id))]
pub fn of_order(conn: &mut PgConnection, id: OrderId) -> Result<Option<Intent>, Error> {
    payment_intents::table
        .filter(payment_intents::order_id.eq(id.uuid()))
        .select(IntentRow::as_select())
        .first(conn)
        .optional()?
        .map(Intent::try_from)
        .transpose()
}

/// Up to `limit` intents whose authorization expired at `now`, locked;
/// rows another replica is sweeping are skipped. An order's payment is left
/// alone while the order's saga still runs: the saga owns it then (before
/// the pivot its re-read sees the expiry and compensates; after the pivot a
/// capture the processor refuses sends the order to NEEDS_ATTENTION), and a
/// void under its feet would let it commit stock against a dead
/// authorization.
#[instrument(skip_all)]
pub fn lock_expired_authorizations(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Intent>, Error> {
    let saga_running = orders::table
        .filter(orders::id.nullable().eq(payment_intents::order_id))
        .filter(orders::state.ne_all(State::TERMINAL.map(State::as_str)));
    payment_intents::table
        .filter(payment_intents::status.eq(IntentStatus::RequiresCapture.as_str()))
        .filter(payment_intents::authorization_expires_at.le(now))
        .filter(diesel::dsl::not(diesel::dsl::exists(saga_running)))
        .select(IntentRow::as_select())
        .order(payment_intents::authorization_expires_at.asc())
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)?
        .into_iter()
        .map(Intent::try_from)
        .collect()
}
