//! The attacks an outside attacker once got through, replayed against the
//! three service binaries running as real processes (the debug builds
//! `cargo test --workspace` makes; `BACKROOM_BIN_DIR` points at others, e.g.
//! an older commit's, to watch an attack succeed there). Each module is one
//! attack; each test prints what it injected and what it checked.

#[path = "../common/mod.rs"]
mod common;

mod admin_power;
mod free_goods;
mod lockout;
mod login_flood;
