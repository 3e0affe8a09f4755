//! tierhost: a WebAssembly plugin host that answers inference requests through a cascade of
//! sandboxed fallback tiers (model -> smaller model -> rules -> safe default), where every
//! tier is a wasm component implementing the `tierhost:tier` WIT world and every step down is
//! logged, counted and explainable.
//!
//! # Embedding
//!
//! Build a [`Config`] (from TOML with [`Config::load`] / [`Config::parse`], or in code with
//! [`TierConfig::builder`] and [`Config::from_tiers`]), load it into a [`Cascade`] and ask it for [`Answer`]s:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tierhost::{Cascade, Config, PluginSource, Request, TierConfig};
//!
//! let config = Config::from_tiers(vec![
//!     TierConfig::builder("rules", PluginSource::Builtin("rules".into()))
//!         .deadline_ms(20)
//!         .build(),
//! ])?;
//! let cascade = Cascade::load_strict(&config).await?;
//! let request = Request::from_json(r#"{"id": "r1", "features": {"amount": 120.0}}"#)?;
//! let answer = cascade.predict(&request).await;
//! println!("{} answered: {:?}", answer.served_by.tier, answer.decision);
//! # Ok(()) }
//! ```
//!
//! A long-lived process takes a [`CascadeService`] instead: hot swap, reload (on demand, on
//! SIGHUP, on file change), the host-wide bulkhead, Prometheus counters and fallback-rate
//! alerts, with no HTTP server. `examples/embed` is a whole program.
//!
//! # Cargo features
//!
//! `default-features = false` compiles wasmtime and the cascade only. `server` adds the HTTP
//! server ([`server`]); `watch` reloads on file changes; `webhooks` posts alerts; `eval` adds
//! offline evaluation and fire drills ([`eval`], [`drill`]); `redis` the shared prediction
//! cache; `escalation` the durable review queue ([`escalation`], SQLite built in); `cli` (the
//! default) is the `tierhost` binary with all of them.
//!
//! # Where things live
//!
//! `config` (plain data and its validation), `limits` (sandbox limits, the memory limiter),
//! `guest` (the guest's world: generated bindings, store data, host imports, WASI, lowering,
//! fault classification; nothing above it sees a generated WIT type), `engine` (wasmtime,
//! epoch ticker, linker, compile cache), `plugin` (loading, hashing, compiling, describing),
//! `sandbox` (one call in its sandbox), `policy` (every trigger, one module each), `cascade`
//! (the walk down the tiers), `answer` / `reason` / `events` (what the caller and the logs get),
//! `escalation` (redaction and the review queue), `signing` (`[trust]` keys, detached
//! signatures of plugin and model files, checked before anything is compiled),
//! `service` (a cascade as a long-lived service), `metrics`, `alerts`.
#![deny(missing_docs)]

mod alerts;
mod answer;
pub mod builtin;
mod cascade;
mod config;
mod engine;
mod error;
pub mod escalation;
mod events;
mod guest;
mod limits;
mod metrics;
mod plugin;
mod policy;
mod reason;
mod request;
mod sandbox;
mod service;
pub mod shadow;
pub mod signing;

#[cfg(feature = "server")]
pub mod admin_client;
#[cfg(feature = "eval")]
pub mod drill;
#[cfg(feature = "eval")]
pub mod eval;
#[cfg(feature = "oci")]
pub mod oci;
#[cfg(feature = "server")]
pub mod server;

pub use alerts::{AlertEvent, AlertState, FallbackAlerts};
pub use answer::{
    Answer, Decision, EscalationProblem, EscalationReceipt, ServedBy, Step, TrailEntry,
};
pub use cascade::{Cascade, CascadeTier, HiddenFeatureRead, SAFE_DEFAULT};
pub use config::{
    AcceptConfig, AlertConfig, AllowRule, BreakerConfig, CacheConfig, CascadeSettings, ChaosConfig,
    ChaosMode, Config, ConfigChange, ConfigDiff, EscalationConfig, FileDigest, HedgeConfig,
    HttpConfig, InstanceMode, OciConfig, OciRef, OodConfig, OodMethod, ParamValue, PluginSource,
    QueueSync, SafeDefaultConfig, ServerConfig, TierConfig, TierConfigBuilder, TierFile, TlsConfig,
};
pub use engine::{COMPILER_ENV, CompileStats, TierEngine, compile_component_main};
pub use error::{
    ConfigError, EngineError, LoadError, RequestError, SampleFailure, ServiceError, SignatureError,
    SigningError, TierActionError,
};
pub use events::{AuditLog, FallbackEvent};
pub use guest::TierKind;
pub use limits::{EngineConfig, TierLimits};
pub use metrics::Metrics;
pub use plugin::{Plugin, PluginInfo};
pub use policy::breaker::{BreakerMode, BreakerState};
pub use policy::cache::CacheStatus;
pub use policy::clock::{Clock, ManualClock, SystemClock};
pub use policy::memory::PolicyMemory;
pub use reason::FallbackReason;
pub use request::{FeatureValue, Request};
pub use sandbox::Sandbox;
pub use service::{
    BUDGET_GRACE, Background, CascadeService, Live, ReloadOutcome, ReloadReport, RolloutAction,
    RolloutError, RolloutReport, shutdown_signal,
};

/// Every default, named (the README's tables are tested against these).
pub mod defaults {
    pub use crate::config::{
        DEFAULT_AUDIT_MAX_BYTES, DEFAULT_BUDGET_MS, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_PENDING,
        DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES, MAX_LABEL_BYTES, MAX_MODEL_BYTES,
    };
    pub use crate::limits::{
        DEFAULT_COMPILE_MAX_MEMORY_MIB, DEFAULT_COMPILE_TIMEOUT_S, DEFAULT_DEADLINE_MS,
        DEFAULT_ENGINE_MAX_MEMORY_MIB, DEFAULT_EPOCH_TICK_US, DEFAULT_FUEL, DEFAULT_MAX_INSTANCES,
        DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_MEMORY_MIB, DEFAULT_MAX_OUTPUT_BYTES,
        DEFAULT_MAX_PLUGIN_MIB, DEFAULT_MAX_REASONS, DEFAULT_MAX_WASM_STACK_KIB,
    };
    pub use crate::request::{MAX_FEATURES, MAX_ID_BYTES, MAX_TEXT_BYTES};
}

/// Internals the fuzz targets in `fuzz/` drive directly. Not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::config::flatten_params;
    pub use crate::events::emit_fallbacks;
    pub use crate::guest::bindings::tierhost::tier::types as wit;
    pub use crate::guest::{MAX_MESSAGE_BYTES, Prediction, hostcall_fuel, lower, printable};
    pub use crate::policy::TierPolicy;
    pub use crate::policy::acceptance::{Acceptance, contract};
    pub use crate::policy::cache::CachedAnswer;
    pub use crate::policy::confidence::MinConfidence;
}
