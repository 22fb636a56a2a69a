//! The attacks an outside attacker once got through, replayed against the
//! three service binaries. Each module is one attack; each test prints what
//! it injected and what it checked.

mod admin_power;
mod free_goods;
mod lockout;
mod login_flood;
