//! Returns and goodwill refunds — RequestReturn, ReceiveReturn,
//! ListReturns, RefundOrder: parsing, conversion of a return, and the
//! handlers.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::Caller,
    catalog::{MAX_LINES, Quantity, Sku},
    clock::to_timestamp,
    errors::{FieldViolation, Violations},
    idempotency,
    validate::{optional_text, required_text},
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{CheckoutApi, order_page, orders::parse_lines, required_request_id};
use crate::{
    api::{amount, record},
    checkout::{
        order, refund,
        refund::RefundOrder,
        repo,
        returns::{
            Disposition, MAX_NOTE, ReceiveReturn, RequestReturn, Return, ReturnReason, ReturnState,
        },
    },
    domain::{Error, OrderId, ReturnId},
};

impl TryFrom<pb::RequestReturnRequest> for RequestReturn {
    type Error = Error;

    fn try_from(req: pb::RequestReturnRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let order_id = violations.check(OrderId::parse("parent", &req.parent));
        let request_id = required_request_id(&mut violations, &req.request_id, "RequestReturn");
        if req.lines.len() > MAX_LINES {
            violations.push("lines", format!("must hold at most {MAX_LINES} lines"));
        }
        let lines = parse_lines(&mut violations, &req.lines);
        let reason = match pb::ReturnReason::try_from(req.reason) {
            Ok(pb::ReturnReason::Damaged) => Some(ReturnReason::Damaged),
            Ok(pb::ReturnReason::Defective) => Some(ReturnReason::Defective),
            Ok(pb::ReturnReason::WrongItem) => Some(ReturnReason::WrongItem),
            Ok(pb::ReturnReason::NotAsDescribed) => Some(ReturnReason::NotAsDescribed),
            Ok(pb::ReturnReason::NoLongerNeeded) => Some(ReturnReason::NoLongerNeeded),
            Ok(pb::ReturnReason::Other) => Some(ReturnReason::Other),
            Ok(pb::ReturnReason::Unspecified) | Err(_) => {
                violations.push("reason", "is required: one of the ReturnReason values");
                None
            }
        };
        let note = violations.check(optional_text("note", &req.note, MAX_NOTE));
        let fingerprint = idempotency::fingerprint(&pb::RequestReturnRequest {
            request_id: String::new(),
            ..req
        });
        let (order_id, request_id, reason, note) =
            violations.finish_with((order_id, request_id, reason, note))?;
        Ok(Self {
            order_id,
            lines,
            reason,
            note,
            request_id,
            fingerprint,
        })
    }
}

impl TryFrom<pb::ReceiveReturnRequest> for ReceiveReturn {
    type Error = Error;

    fn try_from(req: pb::ReceiveReturnRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let ids = violations.check(ReturnId::parse_nested("name", &req.name));
        if req.lines.len() > MAX_LINES {
            violations.push("lines", format!("must hold at most {MAX_LINES} lines"));
        }
        let mut dispositions: Vec<Disposition> = Vec::new();
        for (i, line) in req.lines.iter().take(MAX_LINES).enumerate() {
            let sku = violations.check(Sku::parse(&format!("lines[{i}].sku"), &line.sku));
            for (field, units) in [
                ("restock_quantity", line.restock_quantity),
                ("write_off_quantity", line.write_off_quantity),
            ] {
                if units < 0 {
                    violations.push(format!("lines[{i}].{field}"), "must not be negative");
                }
            }
            let total = line
                .restock_quantity
                .saturating_add(line.write_off_quantity);
            if line.restock_quantity >= 0 && line.write_off_quantity >= 0 {
                violations.check(Quantity::parse(&format!("lines[{i}]"), total).map_err(|_| {
                    FieldViolation::new(
                        format!("lines[{i}]"),
                        "restock_quantity + write_off_quantity must be 1–10000",
                    )
                }));
            }
            let Some(sku) = sku else { continue };
            if dispositions.iter().any(|d| d.sku == sku) {
                violations.push(format!("lines[{i}].sku"), "must not repeat a SKU");
                continue;
            }
            dispositions.push(Disposition {
                sku,
                restock: line.restock_quantity,
                write_off: line.write_off_quantity,
            });
        }
        let (order_id, id) = violations.finish_with(ids)?;
        Ok(Self {
            order_id,
            id,
            dispositions,
        })
    }
}

/// The wire form of `ret`.
pub fn return_to_proto(ret: &Return) -> pb::Return {
    pb::Return {
        name: ret.name(),
        lines: ret
            .lines
            .iter()
            .map(|line| pb::ReturnLine {
                sku: line.sku.as_str().to_owned(),
                quantity: line.quantity.get(),
                restocked_quantity: line.restocked,
                written_off_quantity: line.written_off,
            })
            .collect(),
        reason: match ret.reason {
            ReturnReason::Damaged => pb::ReturnReason::Damaged,
            ReturnReason::Defective => pb::ReturnReason::Defective,
            ReturnReason::WrongItem => pb::ReturnReason::WrongItem,
            ReturnReason::NotAsDescribed => pb::ReturnReason::NotAsDescribed,
            ReturnReason::NoLongerNeeded => pb::ReturnReason::NoLongerNeeded,
            ReturnReason::Other => pb::ReturnReason::Other,
        }
        .into(),
        note: ret.note.clone(),
        state: match ret.state {
            ReturnState::Requested => pb::ReturnState::Requested,
            ReturnState::Receiving => pb::ReturnState::Receiving,
            ReturnState::Received => pb::ReturnState::Received,
        }
        .into(),
        refund: ret.refund.map(Into::into),
        create_time: Some(to_timestamp(ret.created_at)),
        update_time: Some(to_timestamp(ret.updated_at)),
        receive_time: ret.received_at.map(to_timestamp),
    }
}

impl TryFrom<pb::RefundOrderRequest> for RefundOrder {
    type Error = Error;

    fn try_from(req: pb::RefundOrderRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let order_id = violations.check(OrderId::parse("name", &req.name));
        let request_id = required_request_id(&mut violations, &req.request_id, "RefundOrder");
        let money = match &req.amount {
            Some(raw) => amount(&mut violations, "amount", raw),
            None => {
                violations.push("amount", "is required");
                None
            }
        };
        let reason = violations.check(required_text("reason", &req.reason, refund::MAX_REASON));
        let fingerprint = idempotency::fingerprint(&pb::RefundOrderRequest {
            request_id: String::new(),
            ..req
        });
        let (order_id, request_id, amount, reason) =
            violations.finish_with((order_id, request_id, money, reason))?;
        Ok(Self {
            order_id,
            amount,
            reason,
            request_id,
            fingerprint,
        })
    }
}

impl CheckoutApi {
    #[instrument(skip_all, fields(order))]
    pub(super) async fn request_return(
        &self,
        request: Request<pb::RequestReturnRequest>,
    ) -> Result<Response<pb::Return>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = RequestReturn::try_from(request.into_inner())?;
        let id = cmd.order_id;
        record("order", id);
        let window = self.saga.config().return_window;
        let ret = self
            .store
            .write(move |conn, now| {
                // Another customer's order does not exist, as far as they
                // know; a service returns nothing.
                let found = repo::orders::find(conn, id)?.map(|order| (order, ()));
                order::visible(access, found).ok_or(Error::OrderNotFound(id))?;
                repo::returns::request(conn, &cmd, window, now)
            })
            .await?;
        tracing::info!(r#return = %ret.name(), "return requested");
        Ok(Response::new(return_to_proto(&ret)))
    }

    #[instrument(skip_all, fields(order, r#return))]
    pub(super) async fn receive_return(
        &self,
        request: Request<pb::ReceiveReturnRequest>,
    ) -> Result<Response<pb::Return>, Status> {
        Caller::of(&request)?
            .access()
            .require_admin_or_fulfillment()
            .map_err(Error::from)?;
        let cmd = ReceiveReturn::try_from(request.into_inner())?;
        let (order_id, id) = (cmd.order_id, cmd.id);
        record("order", order_id);
        record("return", id);
        let slot = self.work_slot()?;
        self.store
            .write(move |conn, now| repo::returns::receive(conn, &cmd, now))
            .await?;
        // Finished on its own task: a caller who gives up does not leave the
        // stock and the money waiting for recovery.
        let saga = self.saga.clone();
        let ret =
            super::detached(slot, async move { Ok(saga.receive(order_id, id).await?) }).await?;
        Ok(Response::new(return_to_proto(&ret)))
    }

    #[instrument(skip_all, fields(order))]
    pub(super) async fn returns(
        &self,
        request: Request<pb::ListReturnsRequest>,
    ) -> Result<Response<pb::ListReturnsResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let req = request.into_inner();
        let (id, page, after) = order_page(&req.parent, req.page_size, &req.page_token)?;
        record("order", id);
        let limit = page.fetch_limit();
        let found = self
            .store
            .read(move |conn| {
                super::visible_to_warehouse(conn, access, id)?;
                repo::returns::list(conn, id, after, limit)
            })
            .await?;
        let (returns, next_page_token) = page.finish(found, |r| r.id.to_string());
        Ok(Response::new(pb::ListReturnsResponse {
            returns: returns.iter().map(return_to_proto).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(order))]
    pub(super) async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        Caller::of(&request)?
            .access()
            .require_admin()
            .map_err(Error::from)?;
        let cmd = RefundOrder::try_from(request.into_inner())?;
        let id = cmd.order_id;
        record("order", id);
        let slot = self.work_slot()?;
        let stored = self
            .store
            .write(move |conn, now| repo::refunds::begin(conn, &cmd, now))
            .await?;
        let saga = self.saga.clone();
        super::detached(slot, async move { Ok(saga.refund(stored.id).await?) }).await?;
        let (order, lines) = self.load(id).await?;
        Ok(Response::new(super::orders::order_to_proto(&order, &lines)))
    }
}
