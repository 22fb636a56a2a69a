//! A payment method: a card the processor vaulted for a customer (brand,
//! last4, expiry, holder name and a keyed fingerprint; never the PAN or
//! CVC), and who may see or use one.
//!
//! Cards are the owner's and admins' only. A service principal sees none:
//! the checkout saga reads a customer's card with the customer's own token,
//! and pays with it only for that customer ([`usable`]).

use backroom_shared::{
    auth::{Access, AccessDenied, AccountRef, required},
    paging::PageRequest,
};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

use super::{
    CustomerId, Error, PaymentMethodId,
    card::{Brand, CardInput, Expiry},
};
use crate::{db::repo, processor::Processor};

/// Most payment methods a customer may have attached.
pub const MAX_PAYMENT_METHODS: i64 = 20;

/// A vaulted card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod {
    /// Its id.
    pub id: PaymentMethodId,
    /// Whose card it is.
    pub customer: CustomerId,
    /// The card network.
    pub brand: Brand,
    /// The last four digits.
    pub last4: String,
    /// The expiry month.
    pub expiry: Expiry,
    /// HMAC of the PAN under the deployment's key (equal for equal cards).
    pub fingerprint: String,
    /// Name on the card.
    pub holder_name: String,
    /// The processor's token for the card.
    pub processor_token: String,
    /// When it was attached.
    pub created_at: DateTime<Utc>,
}

impl PaymentMethod {
    /// Whether the card's expiry month has passed at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiry.is_past(now)
    }
}

/// AttachPaymentMethod, parsed.
#[derive(Debug)]
pub struct AttachCard {
    /// The owner named by the request (`accounts/me` resolves to the caller).
    pub customer: AccountRef,
    /// The card; its PAN and CVC are redacted in `Debug`.
    pub card: CardInput,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// GetPaymentMethod, parsed.
#[derive(Debug, Clone, Copy)]
pub struct GetPaymentMethod {
    /// The method.
    pub id: PaymentMethodId,
}

/// ListPaymentMethods, parsed.
#[derive(Debug, Clone)]
pub struct ListPaymentMethods {
    /// Whose methods.
    pub customer: AccountRef,
    /// Which page.
    pub page: PageRequest,
    /// The last method of the previous page.
    pub after: Option<PaymentMethodId>,
}

/// DetachPaymentMethod, parsed.
#[derive(Debug, Clone, Copy)]
pub struct DetachPaymentMethod {
    /// The method.
    pub id: PaymentMethodId,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// Cards are visible to their owner and admins, not to services.
fn card_access(access: Access) -> Access {
    Access {
        service: false,
        ..access
    }
}

/// Before a payment method is looked up by name: only a person (its
/// possible owner) or an admin may ask. This depends on the caller alone,
/// so PERMISSION_DENIED reveals nothing about the method.
pub fn may_look_up(access: Access) -> Result<(), AccessDenied> {
    if access.admin || access.account.is_some() {
        Ok(())
    } else {
        Err(AccessDenied {
            required: required::OWNER_OR_ADMIN,
        })
    }
}

/// Owner or admin may manage the payment methods of the account `customer`
/// a request names (naming an account reveals nothing).
pub fn may_manage_of(access: Access, customer: CustomerId) -> Result<(), AccessDenied> {
    card_access(access).require_owner_or_admin(customer.uuid())
}

/// `found` if the caller may see it; another customer's card is answered
/// exactly as a missing one (NOT_FOUND).
pub fn visible(access: Access, found: Option<PaymentMethod>) -> Option<PaymentMethod> {
    card_access(access).sees(found, |method| method.customer.uuid())
}

/// The method `id`, if the caller may see it.
pub fn get(
    conn: &mut PgConnection,
    access: Access,
    id: PaymentMethodId,
) -> Result<PaymentMethod, Error> {
    visible(access, repo::payment_methods::get(conn, id)?).ok_or(Error::PaymentMethodNotFound(id))
}

/// Attaches `card` for `customer`: the processor vaults the number, which
/// is dropped afterwards; `fingerprint` is its keyed fingerprint.
pub fn attach(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    processor: &dyn Processor,
    customer: CustomerId,
    card: CardInput,
    fingerprint: String,
) -> Result<PaymentMethod, Error> {
    let vaulted = processor.tokenize(&card.number).map_err(|cause| {
        tracing::warn!(%cause, "tokenization failed at the processor");
        Error::ProcessorUnavailable { intent: None }
    })?;
    let method = PaymentMethod {
        id: PaymentMethodId::generate(),
        customer,
        brand: card.number.brand(),
        last4: card.number.last4().to_owned(),
        expiry: card.expiry,
        fingerprint,
        holder_name: card.holder_name,
        processor_token: vaulted.token,
        created_at: now,
    };
    repo::payment_methods::insert(conn, &method)
}

/// Detaches a method the caller may see.
pub fn detach(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    access: Access,
    id: PaymentMethodId,
) -> Result<(), Error> {
    get(conn, access, id)?;
    if !repo::payment_methods::detach(conn, id, now)? {
        return Err(Error::PaymentMethodNotFound(id));
    }
    Ok(())
}

/// A payment method the caller may use for `customer`'s intent: the
/// customer's own, and the caller is the customer, an admin or a service.
/// Another customer's card is answered exactly as a missing one.
pub fn usable(
    conn: &mut PgConnection,
    access: Access,
    customer: CustomerId,
    id: PaymentMethodId,
) -> Result<PaymentMethod, Error> {
    repo::payment_methods::get(conn, id)?
        .filter(|method| method.customer == customer && access.may_see(customer.uuid()))
        .ok_or(Error::PaymentMethodNotFound(id))
}
