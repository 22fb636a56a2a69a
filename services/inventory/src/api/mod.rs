//! The tonic `InventoryService`: the only place proto ⇄ domain conversions
//! and `Error` → `Status` happen. Every handler reads the same way: who
//! (`caller`) → parse (a command's `TryFrom<pb::…Request>`) → act through
//! the domain in a [`Store`] transaction → convert back.
//!
//! Layout: the thin `impl InventoryService for InventoryApi` here delegates
//! to one module per resource — `products`, `stock` (levels,
//! AdjustStock, movements), `quotes` (QuoteOrder, shipping rules),
//! `reservations`, `pricing` (VAT rates, discount codes), [`watch`]
//! (WatchStock and its hub) — and
//! `impl From<Error> for Status`, the one exhaustive mapping, closes it.

mod pricing;
mod products;
mod quotes;
mod reservations;
pub(crate) use reservations::to_proto as reservation_to_proto;
mod stock;
pub mod watch;

use std::pin::Pin;

use backroom_proto::inventory::v1::{self as pb, inventory_service_server::InventoryService};
use backroom_shared::{
    auth::{Access, AccessDenied, Caller},
    catalog::{Sku, sku_list},
    errors::{
        FieldViolation, Violations, invalid_argument, invalid_argument_with_reason, unavailable,
        with_reason,
    },
    idempotency::{IdempotencyKey, request_key},
    store::Store,
};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};
use tracing::instrument;

use crate::{
    DOMAIN, Deps,
    domain::{Error, pricing::NotApplicable},
};

/// The service implementation.
#[derive(Debug, Clone)]
pub struct InventoryApi {
    deps: Deps,
}

impl InventoryApi {
    /// Wraps the service's dependencies.
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    fn store(&self) -> &Store {
        &self.deps.store
    }
}

/// Who: the verified caller of `request`, if `rule` admits it
/// (`Access::require_admin`, …; `anyone` for every authenticated caller).
fn caller<T>(
    request: &Request<T>,
    rule: impl FnOnce(Access) -> Result<(), AccessDenied>,
) -> Result<Caller, Status> {
    let caller = Caller::of(request)?;
    rule(caller.access()).map_err(Error::from)?;
    Ok(caller)
}

/// The rule of RPCs any authenticated caller may make.
fn anyone(_: Access) -> Result<(), AccessDenied> {
    Ok(())
}

/// INVALID_ARGUMENT naming one field.
fn one_violation(violation: FieldViolation) -> Error {
    Error::Validation(vec![violation])
}

/// A mutation clients may retry with a `request_id` (AIP-155).
trait Retryable {
    /// The RPC: request ids are scoped to it (and to the caller).
    const METHOD: &'static str;
    /// The request id sent.
    fn request_id(&self) -> &str;
    /// What a retry with the same request id must repeat: the parameters,
    /// without the request id (or output-only fields).
    fn fingerprint(&self) -> Vec<u8>;
}

/// A parsed retryable mutation: its command and how it is de-duplicated.
struct Mutation<C> {
    key: Option<IdempotencyKey>,
    fingerprint: Vec<u8>,
    cmd: C,
}

impl<C: Send + 'static> Mutation<C> {
    /// Acts: runs `act` on the command in a transaction, once per request
    /// id (a retry replays the first outcome; a lost race runs again).
    async fn run<R, F>(self, store: &Store, act: F) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        F: Fn(&mut PgConnection, &C, DateTime<Utc>) -> Result<R, Error> + Send + 'static,
    {
        let Self {
            key,
            fingerprint,
            cmd,
        } = self;
        store
            .idempotent(key, fingerprint, move |conn, now| act(conn, &cmd, now))
            .await
    }
}

/// Parses a retryable mutation of `caller`: every violation of the request
/// id and of the command in one INVALID_ARGUMENT, the request id's first.
fn mutation<M, C>(caller: &Caller, message: M) -> Result<Mutation<C>, Error>
where
    M: Retryable,
    C: TryFrom<M, Error = Error>,
{
    let mut violations = Violations::default();
    let key = request_key(
        &mut violations,
        message.request_id(),
        M::METHOD,
        Some(caller),
    );
    let fingerprint = message.fingerprint();
    let cmd = match C::try_from(message) {
        Ok(cmd) => Some(cmd),
        Err(Error::Validation(found)) => {
            violations.extend(found);
            None
        }
        Err(other) => return Err(other),
    };
    let cmd = violations.finish_with(cmd)?;
    Ok(Mutation {
        key,
        fingerprint,
        cmd,
    })
}

/// What a WatchStock stream sends.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::StockLevel, Status>> + Send>>;

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[instrument(skip_all, fields(sku = %request.get_ref().product.as_ref().map_or("", |p| p.sku.as_str())))]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        products::create(self, request).await
    }

    #[instrument(skip_all, fields(product = %request.get_ref().name))]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        products::get(self, request).await
    }

    #[instrument(skip_all, fields(query = %request.get_ref().query))]
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        products::list(self, request).await
    }

    #[instrument(skip_all, fields(product = %request.get_ref().product.as_ref().map_or("", |p| p.name.as_str())))]
    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        products::update(self, request).await
    }

    #[instrument(skip_all, fields(level = %request.get_ref().name))]
    async fn get_stock_level(
        &self,
        request: Request<pb::GetStockLevelRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        stock::get(self, request).await
    }

    #[instrument(skip_all, fields(parent = %request.get_ref().parent, location = %request.get_ref().location))]
    async fn list_stock_levels(
        &self,
        request: Request<pb::ListStockLevelsRequest>,
    ) -> Result<Response<pb::ListStockLevelsResponse>, Status> {
        stock::list(self, request).await
    }

    #[instrument(skip_all, fields(level = %request.get_ref().name, delta = request.get_ref().delta))]
    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        stock::adjust(self, request).await
    }

    #[instrument(skip_all, fields(parent = %request.get_ref().parent, reservation = %request.get_ref().reservation))]
    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Result<Response<pb::ListStockMovementsResponse>, Status> {
        stock::movements(self, request).await
    }

    #[instrument(skip_all, fields(lines = request.get_ref().lines.len(), country = %request.get_ref().destination_country_code))]
    async fn quote_order(
        &self,
        request: Request<pb::QuoteOrderRequest>,
    ) -> Result<Response<pb::Quote>, Status> {
        quotes::quote(self, request).await
    }

    #[instrument(skip_all, fields(page_size = request.get_ref().page_size))]
    async fn list_shipping_rules(
        &self,
        request: Request<pb::ListShippingRulesRequest>,
    ) -> Result<Response<pb::ListShippingRulesResponse>, Status> {
        quotes::shipping_rules(self, request).await
    }

    #[instrument(skip_all, fields(order = %request.get_ref().order_id, lines = request.get_ref().lines.len()))]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::reserve(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::commit(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::release(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn ship_reservation(
        &self,
        request: Request<pb::ShipReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::settle(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn uncommit_reservation(
        &self,
        request: Request<pb::UncommitReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::settle(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn restock_reservation(
        &self,
        request: Request<pb::RestockReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::settle(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn write_off_reservation(
        &self,
        request: Request<pb::WriteOffReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::settle(self, request).await
    }

    #[instrument(skip_all, fields(reservation = %request.get_ref().name))]
    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        reservations::get(self, request).await
    }

    #[instrument(skip_all, fields(country = %request.get_ref().tax_rate.as_ref().map_or("", |r| r.country_code.as_str())))]
    async fn create_tax_rate(
        &self,
        request: Request<pb::CreateTaxRateRequest>,
    ) -> Result<Response<pb::TaxRate>, Status> {
        pricing::create_rate(self, request).await
    }

    #[instrument(skip_all, fields(country = %request.get_ref().country_code))]
    async fn list_tax_rates(
        &self,
        request: Request<pb::ListTaxRatesRequest>,
    ) -> Result<Response<pb::ListTaxRatesResponse>, Status> {
        pricing::list_rates(self, request).await
    }

    #[instrument(skip_all, fields(tax_rate = %request.get_ref().name))]
    async fn delete_tax_rate(
        &self,
        request: Request<pb::DeleteTaxRateRequest>,
    ) -> Result<Response<()>, Status> {
        pricing::delete_rate(self, request).await
    }

    #[instrument(skip_all)]
    async fn create_discount_code(
        &self,
        request: Request<pb::CreateDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        pricing::create_discount(self, request).await
    }

    #[instrument(skip_all, fields(discount_code = %request.get_ref().name))]
    async fn get_discount_code(
        &self,
        request: Request<pb::GetDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        pricing::get_discount(self, request).await
    }

    #[instrument(skip_all)]
    async fn list_discount_codes(
        &self,
        request: Request<pb::ListDiscountCodesRequest>,
    ) -> Result<Response<pb::ListDiscountCodesResponse>, Status> {
        pricing::list_discounts(self, request).await
    }

    #[instrument(skip_all, fields(discount_code = %request.get_ref().discount_code.as_ref().map_or("", |d| d.name.as_str())))]
    async fn update_discount_code(
        &self,
        request: Request<pb::UpdateDiscountCodeRequest>,
    ) -> Result<Response<pb::DiscountCode>, Status> {
        pricing::update_discount(self, request).await
    }

    type WatchStockStream = WatchStream;

    #[instrument(skip_all, fields(skus = request.get_ref().skus.len(), location = %request.get_ref().location))]
    async fn watch_stock(
        &self,
        request: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        watch::watch_stock(self, request).await
    }
}

/// A customer-safe sentence for why a discount code cannot be used.
fn not_applicable(cause: NotApplicable) -> &'static str {
    match cause {
        NotApplicable::Inactive => "it is not active",
        NotApplicable::NotStarted => "it is not valid yet",
        NotApplicable::Ended => "it has expired",
        NotApplicable::Exhausted => "it has no uses left",
        NotApplicable::CustomerLimit => "you have used it as often as it allows",
        NotApplicable::Currency => "it does not apply to orders in this currency",
        NotApplicable::MinimumSubtotal => "the order is below its minimum",
        NotApplicable::NotStackable => "it cannot be combined with other codes",
    }
}

/// The one mapping of domain errors to statuses; exhaustive on purpose.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let skus_metadata = |skus: &[Sku]| ("skus".to_owned(), sku_list(skus));
        let reason = |code: Code, reason: &str, message: String, skus: &[Sku]| {
            with_reason(code, DOMAIN, reason, message, [skus_metadata(skus)])
        };
        match err {
            Error::Validation(violations) => invalid_argument(DOMAIN, &violations),
            Error::AccessDenied(denied) => denied.into_status(DOMAIN),
            Error::ProductAlreadyExists(sku) => reason(
                Code::AlreadyExists,
                "PRODUCT_ALREADY_EXISTS",
                format!("product {sku} already exists"),
                &[sku],
            ),
            Error::ProductNotFound(skus) => reason(
                Code::NotFound,
                "PRODUCT_NOT_FOUND",
                format!("no such products: {}", sku_list(&skus)),
                &skus,
            ),
            Error::ProductInactive(skus) => reason(
                Code::FailedPrecondition,
                "PRODUCT_INACTIVE",
                format!("inactive products: {}", sku_list(&skus)),
                &skus,
            ),
            Error::EtagMismatch => with_reason(
                Code::Aborted,
                DOMAIN,
                "ETAG_MISMATCH",
                "the product changed since it was read; re-read and retry",
                [],
            ),
            Error::StockLevelNotFound(key) => {
                let name = key.name();
                with_reason(
                    Code::NotFound,
                    DOMAIN,
                    "STOCK_LEVEL_NOT_FOUND",
                    format!("{name} not found"),
                    [("name".to_owned(), name)],
                )
            }
            Error::VersionMismatch { current } => with_reason(
                Code::Aborted,
                DOMAIN,
                "VERSION_MISMATCH",
                format!("the stock level is at version {current}; re-read and retry"),
                [("current_version".to_owned(), current.to_string())],
            ),
            Error::InsufficientStock { skus, available } => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "INSUFFICIENT_STOCK",
                format!("not enough stock of {}", sku_list(&skus)),
                std::iter::once(skus_metadata(&skus))
                    .chain(available.map(|a| ("available".to_owned(), a.to_string()))),
            ),
            Error::CurrencyMismatch { skus, currency } => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "CURRENCY_MISMATCH",
                format!("no price in {currency} for {}", sku_list(&skus)),
                [
                    skus_metadata(&skus),
                    ("currency_code".to_owned(), currency.code().to_owned()),
                ],
            ),
            Error::DiscountCodeNotFound(code) => with_reason(
                Code::NotFound,
                DOMAIN,
                "DISCOUNT_CODE_NOT_FOUND",
                format!("no discount code {code}"),
                [("code".to_owned(), code.as_str().to_owned())],
            ),
            Error::DiscountCodeNotApplicable { code, cause } => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "DISCOUNT_CODE_NOT_APPLICABLE",
                format!(
                    "discount code {code} cannot be used: {}",
                    not_applicable(cause)
                ),
                [
                    ("code".to_owned(), code.as_str().to_owned()),
                    ("cause".to_owned(), cause.as_str().to_owned()),
                ],
            ),
            Error::DiscountCodeAlreadyExists(code) => with_reason(
                Code::AlreadyExists,
                DOMAIN,
                "DISCOUNT_CODE_ALREADY_EXISTS",
                format!("discount code {code} already exists"),
                [("code".to_owned(), code.as_str().to_owned())],
            ),
            Error::TaxRateAlreadyExists => with_reason(
                Code::AlreadyExists,
                DOMAIN,
                "TAX_RATE_ALREADY_EXISTS",
                "a rate for this country and category starts at that time already",
                [],
            ),
            Error::TaxRateNotFound(name) => with_reason(
                Code::NotFound,
                DOMAIN,
                "TAX_RATE_NOT_FOUND",
                format!("{name} not found"),
                [("name".to_owned(), name)],
            ),
            Error::TaxRateInEffect => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "TAX_RATE_IN_EFFECT",
                "the rate has taken effect and stays as history; schedule a new rate instead",
                [],
            ),
            Error::NoShippingRule {
                country,
                currency,
                total_weight_grams,
            } => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "NO_SHIPPING_RULE",
                format!("no shipping to {country} in {currency} for {total_weight_grams} g"),
                [
                    ("country_code".to_owned(), country.as_str().to_owned()),
                    ("currency_code".to_owned(), currency.code().to_owned()),
                    (
                        "total_weight_grams".to_owned(),
                        total_weight_grams.to_string(),
                    ),
                ],
            ),
            Error::OrderIdReused => invalid_argument_with_reason(
                DOMAIN,
                "ORDER_ID_REUSED",
                &[FieldViolation::new(
                    "lines",
                    "differ from the existing reservation of this order_id",
                )],
            ),
            Error::ReservationNotFound(order_id) => {
                let name = order_id.reservation_name();
                with_reason(
                    Code::NotFound,
                    DOMAIN,
                    "RESERVATION_NOT_FOUND",
                    format!("{name} not found"),
                    [("name".to_owned(), name)],
                )
            }
            Error::ReservationExpired => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "RESERVATION_EXPIRED",
                "the reservation expired; its stock is no longer held",
                [],
            ),
            Error::ReservationReleased => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "RESERVATION_RELEASED",
                "the reservation was released",
                [],
            ),
            Error::ReservationCommitted => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "RESERVATION_COMMITTED",
                "the reservation was committed; its stock is sold",
                [],
            ),
            Error::ReservationNotCommitted(state) => with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "RESERVATION_NOT_COMMITTED",
                "only a committed reservation ships or takes units back",
                [("current_state".to_owned(), state.as_str().to_owned())],
            ),
            Error::ExceedsCommitted(skus) => reason(
                Code::FailedPrecondition,
                "EXCEEDS_COMMITTED",
                format!(
                    "more units than the reservation still holds committed: {}",
                    sku_list(&skus)
                ),
                &skus,
            ),
            Error::ExceedsShipped(skus) => reason(
                Code::FailedPrecondition,
                "EXCEEDS_SHIPPED",
                format!(
                    "more units than the reservation shipped and has not taken back: {}",
                    sku_list(&skus)
                ),
                &skus,
            ),
            Error::TooManyStreams(err) => err.into_status(DOMAIN),
            Error::StreamTooSlow => backroom_shared::streams::too_slow(DOMAIN),
            Error::TokenNoLongerValid(err) => err.into_status(DOMAIN),
            Error::ShuttingDown => unavailable(DOMAIN, "the server is shutting down; reconnect"),
            Error::StockUnreadable => unavailable(
                DOMAIN,
                "stock levels cannot be read right now; reconnect shortly",
            ),
            Error::Db(err) => err.into_status(DOMAIN),
        }
    }
}
