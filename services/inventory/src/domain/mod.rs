//! The inventory domain: values that are valid by construction
//! ([`values`]), shipping-price selection ([`shipping`]), and the service's
//! one [`Error`] enum.

pub mod shipping;
pub mod values;

use backroom_shared::{
    auth::TokenError, db::DbError, errors::FieldViolation, streams::TooManyStreams,
};

pub use values::*;

/// Everything an inventory operation can fail with. Mapped to a gRPC status
/// in exactly one place (`api::status`), exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, one violation per field.
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldViolation>),
    /// CreateProduct with a SKU that exists.
    #[error("product {0} already exists")]
    ProductAlreadyExists(String),
    /// These SKUs do not exist (ascending).
    #[error("products not found: {0:?}")]
    ProductNotFound(Vec<String>),
    /// These products are inactive (ascending).
    #[error("products inactive: {0:?}")]
    ProductInactive(Vec<String>),
    /// UpdateProduct with a stale etag.
    #[error("etag mismatch")]
    EtagMismatch,
    /// No stock level with this resource name.
    #[error("{0} not found")]
    StockLevelNotFound(String),
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
        skus: Vec<String>,
        /// AdjustStock: the units available at the level.
        available: Option<i64>,
    },
    /// QuoteOrder: these products are priced in another currency.
    #[error("currency mismatch: {0:?}")]
    CurrencyMismatch(Vec<String>),
    /// QuoteOrder: the destination is not served in this currency and weight.
    #[error("no shipping rule for {country_code} {currency_code} {total_weight_grams} g")]
    NoShippingRule {
        /// The destination country.
        country_code: String,
        /// The quote currency.
        currency_code: String,
        /// The order's total weight.
        total_weight_grams: i64,
    },
    /// ReserveStock: the order already has a reservation with other lines.
    #[error("order id reused with different lines")]
    OrderIdReused,
    /// No reservation for this order (the resource name).
    #[error("{0} not found")]
    ReservationNotFound(String),
    /// Commit of a reservation past its expiry.
    #[error("reservation expired")]
    ReservationExpired,
    /// Commit of a released reservation.
    #[error("reservation released")]
    ReservationReleased,
    /// Release of a committed reservation.
    #[error("reservation committed")]
    ReservationCommitted,
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

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Error::Db(err.into())
    }
}

impl Error {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Error::Validation(vec![FieldViolation::new(field, description)])
    }
}
