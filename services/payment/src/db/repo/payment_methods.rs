//! The `payment_methods` table: attached cards (no PAN, no CVC).

use backroom_shared::paging::PageRequest;
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*, sql_query, sql_types::Text};
use tracing::instrument;

use crate::{
    db::{models::PaymentMethodRow, schema::payment::payment_methods},
    domain::{
        CustomerId, Error, PaymentMethodId,
        payment_methods::{MAX_PAYMENT_METHODS, PaymentMethod},
    },
};

/// Inserts a payment method unless the customer already has
/// [`MAX_PAYMENT_METHODS`] (serialised per customer by an advisory lock).
#[instrument(skip_all, fields(payment_method = %method.id, customer = %method.customer))]
pub fn insert(conn: &mut PgConnection, method: &PaymentMethod) -> Result<PaymentMethod, Error> {
    let row = PaymentMethodRow::try_from(method)?;
    sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind::<Text, _>(row.customer_id.to_string())
        .execute(conn)?;
    let attached: i64 = payment_methods::table
        .filter(payment_methods::customer_id.eq(row.customer_id))
        .filter(payment_methods::detached_at.is_null())
        .count()
        .get_result(conn)?;
    if attached >= MAX_PAYMENT_METHODS {
        return Err(Error::PaymentMethodLimitReached);
    }
    Ok(diesel::insert_into(payment_methods::table)
        .values(&row)
        .returning(PaymentMethodRow::as_returning())
        .get_result(conn)?
        .into())
}

/// An attached (not detached) payment method.
#[instrument(skip_all, fields(payment_method = %id))]
pub fn get(conn: &mut PgConnection, id: PaymentMethodId) -> Result<Option<PaymentMethod>, Error> {
    Ok(payment_methods::table
        .find(id.uuid())
        .filter(payment_methods::detached_at.is_null())
        .select(PaymentMethodRow::as_select())
        .first(conn)
        .optional()?
        .map(PaymentMethod::from))
}

/// A customer's attached payment methods, newest first, after `after`.
#[instrument(skip_all, fields(customer = %customer))]
pub fn list(
    conn: &mut PgConnection,
    customer: CustomerId,
    page: &PageRequest,
    after: Option<PaymentMethodId>,
) -> Result<Vec<PaymentMethod>, Error> {
    let mut query = payment_methods::table
        .filter(payment_methods::customer_id.eq(customer.uuid()))
        .filter(payment_methods::detached_at.is_null())
        .select(PaymentMethodRow::as_select())
        .order(payment_methods::id.desc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payment_methods::id.lt(after.uuid()));
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(PaymentMethod::from)
        .collect())
}

/// Marks a payment method detached; false if it was not attached.
#[instrument(skip_all, fields(payment_method = %id))]
pub fn detach(
    conn: &mut PgConnection,
    id: PaymentMethodId,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let updated = diesel::update(
        payment_methods::table
            .find(id.uuid())
            .filter(payment_methods::detached_at.is_null()),
    )
    .set(payment_methods::detached_at.eq(now))
    .execute(conn)?;
    Ok(updated == 1)
}
