//! The tests against the three service binaries running as real processes
//! (the debug builds `cargo test --workspace` makes; `BACKROOM_BIN_DIR`
//! points at others, e.g. an older commit's, to watch an attack succeed
//! there), each on its own throwaway Postgres. One test binary, so the
//! workspace links one: `chaos` (kill -9 under mixed load, overload),
//! `db_outage` (Postgres stopped under mixed load) and `attacks` (what an
//! outside attacker once got through). Every `World` holds one lock for its
//! life, so these tests run one at a time: each wants both cores to itself,
//! and a fault test sharing them with another proves nothing.

mod attacks;
mod chaos;
mod common;
mod db_outage;
