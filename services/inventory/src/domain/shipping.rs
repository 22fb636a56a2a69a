//! Shipping prices: which zone a country falls in and which weight band of
//! that zone prices an order (the rules themselves live in the database).

use std::fmt;

use backroom_shared::{money::Money, names, paging::PageRequest};

use super::values::SHIPPING_ZONES;

/// A shipping zone's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId(String);

impl ZoneId {
    /// Wraps a zone id read back from the database (checked by its
    /// constraint).
    pub fn from_stored(zone: String) -> Self {
        Self(zone)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `shippingZones/{zone}`.
    pub fn name(&self) -> String {
        names::name(SHIPPING_ZONES, &self.0)
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The country code a zone lists to catch every country no zone lists.
pub const EVERY_OTHER_COUNTRY: &str = "*";

/// One weight band of a zone in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    /// Inclusive upper bound of the order's total weight.
    pub max_weight_grams: i64,
    /// The price of orders in the band.
    pub price: Money,
}

/// A shipping zone with its countries and bands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingZone {
    /// The zone id.
    pub zone: ZoneId,
    /// Human-readable name.
    pub display_name: String,
    /// Country codes (or [`EVERY_OTHER_COUNTRY`]), ascending.
    pub country_codes: Vec<String>,
    /// Bands ordered by (currency, max weight).
    pub bands: Vec<Band>,
}

/// ListShippingRules: a page of zones by id.
#[derive(Debug, Clone)]
pub struct ListShippingZones {
    /// Which page.
    pub page: PageRequest,
}

/// The zone of `country`: the zone listing it, else the zone listing
/// [`EVERY_OTHER_COUNTRY`]. `assignments` are (country code or `*`, zone)
/// pairs.
pub fn zone_for<'a>(country: &str, assignments: &'a [(String, ZoneId)]) -> Option<&'a ZoneId> {
    let find = |code: &str| {
        assignments
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, zone)| zone)
    };
    find(country).or_else(|| find(EVERY_OTHER_COUNTRY))
}

/// The band with the smallest `max_weight_grams >= total_weight_grams`.
pub fn band_for(total_weight_grams: i64, bands: &[Band]) -> Option<&Band> {
    bands
        .iter()
        .filter(|b| b.max_weight_grams >= total_weight_grams)
        .min_by_key(|b| b.max_weight_grams)
}

#[cfg(test)]
mod tests {
    use backroom_shared::money::Currency;

    use super::*;

    #[test]
    fn the_lightest_band_that_fits_wins_and_heavier_orders_have_none() {
        let eur = |minor| Money::new(Currency::parse("c", "EUR").unwrap(), minor);
        let bands = [
            Band {
                max_weight_grams: 5000,
                price: eur(690),
            },
            Band {
                max_weight_grams: 1000,
                price: eur(490),
            },
        ];
        assert_eq!(band_for(0, &bands).unwrap().price, eur(490));
        assert_eq!(band_for(1000, &bands).unwrap().price, eur(490));
        assert_eq!(band_for(1001, &bands).unwrap().price, eur(690));
        assert_eq!(band_for(5001, &bands), None);
    }

    #[test]
    fn unlisted_countries_fall_into_the_wildcard_zone() {
        let zone = |id: &str| ZoneId::from_stored(id.to_owned());
        let zones = [
            ("DE".to_owned(), zone("domestic")),
            ("*".to_owned(), zone("world")),
        ];
        assert_eq!(zone_for("DE", &zones), Some(&zone("domestic")));
        assert_eq!(zone_for("US", &zones), Some(&zone("world")));
        assert_eq!(zone_for("US", &zones[..1]), None);
    }
}
