//! `backroom-loadgen`: drives the real services through the generated
//! clients and measures them against bare baselines on the same machine in
//! the same run.
//!
//! Layout: [`driver`] (open/closed loop, warm-up, progress), [`stats`] (HDR
//! histograms, counts by status code, reports), [`scenarios`] (what one
//! operation does), [`fixtures`] (products, shoppers, tokens through the
//! public APIs), [`baselines`] (bare echo and bare diesel point-read
//! servers), [`stack`] (the three service binaries as child processes:
//! start, kill -9, restart, memory), [`bench`] (the whole suite →
//! BENCHMARKS.md), [`secrets`] (the secret scan of tables and logs),
//! [`flood`] (short-deadline credential floods, for the attack tests),
//! [`consumer`] (a JetStream consumer applying each event exactly once).

pub mod baselines;
pub mod bench;
pub mod consumer;
pub mod driver;
pub mod fixtures;
pub mod flood;
pub mod scenarios;
pub mod secrets;
pub mod stack;
pub mod stats;
