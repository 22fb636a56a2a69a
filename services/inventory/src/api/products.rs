//! CreateProduct, GetProduct, ListProducts, UpdateProduct.

use backroom_proto::{common::v1::Money as ProtoMoney, inventory::v1 as pb};
use backroom_shared::{
    auth::Access,
    catalog::Sku,
    clock::to_timestamp,
    errors::{FieldViolation, Violations},
    idempotency,
    money::Money,
    paging::page,
    validate::{optional_text, required_text},
};
use tonic::{Request, Response, Status};

use super::{
    InventoryApi, Retryable, anyone, caller, mutation, one_violation,
    pricing::{tax_category_from_proto, tax_category_to_proto},
};
use crate::{
    db::repo,
    domain::{
        Error,
        pricing::{MAX_OTHER_PRICES, TaxCategory},
        products::{
            CreateProduct, ListProducts, MAX_DESCRIPTION, MAX_DISPLAY_NAME, MAX_QUERY, Product,
            ProductChanges, ProductFilter, UNIT_PRICES, UpdateProduct, parse_etag, parse_weight,
        },
        values::parse_product_name,
    },
};

pub(super) async fn create(
    api: &InventoryApi,
    request: Request<pb::CreateProductRequest>,
) -> Result<Response<pb::Product>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let create = mutation::<_, CreateProduct>(&caller, request.into_inner())?;
    let created: pb::Product = create
        .run(api.store(), |conn, cmd, now| {
            Ok(repo::products::insert(conn, cmd, now)?.into())
        })
        .await?;
    tracing::info!(product = %created.name, "product created");
    Ok(Response::new(created))
}

pub(super) async fn get(
    api: &InventoryApi,
    request: Request<pb::GetProductRequest>,
) -> Result<Response<pb::Product>, Status> {
    caller(&request, anyone)?;
    let sku = parse_product_name("name", &request.get_ref().name).map_err(one_violation)?;
    let product = api
        .store()
        .read(move |conn| repo::products::get(conn, &sku))
        .await?;
    Ok(Response::new(product.into()))
}

pub(super) async fn list(
    api: &InventoryApi,
    request: Request<pb::ListProductsRequest>,
) -> Result<Response<pb::ListProductsResponse>, Status> {
    caller(&request, anyone)?;
    let list = ListProducts::try_from(request.into_inner())?;
    let page = list.page.clone();
    let products = api
        .store()
        .read(move |conn| repo::products::list(conn, &list))
        .await?;
    let (products, next_page_token) = page.finish(products, |p| p.sku.as_str().to_owned());
    Ok(Response::new(pb::ListProductsResponse {
        products: products.into_iter().map(pb::Product::from).collect(),
        next_page_token,
    }))
}

pub(super) async fn update(
    api: &InventoryApi,
    request: Request<pb::UpdateProductRequest>,
) -> Result<Response<pb::Product>, Status> {
    let caller = caller(&request, Access::require_admin)?;
    let update = mutation::<_, UpdateProduct>(&caller, request.into_inner())?;
    let updated = update
        .run(api.store(), |conn, cmd, now| {
            Ok(repo::products::update(conn, cmd, now)?.into())
        })
        .await?;
    Ok(Response::new(updated))
}

impl Retryable for pb::CreateProductRequest {
    const METHOD: &'static str = "CreateProduct";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        // The product as sent, without its output-only fields.
        let product = self.product.clone().unwrap_or_default();
        idempotency::fingerprint(&pb::Product {
            name: String::new(),
            create_time: None,
            update_time: None,
            etag: String::new(),
            ..product
        })
    }
}

impl TryFrom<pb::CreateProductRequest> for CreateProduct {
    type Error = Error;

    fn try_from(req: pb::CreateProductRequest) -> Result<Self, Error> {
        let Some(product) = req.product else {
            return Err(one_violation(FieldViolation::new("product", "is required")));
        };
        let mut violations = Violations::default();
        let sku = violations.check(Sku::parse("product.sku", &product.sku));
        let fields = ProductFields::parse(&mut violations, &product, |_| true);
        let (sku, display_name, description, unit_price, weight_grams, prices) = violations
            .finish_with((
                sku,
                fields.display_name,
                fields.description,
                fields.unit_price,
                fields.weight_grams,
                fields.prices,
            ))?;
        if prices.iter().any(|p| p.currency() == unit_price.currency()) {
            return Err(Error::field(
                "product.prices",
                "lists the unit_price's currency: one price per currency",
            ));
        }
        Ok(Self {
            sku,
            display_name,
            description,
            unit_price,
            weight_grams,
            active: product.active,
            tax_category: fields.tax_category.unwrap_or(TaxCategory::Standard),
            prices,
        })
    }
}

/// The fields UpdateProduct may change (`update_mask` paths).
const MUTABLE: [&str; 7] = [
    "display_name",
    "description",
    "unit_price",
    "weight_grams",
    "active",
    "tax_category",
    "prices",
];

impl Retryable for pb::UpdateProductRequest {
    const METHOD: &'static str = "UpdateProduct";

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn fingerprint(&self) -> Vec<u8> {
        idempotency::fingerprint(&pb::UpdateProductRequest {
            product: self.product.clone(),
            update_mask: Some(self.update_mask.clone().unwrap_or_default()),
            request_id: String::new(),
        })
    }
}

impl TryFrom<pb::UpdateProductRequest> for UpdateProduct {
    type Error = Error;

    fn try_from(req: pb::UpdateProductRequest) -> Result<Self, Error> {
        let Some(product) = req.product else {
            return Err(one_violation(FieldViolation::new("product", "is required")));
        };
        let mut violations = Violations::default();
        let sku = violations.check(parse_product_name("product.name", &product.name));
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
        let fields = ProductFields::parse(&mut violations, &product, wanted);
        let expected_version = if product.etag.is_empty() {
            Some(None)
        } else {
            violations
                .check(parse_etag("product.etag", &product.etag))
                .map(Some)
        };
        let (sku, expected_version) = violations.finish_with((sku, expected_version))?;
        Ok(Self {
            sku,
            expected_version,
            changes: ProductChanges {
                display_name: fields.display_name,
                description: fields.description,
                unit_price: fields.unit_price,
                weight_grams: fields.weight_grams,
                active: wanted("active").then_some(product.active),
                tax_category: if wanted("tax_category") {
                    Some(fields.tax_category.unwrap_or(TaxCategory::Standard))
                } else {
                    None
                },
                prices: fields.prices,
            },
        })
    }
}

impl TryFrom<pb::ListProductsRequest> for ListProducts {
    type Error = Error;

    fn try_from(req: pb::ListProductsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let query = violations.check(optional_text("query", &req.query, MAX_QUERY));
        let active = format!("{:?}", req.active);
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&active, &req.query],
        );
        let (query, page) = violations.finish_with((query, page))?;
        Ok(Self {
            filter: ProductFilter {
                active: req.active,
                query: Some(query).filter(|q| !q.is_empty()),
            },
            page,
        })
    }
}

/// A product's writable fields, each parsed when `wanted(path)` (else
/// `None`, with no violation).
#[derive(Debug, Default)]
struct ProductFields {
    display_name: Option<String>,
    description: Option<String>,
    unit_price: Option<Money>,
    weight_grams: Option<i64>,
    tax_category: Option<TaxCategory>,
    prices: Option<Vec<Money>>,
}

impl ProductFields {
    fn parse(
        violations: &mut Violations,
        product: &pb::Product,
        wanted: impl Fn(&str) -> bool,
    ) -> Self {
        let mut fields = Self::default();
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
                Some(price) => match Money::parse("product.unit_price", price, UNIT_PRICES) {
                    Ok(price) => Some(price),
                    Err(found) => {
                        violations.extend(found);
                        None
                    }
                },
            };
        }
        if wanted("weight_grams") {
            fields.weight_grams =
                violations.check(parse_weight("product.weight_grams", product.weight_grams));
        }
        if wanted("tax_category") {
            fields.tax_category = violations
                .check(tax_category_from_proto(
                    "product.tax_category",
                    product.tax_category,
                    true,
                ))
                .flatten();
        }
        if wanted("prices") {
            fields.prices = parse_prices(violations, &product.prices);
        }
        fields
    }
}

/// A product's prices in other currencies: at most [`MAX_OTHER_PRICES`],
/// one per currency, each a unit price.
fn parse_prices(violations: &mut Violations, raw: &[ProtoMoney]) -> Option<Vec<Money>> {
    if raw.len() > MAX_OTHER_PRICES {
        violations.push(
            "product.prices",
            format!("at most {MAX_OTHER_PRICES} prices"),
        );
        return None;
    }
    let mut prices: Vec<Money> = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, price) in raw.iter().enumerate() {
        let field = format!("product.prices[{i}]");
        match Money::parse(&field, price, UNIT_PRICES) {
            Ok(price) if prices.iter().any(|p| p.currency() == price.currency()) => {
                violations.push(
                    format!("{field}.currency_code"),
                    "duplicates an earlier price's currency",
                );
                ok = false;
            }
            Ok(price) => prices.push(price),
            Err(found) => {
                violations.extend(found);
                ok = false;
            }
        }
    }
    prices.sort_by_key(|p| p.currency().code());
    ok.then_some(prices)
}

impl From<Product> for pb::Product {
    fn from(product: Product) -> Self {
        Self {
            name: product.name(),
            etag: product.etag(),
            sku: product.sku.as_str().to_owned(),
            display_name: product.display_name,
            description: product.description,
            unit_price: Some(product.unit_price.into()),
            weight_grams: product.weight_grams,
            active: product.active,
            create_time: Some(to_timestamp(product.created_at)),
            update_time: Some(to_timestamp(product.updated_at)),
            tax_category: tax_category_to_proto(product.tax_category) as i32,
            prices: product.prices.into_iter().map(ProtoMoney::from).collect(),
        }
    }
}
