//! Shipping prices: which zone a country falls in and which weight band of
//! that zone prices an order (the rules themselves live in the database).

use super::MinorUnits;

/// One weight band of a zone in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    /// Inclusive upper bound of the order's total weight.
    pub max_weight_grams: i64,
    /// The price of orders in the band.
    pub price: MinorUnits,
}

/// The zone of `country`: the zone listing it, else the zone listing `*`.
/// `assignments` are (country code or `*`, zone) pairs.
pub fn zone_for<'a>(country: &str, assignments: &'a [(String, String)]) -> Option<&'a str> {
    let find = |code: &str| {
        assignments
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, zone)| zone.as_str())
    };
    find(country).or_else(|| find("*"))
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
    use super::*;

    #[test]
    fn the_lightest_band_that_fits_wins_and_heavier_orders_have_none() {
        let bands = [
            Band {
                max_weight_grams: 5000,
                price: MinorUnits(690),
            },
            Band {
                max_weight_grams: 1000,
                price: MinorUnits(490),
            },
        ];
        assert_eq!(band_for(0, &bands).unwrap().price, MinorUnits(490));
        assert_eq!(band_for(1000, &bands).unwrap().price, MinorUnits(490));
        assert_eq!(band_for(1001, &bands).unwrap().price, MinorUnits(690));
        assert_eq!(band_for(5001, &bands), None);
    }

    #[test]
    fn unlisted_countries_fall_into_the_wildcard_zone() {
        let zones = [
            ("DE".to_owned(), "domestic".to_owned()),
            ("*".to_owned(), "world".to_owned()),
        ];
        assert_eq!(zone_for("DE", &zones), Some("domestic"));
        assert_eq!(zone_for("US", &zones), Some("world"));
        assert_eq!(zone_for("US", &zones[..1]), None);
    }
}
