//! Attacks an outside client made against the three service processes, one
//! module each, replayed against the debug builds (`cargo build -p
//! backroom-account -p backroom-inventory -p backroom-payment` first). Each
//! prints what it injected and what it checked.

#[path = "../common/mod.rs"]
mod common;
mod free_goods;
