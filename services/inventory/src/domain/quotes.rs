//! Quotes: an order's lines priced from the catalogue in the quote
//! currency, its discount codes applied, shipping by the destination's zone
//! and the order's weight, and the VAT each part contains. Every amount is
//! in the quote currency; every sum is checked (an order too large to price
//! is a field violation, never a wrapped amount). The rules are those of
//! QuoteOrder in the proto; the rounding is
//! [`backroom_shared::money::proportion`] (half up) and
//! [`backroom_shared::money::allocate`] (largest remainder).

use backroom_shared::{
    catalog::{DiscountCode, Quantity, Sku},
    money::{Currency, Money, allocate},
};
use chrono::{DateTime, Utc};

use super::{
    Error,
    pricing::{CountryRates, Discount, NotApplicable, TaxCategory, tax_contained},
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
    /// Distinct discount codes, in request order.
    pub discount_codes: Vec<DiscountCode>,
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
    /// The product's tax category.
    pub tax_category: TaxCategory,
    /// The rate applied, basis points (`None`: untaxed).
    pub tax_rate_bp: Option<i32>,
    /// Its share of the discount.
    pub discount: Money,
    /// The VAT contained in `line_total − discount`.
    pub tax: Money,
}

impl PricedLine {
    /// What the line costs after its discount.
    fn gross(&self) -> i64 {
        self.line_total.minor() - self.discount.minor()
    }
}

/// The lines of an order priced, before discounts and shipping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLines {
    /// Lines in request order.
    pub lines: Vec<PricedLine>,
    /// Σ line totals.
    pub subtotal: Money,
    /// Σ line weights.
    pub total_weight_grams: i64,
}

/// The VAT of one (category, rate) group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxLine {
    /// The category.
    pub category: TaxCategory,
    /// The rate, basis points.
    pub rate_bp: i32,
    /// gross − tax.
    pub taxable_base: Money,
    /// The VAT contained.
    pub tax: Money,
    /// The group's discounted lines and its shipping share.
    pub gross: Money,
}

/// One code's part of the discount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountLine {
    /// The code.
    pub code: DiscountCode,
    /// What it took off.
    pub amount: Money,
}

/// A priced order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Lines in request order.
    pub lines: Vec<PricedLine>,
    /// Σ line totals.
    pub subtotal: Money,
    /// Σ discounts.
    pub discount: Money,
    /// The codes applied, in request order.
    pub discounts: Vec<DiscountLine>,
    /// The shipping price.
    pub shipping: Money,
    /// The VAT contained in `shipping`.
    pub shipping_tax: Money,
    /// The zone priced.
    pub zone: ZoneId,
    /// Σ line weights.
    pub total_weight_grams: i64,
    /// subtotal − discount + shipping.
    pub total: Money,
    /// The VAT per (category, rate), ordered by (category, rate).
    pub tax_lines: Vec<TaxLine>,
    /// Σ tax lines.
    pub tax: Money,
}

/// Where a discount code stands for a quote: found or not.
pub type FoundCode = (DiscountCode, Option<Discount>);

impl QuoteOrder {
    /// The SKUs quoted, in request order.
    pub fn skus(&self) -> Vec<&Sku> {
        self.lines.iter().map(|line| &line.sku).collect()
    }

    /// Prices the lines with `products` (every line's product, found):
    /// inactive products are PRODUCT_INACTIVE, products without a price in
    /// the quote currency CURRENCY_MISMATCH (each naming every such SKU).
    pub fn price(&self, products: &[Product]) -> Result<PricedLines, Error> {
        require_active(products)?;
        let unpriced: Vec<Sku> = products
            .iter()
            .filter(|p| p.price_in(self.currency).is_none())
            .map(|p| p.sku.clone())
            .collect();
        if !unpriced.is_empty() {
            return Err(Error::CurrencyMismatch {
                skus: sorted(unpriced),
                currency: self.currency,
            });
        }
        let zero = Money::zero(self.currency);
        let mut lines = Vec::with_capacity(self.lines.len());
        let mut subtotal = zero;
        let mut total_weight_grams: i64 = 0;
        for (i, line) in self.lines.iter().enumerate() {
            let product = products
                .iter()
                .find(|p| p.sku == line.sku)
                .ok_or_else(|| Error::ProductNotFound(vec![line.sku.clone()]))?;
            let unit_price = product.price_in(self.currency).unwrap_or(zero);
            let line_total = unit_price
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
                unit_price,
                line_total,
                weight_grams,
                tax_category: product.tax_category,
                tax_rate_bp: None,
                discount: zero,
                tax: zero,
            });
        }
        Ok(PricedLines {
            lines,
            subtotal,
            total_weight_grams,
        })
    }

    /// Applies the discount codes (`found`: each asked code, with the code
    /// if it exists) at `now`: each must exist and apply (see
    /// [`Discount::applies`]), and a code combined with others must be
    /// stackable. The discount, at most the subtotal, is spread over the
    /// lines by line total. Returns the discount lines, in request order.
    pub fn discount(
        &self,
        priced: &mut PricedLines,
        found: &[FoundCode],
        now: DateTime<Utc>,
    ) -> Result<Vec<DiscountLine>, Error> {
        let mut applied = Vec::with_capacity(found.len());
        let mut left = priced.subtotal.minor();
        for (code, discount) in found {
            let discount = discount
                .as_ref()
                .ok_or_else(|| Error::DiscountCodeNotFound(code.clone()))?;
            let not_applicable = |cause| Error::DiscountCodeNotApplicable {
                code: code.clone(),
                cause,
            };
            if found.len() > 1 && !discount.stackable {
                return Err(not_applicable(NotApplicable::NotStackable));
            }
            discount
                .applies(priced.subtotal, now)
                .map_err(not_applicable)?;
            let amount = discount.takes(priced.subtotal).min(left);
            left -= amount;
            applied.push(DiscountLine {
                code: code.clone(),
                amount: Money::new(self.currency, amount),
            });
        }
        let total: i64 = applied.iter().map(|d| d.amount.minor()).sum();
        let weights: Vec<i64> = priced.lines.iter().map(|l| l.line_total.minor()).collect();
        for (line, share) in priced.lines.iter_mut().zip(allocate(total, &weights)) {
            line.discount = Money::new(self.currency, share);
        }
        Ok(applied)
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

    /// The quote: `priced` (discounted) plus shipping by the zone's `bands`
    /// in the quote currency (NO_SHIPPING_RULE when no band carries the
    /// order's weight), with the VAT of the destination's `rates`.
    pub fn ship(
        &self,
        mut priced: PricedLines,
        discounts: Vec<DiscountLine>,
        zone: ZoneId,
        bands: &[Band],
        rates: &CountryRates,
    ) -> Result<Quote, Error> {
        let shipping = band_for(priced.total_weight_grams, bands)
            .ok_or_else(|| self.no_rule(&priced))?
            .price;
        let last = self.lines.len().saturating_sub(1);
        let discount = discounts
            .iter()
            .try_fold(Money::zero(self.currency), |sum, d| {
                sum.checked_add(d.amount)
            })
            .ok_or_else(|| too_large(last))?;
        let total = priced
            .subtotal
            .checked_sub(discount)
            .and_then(|goods| goods.checked_add(shipping))
            .ok_or_else(|| too_large(last))?;
        for line in &mut priced.lines {
            line.tax_rate_bp = rates.rate_for(line.tax_category);
            let tax = line
                .tax_rate_bp
                .map_or(0, |bp| tax_contained(line.gross(), bp));
            line.tax = Money::new(self.currency, tax);
        }
        let (tax_lines, shipping_tax) = self.tax_lines(&priced.lines, shipping.minor());
        let tax = tax_lines
            .iter()
            .try_fold(Money::zero(self.currency), |sum, t| sum.checked_add(t.tax))
            .ok_or_else(|| too_large(last))?;
        Ok(Quote {
            lines: priced.lines,
            subtotal: priced.subtotal,
            discount,
            discounts,
            shipping,
            shipping_tax: Money::new(self.currency, shipping_tax),
            zone,
            total_weight_grams: priced.total_weight_grams,
            total,
            tax_lines,
            tax,
        })
    }

    /// The tax lines of `lines` plus `shipping`, which is split over the
    /// (category, rate) groups — untaxed goods one group of their own — by
    /// their discounted amounts, each share taxed at its group's rate; and
    /// the VAT the shipping contains.
    fn tax_lines(&self, lines: &[PricedLine], shipping: i64) -> (Vec<TaxLine>, i64) {
        // (category, rate or untaxed) → (gross, tax of the lines).
        let mut groups: Vec<((TaxCategory, Option<i32>), i64, i64)> = Vec::new();
        for line in lines {
            let key = (line.tax_category, line.tax_rate_bp);
            match groups.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, gross, tax)) => {
                    *gross += line.gross();
                    *tax += line.tax.minor();
                }
                None => groups.push((key, line.gross(), line.tax.minor())),
            }
        }
        let weights: Vec<i64> = groups.iter().map(|(_, gross, _)| *gross).collect();
        let shares = allocate(shipping, &weights);
        let mut shipping_tax = 0;
        let mut tax_lines = Vec::new();
        for (((category, rate), gross, tax), share) in groups.into_iter().zip(shares) {
            let Some(rate_bp) = rate else { continue };
            let share_tax = tax_contained(share, rate_bp);
            shipping_tax += share_tax;
            let money = |minor| Money::new(self.currency, minor);
            tax_lines.push(TaxLine {
                category,
                rate_bp,
                taxable_base: money(gross + share - tax - share_tax),
                tax: money(tax + share_tax),
                gross: money(gross + share),
            });
        }
        tax_lines.sort_by_key(|t| {
            let category = TaxCategory::ALL.iter().position(|c| *c == t.category);
            (category, t.rate_bp)
        });
        (tax_lines, shipping_tax)
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

#[cfg(test)]
mod tests {
    use backroom_shared::money::Currency;

    use super::*;
    use crate::domain::pricing::TaxCategory;

    fn eur(minor: i64) -> Money {
        Money::new(Currency::parse("c", "EUR").unwrap(), minor)
    }

    fn line(sku: &str, unit: i64, quantity: i64, category: TaxCategory) -> PricedLine {
        PricedLine {
            sku: Sku::parse("s", sku).unwrap(),
            display_name: sku.to_owned(),
            quantity: Quantity::parse("q", quantity).unwrap(),
            unit_price: eur(unit),
            line_total: eur(unit * quantity),
            weight_grams: 100,
            tax_category: category,
            tax_rate_bp: None,
            discount: eur(0),
            tax: eur(0),
        }
    }

    /// The sums of a quote reconcile, whatever the numbers.
    #[test]
    fn lines_shipping_and_tax_lines_reconcile_to_the_cent() {
        let order = QuoteOrder {
            lines: Vec::new(),
            country: CountryCode::parse("c", "DE").unwrap(),
            currency: Currency::parse("c", "EUR").unwrap(),
            discount_codes: Vec::new(),
        };
        let rates = CountryRates(vec![
            (TaxCategory::Standard, 1900),
            (TaxCategory::Reduced, 700),
            (TaxCategory::Zero, 0),
        ]);
        let mut seed: u64 = 0x5eed;
        let mut next = |bound: i64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            i64::try_from((seed >> 33) % u64::try_from(bound).unwrap()).unwrap()
        };
        for _ in 0..500 {
            let count = 1 + next(6);
            let lines: Vec<PricedLine> = (0..count)
                .map(|i| {
                    let category = TaxCategory::ALL[usize::try_from(next(3)).unwrap()];
                    line(&format!("S{i}"), next(10_000), 1 + next(9), category)
                })
                .collect();
            let subtotal = lines.iter().map(|l| l.line_total.minor()).sum::<i64>();
            let discount = next(subtotal + 1);
            let mut priced = PricedLines {
                lines,
                subtotal: eur(subtotal),
                total_weight_grams: 100,
            };
            let weights: Vec<i64> = priced.lines.iter().map(|l| l.line_total.minor()).collect();
            for (l, share) in priced.lines.iter_mut().zip(allocate(discount, &weights)) {
                l.discount = eur(share);
            }
            let shipping = next(3000);
            let bands = [Band {
                max_weight_grams: 1000,
                price: eur(shipping),
            }];
            let code = DiscountLine {
                code: DiscountCode::parse("c", "X").unwrap(),
                amount: eur(discount),
            };
            let quote = order
                .ship(
                    priced,
                    vec![code],
                    ZoneId::from_stored("domestic".into()),
                    &bands,
                    &rates,
                )
                .unwrap();
            let goods: i64 = quote.lines.iter().map(PricedLine::gross).sum();
            assert_eq!(goods + quote.shipping.minor(), quote.total.minor());
            assert_eq!(
                quote.subtotal.minor() - quote.discount.minor() + shipping,
                quote.total.minor()
            );
            let line_tax: i64 = quote.lines.iter().map(|l| l.tax.minor()).sum();
            let grouped: i64 = quote.tax_lines.iter().map(|t| t.tax.minor()).sum();
            assert_eq!(grouped, line_tax + quote.shipping_tax.minor());
            assert_eq!(grouped, quote.tax.minor());
            let gross: i64 = quote.tax_lines.iter().map(|t| t.gross.minor()).sum();
            // Zero-rated goods have a 0 % group; everything is in some group.
            assert_eq!(gross, quote.total.minor());
            for t in &quote.tax_lines {
                assert_eq!(t.taxable_base.minor() + t.tax.minor(), t.gross.minor());
            }
        }
    }
}
