//! Quotes: an order's lines priced from the catalogue, plus shipping by the
//! destination's zone and the order's weight. Every amount is in the quote
//! currency; every sum is checked (an order too large to price is a field
//! violation, never a wrapped amount).

use backroom_shared::{
    catalog::{Quantity, Sku},
    money::{Currency, Money},
};

use super::{
    Error,
    products::{Product, require_active, sorted},
    shipping::{Band, ZoneId, band_for, zone_for},
    values::CountryCode,
};

/// Longest destination postal code, characters.
pub const MAX_POSTAL_CODE: usize = 20;

/// One requested line of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLine {
    /// The product.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
}

/// QuoteOrder: price these lines for this destination, in this currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteOrder {
    /// Distinct SKUs, in request order.
    pub lines: Vec<QuoteLine>,
    /// Where the order ships.
    pub country: CountryCode,
    /// The quote currency.
    pub currency: Currency,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product.
    pub sku: Sku,
    /// The product's display name.
    pub display_name: String,
    /// Units.
    pub quantity: Quantity,
    /// Price of one unit.
    pub unit_price: Money,
    /// unit price × quantity.
    pub line_total: Money,
    /// unit weight × quantity.
    pub weight_grams: i64,
}

/// The lines of an order priced, before shipping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLines {
    /// Lines in request order.
    pub lines: Vec<PricedLine>,
    /// Σ line totals.
    pub subtotal: Money,
    /// Σ line weights.
    pub total_weight_grams: i64,
}

/// A priced order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Lines in request order.
    pub lines: Vec<PricedLine>,
    /// Σ line totals.
    pub subtotal: Money,
    /// The shipping price.
    pub shipping: Money,
    /// The zone priced.
    pub zone: ZoneId,
    /// Σ line weights.
    pub total_weight_grams: i64,
    /// subtotal + shipping.
    pub total: Money,
}

impl QuoteOrder {
    /// The SKUs quoted, in request order.
    pub fn skus(&self) -> Vec<&Sku> {
        self.lines.iter().map(|line| &line.sku).collect()
    }

    /// Prices the lines with `products` (every line's product, found):
    /// inactive products are PRODUCT_INACTIVE, products priced in another
    /// currency CURRENCY_MISMATCH (each naming every such SKU).
    pub fn price(&self, products: &[Product]) -> Result<PricedLines, Error> {
        require_active(products)?;
        let other_currency: Vec<Sku> = products
            .iter()
            .filter(|p| p.unit_price.currency() != self.currency)
            .map(|p| p.sku.clone())
            .collect();
        if !other_currency.is_empty() {
            return Err(Error::CurrencyMismatch(sorted(other_currency)));
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut subtotal = Money::zero(self.currency);
        let mut total_weight_grams: i64 = 0;
        for (i, line) in self.lines.iter().enumerate() {
            let product = products
                .iter()
                .find(|p| p.sku == line.sku)
                .ok_or_else(|| Error::ProductNotFound(vec![line.sku.clone()]))?;
            let line_total = product
                .unit_price
                .checked_mul(line.quantity.get())
                .ok_or_else(|| too_large(i))?;
            let weight_grams = product
                .weight_grams
                .checked_mul(line.quantity.get())
                .ok_or_else(|| too_large(i))?;
            subtotal = subtotal
                .checked_add(line_total)
                .ok_or_else(|| too_large(i))?;
            total_weight_grams = total_weight_grams
                .checked_add(weight_grams)
                .ok_or_else(|| too_large(i))?;
            lines.push(PricedLine {
                sku: product.sku.clone(),
                display_name: product.display_name.clone(),
                quantity: line.quantity,
                unit_price: product.unit_price,
                line_total,
                weight_grams,
            });
        }
        Ok(PricedLines {
            lines,
            subtotal,
            total_weight_grams,
        })
    }

    /// The zone the destination falls in (`assignments`: see
    /// [`zone_for`]); NO_SHIPPING_RULE when none.
    pub fn zone<'a>(
        &self,
        priced: &PricedLines,
        assignments: &'a [(String, ZoneId)],
    ) -> Result<&'a ZoneId, Error> {
        zone_for(self.country.as_str(), assignments).ok_or_else(|| self.no_rule(priced))
    }

    /// The quote: `priced` plus shipping by the zone's `bands` in the quote
    /// currency; NO_SHIPPING_RULE when no band carries the order's weight.
    pub fn ship(&self, priced: PricedLines, zone: ZoneId, bands: &[Band]) -> Result<Quote, Error> {
        let shipping = band_for(priced.total_weight_grams, bands)
            .ok_or_else(|| self.no_rule(&priced))?
            .price;
        let total = priced
            .subtotal
            .checked_add(shipping)
            .ok_or_else(|| too_large(self.lines.len().saturating_sub(1)))?;
        Ok(Quote {
            lines: priced.lines,
            subtotal: priced.subtotal,
            shipping,
            zone,
            total_weight_grams: priced.total_weight_grams,
            total,
        })
    }

    fn no_rule(&self, priced: &PricedLines) -> Error {
        Error::NoShippingRule {
            country: self.country.clone(),
            currency: self.currency,
            total_weight_grams: priced.total_weight_grams,
        }
    }
}

/// The amount or weight of an order is too large to represent; `line` is
/// the line where it overflowed.
fn too_large(line: usize) -> Error {
    Error::field(
        &format!("lines[{line}].quantity"),
        "the order's amount or weight is too large",
    )
}
