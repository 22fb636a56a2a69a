//! The products table: create, read (one, several, a page), update.

use backroom_shared::{catalog::Sku, db::DbError};
use chrono::{DateTime, Utc};
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;

use crate::{
    db::{
        models::{self, NewProductRow, ProductRow},
        schema::inventory::products,
    },
    domain::{
        Error,
        products::{CreateProduct, ListProducts, Product, UpdateProduct, require_found},
    },
    events,
};

/// Inserts a product; a taken SKU is [`Error::ProductAlreadyExists`].
#[instrument(skip_all, fields(sku = %product.sku))]
pub fn insert(
    conn: &mut PgConnection,
    product: &CreateProduct,
    now: DateTime<Utc>,
) -> Result<Product, Error> {
    diesel::insert_into(products::table)
        .values(NewProductRow::new(product, now))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .map_err(|err| match DbError::from(err) {
            DbError::Conflict { .. } => Error::ProductAlreadyExists(product.sku.clone()),
            other => Error::Db(other),
        })
        .and_then(|row| Ok(Product::try_from(row)?))
        .and_then(|created| {
            events::product_created(conn, &created, now)?;
            Ok(created)
        })
}

/// The product with `sku`.
#[instrument(skip_all, fields(sku = %sku))]
pub fn get(conn: &mut PgConnection, sku: &Sku) -> Result<Product, Error> {
    get_row(conn, sku, false)
}

fn get_row(conn: &mut PgConnection, sku: &Sku, for_update: bool) -> Result<Product, Error> {
    let query = products::table
        .find(sku.as_str())
        .select(ProductRow::as_select());
    let row = if for_update {
        query.for_update().first(conn).optional()?
    } else {
        query.first(conn).optional()?
    };
    let row = row.ok_or_else(|| Error::ProductNotFound(vec![sku.clone()]))?;
    Ok(Product::try_from(row)?)
}

/// The products with these SKUs; [`Error::ProductNotFound`] naming every
/// SKU that does not exist.
#[instrument(skip_all, fields(skus = ?skus))]
pub fn require(conn: &mut PgConnection, skus: &[&Sku]) -> Result<Vec<Product>, Error> {
    let wanted: Vec<&str> = skus.iter().map(|sku| sku.as_str()).collect();
    let found: Vec<Product> = products::table
        .filter(products::sku.eq_any(&wanted))
        .select(ProductRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Product::try_from)
        .collect::<Result<_, _>>()?;
    require_found(skus, found)
}

/// A page of products by SKU.
#[instrument(skip_all, fields(active = ?list.filter.active, query = ?list.filter.query))]
pub fn list(conn: &mut PgConnection, list: &ListProducts) -> Result<Vec<Product>, Error> {
    let mut query = products::table
        .select(ProductRow::as_select())
        .order(products::sku.asc())
        .limit(list.page.fetch_limit())
        .into_boxed();
    if let Some(after) = &list.page.after {
        query = query.filter(products::sku.gt(after.clone()));
    }
    if let Some(active) = list.filter.active {
        query = query.filter(products::active.eq(active));
    }
    if let Some(text) = &list.filter.query {
        let pattern = format!("%{}%", escape_like(text));
        query = query.filter(
            products::display_name
                .ilike(pattern.clone())
                .or(products::description.ilike(pattern)),
        );
    }
    Ok(query
        .load(conn)?
        .into_iter()
        .map(Product::try_from)
        .collect::<Result<_, _>>()?)
}

/// LIKE metacharacters in user text match themselves.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Applies an update if the product is at the version the caller read
/// (when it sent an etag).
#[instrument(skip_all, fields(sku = %update.sku))]
pub fn update(
    conn: &mut PgConnection,
    update: &UpdateProduct,
    now: DateTime<Utc>,
) -> Result<Product, Error> {
    let current = get_row(conn, &update.sku, true)?;
    update.check_version(&current)?;
    let next = update.changes.clone().applied_to(current)?;
    let (other_currencies, other_prices) = models::other_prices(&next.prices);
    let row = diesel::update(products::table.find(update.sku.as_str()))
        .set((
            products::display_name.eq(&next.display_name),
            products::description.eq(&next.description),
            products::currency_code.eq(next.unit_price.currency()),
            products::price_minor.eq(next.unit_price.minor()),
            products::weight_grams.eq(next.weight_grams),
            products::active.eq(next.active),
            products::tax_category.eq(next.tax_category.as_str()),
            products::other_currencies.eq(&other_currencies),
            products::other_prices.eq(&other_prices),
            products::version.eq(products::version + 1),
            products::updated_at.eq(now),
        ))
        .returning(ProductRow::as_returning())
        .get_result(conn)?;
    let updated = Product::try_from(row)?;
    events::product_updated(conn, &updated, now)?;
    Ok(updated)
}
