//! The account service's integration tests: one binary, a module per area,
//! each test against a real server on 127.0.0.1:0 with its own database.
//!
//! Layout: [`helpers`] (the `TestApp` and request helpers), [`account`],
//! [`sessions`], [`addresses`] (every RPC, its happy path and documented
//! errors), [`security`] (the
//! service against an attacker), [`tokens`] (the auth layer's refusals),
//! [`logs`] (no secret in any log line), [`db_outage`] (Postgres stopped
//! under load), [`deploy_contract`] (the manifests match the binary).

mod account;
mod addresses;
mod db_outage;
mod deploy_contract;
mod helpers;
mod logs;
mod security;
mod sessions;
mod tokens;
