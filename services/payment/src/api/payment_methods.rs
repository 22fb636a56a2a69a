//! AttachPaymentMethod, GetPaymentMethod, ListPaymentMethods and
//! DetachPaymentMethod: parsing (the card into [`CardInput`] at once),
//! conversion, and the handlers.

use std::sync::Arc;

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::{AccountRef, Caller},
    clock::to_timestamp,
    errors::Violations,
    idempotency,
    paging::page,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{PaymentApi, idempotency_key, record, request_id};
use crate::domain::{
    Error, PaymentMethodId,
    card::{self, Brand, CardInput, RawCard},
    intents::resolve_customer,
    payment_methods::{
        self, AttachCard, DetachPaymentMethod, GetPaymentMethod, ListPaymentMethods, PaymentMethod,
    },
};

/// The card's expiry is judged at `now`, the service clock's.
impl TryFrom<(pb::AttachPaymentMethodRequest, DateTime<Utc>)> for AttachCard {
    type Error = Error;

    fn try_from(
        (req, now): (pb::AttachPaymentMethodRequest, DateTime<Utc>),
    ) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let card = match &req.card {
            Some(c) => CardInput::parse(
                "card",
                RawCard {
                    number: &c.number,
                    exp_month: c.exp_month,
                    exp_year: c.exp_year,
                    cvc: &c.cvc,
                    holder_name: &c.holder_name,
                },
                now,
                &mut violations,
            ),
            None => {
                violations.push("card", "is required");
                None
            }
        };
        let request_id = request_id(&mut violations, &req.request_id);
        // The request, card data included, is dropped on return.
        violations
            .finish_with((customer, card, request_id))
            .map(|(customer, card, request_id)| Self {
                customer,
                card,
                request_id,
            })
            .map_err(|found| {
                if found.iter().any(|v| v.field == "card.number") {
                    Error::InvalidCardNumber(found)
                } else if found.iter().any(|v| v.description == card::EXPIRED) {
                    Error::ExpiredCardInput(found)
                } else {
                    Error::Validation(found)
                }
            })
    }
}

impl TryFrom<pb::GetPaymentMethodRequest> for GetPaymentMethod {
    type Error = Error;

    fn try_from(req: pb::GetPaymentMethodRequest) -> Result<Self, Error> {
        Ok(Self {
            id: PaymentMethodId::parse("name", &req.name)?,
        })
    }
}

impl TryFrom<pb::ListPaymentMethodsRequest> for ListPaymentMethods {
    type Error = Error;

    fn try_from(req: pb::ListPaymentMethodsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let customer = violations.check(AccountRef::parse("customer", &req.customer));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.customer],
        );
        let after = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
        let (customer, page, after) = violations.finish_with((customer, page, after))?;
        Ok(Self {
            customer,
            page,
            after: after.map(PaymentMethodId::from_uuid),
        })
    }
}

impl TryFrom<pb::DetachPaymentMethodRequest> for DetachPaymentMethod {
    type Error = Error;

    fn try_from(req: pb::DetachPaymentMethodRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let id = violations.check(PaymentMethodId::parse("name", &req.name));
        let request_id = request_id(&mut violations, &req.request_id);
        let (id, request_id) = violations.finish_with((id, request_id))?;
        Ok(Self { id, request_id })
    }
}

fn brand_to_proto(brand: Brand) -> pb::CardBrand {
    match brand {
        Brand::Visa => pb::CardBrand::Visa,
        Brand::Mastercard => pb::CardBrand::Mastercard,
        Brand::Amex => pb::CardBrand::Amex,
        Brand::Discover => pb::CardBrand::Discover,
        Brand::Diners => pb::CardBrand::Diners,
        Brand::Jcb => pb::CardBrand::Jcb,
        Brand::UnionPay => pb::CardBrand::Unionpay,
        Brand::Other => pb::CardBrand::Other,
    }
}

impl From<&PaymentMethod> for pb::PaymentMethod {
    fn from(method: &PaymentMethod) -> Self {
        Self {
            name: method.id.name(),
            customer: method.customer.name(),
            card: Some(pb::CardDetails {
                brand: brand_to_proto(method.brand).into(),
                last4: method.last4.clone(),
                // 1–12 by construction.
                exp_month: i32::try_from(method.expiry.month).unwrap_or_default(),
                exp_year: method.expiry.year,
                fingerprint: method.fingerprint.clone(),
                holder_name: method.holder_name.clone(),
            }),
            create_time: Some(to_timestamp(method.created_at)),
        }
    }
}

impl PaymentApi {
    #[instrument(skip_all, fields(customer))]
    pub(super) async fn attach(
        &self,
        request: Request<pb::AttachPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let caller = Caller::of(&request)?;
        let access = caller.access();
        let cmd = AttachCard::try_from((request.into_inner(), self.store().now()))?;
        let customer = resolve_customer("customer", cmd.customer, access)?;
        record("customer", customer);
        payment_methods::may_manage_of(access, customer).map_err(Error::from)?;
        let key = idempotency_key(&caller, "AttachPaymentMethod", cmd.request_id)?;
        let card = cmd.card;
        let card_fingerprint = self.deps.fingerprint_key.fingerprint(&card.number);
        // The keyed card fingerprint stands in for the PAN; the CVC is left
        // out: neither is ever stored for idempotency.
        let fingerprint = idempotency::fingerprint(&pb::AttachPaymentMethodRequest {
            customer: customer.name(),
            card: Some(pb::Card {
                number: card_fingerprint.clone(),
                // 1–12 by construction.
                exp_month: i32::try_from(card.expiry.month).unwrap_or_default(),
                exp_year: card.expiry.year,
                cvc: String::new(),
                holder_name: card.holder_name.clone(),
            }),
            request_id: String::new(),
        });
        let processor = Arc::clone(&self.deps.processor);
        let method = self
            .store()
            .idempotent(key, fingerprint, move |conn, now| {
                payment_methods::attach(
                    conn,
                    now,
                    processor.as_ref(),
                    customer,
                    card.clone(),
                    card_fingerprint.clone(),
                )
                .map(|method| pb::PaymentMethod::from(&method))
            })
            .await?;
        tracing::info!(payment_method = %method.name, "payment method attached");
        Ok(Response::new(method))
    }

    #[instrument(skip_all, fields(payment_method))]
    pub(super) async fn get_method(
        &self,
        request: Request<pb::GetPaymentMethodRequest>,
    ) -> Result<Response<pb::PaymentMethod>, Status> {
        let access = Caller::of(&request)?.access();
        payment_methods::may_look_up(access).map_err(Error::from)?;
        let cmd = GetPaymentMethod::try_from(request.into_inner())?;
        record("payment_method", cmd.id);
        let method = self
            .store()
            .read(move |conn| payment_methods::get(conn, access, cmd.id))
            .await?;
        Ok(Response::new((&method).into()))
    }

    #[instrument(skip_all, fields(customer))]
    pub(super) async fn list_methods(
        &self,
        request: Request<pb::ListPaymentMethodsRequest>,
    ) -> Result<Response<pb::ListPaymentMethodsResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = ListPaymentMethods::try_from(request.into_inner())?;
        let customer = resolve_customer("customer", cmd.customer, access)?;
        record("customer", customer);
        payment_methods::may_manage_of(access, customer).map_err(Error::from)?;
        let (page, after) = (cmd.page.clone(), cmd.after);
        let methods = self
            .store()
            .read(move |conn| crate::db::repo::payment_methods::list(conn, customer, &page, after))
            .await?;
        let (methods, next_page_token) = cmd.page.finish(methods, |m| m.id.to_string());
        Ok(Response::new(pb::ListPaymentMethodsResponse {
            payment_methods: methods.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(payment_method))]
    pub(super) async fn detach(
        &self,
        request: Request<pb::DetachPaymentMethodRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let access = caller.access();
        payment_methods::may_look_up(access).map_err(Error::from)?;
        let cmd = DetachPaymentMethod::try_from(request.into_inner())?;
        record("payment_method", cmd.id);
        let key = idempotency_key(&caller, "DetachPaymentMethod", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::DetachPaymentMethodRequest {
            name: cmd.id.name(),
            request_id: String::new(),
        });
        self.store()
            .idempotent(key, fingerprint, move |conn, now| {
                payment_methods::detach(conn, now, access, cmd.id)
            })
            .await?;
        Ok(Response::new(()))
    }
}
