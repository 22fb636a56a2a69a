//! Products: the catalogue entity, the commands that create, change and list
//! it, and the rules every operation on several products shares (all of
//! them must exist; the ones sold must be active).

use std::collections::BTreeSet;

use backroom_shared::{
    catalog::Sku,
    errors::FieldViolation,
    money::{Currency, Money},
    paging::PageRequest,
};
use chrono::{DateTime, Utc};

use super::{Error, pricing::TaxCategory, values::product_name};

/// Longest display name, characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description, characters.
pub const MAX_DESCRIPTION: usize = 5_000;
/// Heaviest unit, grams.
pub const MAX_WEIGHT_GRAMS: i64 = 1_000_000;
/// Longest ListProducts query, characters.
pub const MAX_QUERY: usize = 100;
/// The unit prices a product may have, minor units: at most what one
/// payment may collect (a dearer unit could never be sold).
pub const UNIT_PRICES: std::ops::RangeInclusive<i64> = 0..=backroom_shared::money::MAX_AMOUNT;

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Its id.
    pub sku: Sku,
    /// What customers see.
    pub display_name: String,
    /// Longer text.
    pub description: String,
    /// The price of one unit.
    pub unit_price: Money,
    /// The weight of one unit, grams.
    pub weight_grams: i64,
    /// Whether it may be quoted and reserved.
    pub active: bool,
    /// Which VAT rate it pays.
    pub tax_category: TaxCategory,
    /// Its prices in other currencies than `unit_price`'s, ascending by
    /// currency.
    pub prices: Vec<Money>,
    /// Bumped by every update (the etag).
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Product {
    /// `products/{sku}`.
    pub fn name(&self) -> String {
        product_name(&self.sku)
    }

    /// The etag of this version.
    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// Its price of one unit in `currency`, if it has one.
    pub fn price_in(&self, currency: Currency) -> Option<Money> {
        std::iter::once(self.unit_price)
            .chain(self.prices.iter().copied())
            .find(|price| price.currency() == currency)
    }
}

/// CreateProduct: a new product's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateProduct {
    /// Its id.
    pub sku: Sku,
    /// What customers see.
    pub display_name: String,
    /// Longer text.
    pub description: String,
    /// The price of one unit.
    pub unit_price: Money,
    /// The weight of one unit, grams.
    pub weight_grams: i64,
    /// Whether it may be quoted and reserved.
    pub active: bool,
    /// Which VAT rate it pays.
    pub tax_category: TaxCategory,
    /// Prices in other currencies, ascending by currency.
    pub prices: Vec<Money>,
}

/// UpdateProduct: the fields the mask names, at the version the caller read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateProduct {
    /// The product.
    pub sku: Sku,
    /// The version of the etag sent, if one was.
    pub expected_version: Option<i64>,
    /// The new values.
    pub changes: ProductChanges,
}

impl UpdateProduct {
    /// ETAG_MISMATCH unless the product is still at the version the
    /// caller read (when it sent an etag).
    pub fn check_version(&self, current: &Product) -> Result<(), Error> {
        if self
            .expected_version
            .is_some_and(|version| version != current.version)
        {
            Err(Error::EtagMismatch)
        } else {
            Ok(())
        }
    }
}

/// The changes of an UpdateProduct; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New unit price.
    pub unit_price: Option<Money>,
    /// New unit weight.
    pub weight_grams: Option<i64>,
    /// New active flag.
    pub active: Option<bool>,
    /// New tax category.
    pub tax_category: Option<TaxCategory>,
    /// New prices in other currencies.
    pub prices: Option<Vec<Money>>,
}

impl ProductChanges {
    /// `current` with these changes (version and times unchanged: the
    /// store bumps them); a unit price in a currency the other prices list
    /// is a violation (one price per currency).
    pub fn applied_to(self, current: Product) -> Result<Product, Error> {
        let next = Product {
            display_name: self.display_name.unwrap_or(current.display_name),
            description: self.description.unwrap_or(current.description),
            unit_price: self.unit_price.unwrap_or(current.unit_price),
            weight_grams: self.weight_grams.unwrap_or(current.weight_grams),
            active: self.active.unwrap_or(current.active),
            tax_category: self.tax_category.unwrap_or(current.tax_category),
            prices: self.prices.unwrap_or(current.prices),
            ..current
        };
        if next
            .prices
            .iter()
            .any(|price| price.currency() == next.unit_price.currency())
        {
            return Err(Error::field(
                "product.prices",
                "lists the unit_price's currency: one price per currency",
            ));
        }
        Ok(next)
    }
}

/// ListProducts.
#[derive(Debug, Clone)]
pub struct ListProducts {
    /// Which products.
    pub filter: ProductFilter,
    /// Which page.
    pub page: PageRequest,
}

/// Filters of ListProducts.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// Only active (`Some(true)`) or inactive (`Some(false)`) products.
    pub active: Option<bool>,
    /// Case-insensitive substring of display_name or description.
    pub query: Option<String>,
}

/// Which products a list covers: one, or every (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductScope {
    /// `products/-`.
    All,
    /// `products/{sku}`.
    One(Sku),
}

impl ProductScope {
    /// Parses `products/{sku}` or `products/-`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw == "products/-" {
            Ok(Self::All)
        } else {
            super::values::parse_product_name(field, raw)
                .map(Self::One)
                .map_err(|_| FieldViolation::new(field, "must be products/{sku} or products/-"))
        }
    }

    /// The one SKU, if the scope is one product.
    pub fn sku(&self) -> Option<&Sku> {
        match self {
            Self::All => None,
            Self::One(sku) => Some(sku),
        }
    }
}

/// A unit weight in grams: 0–[`MAX_WEIGHT_GRAMS`].
pub fn parse_weight(field: &str, raw: i64) -> Result<i64, FieldViolation> {
    if (0..=MAX_WEIGHT_GRAMS).contains(&raw) {
        Ok(raw)
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be between 0 and {MAX_WEIGHT_GRAMS}"),
        ))
    }
}

/// The etag of a product version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version in an etag this API issued.
pub fn parse_etag(field: &str, raw: &str) -> Result<i64, FieldViolation> {
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| FieldViolation::new(field, "is not an etag this API issued"))
}

/// `found` if it holds every one of `wanted`, else PRODUCT_NOT_FOUND naming
/// every missing SKU.
pub fn require_found(wanted: &[&Sku], found: Vec<Product>) -> Result<Vec<Product>, Error> {
    let missing: Vec<Sku> = wanted
        .iter()
        .filter(|sku| !found.iter().any(|p| p.sku == ***sku))
        .map(|sku| (*sku).clone())
        .collect();
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(Error::ProductNotFound(sorted(missing)))
    }
}

/// PRODUCT_INACTIVE naming every inactive one of `products`, which are
/// about to be quoted or reserved.
pub fn require_active(products: &[Product]) -> Result<(), Error> {
    let inactive: Vec<Sku> = products
        .iter()
        .filter(|p| !p.active)
        .map(|p| p.sku.clone())
        .collect();
    if inactive.is_empty() {
        Ok(())
    } else {
        Err(Error::ProductInactive(sorted(inactive)))
    }
}

/// Ascending and de-duplicated, as errors name SKUs.
pub fn sorted(skus: Vec<Sku>) -> Vec<Sku> {
    skus.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use backroom_proto::common::v1::Money as ProtoMoney;
    use backroom_shared::{
        catalog::Quantity,
        money::{Currency, Money},
    };

    use super::*;

    fn price(currency_code: &str, amount_minor: i64) -> Result<Money, Vec<FieldViolation>> {
        let proto = ProtoMoney {
            currency_code: currency_code.into(),
            amount_minor,
        };
        Money::parse("unit_price", &proto, UNIT_PRICES)
    }

    #[test]
    fn money_rejects_unknown_currencies_and_negative_amounts_naming_both() {
        let err = price("XXX", -1).unwrap_err();
        let fields: Vec<_> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["unit_price.currency_code", "unit_price.amount_minor"]
        );
        assert!(price("eur", 1).is_err());
        assert!(price("EUR", 0).is_ok());
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let eur = Currency::parse("c", "EUR").unwrap();
        let q = Quantity::parse("q", 10_000).unwrap();
        assert_eq!(Money::new(eur, i64::MAX).checked_mul(q.get()), None);
        assert_eq!(
            Money::new(eur, i64::MAX).checked_add(Money::new(eur, 1)),
            None
        );
        assert_eq!(
            Money::new(eur, 5).checked_mul(q.get()),
            Some(Money::new(eur, 50_000))
        );
    }

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag("e", &etag(7)).unwrap(), 7);
        assert!(parse_etag("e", "7").is_err());
    }
}
