//! `backroom-loadgen`: drives the real services through the generated
//! clients and measures them against bare baselines on the same machine in
//! the same run.
//!
//! Layout: [`driver`] (open/closed loop, warm-up, progress), [`stats`] (HDR
//! histograms, counts by status code, reports), [`scenarios`] (what one
//! operation does), [`fixtures`] (products, shoppers, tokens through the
//! public APIs), [`baselines`] (bare echo and bare diesel point-read
//! servers), [`bench`] (the whole suite → BENCHMARKS.md).

pub mod baselines;
pub mod bench;
pub mod driver;
pub mod fixtures;
pub mod scenarios;
pub mod stats;
