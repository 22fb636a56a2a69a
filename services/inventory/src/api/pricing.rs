//! CreateTaxRate, ListTaxRates, DeleteTaxRate; CreateDiscountCode,
//! GetDiscountCode, ListDiscountCodes, UpdateDiscountCode; and the wire
//! form of a tax category.

use backroom_proto::inventory::v1 as pb;
use backroom_shared::{
    auth::Access,
    catalog::DiscountCode,
    clock::{from_timestamp, to_timestamp},
    errors::{FieldViolation, Violations},
    idempotency,
    money::{MAX_AMOUNT, Money},
    names,
    paging::page,
};
use tonic::{Request, Response, Status};

use super::{InventoryApi, Retryable, anyone, caller, mutation, one_violation};
use crate::{
    db::repo,
    domain::{
        Error,
        pricing::{
            Benefit, CreateDiscount, CreateTaxRate, DISCOUNT_CODES, Discount, DiscountChanges,
            ListDiscounts, ListTaxRates, MAX_BASIS_POINTS, TAX_RATES, TaxCategory, TaxRate,
            UpdateDiscount,
        },
        values::CountryCode,
    },
};

/// The wire form of a tax category.
pub(crate) fn tax_category_to_proto(category: TaxCategory) -> pb::TaxCategory {
    match category {
        TaxCategory::Standard => pb::TaxCategory::Standard,
        TaxCategory::Reduced => pb::TaxCategory::Reduced,
        TaxCategory::Zero => pb::TaxCategory::Zero,
    }
}

/// A tax category a client sent at `field`: `None` for UNSPECIFIED when
/// `unspecified_ok`, else a violation (as for unknown values).
pub(crate) fn tax_category_from_proto(
    field: &str,
    raw: i32,
    unspecified_ok: bool,
) -> Result<Option<TaxCategory>, FieldViolation> {
    match pb::TaxCategory::try_from(raw) {
        Ok(pb::TaxCategory::Standard) => Ok(Some(TaxCategory::Standard)),
        Ok(pb::TaxCategory::Reduced) => Ok(Some(TaxCategory::Reduced)),
        Ok(pb::TaxCategory::Zero) => Ok(Some(TaxCategory::Zero)),
        Ok(pb::TaxCategory::Unspecified) if unspecified_ok => Ok(None),
        _ => Err(FieldViolation::new(
            field,
            "must be STANDARD, REDUCED or ZERO",
        )),
    }
}

pub(super) async fn create_rate(
    api: &InventoryApi,
    request: Request<pb::CreateTaxRateRequest>,
) -> Result<Response<pb::TaxRate>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let create = mutation::<_, CreateTaxRate>(&caller, request.into_inner())?;
    let created: pb::TaxRate = create
        .run(api.store(), |conn, cmd, now| {
            Ok(repo::pricing::insert_rate(conn, cmd, now)?.into())
        })
        .await?;
    tracing::info!(tax_rate = %created.name, country = %created.country_code, rate_bp = created.rate_basis_points, "tax rate scheduled");
    Ok(Response::new(created))
}

pub(super) async fn list_rates(
    api: &InventoryApi,
    request: Request<pb::ListTaxRatesRequest>,
) -> Result<Response<pb::ListTaxRatesResponse>, Status> {
    caller(&request, anyone)?;
    let list = ListTaxRates::try_from(request.into_inner())?;
    let page = list.page.clone();
    let rates = api
        .store()
        .read(move |conn| repo::pricing::list_rates(conn, &list))
        .await?;
    let (rates, next_page_token) = page.finish(rates, |r| r.id.to_string());
    Ok(Response::new(pb::ListTaxRatesResponse {
        tax_rates: rates.into_iter().map(pb::TaxRate::from).collect(),
        next_page_token,
    }))
}

pub(super) async fn delete_rate(
    api: &InventoryApi,
    request: Request<pb::DeleteTaxRateRequest>,
) -> Result<Response<()>, Status> {
    caller(&request, Access::require_admin)?;
    let id =
        names::parse_uuid("name", TAX_RATES, &request.get_ref().name).map_err(one_violation)?;
    api.store()
        .write(move |conn, now| repo::pricing::delete_rate(conn, id, now))
        .await?;
    tracing::info!(tax_rate = %id, "scheduled tax rate deleted");
    Ok(Response::new(()))
}

pub(super) async fn create_discount(
    api: &InventoryApi,
    request: Request<pb::CreateDiscountCodeRequest>,
) -> Result<Response<pb::DiscountCode>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let create = mutation::<_, CreateDiscount>(&caller, request.into_inner())?;
    let created: pb::DiscountCode = create
        .run(api.store(), |conn, cmd, now| {
            Ok(repo::pricing::insert_discount(conn, cmd, now)?.into())
        })
        .await?;
    tracing::info!(discount_code = %created.name, "discount code created");
    Ok(Response::new(created))
}

pub(super) async fn get_discount(
    api: &InventoryApi,
    request: Request<pb::GetDiscountCodeRequest>,
) -> Result<Response<pb::DiscountCode>, Status> {
    caller(&request, Access::require_admin)?;
    let code = parse_code_name("name", &request.get_ref().name).map_err(one_violation)?;
    let discount = api
        .store()
        .read(move |conn| repo::pricing::get_discount(conn, &code))
        .await?;
    Ok(Response::new(discount.into()))
}

pub(super) async fn list_discounts(
    api: &InventoryApi,
    request: Request<pb::ListDiscountCodesRequest>,
) -> Result<Response<pb::ListDiscountCodesResponse>, Status> {
    caller(&request, Access::require_admin)?;
    let req = request.into_inner();
    let mut violations = Violations::default();
    let page = page(&mut violations, req.page_size, &req.page_token, &[]);
    let page = violations.finish_with(page).map_err(Error::Validation)?;
    let list = ListDiscounts { page: page.clone() };
    let codes = api
        .store()
        .read(move |conn| repo::pricing::list_discounts(conn, &list))
        .await?;
    let (codes, next_page_token) = page.finish(codes, |d| d.code.as_str().to_owned());
    Ok(Response::new(pb::ListDiscountCodesResponse {
        discount_codes: codes.into_iter().map(pb::DiscountCode::from).collect(),
        next_page_token,
    }))
}

pub(super) async fn update_discount(
    api: &InventoryApi,
    request: Request<pb::UpdateDiscountCodeRequest>,
) -> Result<Response<pb::DiscountCode>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let update = mutation::<_, UpdateDiscount>(&caller, request.into_inner())?;
    let updated: pb::DiscountCode = update
        .run(api.store(), |conn, cmd, now| {
            Ok(repo::pricing::update_discount(conn, cmd, now)?.into())
        })
        .await?;
    tracing::info!(discount_code = %updated.name, active = updated.active, "discount code updated");
    Ok(Response::new(updated))
}

/// Parses `discountCodes/{code}`.
fn parse_code_name(field: &str, raw: &str) -> Result<DiscountCode, FieldViolation> {
    match raw
        .strip_prefix(DISCOUNT_CODES)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(code) if !code.contains('/') => DiscountCode::parse(field, code),
        _ => Err(FieldViolation::new(field, "must be discountCodes/{code}")),
    }
}

/// A limit (`None`: unlimited) at `field`: not negative.
fn parse_limit(violations: &mut Violations, field: &str, raw: Option<i64>) -> Option<i64> {
    match raw {
        Some(limit) if limit < 0 => {
            violations.push(field, "must not be negative");
            None
        }
        other => other,
    }
}

/// An optional timestamp at `field`.
fn parse_time(
    violations: &mut Violations,
    field: &str,
    raw: Option<&prost_types::Timestamp>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    raw.and_then(|t| violations.check(from_timestamp(field, t)))
}

impl Retryable for pb::CreateTaxRateRequest {
    const METHOD: &'static str = "CreateTaxRate";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        let rate = self.tax_rate.clone().unwrap_or_default();
        idempotency::fingerprint(&pb::TaxRate {
            name: String::new(),
            create_time: None,
            ..rate
        })
    }
}

impl TryFrom<pb::CreateTaxRateRequest> for CreateTaxRate {
    type Error = Error;

    fn try_from(req: pb::CreateTaxRateRequest) -> Result<Self, Error> {
        let Some(rate) = req.tax_rate else {
            return Err(one_violation(FieldViolation::new(
                "tax_rate",
                "is required",
            )));
        };
        let mut violations = Violations::default();
        let country = violations.check(CountryCode::parse(
            "tax_rate.country_code",
            &rate.country_code,
        ));
        let category = violations
            .check(tax_category_from_proto(
                "tax_rate.category",
                rate.category,
                false,
            ))
            .flatten();
        let rate_bp = if (0..=MAX_BASIS_POINTS).contains(&rate.rate_basis_points) {
            Some(rate.rate_basis_points)
        } else {
            violations.push(
                "tax_rate.rate_basis_points",
                format!("must be 0–{MAX_BASIS_POINTS} (1900 = 19 %)"),
            );
            None
        };
        let start_at = parse_time(
            &mut violations,
            "tax_rate.start_time",
            rate.start_time.as_ref(),
        );
        let (country, category, rate_bp) = violations.finish_with((country, category, rate_bp))?;
        Ok(Self {
            country,
            category,
            rate_bp,
            start_at,
        })
    }
}

impl TryFrom<pb::ListTaxRatesRequest> for ListTaxRates {
    type Error = Error;

    fn try_from(req: pb::ListTaxRatesRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let country = if req.country_code.is_empty() {
            None
        } else {
            violations.check(CountryCode::parse("country_code", &req.country_code))
        };
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.country_code],
        );
        let page = violations.finish_with(page)?;
        Ok(Self { country, page })
    }
}

impl From<TaxRate> for pb::TaxRate {
    fn from(rate: TaxRate) -> Self {
        Self {
            name: rate.name(),
            country_code: rate.country.as_str().to_owned(),
            category: tax_category_to_proto(rate.category) as i32,
            rate_basis_points: rate.rate_bp,
            start_time: Some(to_timestamp(rate.start_at)),
            create_time: Some(to_timestamp(rate.created_at)),
        }
    }
}

impl Retryable for pb::CreateDiscountCodeRequest {
    const METHOD: &'static str = "CreateDiscountCode";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        let code = self.discount_code.clone().unwrap_or_default();
        idempotency::fingerprint(&pb::DiscountCode {
            name: String::new(),
            times_used: 0,
            create_time: None,
            update_time: None,
            ..code
        })
    }
}

impl TryFrom<pb::CreateDiscountCodeRequest> for CreateDiscount {
    type Error = Error;

    fn try_from(req: pb::CreateDiscountCodeRequest) -> Result<Self, Error> {
        let Some(code) = req.discount_code else {
            return Err(one_violation(FieldViolation::new(
                "discount_code",
                "is required",
            )));
        };
        let mut violations = Violations::default();
        let parsed = violations.check(DiscountCode::parse("discount_code.code", &code.code));
        let money = |violations: &mut Violations, field: &str, raw: &Option<_>, low: i64| {
            raw.as_ref()
                .and_then(|m| match Money::parse(field, m, low..=MAX_AMOUNT) {
                    Ok(money) => Some(money),
                    Err(found) => {
                        violations.extend(found);
                        None
                    }
                })
        };
        let amount = money(&mut violations, "discount_code.amount", &code.amount, 1);
        let minimum_subtotal = money(
            &mut violations,
            "discount_code.minimum_subtotal",
            &code.minimum_subtotal,
            0,
        );
        let benefit = match (code.percent_basis_points, &code.amount) {
            (0, None) => {
                violations.push(
                    "discount_code.percent_basis_points",
                    "set exactly one of percent_basis_points and amount",
                );
                None
            }
            (bp, None) if (1..=MAX_BASIS_POINTS).contains(&bp) => Some(Benefit::Percent(bp)),
            (_, None) => {
                violations.push(
                    "discount_code.percent_basis_points",
                    format!("must be 1–{MAX_BASIS_POINTS} (1000 = 10 %)"),
                );
                None
            }
            (0, Some(_)) => amount.map(Benefit::Amount),
            (_, Some(_)) => {
                violations.push(
                    "discount_code.amount",
                    "set exactly one of percent_basis_points and amount",
                );
                None
            }
        };
        if let (Some(Benefit::Amount(amount)), Some(minimum)) = (benefit, minimum_subtotal)
            && amount.currency() != minimum.currency()
        {
            violations.push(
                "discount_code.minimum_subtotal.currency_code",
                "must be the amount's currency",
            );
        }
        let start_at = parse_time(
            &mut violations,
            "discount_code.start_time",
            code.start_time.as_ref(),
        );
        let end_at = parse_time(
            &mut violations,
            "discount_code.end_time",
            code.end_time.as_ref(),
        );
        let usage_limit = parse_limit(
            &mut violations,
            "discount_code.usage_limit",
            code.usage_limit,
        );
        let per_customer_limit = parse_limit(
            &mut violations,
            "discount_code.per_customer_limit",
            code.per_customer_limit,
        );
        let (parsed, benefit) = violations.finish_with((parsed, benefit))?;
        Ok(Self {
            code: parsed,
            benefit,
            minimum_subtotal,
            start_at,
            end_at,
            usage_limit,
            per_customer_limit,
            stackable: code.stackable,
            active: code.active,
        })
    }
}

/// The fields UpdateDiscountCode may change (`update_mask` paths).
const MUTABLE: [&str; 4] = ["active", "usage_limit", "per_customer_limit", "end_time"];

impl Retryable for pb::UpdateDiscountCodeRequest {
    const METHOD: &'static str = "UpdateDiscountCode";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        idempotency::fingerprint(&pb::UpdateDiscountCodeRequest {
            discount_code: self.discount_code.clone(),
            update_mask: Some(self.update_mask.clone().unwrap_or_default()),
            request_id: String::new(),
        })
    }
}

impl TryFrom<pb::UpdateDiscountCodeRequest> for UpdateDiscount {
    type Error = Error;

    fn try_from(req: pb::UpdateDiscountCodeRequest) -> Result<Self, Error> {
        let Some(discount) = req.discount_code else {
            return Err(one_violation(FieldViolation::new(
                "discount_code",
                "is required",
            )));
        };
        let mut violations = Violations::default();
        let code = violations.check(parse_code_name("discount_code.name", &discount.name));
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
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
        let changes = DiscountChanges {
            active: wanted("active").then_some(discount.active),
            usage_limit: wanted("usage_limit").then(|| {
                parse_limit(
                    &mut violations,
                    "discount_code.usage_limit",
                    discount.usage_limit,
                )
            }),
            per_customer_limit: wanted("per_customer_limit").then(|| {
                parse_limit(
                    &mut violations,
                    "discount_code.per_customer_limit",
                    discount.per_customer_limit,
                )
            }),
            end_at: wanted("end_time").then(|| {
                parse_time(
                    &mut violations,
                    "discount_code.end_time",
                    discount.end_time.as_ref(),
                )
            }),
        };
        let code = violations.finish_with(code)?;
        Ok(Self { code, changes })
    }
}

impl From<Discount> for pb::DiscountCode {
    fn from(d: Discount) -> Self {
        let (percent_basis_points, amount) = match d.benefit {
            Benefit::Percent(bp) => (bp, None),
            Benefit::Amount(amount) => (0, Some(amount.into())),
        };
        Self {
            name: d.name(),
            code: d.code.as_str().to_owned(),
            percent_basis_points,
            amount,
            minimum_subtotal: d.minimum_subtotal.map(Into::into),
            start_time: Some(to_timestamp(d.start_at)),
            end_time: d.end_at.map(to_timestamp),
            usage_limit: d.usage_limit,
            per_customer_limit: d.per_customer_limit,
            stackable: d.stackable,
            active: d.active,
            times_used: d.uses,
            create_time: Some(to_timestamp(d.created_at)),
            update_time: Some(to_timestamp(d.updated_at)),
        }
    }
}
