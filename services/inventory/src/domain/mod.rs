//! The inventory domain: the entities, commands and rules of each aggregate,
//! and the service's one [`Error`] enum. Nothing here sees a proto type or a
//! diesel row: `api` parses requests into the commands here, `db` converts
//! rows into the entities here.
//!
//! Layout:
//! - [`values`]: location ids, country codes, order ids, resource names,
//!   the lines of a quote or reservation;
//! - [`products`]: the catalogue entity, its commands, the "every product
//!   found, every product active" rules;
//! - [`stock`]: levels (`on_hand = available + reserved + committed`),
//!   movement kinds and their deltas, AdjustStock's compare-and-swap rules;
//! - [`reservations`]: all-or-nothing holds, TTL bounds, expiry, the
//!   Commit/Release state machine, shipping committed units;
//! - [`quotes`] and [`shipping`]: pricing an order, zones and weight bands;
//! - [`pricing`]: tax categories, dated VAT rates, discount codes.

pub mod pricing;
pub mod products;
pub mod quotes;
pub mod reservations;
pub mod shipping;
pub mod stock;
pub mod values;

use backroom_shared::{
    auth::{AccessDenied, TokenError},
    catalog::{DiscountCode, Sku},
    db::DbError,
    errors::FieldViolation,
    money::Currency,
    streams::TooManyStreams,
};

use self::{
    pricing::NotApplicable,
    reservations::ReservationState,
    stock::LevelKey,
    values::{CountryCode, OrderId},
};

/// Everything an inventory operation can fail with. Mapped to a gRPC status
/// in exactly one place (`impl From<Error> for Status` in `api`),
/// exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, one violation per field.
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldViolation>),
    /// The caller lacks the role the call requires.
    #[error(transparent)]
    AccessDenied(#[from] AccessDenied),
    /// CreateProduct with a SKU that exists.
    #[error("product {0} already exists")]
    ProductAlreadyExists(Sku),
    /// These SKUs do not exist (ascending).
    #[error("products not found: {0:?}")]
    ProductNotFound(Vec<Sku>),
    /// These products are inactive (ascending).
    #[error("products inactive: {0:?}")]
    ProductInactive(Vec<Sku>),
    /// UpdateProduct with a stale etag.
    #[error("etag mismatch")]
    EtagMismatch,
    /// No such stock level.
    #[error("{0} not found")]
    StockLevelNotFound(LevelKey),
    /// AdjustStock with a stale expected_version.
    #[error("stock level is at version {current}")]
    VersionMismatch {
        /// The level's current version (0: it does not exist).
        current: i64,
    },
    /// Not enough available units.
    #[error("insufficient stock: {skus:?}")]
    InsufficientStock {
        /// The short SKUs, ascending.
        skus: Vec<Sku>,
        /// AdjustStock: the units available at the level.
        available: Option<i64>,
    },
    /// QuoteOrder: these products have no price in the quote currency.
    #[error("no price in {currency} for {skus:?}")]
    CurrencyMismatch {
        /// The SKUs, ascending.
        skus: Vec<Sku>,
        /// The quote currency.
        currency: Currency,
    },
    /// No such discount code.
    #[error("discount code {0} not found")]
    DiscountCodeNotFound(DiscountCode),
    /// The code cannot be used for this order.
    #[error("discount code {code} cannot be used: {cause:?}")]
    DiscountCodeNotApplicable {
        /// The code.
        code: DiscountCode,
        /// Why.
        cause: NotApplicable,
    },
    /// CreateDiscountCode with a code that exists.
    #[error("discount code {0} already exists")]
    DiscountCodeAlreadyExists(DiscountCode),
    /// CreateTaxRate: a rate of the same country and category starts then.
    #[error("a tax rate for the country and category starts then already")]
    TaxRateAlreadyExists,
    /// No such tax rate.
    #[error("tax rate not found")]
    TaxRateNotFound(String),
    /// DeleteTaxRate of a rate that has taken effect.
    #[error("tax rate in effect")]
    TaxRateInEffect,
    /// QuoteOrder: the destination is not served in this currency and weight.
    #[error("no shipping rule for {country} {currency} {total_weight_grams} g")]
    NoShippingRule {
        /// The destination country.
        country: CountryCode,
        /// The quote currency.
        currency: Currency,
        /// The order's total weight.
        total_weight_grams: i64,
    },
    /// ReserveStock: the order already has a reservation with other lines.
    #[error("order id reused with different lines")]
    OrderIdReused,
    /// No reservation for this order.
    #[error("reservation of order {0} not found")]
    ReservationNotFound(OrderId),
    /// Commit of a reservation past its expiry.
    #[error("reservation expired")]
    ReservationExpired,
    /// Commit of a released reservation.
    #[error("reservation released")]
    ReservationReleased,
    /// Release of a committed reservation.
    #[error("reservation committed")]
    ReservationCommitted,
    /// Ship or Uncommit of a reservation that is not committed.
    #[error("reservation is {0:?}, not committed")]
    ReservationNotCommitted(ReservationState),
    /// Ship or Uncommit: these lines would settle more units than they
    /// still hold committed (or are not lines of the reservation),
    /// ascending.
    #[error("more than the reservation holds committed: {0:?}")]
    ExceedsCommitted(Vec<Sku>),
    /// Restock or WriteOff: these lines would take back more units than
    /// they shipped and have not taken back yet (or are not lines of the
    /// reservation), ascending.
    #[error("more than the reservation shipped: {0:?}")]
    ExceedsShipped(Vec<Sku>),
    /// WatchStock: the caller already holds its cap of open streams.
    #[error(transparent)]
    TooManyStreams(#[from] TooManyStreams),
    /// WatchStock: the reader fell further behind than its queue holds.
    #[error("the stream's reader fell too far behind")]
    StreamTooSlow,
    /// WatchStock: the caller's token stopped counting while the stream was
    /// open (expired, revoked, or revocations cannot be checked).
    #[error("the caller's token no longer counts: {0}")]
    TokenNoLongerValid(TokenError),
    /// WatchStock: the server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// WatchStock: the stock levels could not be read (the cause is logged
    /// once, where it happened, not once per stream).
    #[error("stock levels cannot be read right now")]
    StockUnreadable,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

backroom_shared::domain_error_conversions!(Error);

impl Error {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Error::Validation(vec![FieldViolation::new(field, description)])
    }
}
