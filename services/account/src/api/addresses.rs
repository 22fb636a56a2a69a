//! Shipping addresses: CreateAddress, GetAddress, ListAddresses,
//! DeleteAddress. An address lives under its account
//! (`accounts/{account}/addresses/{address}`), so who may touch it is
//! decided from the name, before anything is read.

use backroom_proto::account::v1 as pb;
use backroom_shared::{
    auth::{Access, AccountRef},
    clock::to_timestamp,
    errors::{FieldViolation, Violations},
    idempotency,
    paging::{PageRequest, fingerprint as page_fingerprint},
};
use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, instrument};
use uuid::Uuid;

use super::{AccountApi, RequestId, account_name, acting_on, address_name, record_account};
use crate::{
    db::repo,
    domain::{Address, AddressFields, Error, PostalAddress},
};

/// Parses `accounts/{a}/addresses/{b}` (`accounts/me/...` allowed).
fn parse_address_name(field: &str, name: &str) -> Result<(AccountRef, Uuid), FieldViolation> {
    let bad = || FieldViolation::new(field, "must be accounts/{account}/addresses/{uuid}");
    if name.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    let (account, address) = name.split_once("/addresses/").ok_or_else(bad)?;
    let account = AccountRef::parse(field, account).map_err(|_| bad())?;
    let address = Uuid::try_parse(address).map_err(|_| bad())?;
    Ok((account, address))
}

/// Records the address an RPC acts on (and its account) in its span.
fn record_address(account: Uuid, address: Uuid) {
    record_account(account);
    Span::current().record("address", address_name(account, address).as_str());
}

fn address_to_proto(address: &Address) -> pb::Address {
    let postal = &address.postal;
    pb::Address {
        name: address_name(address.account_id, address.id),
        recipient: postal.recipient.clone(),
        line1: postal.line1.clone(),
        line2: postal.line2.clone(),
        city: postal.city.clone(),
        region: postal.region.clone(),
        postal_code: postal.postal_code.clone(),
        country_code: postal.country_code.clone(),
        create_time: Some(to_timestamp(address.created_at)),
    }
}

/// A CreateAddress request, parsed.
#[derive(Debug)]
struct CreateAddress {
    account: AccountRef,
    address: PostalAddress,
    /// The address as sent (output-only fields cleared), for the request's
    /// fingerprint.
    submitted: Option<pb::Address>,
    request_id: RequestId,
}

impl TryFrom<pb::CreateAddressRequest> for CreateAddress {
    type Error = Error;

    fn try_from(req: pb::CreateAddressRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("parent", &req.parent));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let address = match &req.address {
            Some(a) => PostalAddress::parse(
                "address",
                AddressFields {
                    recipient: &a.recipient,
                    line1: &a.line1,
                    line2: &a.line2,
                    city: &a.city,
                    region: &a.region,
                    postal_code: &a.postal_code,
                    country_code: &a.country_code,
                },
                &mut violations,
            ),
            None => {
                violations.push("address", "is required");
                None
            }
        };
        let (account, address, request_id) =
            violations.finish_with((account, address, request_id))?;
        Ok(Self {
            account,
            address,
            submitted: req.address.map(|mut a| {
                a.name.clear();
                a.create_time = None;
                a
            }),
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty, address = Empty))]
pub(super) async fn create_address(
    api: &AccountApi,
    request: Request<pb::CreateAddressRequest>,
) -> Result<Response<pb::Address>, Status> {
    let caller = api.caller(&request).await?;
    let cmd = CreateAddress::try_from(request.into_inner())?;
    let account_id = acting_on(
        &caller,
        cmd.account,
        "parent",
        Access::require_owner_or_admin,
    )?;
    let key = cmd.request_id.key("CreateAddress", Some(&caller))?;
    let fingerprint = idempotency::fingerprint(&pb::CreateAddressRequest {
        parent: account_name(account_id),
        address: cmd.submitted,
        request_id: String::new(),
    });
    let postal = cmd.address;
    let created = api
        .deps
        .store
        .idempotent(key, fingerprint, move |conn, now| {
            let address = Address {
                id: Uuid::now_v7(),
                account_id,
                postal: postal.clone(),
                created_at: now,
            };
            Ok::<_, Error>(address_to_proto(&repo::insert_address(conn, &address)?))
        })
        .await?;
    Span::current().record("address", created.name.as_str());
    Ok(Response::new(created))
}

/// A GetAddress request, parsed.
#[derive(Debug)]
struct GetAddress {
    account: AccountRef,
    address: Uuid,
}

impl TryFrom<pb::GetAddressRequest> for GetAddress {
    type Error = Error;

    fn try_from(req: pb::GetAddressRequest) -> Result<Self, Error> {
        let (account, address) = parse_address_name("name", &req.name)?;
        Ok(Self { account, address })
    }
}

#[instrument(skip_all, fields(account = Empty, address = Empty))]
pub(super) async fn get_address(
    api: &AccountApi,
    request: Request<pb::GetAddressRequest>,
) -> Result<Response<pb::Address>, Status> {
    let caller = api.caller(&request).await?;
    let GetAddress { account, address } = GetAddress::try_from(request.into_inner())?;
    let account_id = acting_on(
        &caller,
        account,
        "name",
        Access::require_owner_admin_or_service,
    )?;
    record_address(account_id, address);
    let found = api
        .deps
        .store
        .read(move |conn| repo::get_address(conn, account_id, address))
        .await?;
    Ok(Response::new(address_to_proto(&found)))
}

/// A ListAddresses request, parsed.
#[derive(Debug)]
struct ListAddresses {
    account: AccountRef,
    page: PageRequest,
}

impl TryFrom<pb::ListAddressesRequest> for ListAddresses {
    type Error = Error;

    fn try_from(req: pb::ListAddressesRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = violations.check(AccountRef::parse("parent", &req.parent));
        let page = violations.check(
            PageRequest::parse(
                req.page_size,
                &req.page_token,
                page_fingerprint(&[&req.parent]),
            )
            .map_err(|mut v| v.remove(0)),
        );
        let (account, page) = violations.finish_with((account, page))?;
        Ok(Self { account, page })
    }
}

#[instrument(skip_all, fields(account = Empty))]
pub(super) async fn list_addresses(
    api: &AccountApi,
    request: Request<pb::ListAddressesRequest>,
) -> Result<Response<pb::ListAddressesResponse>, Status> {
    let caller = api.caller(&request).await?;
    let ListAddresses { account, page } = ListAddresses::try_from(request.into_inner())?;
    let account_id = acting_on(&caller, account, "parent", Access::require_owner_or_admin)?;
    // After the access check: a refused caller learns nothing from the token.
    let after = page.after_uuid().map_err(Error::from)?;
    let lookup = page.clone();
    let addresses = api
        .deps
        .store
        .read(move |conn| repo::list_addresses(conn, account_id, &lookup, after))
        .await?;
    let (addresses, next_page_token) = page.finish(addresses, |a| a.id.to_string());
    Ok(Response::new(pb::ListAddressesResponse {
        addresses: addresses.iter().map(address_to_proto).collect(),
        next_page_token,
    }))
}

/// A DeleteAddress request, parsed.
#[derive(Debug)]
struct DeleteAddress {
    account: AccountRef,
    address: Uuid,
    request_id: RequestId,
}

impl TryFrom<pb::DeleteAddressRequest> for DeleteAddress {
    type Error = Error;

    fn try_from(req: pb::DeleteAddressRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let name = violations.check(parse_address_name("name", &req.name));
        let request_id = violations.check(RequestId::parse(&req.request_id));
        let ((account, address), request_id) = violations.finish_with((name, request_id))?;
        Ok(Self {
            account,
            address,
            request_id,
        })
    }
}

#[instrument(skip_all, fields(account = Empty, address = Empty))]
pub(super) async fn delete_address(
    api: &AccountApi,
    request: Request<pb::DeleteAddressRequest>,
) -> Result<Response<()>, Status> {
    let caller = api.caller(&request).await?;
    let cmd = DeleteAddress::try_from(request.into_inner())?;
    let address = cmd.address;
    let account_id = acting_on(&caller, cmd.account, "name", Access::require_owner_or_admin)?;
    record_address(account_id, address);
    let key = cmd.request_id.key("DeleteAddress", Some(&caller))?;
    let fingerprint = idempotency::fingerprint(&pb::DeleteAddressRequest {
        name: address_name(account_id, address),
        request_id: String::new(),
    });
    api.deps
        .store
        .idempotent(key, fingerprint, move |conn, _now| {
            repo::delete_address(conn, account_id, address)
        })
        .await?;
    Ok(Response::new(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(
            AccountRef::parse("name", &format!("accounts/{id}")).unwrap(),
            AccountRef::Id(id)
        );
        assert_eq!(
            AccountRef::parse("name", "accounts/me").unwrap(),
            AccountRef::Me
        );
        assert!(AccountRef::parse("name", "accounts/123").is_err());
        assert!(AccountRef::parse("name", "users/me").is_err());
        let address = Uuid::now_v7();
        let (account, parsed) = parse_address_name("name", &address_name(id, address)).unwrap();
        assert_eq!((account, parsed), (AccountRef::Id(id), address));
        assert!(parse_address_name("name", "accounts/me/addresses/x").is_err());
    }
}
