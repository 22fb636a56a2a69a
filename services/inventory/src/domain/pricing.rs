//! Pricing beyond the unit price: tax categories and VAT rates (dated, never
//! edited in place), and discount codes (what they take, from which orders,
//! when, how often). The arithmetic of a quote lives in [`super::quotes`];
//! the rounding rules are [`backroom_shared::money::proportion`] and
//! [`backroom_shared::money::allocate`].

use backroom_shared::{
    catalog::DiscountCode,
    errors::FieldViolation,
    money::{Currency, Money, proportion},
    names,
    paging::PageRequest,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::values::CountryCode;

/// The collection of VAT rates (`taxRates/{id}`).
pub const TAX_RATES: &str = "taxRates";
/// The collection of discount codes (`discountCodes/{code}`).
pub const DISCOUNT_CODES: &str = "discountCodes";
/// The highest rate or percentage, basis points (100 %).
pub const MAX_BASIS_POINTS: i32 = 10_000;
/// Most prices in other currencies one product may have.
pub const MAX_OTHER_PRICES: usize = 20;

backroom_shared::stored_enum!(
    /// Which VAT rate a product pays.
    pub TaxCategory {
        /// The standard rate.
        Standard = "standard",
        /// The main reduced rate.
        Reduced = "reduced",
        /// Zero-rated.
        Zero = "zero",
    }
);

/// A VAT rate of one country and category from `start_at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRate {
    /// Its id.
    pub id: Uuid,
    /// The country.
    pub country: CountryCode,
    /// The category.
    pub category: TaxCategory,
    /// The rate, basis points.
    pub rate_bp: i32,
    /// When it takes effect.
    pub start_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl TaxRate {
    /// `taxRates/{id}`.
    pub fn name(&self) -> String {
        names::name(TAX_RATES, self.id)
    }
}

/// CreateTaxRate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTaxRate {
    /// The country.
    pub country: CountryCode,
    /// The category.
    pub category: TaxCategory,
    /// The rate, basis points.
    pub rate_bp: i32,
    /// When it takes effect (`None`: now).
    pub start_at: Option<DateTime<Utc>>,
}

impl CreateTaxRate {
    /// When the rate starts, checked at `now`: a rate never starts in the
    /// past (that would rewrite what earlier quotes were told).
    pub fn start(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, FieldViolation> {
        match self.start_at {
            None => Ok(now),
            Some(start) if start >= now => Ok(start),
            Some(_) => Err(FieldViolation::new(
                "tax_rate.start_time",
                "must not be in the past: schedule a change instead of rewriting history",
            )),
        }
    }
}

/// ListTaxRates.
#[derive(Debug, Clone)]
pub struct ListTaxRates {
    /// Only this country's.
    pub country: Option<CountryCode>,
    /// Which page.
    pub page: PageRequest,
}

/// The rates in effect for one destination: (category, basis points).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountryRates(pub Vec<(TaxCategory, i32)>);

impl CountryRates {
    /// The rate for `category`: its own, else (for a non-zero category)
    /// the standard one; `None` when the country taxes no such goods.
    pub fn rate_for(&self, category: TaxCategory) -> Option<i32> {
        let find =
            |wanted: TaxCategory| self.0.iter().find(|(c, _)| *c == wanted).map(|(_, bp)| *bp);
        find(category).or_else(|| match category {
            TaxCategory::Zero => None,
            _ => find(TaxCategory::Standard),
        })
    }
}

/// The VAT contained in a gross amount at `rate_bp`.
pub fn tax_contained(gross: i64, rate_bp: i32) -> i64 {
    proportion(
        gross,
        i64::from(rate_bp),
        i64::from(MAX_BASIS_POINTS) + i64::from(rate_bp),
    )
}

/// What a discount code takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benefit {
    /// A percentage of the subtotal, basis points.
    Percent(i32),
    /// A fixed amount.
    Amount(Money),
}

/// A discount code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discount {
    /// The code.
    pub code: DiscountCode,
    /// What it takes.
    pub benefit: Benefit,
    /// The least subtotal it needs (in its currency).
    pub minimum_subtotal: Option<Money>,
    /// When it becomes usable.
    pub start_at: DateTime<Utc>,
    /// When it stops (exclusive).
    pub end_at: Option<DateTime<Utc>>,
    /// Uses over all customers.
    pub usage_limit: Option<i64>,
    /// Uses per customer.
    pub per_customer_limit: Option<i64>,
    /// Whether it combines with other codes.
    pub stackable: bool,
    /// Whether it may be used.
    pub active: bool,
    /// Uses held.
    pub uses: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Why a code cannot be used (ErrorInfo metadata "cause").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotApplicable {
    /// Deactivated.
    Inactive,
    /// Before its start.
    NotStarted,
    /// Past its end.
    Ended,
    /// No uses left.
    Exhausted,
    /// The customer used it as often as allowed.
    CustomerLimit,
    /// The order is in another currency than the code's.
    Currency,
    /// The subtotal is below the code's minimum.
    MinimumSubtotal,
    /// Combined with other codes, and not stackable.
    NotStackable,
}

impl NotApplicable {
    /// The cause as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::Exhausted => "exhausted",
            Self::CustomerLimit => "customer_limit",
            Self::Currency => "currency",
            Self::MinimumSubtotal => "minimum_subtotal",
            Self::NotStackable => "not_stackable",
        }
    }
}

impl Discount {
    /// `discountCodes/{code}`.
    pub fn name(&self) -> String {
        names::name(DISCOUNT_CODES, &self.code)
    }

    /// The only currency it applies to, if any.
    pub fn currency(&self) -> Option<Currency> {
        match self.benefit {
            Benefit::Amount(amount) => Some(amount.currency()),
            Benefit::Percent(_) => self.minimum_subtotal.map(Money::currency),
        }
    }

    /// Whether it may be used at `now` at all (active, in its window).
    pub fn usable_at(&self, now: DateTime<Utc>) -> Result<(), NotApplicable> {
        if !self.active {
            Err(NotApplicable::Inactive)
        } else if now < self.start_at {
            Err(NotApplicable::NotStarted)
        } else if self.end_at.is_some_and(|end| now >= end) {
            Err(NotApplicable::Ended)
        } else {
            Ok(())
        }
    }

    /// Whether it applies to an order of `subtotal` at `now` (usable, the
    /// currency, the minimum, uses left).
    pub fn applies(&self, subtotal: Money, now: DateTime<Utc>) -> Result<(), NotApplicable> {
        self.usable_at(now)?;
        if self
            .currency()
            .is_some_and(|currency| currency != subtotal.currency())
        {
            return Err(NotApplicable::Currency);
        }
        if self
            .minimum_subtotal
            .is_some_and(|minimum| subtotal.minor() < minimum.minor())
        {
            return Err(NotApplicable::MinimumSubtotal);
        }
        if self.usage_limit.is_some_and(|limit| self.uses >= limit) {
            return Err(NotApplicable::Exhausted);
        }
        Ok(())
    }

    /// What it takes off `subtotal`, before the cap at the subtotal.
    pub fn takes(&self, subtotal: Money) -> i64 {
        match self.benefit {
            Benefit::Percent(bp) => {
                proportion(subtotal.minor(), i64::from(bp), i64::from(MAX_BASIS_POINTS))
            }
            Benefit::Amount(amount) => amount.minor(),
        }
    }
}

/// CreateDiscountCode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDiscount {
    /// The code.
    pub code: DiscountCode,
    /// What it takes.
    pub benefit: Benefit,
    /// The least subtotal.
    pub minimum_subtotal: Option<Money>,
    /// When it becomes usable (`None`: now).
    pub start_at: Option<DateTime<Utc>>,
    /// When it stops.
    pub end_at: Option<DateTime<Utc>>,
    /// Uses over all customers.
    pub usage_limit: Option<i64>,
    /// Uses per customer.
    pub per_customer_limit: Option<i64>,
    /// Whether it combines.
    pub stackable: bool,
    /// Whether it may be used.
    pub active: bool,
}

impl CreateDiscount {
    /// The code as it starts at `now`: its window checked (the end after
    /// the start).
    pub fn at(&self, now: DateTime<Utc>) -> Result<Discount, FieldViolation> {
        let start_at = self.start_at.unwrap_or(now);
        if self.end_at.is_some_and(|end| end <= start_at) {
            return Err(FieldViolation::new(
                "discount_code.end_time",
                "must be after start_time",
            ));
        }
        Ok(Discount {
            code: self.code.clone(),
            benefit: self.benefit,
            minimum_subtotal: self.minimum_subtotal,
            start_at,
            end_at: self.end_at,
            usage_limit: self.usage_limit,
            per_customer_limit: self.per_customer_limit,
            stackable: self.stackable,
            active: self.active,
            uses: 0,
            created_at: now,
            updated_at: now,
        })
    }
}

/// UpdateDiscountCode: the fields the mask names (`Some(None)` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscountChanges {
    /// New active flag.
    pub active: Option<bool>,
    /// New total limit.
    pub usage_limit: Option<Option<i64>>,
    /// New per-customer limit.
    pub per_customer_limit: Option<Option<i64>>,
    /// New end.
    pub end_at: Option<Option<DateTime<Utc>>>,
}

/// UpdateDiscountCode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateDiscount {
    /// The code.
    pub code: DiscountCode,
    /// What changes.
    pub changes: DiscountChanges,
}

impl UpdateDiscount {
    /// `current` with the changes, checked (the end after the start).
    pub fn applied_to(&self, current: Discount) -> Result<Discount, FieldViolation> {
        let changes = self.changes.clone();
        let next = Discount {
            active: changes.active.unwrap_or(current.active),
            usage_limit: changes.usage_limit.unwrap_or(current.usage_limit),
            per_customer_limit: changes
                .per_customer_limit
                .unwrap_or(current.per_customer_limit),
            end_at: changes.end_at.unwrap_or(current.end_at),
            ..current
        };
        if next.end_at.is_some_and(|end| end <= next.start_at) {
            return Err(FieldViolation::new(
                "discount_code.end_time",
                "must be after start_time",
            ));
        }
        Ok(next)
    }
}

/// ListDiscountCodes.
#[derive(Debug, Clone)]
pub struct ListDiscounts {
    /// Which page.
    pub page: PageRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_category_falls_back_to_the_standard_rate_but_zero_does_not() {
        let rates = CountryRates(vec![(TaxCategory::Standard, 2500)]);
        assert_eq!(rates.rate_for(TaxCategory::Reduced), Some(2500));
        assert_eq!(rates.rate_for(TaxCategory::Zero), None);
        assert_eq!(
            CountryRates::default().rate_for(TaxCategory::Standard),
            None
        );
        assert_eq!(tax_contained(11_900, 1900), 1900);
        assert_eq!(tax_contained(1000, 0), 0);
    }
}
