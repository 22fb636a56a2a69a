//! CreateRefund, GetRefund and ListRefunds: parsing, conversion and the
//! handlers.

use backroom_proto::payment::v1 as pb;
use backroom_shared::{
    auth::Caller, clock::to_timestamp, errors::Violations, idempotency, paging::page,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{PaymentApi, idempotency_key, optional_amount, record, request_id};
use crate::domain::{
    Error, IntentId, RefundId,
    intents::{self, Reach},
    refunds::{self, CreateRefund, GetRefund, ListRefunds, Refund, RefundReason, RefundStatus},
};

impl TryFrom<&pb::CreateRefundRequest> for CreateRefund {
    type Error = Error;

    fn try_from(req: &pb::CreateRefundRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let intent = violations.check(IntentId::parse("parent", &req.parent));
        let amount = optional_amount(&mut violations, "amount", req.amount.as_ref());
        let reason = match pb::RefundReason::try_from(req.reason) {
            Ok(pb::RefundReason::Unspecified) => Some(RefundReason::Unspecified),
            Ok(pb::RefundReason::RequestedByCustomer) => Some(RefundReason::RequestedByCustomer),
            Ok(pb::RefundReason::Duplicate) => Some(RefundReason::Duplicate),
            Ok(pb::RefundReason::Fraudulent) => Some(RefundReason::Fraudulent),
            Err(_) => {
                violations.push("reason", "is not a known reason");
                None
            }
        };
        let request_id = request_id(&mut violations, &req.request_id);
        let (intent, amount, reason, request_id) =
            violations.finish_with((intent, amount, reason, request_id))?;
        Ok(Self {
            intent,
            amount,
            reason,
            request_id,
        })
    }
}

impl TryFrom<pb::GetRefundRequest> for GetRefund {
    type Error = Error;

    fn try_from(req: pb::GetRefundRequest) -> Result<Self, Error> {
        let (intent, refund) = RefundId::parse_nested("name", &req.name)?;
        Ok(Self { intent, refund })
    }
}

impl TryFrom<pb::ListRefundsRequest> for ListRefunds {
    type Error = Error;

    fn try_from(req: pb::ListRefundsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let intent = violations.check(IntentId::parse("parent", &req.parent));
        let page = page(
            &mut violations,
            req.page_size,
            &req.page_token,
            &[&req.parent],
        );
        let after = page.as_ref().and_then(|p| violations.check(p.after_uuid()));
        let (intent, page, after) = violations.finish_with((intent, page, after))?;
        Ok(Self {
            intent,
            page,
            after: after.map(RefundId::from_uuid),
        })
    }
}

impl From<&Refund> for pb::Refund {
    fn from(refund: &Refund) -> Self {
        let reason = match refund.reason {
            RefundReason::Unspecified => pb::RefundReason::Unspecified,
            RefundReason::RequestedByCustomer => pb::RefundReason::RequestedByCustomer,
            RefundReason::Duplicate => pb::RefundReason::Duplicate,
            RefundReason::Fraudulent => pb::RefundReason::Fraudulent,
        };
        let status = match refund.status {
            RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
            RefundStatus::Failed => pb::RefundStatus::Failed,
        };
        Self {
            name: refund.id.name_under(refund.intent),
            amount: Some(refund.amount.into()),
            status: status.into(),
            reason: reason.into(),
            create_time: Some(to_timestamp(refund.created_at)),
            tax: Some(refund.tax.into()),
        }
    }
}

impl PaymentApi {
    #[instrument(skip_all, fields(intent))]
    pub(super) async fn refund(
        &self,
        request: Request<pb::CreateRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let caller = Caller::of(&request)?;
        let authority = self.authority(&caller);
        caller
            .access()
            .require_admin_or_service()
            .map_err(Error::from)?;
        let req = request.into_inner();
        let cmd = CreateRefund::try_from(&req)?;
        record("intent", cmd.intent);
        let key = idempotency_key(&caller, "CreateRefund", cmd.request_id)?;
        let fingerprint = idempotency::fingerprint(&pb::CreateRefundRequest {
            parent: cmd.intent.name(),
            request_id: String::new(),
            ..req
        });
        let refund = self
            .transition(key, fingerprint, move |conn, engine, _| {
                let intent = intents::lock_to_manage(conn, cmd.intent, Reach::Any, authority)?;
                let (_, refund) = engine.refund(conn, intent, cmd.amount, cmd.reason)?;
                Ok(pb::Refund::from(&refund))
            })
            .await?;
        tracing::info!(refund = %refund.name, "refund created");
        Ok(Response::new(refund))
    }

    #[instrument(skip_all, fields(intent, refund))]
    pub(super) async fn find_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = GetRefund::try_from(request.into_inner())?;
        record("intent", cmd.intent);
        record("refund", cmd.refund);
        let refund = self
            .store()
            .read(move |conn| refunds::get(conn, access, cmd))
            .await?;
        Ok(Response::new((&refund).into()))
    }

    #[instrument(skip_all, fields(intent))]
    pub(super) async fn refunds(
        &self,
        request: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        let access = Caller::of(&request)?.access();
        let cmd = ListRefunds::try_from(request.into_inner())?;
        record("intent", cmd.intent);
        let lookup = cmd.clone();
        let found = self
            .store()
            .read(move |conn| refunds::list(conn, access, &lookup))
            .await?;
        let (found, next_page_token) = cmd.page.finish(found, |r| r.id.to_string());
        Ok(Response::new(pb::ListRefundsResponse {
            refunds: found.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
