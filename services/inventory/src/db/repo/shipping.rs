//! Shipping rules (zones, their countries, their weight bands) and
//! QuoteOrder, which prices an order's products and ships it by them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use tracing::instrument;

use super::{pricing, products};
use crate::{
    db::{
        models::ShippingRateRow,
        schema::inventory::{shipping_rates, shipping_zone_countries, shipping_zones},
    },
    domain::{
        Error,
        quotes::{Quote, QuoteOrder},
        shipping::{Band, EVERY_OTHER_COUNTRY, ListShippingZones, ShippingZone, ZoneId},
    },
};

/// Prices an order (see QuoteOrder in the proto).
#[instrument(skip_all, fields(lines = order.lines.len(), country = %order.country, currency = %order.currency))]
pub fn quote(
    conn: &mut PgConnection,
    order: &QuoteOrder,
    now: DateTime<Utc>,
) -> Result<Quote, Error> {
    let products = products::require(conn, &order.skus())?;
    let mut priced = order.price(&products)?;
    let codes = pricing::find_codes(conn, &order.discount_codes)?;
    let discounts = order.discount(&mut priced, &codes, now)?;
    let assignments: Vec<(String, ZoneId)> = shipping_zone_countries::table
        .filter(
            shipping_zone_countries::country_code
                .eq_any([order.country.as_str(), EVERY_OTHER_COUNTRY]),
        )
        .select((
            shipping_zone_countries::country_code,
            shipping_zone_countries::zone,
        ))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(|(country, zone)| (country, ZoneId::from_stored(zone)))
        .collect();
    let zone = order.zone(&priced, &assignments)?.clone();
    let bands: Vec<Band> = shipping_rates::table
        .filter(shipping_rates::zone.eq(zone.as_str()))
        .filter(shipping_rates::currency_code.eq(order.currency))
        .select(ShippingRateRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Band::from)
        .collect();
    let rates = pricing::rates_in_effect(conn, &order.country, now)?;
    order.ship(priced, discounts, zone, &bands, &rates)
}

/// A page of shipping zones by id, with their countries and bands.
#[instrument(skip_all, fields(after = ?list.page.after))]
pub fn zones(
    conn: &mut PgConnection,
    list: &ListShippingZones,
) -> Result<Vec<ShippingZone>, Error> {
    let page = &list.page;
    let mut query = shipping_zones::table
        .select((shipping_zones::zone, shipping_zones::display_name))
        .order(shipping_zones::zone.asc())
        .limit(page.fetch_limit())
        .into_boxed();
    if let Some(after) = &page.after {
        query = query.filter(shipping_zones::zone.gt(after.clone()));
    }
    let zones: Vec<(String, String)> = query.load(conn)?;
    let ids: Vec<&str> = zones.iter().map(|(z, _)| z.as_str()).collect();
    let countries: Vec<(String, String)> = shipping_zone_countries::table
        .filter(shipping_zone_countries::zone.eq_any(&ids))
        .select((
            shipping_zone_countries::zone,
            shipping_zone_countries::country_code,
        ))
        .order(shipping_zone_countries::country_code.asc())
        .load(conn)?;
    let rates: Vec<ShippingRateRow> = shipping_rates::table
        .filter(shipping_rates::zone.eq_any(&ids))
        .select(ShippingRateRow::as_select())
        .order((
            shipping_rates::currency_code.asc(),
            shipping_rates::max_weight_grams.asc(),
        ))
        .load(conn)?;
    Ok(zones
        .into_iter()
        .map(|(zone, display_name)| ShippingZone {
            country_codes: countries
                .iter()
                .filter(|(z, _)| *z == zone)
                .map(|(_, c)| c.clone())
                .collect(),
            bands: rates
                .iter()
                .filter(|r| r.zone == zone)
                .cloned()
                .map(Band::from)
                .collect(),
            zone: ZoneId::from_stored(zone),
            display_name,
        })
        .collect())
}
