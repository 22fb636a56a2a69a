//! What the other services need from the account service: the keys that
//! verify every access token (GetJwks), service tokens for their own calls
//! (IssueServiceToken), and the accounts whose older tokens no longer count
//! (ListTokenRevocations).

use backroom_proto::account::v1 as pb;
use backroom_shared::{
    auth::{LEEWAY_SECS, audience},
    clock::to_timestamp,
    errors::Violations,
    paging::{PageRequest, fingerprint as page_fingerprint},
};
use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, instrument};
use uuid::Uuid;

use super::{AccountApi, account_name};
use crate::{
    db::repo,
    domain::{Error, Password},
};

#[instrument(skip_all)]
pub(super) async fn get_jwks(
    api: &AccountApi,
    _request: Request<pb::GetJwksRequest>,
) -> Result<Response<pb::Jwks>, Status> {
    let keys = api
        .deps
        .issuer
        .keys()
        .public_keys()
        .into_iter()
        .map(|key| pb::Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: key.x,
            kid: key.kid,
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        })
        .collect();
    Ok(Response::new(pb::Jwks { keys }))
}

/// An IssueServiceToken request, parsed.
#[derive(Debug)]
struct IssueServiceToken {
    client_id: String,
    secret: Password,
    /// A Backroom audience.
    audience: String,
}

impl TryFrom<pb::IssueServiceTokenRequest> for IssueServiceToken {
    type Error = Error;

    fn try_from(req: pb::IssueServiceTokenRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if req.client_id.is_empty() || req.client_id.len() > 100 {
            violations.push("client_id", "is required (at most 100 characters)");
        }
        let secret = violations.check(Password::presented("client_secret", &req.client_secret));
        if req.audience.is_empty() {
            violations.push("audience", "is required");
        }
        let secret = violations.finish_with(secret)?;
        if !audience::ALL.contains(&req.audience.as_str()) {
            return Err(Error::UnknownAudience);
        }
        Ok(Self {
            client_id: req.client_id,
            secret,
            audience: req.audience,
        })
    }
}

#[instrument(skip_all, fields(client = Empty))]
pub(super) async fn issue_service_token(
    api: &AccountApi,
    request: Request<pb::IssueServiceTokenRequest>,
) -> Result<Response<pb::ServiceToken>, Status> {
    let cmd = IssueServiceToken::try_from(request.into_inner())?;
    let deps = &api.deps;
    let client = deps
        .clients
        .authenticate(&deps.hasher, &cmd.client_id, &cmd.secret, &cmd.audience)
        .await?;
    Span::current().record("client", client.id.as_str());
    let (access_token, expires) = deps.issuer.issue_for_service(
        &client.id,
        &client.roles,
        &cmd.audience,
        deps.store.now(),
    )?;
    Ok(Response::new(pb::ServiceToken {
        access_token,
        expire_time: Some(to_timestamp(expires)),
        token_type: "Bearer".into(),
    }))
}

/// A ListTokenRevocations request, parsed.
#[derive(Debug)]
struct ListTokenRevocations {
    page: PageRequest,
    after: Option<Uuid>,
}

impl TryFrom<pb::ListTokenRevocationsRequest> for ListTokenRevocations {
    type Error = Error;

    fn try_from(req: pb::ListTokenRevocationsRequest) -> Result<Self, Error> {
        // Verifiers read the whole list every few seconds: larger pages.
        let page = PageRequest::parse_with_limits(
            req.page_size,
            &req.page_token,
            page_fingerprint(&[]),
            500,
            1000,
        )?;
        let after = page.after_uuid()?;
        Ok(Self { page, after })
    }
}

#[instrument(skip_all)]
pub(super) async fn list_token_revocations(
    api: &AccountApi,
    request: Request<pb::ListTokenRevocationsRequest>,
) -> Result<Response<pb::ListTokenRevocationsResponse>, Status> {
    let caller = api.caller(&request).await?;
    caller
        .access()
        .require_admin_or_service()
        .map_err(Error::from)?;
    let ListTokenRevocations { page, after } =
        ListTokenRevocations::try_from(request.into_inner())?;
    // Tokens issued before an older change have expired anyway.
    let since = api.deps.store.now()
        - api.deps.issuer.access_ttl
        - chrono::Duration::seconds(i64::try_from(LEEWAY_SECS).unwrap_or(60));
    let lookup = page.clone();
    let revocations = api
        .deps
        .store
        .read(move |conn| repo::list_revocations(conn, since, &lookup, after))
        .await?;
    let (revocations, next_page_token) = page.finish(revocations, |r| r.account.to_string());
    Ok(Response::new(pb::ListTokenRevocationsResponse {
        token_revocations: revocations
            .iter()
            .map(|r| pb::TokenRevocation {
                account: account_name(r.account),
                min_security_version: r.min_security_version,
                revoke_time: Some(to_timestamp(r.changed_at)),
            })
            .collect(),
        next_page_token,
    }))
}
