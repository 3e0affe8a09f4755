//! The integration tests, compiled into ONE test binary (`autotests = false` in Cargo.toml):
//! each file of tests/ is a module of this crate. Every test binary links the whole host
//! (wasmtime + cranelift, ~180 MB with line tables), so twenty binaries cost twenty links and
//! several GB of disk on a clean CI machine; one binary costs one. Run one file's tests with a
//! filter on its module path, e.g. `cargo test --release --test suite escalation::`.
mod common;

mod admin;
mod allowlist;
mod cache_redis;
mod cascade;
mod cli;
mod config_identity;
mod containment;
mod deploy;
mod embedding;
mod escalation;
mod escalation_durability;
mod eval;
mod lifecycle;
mod limits;
mod new_tier;
mod oci;
mod policies;
mod polyglot;
mod readme;
mod reasons;
mod remote;
mod review_page;
mod server;
mod shadow;
mod signing;
