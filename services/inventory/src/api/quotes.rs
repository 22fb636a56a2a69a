//! QuoteOrder and ListShippingRules.

use backroom_proto::inventory::v1 as pb;
use backroom_shared::{
    catalog::parse_discount_codes, errors::Violations, money::Currency, paging::page,
    validate::optional_text,
};
use tonic::{Request, Response, Status};

use super::{InventoryApi, anyone, caller, pricing::tax_category_to_proto};
use crate::{
    db::repo,
    domain::{
        Error,
        quotes::{MAX_POSTAL_CODE, PricedLine, Quote, QuoteLine, QuoteOrder},
        shipping::{ListShippingZones, ShippingZone},
        values::{CountryCode, parse_lines},
    },
};

pub(super) async fn quote(
    api: &InventoryApi,
    request: Request<pb::QuoteOrderRequest>,
) -> Result<Response<pb::Quote>, Status> {
    caller(&request, anyone)?;
    let order = QuoteOrder::try_from(request.into_inner())?;
    let now = api.store().now();
    let quote = api
        .store()
        .read(move |conn| repo::shipping::quote(conn, &order, now))
        .await?;
    Ok(Response::new(quote.into()))
}

pub(super) async fn shipping_rules(
    api: &InventoryApi,
    request: Request<pb::ListShippingRulesRequest>,
) -> Result<Response<pb::ListShippingRulesResponse>, Status> {
    caller(&request, anyone)?;
    let list = ListShippingZones::try_from(request.into_inner())?;
    let page = list.page.clone();
    let zones = api
        .store()
        .read(move |conn| repo::shipping::zones(conn, &list))
        .await?;
    let (zones, next_page_token) = page.finish(zones, |z| z.zone.as_str().to_owned());
    Ok(Response::new(pb::ListShippingRulesResponse {
        shipping_zones: zones.into_iter().map(pb::ShippingZone::from).collect(),
        next_page_token,
    }))
}

impl TryFrom<pb::QuoteOrderRequest> for QuoteOrder {
    type Error = Error;

    fn try_from(req: pb::QuoteOrderRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let lines = parse_lines(
            &mut violations,
            req.lines.iter().map(|l| (l.sku.as_str(), l.quantity)),
        );
        let country = violations.check(CountryCode::parse(
            "destination_country_code",
            &req.destination_country_code,
        ));
        violations.check(optional_text(
            "destination_postal_code",
            &req.destination_postal_code,
            MAX_POSTAL_CODE,
        ));
        let currency = violations.check(Currency::parse("currency_code", &req.currency_code));
        let discount_codes =
            parse_discount_codes(&mut violations, "discount_codes", &req.discount_codes);
        let (country, currency) = violations.finish_with((country, currency))?;
        Ok(Self {
            lines: lines
                .into_iter()
                .map(|(sku, quantity)| QuoteLine { sku, quantity })
                .collect(),
            country,
            currency,
            discount_codes,
        })
    }
}

impl TryFrom<pb::ListShippingRulesRequest> for ListShippingZones {
    type Error = Error;

    fn try_from(req: pb::ListShippingRulesRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let page = page(&mut violations, req.page_size, &req.page_token, &[]);
        let page = violations.finish_with(page)?;
        Ok(Self { page })
    }
}

impl From<PricedLine> for pb::QuoteLine {
    fn from(line: PricedLine) -> Self {
        Self {
            sku: line.sku.as_str().to_owned(),
            display_name: line.display_name,
            quantity: line.quantity.get(),
            unit_price: Some(line.unit_price.into()),
            line_total: Some(line.line_total.into()),
            weight_grams: line.weight_grams,
            tax_category: tax_category_to_proto(line.tax_category) as i32,
            tax_rate_basis_points: line.tax_rate_bp.unwrap_or(0),
            discount: Some(line.discount.into()),
            tax: Some(line.tax.into()),
        }
    }
}

impl From<Quote> for pb::Quote {
    fn from(quote: Quote) -> Self {
        Self {
            lines: quote.lines.into_iter().map(pb::QuoteLine::from).collect(),
            subtotal: Some(quote.subtotal.into()),
            shipping: Some(quote.shipping.into()),
            shipping_zone: quote.zone.as_str().to_owned(),
            total_weight_grams: quote.total_weight_grams,
            total: Some(quote.total.into()),
            discount: Some(quote.discount.into()),
            tax: Some(quote.tax.into()),
            tax_lines: quote
                .tax_lines
                .into_iter()
                .map(|t| pb::TaxLine {
                    category: tax_category_to_proto(t.category) as i32,
                    rate_basis_points: t.rate_bp,
                    taxable_base: Some(t.taxable_base.into()),
                    tax: Some(t.tax.into()),
                    gross: Some(t.gross.into()),
                })
                .collect(),
            discounts: quote
                .discounts
                .into_iter()
                .map(|d| pb::DiscountLine {
                    code: d.code.as_str().to_owned(),
                    amount: Some(d.amount.into()),
                })
                .collect(),
            shipping_tax: Some(quote.shipping_tax.into()),
        }
    }
}

impl From<ShippingZone> for pb::ShippingZone {
    fn from(zone: ShippingZone) -> Self {
        Self {
            name: zone.zone.name(),
            zone: zone.zone.as_str().to_owned(),
            display_name: zone.display_name,
            country_codes: zone.country_codes,
            weight_bands: zone
                .bands
                .into_iter()
                .map(|band| pb::WeightBand {
                    max_weight_grams: band.max_weight_grams,
                    price: Some(band.price.into()),
                })
                .collect(),
        }
    }
}
