//! Money, the one way every service holds it: an ISO-4217 [`Currency`] from
//! one allow-list and an `i64` amount of its minor unit (cents, yen), never a
//! float. [`Money`]'s fields are private: a value is valid by construction,
//! its arithmetic is checked (overflow is an error, not a wrap), and it only
//! meets the wire (`backroom.common.v1.Money`) and the database (a currency
//! column and an amount column) through the conversions here.
//!
//! Layout: [`CURRENCIES`] and [`Currency`] (parse, stored form, diesel
//! `Text` mapping), [`Money`] (parse from proto at a field path, checked
//! `+ − ×`, to proto).

use std::fmt;

use diesel::{
    deserialize::{FromSql, FromSqlRow},
    expression::AsExpression,
    pg::{Pg, PgValue},
    serialize::{Output, ToSql},
    sql_types::Text,
};

use crate::errors::FieldViolation;

/// The largest amount one payment may collect — and so the largest a unit
/// price or an order's total may be: 99,999,999 minor units.
pub const MAX_AMOUNT: i64 = 99_999_999;

/// ISO-4217 currencies Backroom accepts. A short allow-list on purpose: an
/// unknown code is far more often a typo than a new currency.
pub const CURRENCIES: [&str; 20] = [
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "INR", "JPY",
    "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "USD",
];

/// A currency from [`CURRENCIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Currency(&'static str);

impl Currency {
    /// Accepts a code from [`CURRENCIES`]; `field` names it in the violation.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        Self::known(raw).ok_or_else(|| {
            FieldViolation::new(
                field,
                format!(
                    "must be a supported ISO-4217 code: {}",
                    CURRENCIES.join(", ")
                ),
            )
        })
    }

    fn known(raw: &str) -> Option<Self> {
        CURRENCIES.iter().find(|c| **c == raw).map(|c| Self(c))
    }

    /// The code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl ToSql<Text, Pg> for Currency {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.0, out)
    }
}

impl FromSql<Text, Pg> for Currency {
    fn from_sql(value: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let raw = <String as FromSql<Text, Pg>>::from_sql(value)?;
        // A code the list no longer knows is corruption, not a default.
        Self::known(&raw).ok_or_else(|| format!("unknown stored currency {raw:?}").into())
    }
}

/// An amount of a currency's minor unit; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    minor: i64,
}

impl Money {
    /// `minor` units of `currency` (any sign: a difference, a refund).
    pub fn new(currency: Currency, minor: i64) -> Self {
        Self { currency, minor }
    }

    /// Zero of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, 0)
    }

    /// Parses a proto Money at `field` (violations name
    /// `{field}.currency_code` and `{field}.amount_minor`), accepting
    /// amounts in `range`.
    pub fn parse(
        field: &str,
        money: &backroom_proto::common::v1::Money,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Self, Vec<FieldViolation>> {
        let currency = Currency::parse(&format!("{field}.currency_code"), &money.currency_code);
        let amount = if range.contains(&money.amount_minor) {
            Ok(money.amount_minor)
        } else {
            Err(FieldViolation::new(
                format!("{field}.amount_minor"),
                match (*range.start(), *range.end()) {
                    (0, i64::MAX) => "must not be negative".to_owned(),
                    (start, end) => format!("must be {start}–{end} minor units"),
                },
            ))
        };
        match (currency, amount) {
            (Ok(currency), Ok(minor)) => Ok(Self { currency, minor }),
            (currency, amount) => Err(currency.err().into_iter().chain(amount.err()).collect()),
        }
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// `self + other`; `None` on overflow or when the currencies differ.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        (self.currency == other.currency)
            .then(|| self.minor.checked_add(other.minor))
            .flatten()
            .map(|minor| Self::new(self.currency, minor))
    }

    /// `self − other`; `None` on overflow or when the currencies differ.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        (self.currency == other.currency)
            .then(|| self.minor.checked_sub(other.minor))
            .flatten()
            .map(|minor| Self::new(self.currency, minor))
    }

    /// `self × factor`; `None` on overflow.
    pub fn checked_mul(self, factor: i64) -> Option<Self> {
        self.minor
            .checked_mul(factor)
            .map(|minor| Self::new(self.currency, minor))
    }

    /// The wire form.
    pub fn to_proto(self) -> backroom_proto::common::v1::Money {
        backroom_proto::common::v1::Money {
            currency_code: self.currency.code().to_owned(),
            amount_minor: self.minor,
        }
    }
}

/// `round-half-up(amount × numerator / denominator)` for non-negative
/// operands (computed in `i128`, so no product overflows); 0 when
/// `denominator` is 0. The one rounding rule of pricing (VAT contained in a
/// line, a percentage discount) and of the ledger (the VAT part of a capture
/// or refund): half a minor unit rounds up, as commercial rounding does.
pub fn proportion(amount: i64, numerator: i64, denominator: i64) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    let (a, n, d) = (
        i128::from(amount),
        i128::from(numerator),
        i128::from(denominator),
    );
    let rounded = (2 * a * n + d).div_euclid(2 * d);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// Splits `total` (≥ 0) into parts proportional to `weights` (each ≥ 0)
/// that sum to exactly `total`: each part is its floor share, and the minor
/// units left over go one each to the largest remainders (ties: the earlier
/// weight). With every weight 0, the parts are as if every weight were 1.
pub fn allocate(total: i64, weights: &[i64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let all_zero = weights.iter().all(|w| *w <= 0);
    let weights: Vec<i128> = weights
        .iter()
        .map(|w| if all_zero { 1 } else { i128::from((*w).max(0)) })
        .collect();
    let sum: i128 = weights.iter().sum();
    let total = i128::from(total.max(0));
    let mut parts: Vec<i128> = weights.iter().map(|w| total * w / sum).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest remainder first; the earlier index on ties (a stable sort).
    order.sort_by_key(|i| std::cmp::Reverse(total * weights[*i] % sum));
    let mut left = total - parts.iter().sum::<i128>();
    for i in order {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .map(|p| i64::try_from(p).unwrap_or(i64::MAX))
        .collect()
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

impl From<Money> for backroom_proto::common::v1::Money {
    fn from(money: Money) -> Self {
        money.to_proto()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_round_half_up_and_allocations_sum_exactly() {
        // 19 % VAT contained in 39.98: 3998 × 1900 / 11900 = 638.32.
        assert_eq!(proportion(3998, 1900, 11_900), 638);
        // 7 % in 14.97: 97.93; half a cent rounds up.
        assert_eq!(proportion(1497, 700, 10_700), 98);
        assert_eq!(proportion(1, 1, 2), 1);
        assert_eq!(proportion(5, 0, 7), 0);
        assert_eq!(proportion(5, 3, 0), 0);
        assert_eq!(
            proportion(MAX_AMOUNT, MAX_AMOUNT, 1),
            MAX_AMOUNT * MAX_AMOUNT
        );
        // 4.90 shipping over 39.98 and 14.97 of goods: 356.50 / 133.50.
        assert_eq!(allocate(490, &[3998, 1497]), vec![357, 133]);
        assert_eq!(allocate(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(allocate(7, &[0, 0]), vec![4, 3]);
        assert_eq!(allocate(0, &[5, 5]), vec![0, 0]);
        for total in [0, 1, 99, 12_345] {
            let parts = allocate(total, &[3, 0, 17, 1_000_000, 1]);
            assert_eq!(parts.iter().sum::<i64>(), total);
        }
    }

    fn eur() -> Currency {
        Currency::parse("c", "EUR").unwrap()
    }

    #[test]
    fn only_listed_codes_parse_and_the_field_is_named() {
        assert_eq!(eur().code(), "EUR");
        assert_eq!(
            Currency::parse("price.currency_code", "XXX")
                .unwrap_err()
                .field,
            "price.currency_code"
        );
        assert_eq!(
            Currency::parse("c", "").unwrap_err().description,
            "is required"
        );
        assert!(Currency::parse("c", "eur").is_err(), "codes are upper case");
    }

    #[test]
    fn arithmetic_is_checked_and_never_mixes_currencies() {
        let ten = Money::new(eur(), 10);
        assert_eq!(ten.checked_add(ten).unwrap().minor(), 20);
        assert_eq!(ten.checked_sub(Money::new(eur(), 15)).unwrap().minor(), -5);
        assert_eq!(ten.checked_mul(3).unwrap().minor(), 30);
        assert!(Money::new(eur(), i64::MAX).checked_add(ten).is_none());
        assert!(Money::new(eur(), i64::MAX).checked_mul(2).is_none());
        let usd = Money::new(Currency::parse("c", "USD").unwrap(), 10);
        assert!(ten.checked_add(usd).is_none(), "EUR + USD is no amount");
    }

    #[test]
    fn proto_money_parses_with_both_fields_named() {
        let bad = backroom_proto::common::v1::Money {
            currency_code: "XXX".into(),
            amount_minor: -1,
        };
        let fields: Vec<String> = Money::parse("unit_price", &bad, 0..=i64::MAX)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            ["unit_price.currency_code", "unit_price.amount_minor"]
        );
        let good = backroom_proto::common::v1::Money {
            currency_code: "EUR".into(),
            amount_minor: 1299,
        };
        let money = Money::parse("unit_price", &good, 1..=99_999_999).unwrap();
        assert_eq!(money.to_proto(), good);
    }
}
