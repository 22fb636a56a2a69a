//! Persistence: the generated diesel schema, row types, and the repository
//! functions the API composes inside transactions.
//!
//! `schema.rs` is generated, never edited: apply the migrations to a scratch
//! database and run `diesel print-schema` (config in `diesel.toml`).

pub mod models;
pub mod repo;
#[rustfmt::skip]
pub mod schema;
