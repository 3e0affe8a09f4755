//! tierhost: a WebAssembly plugin host that answers inference requests through a cascade of
//! sandboxed fallback tiers (model -> smaller model -> rules -> safe default), where every
//! tier is a wasm component implementing the `tierhost:tier` WIT world and every step down is
//! logged, counted and explainable.
//!
//! Where things live:
//! - [`config`]: the TOML cascade config (plain data) and its validation;
//! - [`limits`]: per-tier and engine-wide sandbox limits, the memory limiter;
//! - [`guest`]: the guest's world (generated bindings, store data, host imports, WASI, request
//!   lowering, fault classification); nothing above it sees a generated WIT type;
//! - [`engine`]: the wasmtime engine, epoch ticker, linker and compile cache;
//! - [`plugin`]: loading, hashing, compiling and describing a component;
//! - [`sandbox`]: one call in its sandbox (fresh or warm instance, limits, timeout);
//! - [`policy`]: every trigger, one module each: budget, circuit breaker, OOD guard, bulkhead,
//!   chaos, acceptance, min confidence, hedging, the prediction cache, and the state they keep;
//! - [`cascade`]: the walk down the tiers; [`answer`]: what the caller gets back;
//! - [`reason`]: every fallback reason; [`events`]: fallback log events and the audit file;
//! - [`service`]: a cascade as a long-lived service (hot swap, bulkhead); [`server`]: HTTP;
//!   [`metrics`]: Prometheus; [`alerts`]: fallback-rate alerts;
//! - [`eval`]: replay labeled data through a cascade under fault scenarios; [`plots`]: its SVGs;
//! - [`drill`]: fire drills: every fault kind injected into every tier, checked per request.
#![deny(missing_docs)]

pub mod alerts;
pub mod answer;
pub mod builtin;
pub mod cascade;
pub mod config;
pub mod drill;
pub mod engine;
pub mod error;
pub mod eval;
pub mod events;
pub mod guest;
pub mod limits;
pub mod metrics;
pub mod plots;
pub mod plugin;
pub mod policy;
pub mod reason;
pub mod request;
pub mod sandbox;
pub mod server;
pub mod service;

pub use answer::{Answer, Decision, ServedBy, Step, TrailEntry};
pub use cascade::Cascade;
pub use config::CascadeConfig;
pub use engine::TierEngine;
pub use reason::FallbackReason;
pub use request::{FeatureValue, Request};
