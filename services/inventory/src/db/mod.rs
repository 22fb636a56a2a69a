//! Persistence: the generated diesel schema, row types, and the repository
//! functions the API composes inside transactions.

pub mod models;
pub mod repo;
#[rustfmt::skip]
pub mod schema;
