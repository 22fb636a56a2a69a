//! Typed ids of the payment service's resources, so no domain function
//! takes a bare `Uuid` or `String` it could mix up. Each id knows its
//! AIP-122 collection: [`IntentId::name`] is `paymentIntents/{id}`,
//! [`IntentId::parse`] reads one back (a field violation naming the request
//! field otherwise). `Display` shows the bare id (span fields, logs).

use std::fmt;

use backroom_shared::{errors::FieldViolation, names};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh (UUIDv7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id `uuid` (read from a row or a parsed name).
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

macro_rules! resource_id {
    ($(#[$doc:meta])* $name:ident, $collection:literal) => {
        uuid_id!($(#[$doc])* $name);

        impl $name {
            /// The AIP-122 collection.
            pub const COLLECTION: &'static str = $collection;

            /// The resource name, `{collection}/{id}`.
            pub fn name(self) -> String {
                names::name(Self::COLLECTION, self.0)
            }

            /// Parses `{collection}/{uuid}`; `field` names it in the violation.
            pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
                names::parse_uuid(field, Self::COLLECTION, raw).map(Self)
            }
        }
    };
}

resource_id!(
    /// A payment intent, `paymentIntents/{id}`.
    IntentId,
    "paymentIntents"
);
resource_id!(
    /// A payment method (a customer's card), `paymentMethods/{id}`.
    PaymentMethodId,
    "paymentMethods"
);
resource_id!(
    /// A ledger journal, `journals/{id}`.
    JournalId,
    "journals"
);
resource_id!(
    /// A checkout order, `orders/{id}`.
    OrderId,
    "orders"
);
resource_id!(
    /// A customer: an account of the account service, `accounts/{id}`.
    CustomerId,
    "accounts"
);
uuid_id!(
    /// A refund; its name is nested under its intent's
    /// ([`RefundId::name_under`]).
    RefundId
);

impl RefundId {
    /// The collection of refunds under an intent.
    pub const COLLECTION: &'static str = "refunds";

    /// `paymentIntents/{intent}/refunds/{id}`.
    pub fn name_under(self, intent: IntentId) -> String {
        names::nested(IntentId::COLLECTION, intent, Self::COLLECTION, self)
    }

    /// Parses `paymentIntents/{uuid}/refunds/{uuid}` into both ids.
    pub fn parse_nested(field: &str, raw: &str) -> Result<(IntentId, Self), FieldViolation> {
        names::parse_nested_uuids(field, IntentId::COLLECTION, Self::COLLECTION, raw)
            .map(|(intent, refund)| (IntentId(intent), Self(refund)))
    }
}

uuid_id!(
    /// A shipment of an order; its name is nested under the order's
    /// ([`ShipmentId::name_under`]).
    ShipmentId
);

impl ShipmentId {
    /// The collection of shipments under an order.
    pub const COLLECTION: &'static str = "shipments";

    /// `orders/{order}/shipments/{id}`.
    pub fn name_under(self, order: OrderId) -> String {
        names::nested(OrderId::COLLECTION, order, Self::COLLECTION, self)
    }
}

uuid_id!(
    /// A return of an order; its name is nested under the order's
    /// ([`ReturnId::name_under`]).
    ReturnId
);

impl ReturnId {
    /// The collection of returns under an order.
    pub const COLLECTION: &'static str = "returns";

    /// `orders/{order}/returns/{id}`.
    pub fn name_under(self, order: OrderId) -> String {
        names::nested(OrderId::COLLECTION, order, Self::COLLECTION, self)
    }

    /// Parses `orders/{uuid}/returns/{uuid}` into both ids.
    pub fn parse_nested(field: &str, raw: &str) -> Result<(OrderId, Self), FieldViolation> {
        names::parse_nested_uuids(field, OrderId::COLLECTION, Self::COLLECTION, raw)
            .map(|(order, id)| (OrderId(order), Self(id)))
    }
}

/// A ledger account's code (`authorization_holds`, …): 1–64 of `a–z _`.
/// Whether it exists is the database's business.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerCode(String);

impl LedgerCode {
    /// The collection of ledger accounts.
    pub const COLLECTION: &'static str = "ledgerAccounts";

    /// A code of the chart of accounts (a constant) or read from a row.
    pub fn from_stored(code: impl Into<String>) -> Self {
        Self(code.into())
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `ledgerAccounts/{code}`.
    pub fn name(&self) -> String {
        names::name(Self::COLLECTION, &self.0)
    }

    /// Parses `ledgerAccounts/{code}`; `field` names it in the violation.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldViolation> {
        match raw.strip_prefix("ledgerAccounts/") {
            Some(code)
                if !code.is_empty()
                    && code.len() <= 64
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                Ok(Self(code.to_owned()))
            }
            _ if raw.is_empty() => Err(FieldViolation::new(field, "is required")),
            _ => Err(FieldViolation::new(field, "must be ledgerAccounts/{code}")),
        }
    }
}

impl fmt::Display for LedgerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = IntentId::generate();
        assert_eq!(IntentId::parse("name", &id.name()).unwrap(), id);
        assert!(IntentId::parse("name", &PaymentMethodId::generate().name()).is_err());
        let refund = RefundId::generate();
        assert_eq!(
            RefundId::parse_nested("name", &refund.name_under(id)).unwrap(),
            (id, refund)
        );
    }
}
