//! The tonic `InventoryService`: check who may call, parse the request into
//! domain values, run the repository work in a transaction, convert back.
//! The one exhaustive `Error` → `Status` mapping is [`status`].

use std::pin::Pin;

use backroom_proto::{
    common::v1::Money,
    inventory::v1::{self as pb, inventory_service_server::InventoryService},
};
use backroom_shared::{
    auth::{Caller, ROLE_ADMIN},
    clock::to_timestamp,
    errors::{
        FieldViolation, Violations, invalid_argument, invalid_argument_with_reason, unavailable,
        with_reason,
    },
    idempotency::{self, IdempotencyKey, request_key},
    paging::{self, page},
};
use chrono::{DateTime, Utc};
use diesel::{Connection as _, PgConnection};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Request, Response, Status};
use tracing::instrument;

use crate::{
    DOMAIN, Deps,
    db::{
        models::{MovementRow, ProductRow, Reservation, ShippingZone, StockLevelRow},
        repo::{
            self, Adjustment, Lock, MovementKey, ProductChanges, ProductFilter, QuoteLineRequest,
            ReserveLine,
        },
    },
    domain::{
        CurrencyCode, DEFAULT_TTL, Error, LocationId, MAX_DESCRIPTION, MAX_DISPLAY_NAME, MAX_LINES,
        MAX_NOTE, MAX_POSTAL_CODE, MAX_QUERY, MAX_TTL, MAX_WATCHED_SKUS, MIN_TTL, MinorUnits,
        MovementKind, OrderId, Price, ProductScope, Quantity, ReservationState, Sku, etag,
        optional_text, parse_country_code, parse_etag, parse_movement_parent, parse_product_name,
        parse_product_parent, parse_stock_level_name, parse_weight, product_name, required_text,
        sku_list, stock_level_name,
    },
};

/// Attempts of a transaction that lost a race (serialization failure,
/// deadlock, or a unique-key race another attempt resolves).
const MAX_ATTEMPTS: u32 = 5;

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

    fn now(&self) -> DateTime<Utc> {
        self.deps.clock.now()
    }

    /// Runs `work` in a transaction guarded by the request id (AIP-155),
    /// running it again when it lost a race (ABORTED CONFLICT: never stored,
    /// never shown to the client while attempts remain).
    async fn idempotent<R, F>(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: Vec<u8>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default + Send + 'static,
        F: Fn(&mut PgConnection, DateTime<Utc>) -> Result<R, Error> + Send + 'static,
    {
        let now = self.now();
        self.deps
            .pool
            .run(move |conn| {
                let mut attempt = 1;
                loop {
                    let outcome =
                        idempotency::run(conn, DOMAIN, key.as_ref(), &fingerprint, now, |conn| {
                            work(conn, now).map_err(status)
                        });
                    match outcome {
                        Err(err) if attempt < MAX_ATTEMPTS && lost_race(&err) => {
                            tracing::debug!(attempt, "transaction lost a race, retrying");
                            attempt += 1;
                            backoff(attempt);
                        }
                        outcome => return Ok::<_, Error>(outcome),
                    }
                }
            })
            .await
            .map_err(status)?
    }

    /// Runs `work` in a plain transaction (reads that may expire holds),
    /// retried like [`Self::idempotent`].
    async fn tx<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: Fn(&mut PgConnection, DateTime<Utc>) -> Result<T, Error> + Send + 'static,
    {
        let now = self.now();
        self.deps
            .pool
            .run(move |conn| {
                let mut attempt = 1;
                loop {
                    match conn.transaction(|conn| work(conn, now)) {
                        Err(Error::Db(err)) if attempt < MAX_ATTEMPTS && err.is_retryable() => {
                            attempt += 1;
                            backoff(attempt);
                        }
                        result => return result,
                    }
                }
            })
            .await
            .map_err(status)
    }

    /// Runs read-only work on the pool.
    async fn db<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, Error> + Send + 'static,
    {
        self.deps.pool.run(work).await.map_err(status)
    }
}

/// Whether a status is a lost race the same work may win on a new attempt.
fn lost_race(status: &Status) -> bool {
    status.code() == Code::Aborted
        && backroom_shared::errors::reason_of(status).as_deref() == Some("CONFLICT")
}

/// A short, growing pause before another attempt (on the blocking pool).
fn backoff(attempt: u32) {
    std::thread::sleep(std::time::Duration::from_millis(u64::from(attempt) * 3));
}

fn validation(violations: Vec<FieldViolation>) -> Status {
    invalid_argument(DOMAIN, &violations)
}

fn skus_metadata(skus: &[String]) -> (String, String) {
    ("skus".to_owned(), sku_list(skus))
}

/// The one mapping of domain errors to statuses; exhaustive on purpose.
fn status(err: Error) -> Status {
    let reason = |code: Code, reason: &str, message: String, skus: &[String]| {
        with_reason(code, DOMAIN, reason, message, [skus_metadata(skus)])
    };
    match err {
        Error::Validation(violations) => validation(violations),
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
        Error::StockLevelNotFound(name) => with_reason(
            Code::NotFound,
            DOMAIN,
            "STOCK_LEVEL_NOT_FOUND",
            format!("{name} not found"),
            [("name".to_owned(), name)],
        ),
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
        Error::CurrencyMismatch(skus) => reason(
            Code::FailedPrecondition,
            "CURRENCY_MISMATCH",
            format!("products priced in another currency: {}", sku_list(&skus)),
            &skus,
        ),
        Error::NoShippingRule {
            country_code,
            currency_code,
            total_weight_grams,
        } => with_reason(
            Code::FailedPrecondition,
            DOMAIN,
            "NO_SHIPPING_RULE",
            format!("no shipping to {country_code} in {currency_code} for {total_weight_grams} g"),
            [
                ("country_code".to_owned(), country_code),
                ("currency_code".to_owned(), currency_code),
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
        Error::ReservationNotFound(name) => with_reason(
            Code::NotFound,
            DOMAIN,
            "RESERVATION_NOT_FOUND",
            format!("{name} not found"),
            [("name".to_owned(), name)],
        ),
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

// ------------------------------------------------------------ conversions

fn money(currency: &str, amount: MinorUnits) -> Option<Money> {
    Some(Money {
        currency_code: currency.to_owned(),
        amount_minor: amount.0,
    })
}

fn product_to_proto(row: &ProductRow) -> pb::Product {
    pb::Product {
        name: product_name(&row.sku),
        sku: row.sku.clone(),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        unit_price: money(&row.currency_code, MinorUnits(row.price_minor)),
        weight_grams: row.weight_grams,
        active: row.active,
        create_time: Some(to_timestamp(row.created_at)),
        update_time: Some(to_timestamp(row.updated_at)),
        etag: etag(row.version),
    }
}

fn level_to_proto(row: &StockLevelRow) -> pb::StockLevel {
    pb::StockLevel {
        name: stock_level_name(&row.sku, &row.location),
        sku: row.sku.clone(),
        location: row.location.clone(),
        on_hand: row.on_hand,
        available: row.available,
        reserved: row.reserved,
        committed: row.committed,
        version: row.version,
        update_time: Some(to_timestamp(row.updated_at)),
    }
}

fn movement_to_proto(row: &MovementRow) -> pb::StockMovement {
    let kind = match MovementKind::from_stored(&row.kind) {
        MovementKind::Adjustment => pb::StockMovementKind::Adjustment,
        MovementKind::Reserve => pb::StockMovementKind::Reserve,
        MovementKind::Release => pb::StockMovementKind::Release,
        MovementKind::Commit => pb::StockMovementKind::Commit,
        MovementKind::Expire => pb::StockMovementKind::Expire,
    };
    pb::StockMovement {
        name: format!(
            "{}/stockMovements/{}",
            stock_level_name(&row.sku, &row.location),
            row.sequence
        ),
        sku: row.sku.clone(),
        location: row.location.clone(),
        kind: kind as i32,
        delta_on_hand: row.delta_on_hand,
        delta_available: row.delta_available,
        delta_reserved: row.delta_reserved,
        delta_committed: row.delta_committed,
        reason: i32::from(row.reason),
        note: row.note.clone(),
        reservation: row
            .order_id
            .map(|id| OrderId(id).reservation_name())
            .unwrap_or_default(),
        create_time: Some(to_timestamp(row.created_at)),
        sequence: row.sequence,
    }
}

fn reservation_to_proto(reservation: &Reservation, now: DateTime<Utc>) -> pb::Reservation {
    let state = match reservation.state_at(now) {
        ReservationState::Active => pb::ReservationState::Active,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    };
    pb::Reservation {
        name: reservation.order_id.reservation_name(),
        order_id: reservation.order_id.to_string(),
        lines: reservation
            .lines
            .iter()
            .map(|l| pb::ReservationLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                location: l.location.clone(),
            })
            .collect(),
        state: state as i32,
        expire_time: Some(to_timestamp(reservation.expire_at)),
        create_time: Some(to_timestamp(reservation.created_at)),
        update_time: Some(to_timestamp(reservation.updated_at)),
    }
}

fn zone_to_proto(zone: &ShippingZone) -> pb::ShippingZone {
    pb::ShippingZone {
        name: format!("shippingZones/{}", zone.zone),
        zone: zone.zone.clone(),
        display_name: zone.display_name.clone(),
        country_codes: zone.country_codes.clone(),
        weight_bands: zone
            .rates
            .iter()
            .map(|r| pb::WeightBand {
                max_weight_grams: r.max_weight_grams,
                price: money(&r.currency_code, MinorUnits(r.price_minor)),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------- parsing

fn bad_token() -> Status {
    validation(vec![paging::bad_token()])
}

/// Parses request lines: 1–100, distinct SKUs, quantities in range.
fn parse_lines<'a>(
    violations: &mut Violations,
    lines: impl ExactSizeIterator<Item = (&'a str, i64)>,
) -> Vec<(Sku, Quantity)> {
    let count = lines.len();
    if count == 0 {
        violations.push("lines", "at least one line is required");
    } else if count > MAX_LINES {
        violations.push("lines", format!("at most {MAX_LINES} lines"));
        return Vec::new();
    }
    let mut parsed = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::new();
    for (i, (sku, quantity)) in lines.enumerate() {
        let sku = violations.check(Sku::parse(&format!("lines[{i}].sku"), sku));
        let quantity = violations.check(Quantity::parse(&format!("lines[{i}].quantity"), quantity));
        if let Some(sku) = &sku
            && !seen.insert(sku.clone())
        {
            violations.push(format!("lines[{i}].sku"), "duplicates an earlier line");
        }
        if let (Some(sku), Some(quantity)) = (sku, quantity) {
            parsed.push((sku, quantity));
        }
    }
    parsed
}

/// A product's writable fields, each parsed when `wanted(path)`.
#[derive(Debug, Default)]
struct ProductFields {
    display_name: Option<String>,
    description: Option<String>,
    unit_price: Option<Price>,
    weight_grams: Option<i64>,
}

fn parse_product_fields(
    violations: &mut Violations,
    product: &pb::Product,
    wanted: impl Fn(&str) -> bool,
) -> ProductFields {
    let mut fields = ProductFields::default();
    if wanted("display_name") {
        fields.display_name = violations.check(required_text(
            "product.display_name",
            &product.display_name,
            MAX_DISPLAY_NAME,
        ));
    }
    if wanted("description") {
        fields.description = violations.check(optional_text(
            "product.description",
            &product.description,
            MAX_DESCRIPTION,
        ));
    }
    if wanted("unit_price") {
        fields.unit_price = match &product.unit_price {
            None => {
                violations.push("product.unit_price", "is required");
                None
            }
            Some(price) => {
                match Price::parse(
                    "product.unit_price",
                    &price.currency_code,
                    price.amount_minor,
                ) {
                    Ok(price) => Some(price),
                    Err(found) => {
                        violations.extend(found);
                        None
                    }
                }
            }
        };
    }
    if wanted("weight_grams") {
        fields.weight_grams =
            violations.check(parse_weight("product.weight_grams", product.weight_grams));
    }
    fields
}

/// Parses a reservation resource name (`reservations/{order_id}`).
fn parse_reservation(field: &str, name: &str) -> Result<OrderId, Status> {
    OrderId::parse_reservation_name(field, name).map_err(|v| validation(vec![v]))
}

fn require_service_or_admin(caller: &Caller) -> Result<(), Status> {
    if caller.is_admin() {
        Ok(())
    } else {
        caller.require_service()
    }
}

/// What a WatchStock stream sends.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::StockLevel, Status>> + Send>>;

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[instrument(skip_all)]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CreateProduct",
            Some(&caller),
        );
        let Some(product) = req.product else {
            violations.push("product", "is required");
            return Err(validation(violations.finish().err().unwrap_or_default()));
        };
        let sku = violations.check(Sku::parse("product.sku", &product.sku));
        let fields = parse_product_fields(&mut violations, &product, |_| true);
        violations.finish().map_err(validation)?;
        let (
            Some(sku),
            ProductFields {
                display_name: Some(display_name),
                description: Some(description),
                unit_price: Some(unit_price),
                weight_grams: Some(weight_grams),
            },
        ) = (sku, fields)
        else {
            unreachable!("no violations means every field parsed");
        };
        let fingerprint = idempotency::fingerprint(&pb::Product {
            name: String::new(),
            create_time: None,
            update_time: None,
            etag: String::new(),
            ..product
        });
        let created = self
            .idempotent(key, fingerprint, move |conn, now| {
                let row = ProductRow {
                    sku: sku.as_str().to_owned(),
                    display_name: display_name.clone(),
                    description: description.clone(),
                    currency_code: unit_price.currency.as_str().to_owned(),
                    price_minor: unit_price.amount.0,
                    weight_grams,
                    active: product.active,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                Ok(product_to_proto(&repo::insert_product(conn, &row)?))
            })
            .await?;
        tracing::info!(product = %created.name, "product created");
        Ok(Response::new(created))
    }

    #[instrument(skip_all)]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        Caller::of(&request)?;
        let sku =
            parse_product_name("name", &request.get_ref().name).map_err(|v| validation(vec![v]))?;
        let row = self.db(move |conn| repo::get_product(conn, &sku)).await?;
        Ok(Response::new(product_to_proto(&row)))
    }

    #[instrument(skip_all)]
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let query = violations
            .check(optional_text("query", &req.query, MAX_QUERY))
            .filter(|q| !q.is_empty());
        let active = format!("{:?}", req.active);
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&active, &req.query],
        );
        violations.finish().map_err(validation)?;
        let Some(page) = page else {
            unreachable!("no violations means the page parsed");
        };
        let filter = ProductFilter {
            active: req.active,
            query,
        };
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_products(conn, &filter, &lookup))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.sku.clone());
        Ok(Response::new(pb::ListProductsResponse {
            products: rows.iter().map(product_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::Product>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "UpdateProduct",
            Some(&caller),
        );
        let Some(product) = req.product else {
            violations.push("product", "is required");
            return Err(validation(violations.finish().err().unwrap_or_default()));
        };
        let sku = violations.check(parse_product_name("product.name", &product.name));
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        const MUTABLE: [&str; 5] = [
            "display_name",
            "description",
            "unit_price",
            "weight_grams",
            "active",
        ];
        if paths.is_empty() {
            violations.push(
                "update_mask",
                format!("name at least one field: {}", MUTABLE.join(", ")),
            );
        }
        for path in &paths {
            if !MUTABLE.contains(&path.as_str()) {
                violations.push(
                    "update_mask",
                    format!("unknown or immutable field {path:?}"),
                );
            }
        }
        let wanted = |field: &str| paths.iter().any(|p| p == field);
        let fields = parse_product_fields(&mut violations, &product, wanted);
        let expected_version = if product.etag.is_empty() {
            None
        } else {
            violations.check(parse_etag("product.etag", &product.etag))
        };
        violations.finish().map_err(validation)?;
        let Some(sku) = sku else {
            unreachable!("no violations means the name parsed");
        };
        let changes = ProductChanges {
            display_name: fields.display_name,
            description: fields.description,
            unit_price: fields
                .unit_price
                .map(|p| (p.currency.as_str().to_owned(), p.amount.0)),
            weight_grams: fields.weight_grams,
            active: wanted("active").then_some(product.active),
        };
        let fingerprint = idempotency::fingerprint(&pb::UpdateProductRequest {
            product: Some(product),
            update_mask: Some(prost_types::FieldMask { paths }),
            request_id: String::new(),
        });
        let updated = self
            .idempotent(key, fingerprint, move |conn, now| {
                let row = repo::update_product(conn, &sku, expected_version, changes.clone(), now)?;
                Ok(product_to_proto(&row))
            })
            .await?;
        Ok(Response::new(updated))
    }

    #[instrument(skip_all)]
    async fn get_stock_level(
        &self,
        request: Request<pb::GetStockLevelRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        Caller::of(&request)?;
        let (sku, location) = parse_stock_level_name("name", &request.get_ref().name)
            .map_err(|v| validation(vec![v]))?;
        let level = self
            .tx(move |conn, now| {
                // Holds past their expiry do not count: give them back first.
                repo::expire_due(conn, Some(&[sku.to_string()]), now, Lock::SkipLocked)?;
                repo::get_level(conn, &sku, &location)
            })
            .await?;
        Ok(Response::new(level_to_proto(&level)))
    }

    #[instrument(skip_all)]
    async fn list_stock_levels(
        &self,
        request: Request<pb::ListStockLevelsRequest>,
    ) -> Result<Response<pb::ListStockLevelsResponse>, Status> {
        Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let scope = violations.check(parse_product_parent("parent", &req.parent));
        let location = if req.location.is_empty() {
            None
        } else {
            violations.check(LocationId::parse("location", &req.location))
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent, &req.location],
        );
        violations.finish().map_err(validation)?;
        let (Some(scope), Some(page)) = (scope, page) else {
            unreachable!("no violations means every field parsed");
        };
        let after = page
            .after
            .as_deref()
            .map(|after| {
                after
                    .split_once('/')
                    .map(|(s, l)| (s.to_owned(), l.to_owned()))
                    .ok_or_else(bad_token)
            })
            .transpose()?;
        let lookup = page.clone();
        let rows = self
            .tx(move |conn, now| {
                let skus = match &scope {
                    ProductScope::All => None,
                    ProductScope::One(sku) => Some(vec![sku.to_string()]),
                };
                repo::expire_due(conn, skus.as_deref(), now, Lock::SkipLocked)?;
                repo::list_levels(conn, &scope, location.as_ref(), &lookup, after.clone())
            })
            .await?;
        let (rows, next_page_token) = page.finish(rows, |l| format!("{}/{}", l.sku, l.location));
        Ok(Response::new(pb::ListStockLevelsResponse {
            stock_levels: rows.iter().map(level_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::StockLevel>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "AdjustStock",
            Some(&caller),
        );
        let name = violations.check(parse_stock_level_name("name", &req.name));
        use pb::StockAdjustmentReason as Reason;
        let reason = match Reason::try_from(req.reason) {
            Ok(Reason::Unspecified) | Err(_) => {
                violations.push("reason", "is required (a StockAdjustmentReason)");
                None
            }
            Ok(reason) => Some(reason),
        };
        if req.delta == 0 {
            violations.push("delta", "must not be zero");
        } else {
            match reason {
                Some(Reason::Received | Reason::Returned) if req.delta < 0 => {
                    violations.push("delta", "must be positive for this reason")
                }
                Some(Reason::Damaged | Reason::Lost) if req.delta > 0 => {
                    violations.push("delta", "must be negative for this reason")
                }
                _ => {}
            }
        }
        let note = violations.check(optional_text("note", &req.note, MAX_NOTE));
        if req.expected_version < 0 {
            violations.push("expected_version", "must not be negative");
        }
        violations.finish().map_err(validation)?;
        let (Some((sku, location)), Some(reason), Some(note)) = (name, reason, note) else {
            unreachable!("no violations means every field parsed");
        };
        let cmd = Adjustment {
            sku,
            location,
            delta: req.delta,
            // Proto enum values are small.
            reason: i16::try_from(reason as i32).unwrap_or(0),
            note,
            expected_version: req.expected_version,
        };
        let fingerprint = idempotency::fingerprint(&pb::AdjustStockRequest {
            request_id: String::new(),
            ..req
        });
        let level = self
            .idempotent(key, fingerprint, move |conn, now| {
                Ok(level_to_proto(&repo::adjust_stock(conn, &cmd, now)?))
            })
            .await?;
        tracing::info!(level = %level.name, version = level.version, "stock adjusted");
        Ok(Response::new(level))
    }

    #[instrument(skip_all)]
    async fn list_stock_movements(
        &self,
        request: Request<pb::ListStockMovementsRequest>,
    ) -> Result<Response<pb::ListStockMovementsResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_role(ROLE_ADMIN)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let scope = violations.check(parse_movement_parent("parent", &req.parent));
        let order_id = if req.reservation.is_empty() {
            None
        } else {
            violations.check(OrderId::parse_reservation_name(
                "reservation",
                &req.reservation,
            ))
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent, &req.reservation],
        );
        violations.finish().map_err(validation)?;
        let (Some(scope), Some(page)) = (scope, page) else {
            unreachable!("no violations means every field parsed");
        };
        let after = page
            .after
            .as_deref()
            .map(|after| MovementKey::decode(after).ok_or_else(bad_token))
            .transpose()?;
        let lookup = page.clone();
        let rows = self
            .db(move |conn| repo::list_movements(conn, &scope, order_id, &lookup, after))
            .await?;
        let (rows, next_page_token) = page.finish(rows, |m| MovementKey::of(m).encode());
        Ok(Response::new(pb::ListStockMovementsResponse {
            stock_movements: rows.iter().map(movement_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn quote_order(
        &self,
        request: Request<pb::QuoteOrderRequest>,
    ) -> Result<Response<pb::Quote>, Status> {
        Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let lines = parse_lines(
            &mut violations,
            req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
        );
        let country = violations.check(parse_country_code(
            "destination_country_code",
            &req.destination_country_code,
        ));
        violations.check(optional_text(
            "destination_postal_code",
            &req.destination_postal_code,
            MAX_POSTAL_CODE,
        ));
        let currency = violations.check(CurrencyCode::parse("currency_code", &req.currency_code));
        violations.finish().map_err(validation)?;
        let (Some(country), Some(currency)) = (country, currency) else {
            unreachable!("no violations means every field parsed");
        };
        let lines: Vec<QuoteLineRequest> = lines
            .into_iter()
            .map(|(sku, quantity)| QuoteLineRequest { sku, quantity })
            .collect();
        let quote = self
            .db(move |conn| repo::quote(conn, &lines, &country, currency.as_str()))
            .await?;
        let c = quote.currency.as_str();
        Ok(Response::new(pb::Quote {
            lines: quote
                .lines
                .iter()
                .map(|l| pb::QuoteLine {
                    sku: l.sku.clone(),
                    display_name: l.display_name.clone(),
                    quantity: l.quantity,
                    unit_price: money(c, l.unit_price),
                    line_total: money(c, l.line_total),
                    weight_grams: l.weight_grams,
                })
                .collect(),
            subtotal: money(c, quote.subtotal),
            shipping: money(c, quote.shipping),
            shipping_zone: quote.zone.clone(),
            total_weight_grams: quote.total_weight_grams,
            total: money(c, quote.total),
        }))
    }

    #[instrument(skip_all)]
    async fn list_shipping_rules(
        &self,
        request: Request<pb::ListShippingRulesRequest>,
    ) -> Result<Response<pb::ListShippingRulesResponse>, Status> {
        Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let page = page(&mut violations, req.page_size, &req.page_token, &[]);
        violations.finish().map_err(validation)?;
        let Some(page) = page else {
            unreachable!("no violations means the page parsed");
        };
        let lookup = page.clone();
        let zones = self
            .db(move |conn| repo::list_shipping_zones(conn, &lookup))
            .await?;
        let (zones, next_page_token) = page.finish(zones, |z| z.zone.clone());
        Ok(Response::new(pb::ListShippingRulesResponse {
            shipping_zones: zones.iter().map(zone_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_service()?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "ReserveStock",
            Some(&caller),
        );
        let order_id = violations.check(OrderId::parse("order_id", &req.order_id));
        let parsed = parse_lines(
            &mut violations,
            req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
        );
        let mut locations = Vec::with_capacity(req.lines.len());
        for (i, line) in req.lines.iter().enumerate().take(MAX_LINES) {
            locations.push(if line.location.is_empty() {
                None
            } else {
                violations.check(LocationId::parse(
                    &format!("lines[{i}].location"),
                    &line.location,
                ))
            });
        }
        let ttl = match &req.ttl {
            None => Some(DEFAULT_TTL),
            Some(ttl) => {
                // try_seconds: a hostile `seconds` (i64::MAX) must be a
                // violation, not chrono's overflow panic.
                let ttl = chrono::Duration::try_seconds(ttl.seconds)
                    .filter(|_| (0..1_000_000_000).contains(&ttl.nanos))
                    .map(|whole| whole + chrono::Duration::nanoseconds(i64::from(ttl.nanos)));
                match ttl {
                    Some(ttl) if (MIN_TTL..=MAX_TTL).contains(&ttl) => Some(ttl),
                    _ => {
                        violations.push("ttl", "must be between 1 s and 1 h");
                        None
                    }
                }
            }
        };
        violations.finish().map_err(validation)?;
        let (Some(order_id), Some(ttl)) = (order_id, ttl) else {
            unreachable!("no violations means every field parsed");
        };
        // Without violations every line parsed, in request order.
        let lines: Vec<ReserveLine> = parsed
            .into_iter()
            .zip(locations)
            .map(|((sku, quantity), location)| ReserveLine {
                sku,
                quantity,
                location,
            })
            .collect();
        let fingerprint = idempotency::fingerprint(&pb::ReserveStockRequest {
            request_id: String::new(),
            ..req
        });
        let reservation = self
            .idempotent(key, fingerprint, move |conn, now| {
                let reservation = repo::reserve(conn, order_id, &lines, ttl, now)?;
                Ok(reservation_to_proto(&reservation, now))
            })
            .await?;
        Ok(Response::new(reservation))
    }

    #[instrument(skip_all)]
    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_service()?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "CommitReservation",
            Some(&caller),
        );
        let order_id = violations.check(OrderId::parse_reservation_name("name", &req.name));
        violations.finish().map_err(validation)?;
        let Some(order_id) = order_id else {
            unreachable!("no violations means the name parsed");
        };
        let fingerprint = idempotency::fingerprint(&pb::CommitReservationRequest {
            name: order_id.reservation_name(),
            request_id: String::new(),
        });
        let reservation = self
            .idempotent(key, fingerprint, move |conn, now| {
                Ok(reservation_to_proto(
                    &repo::commit(conn, order_id, now)?,
                    now,
                ))
            })
            .await?;
        tracing::info!(reservation = %reservation.name, "reservation committed");
        Ok(Response::new(reservation))
    }

    #[instrument(skip_all)]
    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_service()?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        let key = request_key(
            &mut violations,
            &req.request_id,
            "ReleaseReservation",
            Some(&caller),
        );
        let order_id = violations.check(OrderId::parse_reservation_name("name", &req.name));
        violations.finish().map_err(validation)?;
        let Some(order_id) = order_id else {
            unreachable!("no violations means the name parsed");
        };
        let fingerprint = idempotency::fingerprint(&pb::ReleaseReservationRequest {
            name: order_id.reservation_name(),
            request_id: String::new(),
        });
        let reservation = self
            .idempotent(key, fingerprint, move |conn, now| {
                Ok(reservation_to_proto(
                    &repo::release(conn, order_id, now)?,
                    now,
                ))
            })
            .await?;
        Ok(Response::new(reservation))
    }

    #[instrument(skip_all)]
    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let caller = Caller::of(&request)?;
        require_service_or_admin(&caller)?;
        let order_id = parse_reservation("name", &request.get_ref().name)?;
        let reservation = self
            .db(move |conn| repo::load_reservation(conn, order_id, false))
            .await?;
        Ok(Response::new(reservation_to_proto(
            &reservation,
            self.now(),
        )))
    }

    type WatchStockStream = WatchStream;

    #[instrument(skip_all)]
    async fn watch_stock(
        &self,
        request: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let mut violations = Violations::default();
        if req.skus.is_empty() {
            violations.push("skus", "at least one SKU is required");
        } else if req.skus.len() > MAX_WATCHED_SKUS {
            violations.push("skus", format!("at most {MAX_WATCHED_SKUS} SKUs"));
        }
        let mut skus: Vec<Sku> = Vec::with_capacity(req.skus.len());
        for (i, raw) in req.skus.iter().enumerate().take(MAX_WATCHED_SKUS) {
            if let Some(sku) = violations.check(Sku::parse(&format!("skus[{i}]"), raw)) {
                if skus.contains(&sku) {
                    violations.push(format!("skus[{i}]"), "duplicates an earlier SKU");
                } else {
                    skus.push(sku);
                }
            }
        }
        let location = if req.location.is_empty() {
            None
        } else {
            violations.check(LocationId::parse("location", &req.location))
        };
        violations.finish().map_err(validation)?;
        // The cap first: a caller at it costs no query.
        let slot = self.deps.watch.reserve(&caller).map_err(status)?;
        let check: Vec<String> = skus.iter().map(|sku| sku.as_str().to_owned()).collect();
        self.db(move |conn| {
            let refs: Vec<&str> = check.iter().map(String::as_str).collect();
            repo::require_products(conn, &refs).map(|_| ())
        })
        .await?;
        let levels = self
            .deps
            .watch
            .subscribe(slot, caller, skus, location)
            .map_err(status)?;
        Ok(Response::new(Box::pin(levels.map(|item| {
            item.map(|level| level_to_proto(&level)).map_err(status)
        }))))
    }
}

/// Sweeps expired reservations every `interval` until shutdown.
pub async fn run_sweeper(deps: Deps, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = deps.shutdown.triggered() => return,
        }
        match crate::sweep_expired(&deps.pool, deps.clock.now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired reservations swept"),
            Err(err) => tracing::warn!(%err, "sweeping expired reservations failed"),
        }
    }
}
