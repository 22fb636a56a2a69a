//! The payment intent (Stripe's model) and its rules: who may see and act
//! on one, and the state machine in [`engine`].
//!
//! ```text
//! requires_payment_method ─(payment method)→ requires_confirmation
//!        ↑ decline                                   │ confirm
//!        └──────────────── processing ←──────────────┘
//!                              │ authorized
//!              manual ┌────────┴────────┐ automatic
//!          requires_capture ─capture→ succeeded (refunds)
//!   cancel: requires_payment_method | requires_confirmation | requires_capture → canceled
//!   expiry (sweeper): requires_capture past authorization_expires_at → canceled
//! ```
//!
//! An intent checkout created for an order (`order` set) is the order's
//! payment: confirm, cancel, capture and refund are the checkout saga's
//! alone ([`OrderAuthority::may_manage`]); anyone else — the customer, an
//! admin, another service — could otherwise void the authorization the
//! saga is about to commit stock against.
//!
//! Layout: this module (the entity, its enums, the commands, who may see
//! and act), [`engine`] (the transitions, each on a locked intent inside
//! the caller's transaction, with the processor call and the journals of
//! the money it moves).

pub mod engine;

use backroom_shared::{
    auth::{Access, AccessDenied, AccountRef, required},
    money::{Money, proportion},
    paging::PageRequest,
};
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use uuid::Uuid;

pub use engine::{Engine, FailedAttempt};

use super::{
    CustomerId, Error, IntentId, OrderId, PaymentMethodId, payment_methods, values::Metadata,
};
use crate::{db::repo, processor::Authorization};

backroom_shared::stored_enum!(
    /// Stripe's payment-intent states.
    pub IntentStatus {
        /// Needs a payment method.
        RequiresPaymentMethod = "requires_payment_method",
        /// Ready to confirm.
        RequiresConfirmation = "requires_confirmation",
        /// The processor call is in flight.
        Processing = "processing",
        /// Authorized; waiting for capture.
        RequiresCapture = "requires_capture",
        /// Captured (terminal).
        Succeeded = "succeeded",
        /// Canceled (terminal).
        Canceled = "canceled",
    }
);

impl IntentStatus {
    /// Whether ConfirmPaymentIntent may run.
    pub fn can_confirm(self) -> bool {
        matches!(
            self,
            Self::RequiresPaymentMethod | Self::RequiresConfirmation
        )
    }

    /// Whether CancelPaymentIntent may run.
    pub fn can_cancel(self) -> bool {
        matches!(
            self,
            Self::RequiresPaymentMethod | Self::RequiresConfirmation | Self::RequiresCapture
        )
    }
}

backroom_shared::stored_enum!(
    /// When the authorized amount is captured.
    pub CaptureMethod {
        /// At once.
        Automatic = "automatic",
        /// By CapturePaymentIntent.
        Manual = "manual",
    }
);

backroom_shared::stored_enum!(
    /// Why an intent was canceled.
    pub CancellationReason {
        /// None given.
        Unspecified = "unspecified",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
        /// A duplicate.
        Duplicate = "duplicate",
        /// Suspected fraud.
        Fraudulent = "fraudulent",
        /// The customer went away.
        Abandoned = "abandoned",
        /// The authorization expired (system only).
        AuthorizationExpired = "authorization_expired",
        /// The checkout saga compensated (role service only).
        OrderFailed = "order_failed",
    }
);

/// Why the last authorization attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFailure {
    /// `CARD_DECLINED`, `INSUFFICIENT_FUNDS`, `EXPIRED_CARD` or `PROCESSOR_ERROR`.
    pub code: String,
    /// The processor's finer reason.
    pub decline_code: String,
    /// Safe for the customer.
    pub message: String,
    /// The method that failed.
    pub payment_method: Option<PaymentMethodId>,
}

/// A payment intent. Every amount is in the intent's currency (that of
/// `amount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Its id.
    pub id: IntentId,
    /// Who pays.
    pub customer: CustomerId,
    /// What is to be paid.
    pub amount: Money,
    /// What the processor authorized.
    pub amount_authorized: Money,
    /// What may still be captured.
    pub amount_capturable: Money,
    /// What was captured.
    pub amount_received: Money,
    /// What was refunded.
    pub amount_refunded: Money,
    /// Where the state machine is.
    pub status: IntentStatus,
    /// Automatic or manual capture.
    pub capture_method: CaptureMethod,
    /// The card, once chosen.
    pub payment_method: Option<PaymentMethodId>,
    /// Free text.
    pub description: String,
    /// Caller-defined pairs.
    pub metadata: Metadata,
    /// Why the last authorization attempt failed.
    pub last_error: Option<PaymentFailure>,
    /// Why it was canceled.
    pub cancellation_reason: Option<CancellationReason>,
    /// The processor's hold, once authorized.
    pub authorization: Option<Authorization>,
    /// When an uncaptured authorization lapses.
    pub authorization_expires_at: Option<DateTime<Utc>>,
    /// Authorization attempts so far (each gets its own processor key).
    pub authorization_attempt: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The order whose payment this is (checkout created it): managed by
    /// checkout only.
    pub order: Option<OrderId>,
    /// The VAT `amount` contains.
    pub tax: Money,
    /// The VAT of what was captured.
    pub tax_received: Money,
    /// The VAT its refunds reversed.
    pub tax_refunded: Money,
}

impl Intent {
    /// A zero of the intent's currency.
    pub fn zero(&self) -> Money {
        Money::zero(self.amount.currency())
    }

    /// The VAT a capture bringing `amount_received` to `received`
    /// carries, in total: `round-half-up(tax × received / amount)`.
    pub fn tax_received_at(&self, received: Money) -> Money {
        Money::new(
            self.amount.currency(),
            proportion(self.tax.minor(), received.minor(), self.amount.minor()),
        )
    }

    /// The VAT refunds totalling `refunded` reverse, in total:
    /// `round-half-up(tax_received × refunded / amount_received)`, so a
    /// full refund reverses exactly the VAT captured.
    pub fn tax_refunded_at(&self, refunded: Money) -> Money {
        Money::new(
            self.amount.currency(),
            proportion(
                self.tax_received.minor(),
                refunded.minor(),
                self.amount_received.minor(),
            ),
        )
    }
}

/// Whether the caller is the checkout saga — this service's own principal
/// (`BACKROOM_SERVICE_CLIENT_ID`), the only one that acts on an order's
/// payment. The api decides it from the token's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAuthority {
    /// The checkout saga.
    Checkout,
    /// Anyone else: a customer, an admin, another service.
    Other,
}

/// What `metadata.required` says when only checkout may do it.
pub const CHECKOUT_ONLY: &str = "the checkout service principal";

impl OrderAuthority {
    /// Whether the caller may confirm, cancel, capture or refund `intent`:
    /// an order's payment only through checkout.
    pub fn may_manage(self, intent: &Intent) -> Result<(), Error> {
        match (intent.order, self) {
            (Some(order), Self::Other) => Err(Error::ManagedByOrder {
                order,
                intent: intent.id,
            }),
            _ => Ok(()),
        }
    }

    /// Only checkout may create an intent for an order.
    pub fn may_pay_for_orders(self) -> Result<(), AccessDenied> {
        match self {
            Self::Checkout => Ok(()),
            Self::Other => Err(AccessDenied {
                required: CHECKOUT_ONLY,
            }),
        }
    }
}

/// The account a request names, `accounts/me` being the caller's own.
// hoist to shared: `AccountRef::resolve` for an `Access` (it takes a
// `Caller` today, which does not move into blocking closures).
pub fn resolve_customer(
    field: &str,
    account: AccountRef,
    access: Access,
) -> Result<CustomerId, Error> {
    match account {
        AccountRef::Id(id) => Ok(CustomerId::from_uuid(id)),
        AccountRef::Me => access.account.map(CustomerId::from_uuid).ok_or_else(|| {
            Error::field(
                field,
                "accounts/me needs a person's token, not a service token",
            )
        }),
    }
}

/// CreatePaymentIntent, parsed.
#[derive(Debug, Clone)]
pub struct CreateIntent {
    /// Who pays (`accounts/me` resolves to the caller).
    pub customer: AccountRef,
    /// What, 1–`MAX_AMOUNT` minor units.
    pub amount: Money,
    /// Automatic (the default) or manual.
    pub capture_method: CaptureMethod,
    /// The card, if chosen now.
    pub payment_method: Option<PaymentMethodId>,
    /// Free text.
    pub description: String,
    /// Caller-defined pairs.
    pub metadata: Metadata,
    /// The order it pays for (checkout only).
    pub order: Option<OrderId>,
    /// The VAT `amount` contains (0–amount, its currency).
    pub tax: Money,
    /// Confirm at once.
    pub confirm: bool,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// GetPaymentIntent, parsed.
#[derive(Debug, Clone, Copy)]
pub struct GetIntent {
    /// The intent.
    pub id: IntentId,
}

/// ListPaymentIntents, parsed.
#[derive(Debug, Clone)]
pub struct ListIntents {
    /// Whose intents; none: the caller's own (all of them for admins and
    /// services).
    pub customer: Option<AccountRef>,
    /// Only intents in this state.
    pub status: Option<IntentStatus>,
    /// Which page.
    pub page: PageRequest,
    /// The last intent of the previous page.
    pub after: Option<IntentId>,
}

/// ConfirmPaymentIntent, parsed.
#[derive(Debug, Clone, Copy)]
pub struct ConfirmIntent {
    /// The intent.
    pub id: IntentId,
    /// A card to use instead of the intent's.
    pub payment_method: Option<PaymentMethodId>,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// CapturePaymentIntent, parsed.
#[derive(Debug, Clone, Copy)]
pub struct CaptureIntent {
    /// The intent.
    pub id: IntentId,
    /// How much; none: everything capturable.
    pub amount: Option<Money>,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// CancelPaymentIntent, parsed.
#[derive(Debug, Clone, Copy)]
pub struct CancelIntent {
    /// The intent.
    pub id: IntentId,
    /// Why.
    pub reason: CancellationReason,
    /// The request id, if the caller sent one.
    pub request_id: Option<Uuid>,
}

/// `found` if the caller may see it (its owner, admins, services); anyone
/// else is told it does not exist, exactly as for a missing one, so another
/// customer's ids cannot be probed for existence.
pub fn visible(access: Access, found: Option<Intent>) -> Option<Intent> {
    access.sees(found, |intent| intent.customer.uuid())
}

/// Creates an intent for `customer` (resolved and allowed by the caller),
/// confirming it at once if asked. One payment per order: asked again for
/// the same order (a retry whose request id was forgotten), it is the same
/// one.
pub fn create(
    conn: &mut PgConnection,
    engine: &Engine,
    access: Access,
    customer: CustomerId,
    cmd: CreateIntent,
    failed: &mut Option<FailedAttempt>,
) -> Result<Intent, Error> {
    if let Some(order) = cmd.order {
        match repo::intents::order_customer(conn, order)? {
            None => return Err(Error::OrderNotFound(order)),
            Some(buyer) if buyer != customer => {
                return Err(Error::field("order", "is an order of another customer"));
            }
            Some(_) => {}
        }
        if let Some(existing) = repo::intents::of_order(conn, order)? {
            return Ok(existing);
        }
    }
    if let Some(method) = cmd.payment_method {
        payment_methods::usable(conn, access, customer, method)?;
    }
    let zero = Money::zero(cmd.amount.currency());
    let intent = Intent {
        id: IntentId::generate(),
        customer,
        amount: cmd.amount,
        amount_authorized: zero,
        amount_capturable: zero,
        amount_received: zero,
        amount_refunded: zero,
        status: if cmd.payment_method.is_some() {
            IntentStatus::RequiresConfirmation
        } else {
            IntentStatus::RequiresPaymentMethod
        },
        capture_method: cmd.capture_method,
        payment_method: cmd.payment_method,
        description: cmd.description,
        metadata: cmd.metadata,
        last_error: None,
        cancellation_reason: None,
        authorization: None,
        authorization_expires_at: None,
        authorization_attempt: 0,
        created_at: engine.now,
        updated_at: engine.now,
        order: cmd.order,
        tax: cmd.tax,
        tax_received: zero,
        tax_refunded: zero,
    };
    repo::intents::insert(conn, &intent)?;
    if cmd.confirm {
        engine.confirm(conn, access, intent, None, true, failed)
    } else {
        Ok(intent)
    }
}

/// Which intents a transition may be asked of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Those the caller sees (confirm, cancel); others are NOT_FOUND.
    Visible(Access),
    /// Any (capture, refund: admins and services only, checked before).
    Any,
}

/// The intent `id`, locked for a transition, if the caller reaches it and
/// may manage it (an order's payment: the checkout saga only).
pub fn lock_to_manage(
    conn: &mut PgConnection,
    id: IntentId,
    reach: Reach,
    authority: OrderAuthority,
) -> Result<Intent, Error> {
    let found = repo::intents::lock(conn, id)?;
    let found = match reach {
        Reach::Visible(access) => visible(access, found),
        Reach::Any => found,
    };
    let intent = found.ok_or(Error::PaymentIntentNotFound(id))?;
    authority.may_manage(&intent)?;
    Ok(intent)
}

/// The intent `id`, if the caller may see it.
pub fn get(conn: &mut PgConnection, access: Access, id: IntentId) -> Result<Intent, Error> {
    visible(access, repo::intents::get(conn, id)?).ok_or(Error::PaymentIntentNotFound(id))
}

/// Whose intents a listing shows: the customer it names (owner, admin or
/// service only), else everyone's for admins and services and the caller's
/// own for anyone else.
pub fn listed_customer(
    access: Access,
    named: Option<CustomerId>,
) -> Result<Option<CustomerId>, AccessDenied> {
    let customer = match named {
        Some(customer) => Some(customer),
        None if access.admin || access.service => None,
        // Customers see only their own, by default too.
        None => Some(
            access
                .account
                .map(CustomerId::from_uuid)
                .ok_or(AccessDenied {
                    required: required::OWNER_ADMIN_OR_SERVICE,
                })?,
        ),
    };
    if let Some(customer) = customer {
        access.require_owner_admin_or_service(customer.uuid())?;
    }
    Ok(customer)
}
