//! VAT rates (`tax_rates`: insert, list, delete while scheduled, the rates
//! in effect) and discount codes (`discount_codes`: create, read, update;
//! `discount_redemptions`: the uses reservations hold, taken with a
//! conditional UPDATE and given back when a reservation ends without a
//! sale).

use backroom_shared::{catalog::DiscountCode, db::DbError};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension as _,
    prelude::*,
    sql_types::{Timestamptz, Uuid as SqlUuid},
};
use tracing::instrument;
use uuid::Uuid;

use super::{Lock, reservations};
use crate::{
    db::{
        models::{DiscountRow, NewRedemptionRow, TaxRateRow},
        schema::inventory::{discount_codes, discount_redemptions, tax_rates},
    },
    domain::{
        Error,
        pricing::{
            CountryRates, CreateDiscount, CreateTaxRate, Discount, ListDiscounts, ListTaxRates,
            NotApplicable, TaxCategory, TaxRate, UpdateDiscount,
        },
        quotes::FoundCode,
        values::{CountryCode, OrderId},
    },
};

/// Schedules a rate (see CreateTaxRate in the proto).
#[instrument(skip_all, fields(country = %cmd.country, category = %cmd.category))]
pub fn insert_rate(
    conn: &mut PgConnection,
    cmd: &CreateTaxRate,
    now: DateTime<Utc>,
) -> Result<TaxRate, Error> {
    let rate = TaxRate {
        id: Uuid::now_v7(),
        country: cmd.country.clone(),
        category: cmd.category,
        rate_bp: cmd.rate_bp,
        start_at: cmd.start(now).map_err(|v| Error::Validation(vec![v]))?,
        created_at: now,
    };
    // The stored row answers (times at the database's microseconds, as
    // every later read shows them).
    let row = diesel::insert_into(tax_rates::table)
        .values(TaxRateRow::from(&rate))
        .returning(TaxRateRow::as_returning())
        .get_result(conn)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::TaxRateAlreadyExists,
            other => Error::Db(other),
        })?;
    Ok(TaxRate::try_from(row)?)
}

/// A page of rates by (country, category, start).
#[instrument(skip_all, fields(country = ?list.country))]
pub fn list_rates(conn: &mut PgConnection, list: &ListTaxRates) -> Result<Vec<TaxRate>, Error> {
    let mut query = tax_rates::table
        .select(TaxRateRow::as_select())
        .order((
            tax_rates::country_code.asc(),
            tax_rates::category.asc(),
            tax_rates::start_at.asc(),
            tax_rates::id.asc(),
        ))
        .limit(list.page.fetch_limit())
        .into_boxed();
    if let Some(country) = &list.country {
        query = query.filter(tax_rates::country_code.eq(country.as_str().to_owned()));
    }
    if let Some(after) = &list.page.after {
        // The cursor is the previous page's last rate id: resume after its
        // sort key.
        let Ok(after) = Uuid::try_parse(after) else {
            return Ok(Vec::new());
        };
        let last: Option<TaxRateRow> = tax_rates::table
            .find(after)
            .select(TaxRateRow::as_select())
            .first(conn)
            .optional()?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        query = query.filter(
            tax_rates::country_code
                .gt(last.country_code.clone())
                .or(tax_rates::country_code.eq(last.country_code.clone()).and(
                    tax_rates::category
                        .gt(last.category.clone())
                        .or(tax_rates::category.eq(last.category.clone()).and(
                            tax_rates::start_at.gt(last.start_at).or(tax_rates::start_at
                                .eq(last.start_at)
                                .and(tax_rates::id.gt(last.id))),
                        )),
                )),
        );
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| Ok(TaxRate::try_from(row)?))
        .collect()
}

/// Deletes a rate not yet in effect at `now`.
#[instrument(skip_all, fields(rate = %id))]
pub fn delete_rate(conn: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<(), Error> {
    let row: Option<TaxRateRow> = tax_rates::table
        .find(id)
        .select(TaxRateRow::as_select())
        .for_update()
        .first(conn)
        .optional()?;
    let row = row.ok_or_else(|| Error::TaxRateNotFound(format!("taxRates/{id}")))?;
    if row.start_at <= now {
        return Err(Error::TaxRateInEffect);
    }
    diesel::delete(tax_rates::table.find(id)).execute(conn)?;
    Ok(())
}

/// The rates in effect for `country` at `now`: per category, the one with
/// the latest start not after `now`.
pub fn rates_in_effect(
    conn: &mut PgConnection,
    country: &CountryCode,
    now: DateTime<Utc>,
) -> Result<CountryRates, Error> {
    let rows: Vec<(String, i32, DateTime<Utc>)> = tax_rates::table
        .filter(tax_rates::country_code.eq(country.as_str().to_owned()))
        .filter(tax_rates::start_at.le(now))
        .select((tax_rates::category, tax_rates::rate_bp, tax_rates::start_at))
        .order((tax_rates::category.asc(), tax_rates::start_at.desc()))
        .load(conn)?;
    let mut rates: Vec<(TaxCategory, i32)> = Vec::new();
    for (category, rate_bp, _) in rows {
        let category = TaxCategory::from_stored(&category)?;
        if !rates.iter().any(|(c, _)| *c == category) {
            rates.push((category, rate_bp));
        }
    }
    Ok(CountryRates(rates))
}

/// Creates a code; a taken code is [`Error::DiscountCodeAlreadyExists`].
#[instrument(skip_all, fields(code = %cmd.code))]
pub fn insert_discount(
    conn: &mut PgConnection,
    cmd: &CreateDiscount,
    now: DateTime<Utc>,
) -> Result<Discount, Error> {
    let discount = cmd.at(now).map_err(|v| Error::Validation(vec![v]))?;
    let row = diesel::insert_into(discount_codes::table)
        .values(DiscountRow::from(&discount))
        .returning(DiscountRow::as_returning())
        .get_result(conn)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::DiscountCodeAlreadyExists(cmd.code.clone()),
            other => Error::Db(other),
        })?;
    Ok(Discount::try_from(row)?)
}

/// The code, if it exists (locked when `for_update`).
fn find(
    conn: &mut PgConnection,
    code: &DiscountCode,
    for_update: bool,
) -> Result<Option<Discount>, Error> {
    let query = discount_codes::table
        .find(code.as_str())
        .select(DiscountRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    Ok(row.map(Discount::try_from).transpose()?)
}

/// The code; [`Error::DiscountCodeNotFound`] when there is none.
#[instrument(skip_all, fields(code = %code))]
pub fn get_discount(conn: &mut PgConnection, code: &DiscountCode) -> Result<Discount, Error> {
    find(conn, code, false)?.ok_or_else(|| Error::DiscountCodeNotFound(code.clone()))
}

/// Each of `codes` with the code, if it exists, in the order asked.
pub fn find_codes(
    conn: &mut PgConnection,
    codes: &[DiscountCode],
) -> Result<Vec<FoundCode>, Error> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<&str> = codes.iter().map(DiscountCode::as_str).collect();
    let found: Vec<Discount> = discount_codes::table
        .filter(discount_codes::code.eq_any(&wanted))
        .select(DiscountRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Discount::try_from)
        .collect::<Result<_, _>>()?;
    Ok(codes
        .iter()
        .map(|code| {
            let discount = found.iter().find(|d| d.code == *code).cloned();
            (code.clone(), discount)
        })
        .collect())
}

/// A page of codes by code.
#[instrument(skip_all)]
pub fn list_discounts(
    conn: &mut PgConnection,
    list: &ListDiscounts,
) -> Result<Vec<Discount>, Error> {
    let mut query = discount_codes::table
        .select(DiscountRow::as_select())
        .order(discount_codes::code.asc())
        .limit(list.page.fetch_limit())
        .into_boxed();
    if let Some(after) = &list.page.after {
        query = query.filter(discount_codes::code.gt(after.clone()));
    }
    query
        .load(conn)?
        .into_iter()
        .map(|row| Ok(Discount::try_from(row)?))
        .collect()
}

/// Applies an UpdateDiscountCode under the code's row lock.
#[instrument(skip_all, fields(code = %cmd.code))]
pub fn update_discount(
    conn: &mut PgConnection,
    cmd: &UpdateDiscount,
    now: DateTime<Utc>,
) -> Result<Discount, Error> {
    let current = find(conn, &cmd.code, true)?
        .ok_or_else(|| Error::DiscountCodeNotFound(cmd.code.clone()))?;
    let mut next = cmd
        .applied_to(current)
        .map_err(|v| Error::Validation(vec![v]))?;
    next.updated_at = now;
    let row = diesel::update(discount_codes::table.find(cmd.code.as_str()))
        .set(DiscountRow::from(&next))
        .returning(DiscountRow::as_returning())
        .get_result(conn)?;
    Ok(Discount::try_from(row)?)
}

/// Takes one use of each of `codes` (ascending: the lock order) for the
/// reservation of `order_id` by `customer`, or fails naming the first code
/// that cannot be used; the caller's transaction then rolls back every use
/// and every unit it took. One conditional UPDATE per code, so concurrent
/// reservations never take more uses than the code's limit; the count per
/// customer is read under that UPDATE's row lock, so it is exact too.
#[instrument(skip_all, fields(order = %order_id, codes = codes.len()))]
pub fn redeem(
    conn: &mut PgConnection,
    order_id: OrderId,
    customer: Uuid,
    codes: &[DiscountCode],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for code in codes {
        let per_customer_limit = match take(conn, code, now)? {
            Some(limit) => limit,
            None => {
                // Uses held by reservations past their expiry are free: give
                // them back (expiring those reservations) and try once more,
                // as stock does; only on this slow path.
                let freed = reservations::expire_due_holding(conn, code, now, Lock::SkipLocked)?;
                match (freed > 0).then(|| take(conn, code, now)).transpose()? {
                    Some(Some(limit)) => limit,
                    _ => return Err(refusal(conn, code, now)?),
                }
            }
        };
        if let Some(limit) = per_customer_limit {
            let used: i64 = diesel::sql_query(
                "SELECT count(*) AS used FROM discount_redemptions d \
                   JOIN reservations r ON r.order_id = d.order_id \
                  WHERE d.code = $1 AND d.customer = $2 AND NOT d.returned \
                    AND NOT (r.state = 'ACTIVE' AND r.expire_at <= $3)",
            )
            .bind::<diesel::sql_types::Text, _>(code.as_str())
            .bind::<SqlUuid, _>(customer)
            .bind::<Timestamptz, _>(now)
            .get_result::<Used>(conn)?
            .used;
            if used >= limit {
                return Err(Error::DiscountCodeNotApplicable {
                    code: code.clone(),
                    cause: NotApplicable::CustomerLimit,
                });
            }
        }
        diesel::insert_into(discount_redemptions::table)
            .values(NewRedemptionRow {
                order_id: order_id.0,
                code: code.as_str(),
                customer,
                created_at: now,
            })
            .execute(conn)?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Used {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    used: i64,
}

/// One use of `code` if it is usable at `now` and has uses left: the
/// code's per-customer limit (`Some`), or `None` when it took nothing.
fn take(
    conn: &mut PgConnection,
    code: &DiscountCode,
    now: DateTime<Utc>,
) -> Result<Option<Option<i64>>, Error> {
    Ok(diesel::update(
        discount_codes::table
            .find(code.as_str())
            .filter(discount_codes::active)
            .filter(discount_codes::start_at.le(now))
            .filter(
                discount_codes::end_at
                    .is_null()
                    .or(discount_codes::end_at.gt(now)),
            )
            .filter(
                discount_codes::usage_limit
                    .is_null()
                    .or(discount_codes::uses.lt(discount_codes::usage_limit.assume_not_null())),
            ),
    )
    .set((
        discount_codes::uses.eq(discount_codes::uses + 1),
        discount_codes::updated_at.eq(now),
    ))
    .returning(discount_codes::per_customer_limit)
    .get_result::<Option<i64>>(conn)
    .optional()?)
}

/// Why `code` could not be taken at `now`.
fn refusal(
    conn: &mut PgConnection,
    code: &DiscountCode,
    now: DateTime<Utc>,
) -> Result<Error, Error> {
    let Some(discount) = find(conn, code, false)? else {
        return Ok(Error::DiscountCodeNotFound(code.clone()));
    };
    let cause = discount
        .usable_at(now)
        .err()
        .unwrap_or(NotApplicable::Exhausted);
    Ok(Error::DiscountCodeNotApplicable {
        code: code.clone(),
        cause,
    })
}

/// Gives back the uses the reservations of `order_ids` hold (they ended
/// without a sale): each marked returned once, then each code's count
/// lowered by as many, in code order (the lock order [`redeem`] takes).
pub fn give_back(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<(), Error> {
    let mut returned: Vec<String> = diesel::update(
        discount_redemptions::table
            .filter(discount_redemptions::order_id.eq_any(order_ids))
            .filter(discount_redemptions::returned.eq(false)),
    )
    .set(discount_redemptions::returned.eq(true))
    .returning(discount_redemptions::code)
    .get_results(conn)?;
    returned.sort();
    for code in returned.chunk_by(|a, b| a == b) {
        let n = i64::try_from(code.len()).unwrap_or(i64::MAX);
        diesel::update(discount_codes::table.find(&code[0]))
            .set(discount_codes::uses.eq(discount_codes::uses - n))
            .execute(conn)?;
    }
    Ok(())
}

/// The codes the reservation of `order_id` holds or held.
pub fn codes_of(conn: &mut PgConnection, order_id: OrderId) -> Result<Vec<String>, Error> {
    Ok(discount_redemptions::table
        .filter(discount_redemptions::order_id.eq(order_id.0))
        .select(discount_redemptions::code)
        .load(conn)?)
}
