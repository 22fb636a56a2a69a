//! Persistence: the generated diesel schema, the rows and their
//! conversions to domain types ([`models`]), and the repository functions
//! per aggregate ([`repo`]), which the domain composes inside its
//! transactions. Rows never leave this module.
//!
//! `schema.rs` is generated, never edited: apply the migrations to a scratch
//! database and run `diesel print-schema` (config in `diesel.toml`).

pub mod models;
pub mod repo;
#[rustfmt::skip]
pub mod schema;
