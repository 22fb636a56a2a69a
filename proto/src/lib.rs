//! The Backroom v1 API, generated from `proto/backroom/**.proto` by `build.rs`.
//!
//! Layout: one module per protobuf package (`backroom::account::v1` becomes
//! [`account::v1`]), each with its messages, a `*_client` module with the tonic
//! client and a `*_server` module with the service trait and server.
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod codec;

/// Shared value types (money).
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.common.v1");
    }
}

/// Identities, sessions, service tokens, addresses and the JWKS.
pub mod account {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.account.v1");
    }
}

/// Catalog, stock levels, the movement log, quotes and reservations.
pub mod inventory {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.inventory.v1");
    }
}

/// Payment methods, payment intents, refunds, the ledger and checkout.
pub mod payment {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.payment.v1");
    }
}

/// The event envelope, the event feed and webhooks, served by every service.
pub mod events {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.events.v1");
    }
}

/// A diagnostic echo service used by the test kit and the load generator's
/// bare baseline. Not served by the production services.
pub mod testing {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("backroom.testing.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Backroom proto (with imports), for
/// `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/backroom_descriptor.bin"));
