//! Shipping addresses of an account.

use backroom_shared::paging::PageRequest;
use diesel::{OptionalExtension as _, prelude::*};
use tracing::instrument;
use uuid::Uuid;

use super::accounts::get_row;
use crate::{
    db::{models::AddressRow, schema::account::addresses},
    domain::{Address, Error, MAX_ADDRESSES},
};

/// Adds an address unless the account already has [`MAX_ADDRESSES`]. Run
/// it in a transaction (`Store::write`): the account row's lock is what
/// keeps two concurrent creates from both passing the limit.
#[instrument(skip_all, fields(account = %address.account_id, address = %address.id))]
pub fn insert_address(conn: &mut PgConnection, address: &Address) -> Result<Address, Error> {
    get_row(conn, address.account_id, true)?;
    let count: i64 = addresses::table
        .filter(addresses::account_id.eq(address.account_id))
        .count()
        .get_result(conn)?;
    if count >= MAX_ADDRESSES {
        return Err(Error::AddressLimitReached);
    }
    Ok(diesel::insert_into(addresses::table)
        .values(AddressRow::from(address))
        .returning(AddressRow::as_returning())
        .get_result(conn)?
        .into())
}

/// One address of an account.
#[instrument(skip_all, fields(account = %account_id, address = %id))]
pub fn get_address(conn: &mut PgConnection, account_id: Uuid, id: Uuid) -> Result<Address, Error> {
    addresses::table
        .filter(addresses::account_id.eq(account_id))
        .filter(addresses::id.eq(id))
        .select(AddressRow::as_select())
        .first(conn)
        .optional()?
        .map(Address::from)
        .ok_or(Error::AddressNotFound {
            account: account_id,
            address: id,
        })
}

/// A page of an account's addresses, oldest first.
#[instrument(skip_all, fields(account = %account_id))]
pub fn list_addresses(
    conn: &mut PgConnection,
    account_id: Uuid,
    page: &PageRequest,
    after: Option<Uuid>,
) -> Result<Vec<Address>, Error> {
    get_row(conn, account_id, false)?;
    let mut query = addresses::table
        .filter(addresses::account_id.eq(account_id))
        .select(AddressRow::as_select())
        .order(addresses::id.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(addresses::id.gt(after));
    }
    Ok(query.load(conn)?.into_iter().map(Address::from).collect())
}

/// Deletes an address.
#[instrument(skip_all, fields(account = %account_id, address = %id))]
pub fn delete_address(conn: &mut PgConnection, account_id: Uuid, id: Uuid) -> Result<(), Error> {
    let deleted = diesel::delete(
        addresses::table
            .filter(addresses::account_id.eq(account_id))
            .filter(addresses::id.eq(id)),
    )
    .execute(conn)?;
    if deleted == 0 {
        return Err(Error::AddressNotFound {
            account: account_id,
            address: id,
        });
    }
    Ok(())
}
