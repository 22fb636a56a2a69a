//! The payment service's integration tests: one binary, a module per area,
//! fixtures in [`helpers`]. Real Postgres (a throwaway cluster per run),
//! real servers on `127.0.0.1:0`, real generated clients. The tests of the
//! three services together (checkout, the attack surface, hostile input)
//! are the suite crate's (`services/suite/tests/it`).

mod concurrency;
mod config;
mod db_privileges;
mod deploy_contract;
mod helpers;
mod intent_guards;
mod intents;
mod kill;
mod logs;
mod payment_methods;
