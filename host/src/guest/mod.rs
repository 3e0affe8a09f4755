//! The guest's world: everything that knows the generated `tierhost:tier` bindings. The
//! store data of one call ([`CallState`]), the host imports (`log`, `params`, `model`), the
//! capability-free WASI context, the linker, the lowering of a request into its WIT form, the
//! lifting of a tier's answer into host types, and the mapping of a failed call to its
//! [`FallbackReason`].
//!
//! The engine, plugin loading and the sandbox depend on this module; nothing above them sees a
//! generated WIT type: the rest of the host works with [`Prediction`] and [`Request`].
//!
//! What a tier can reach: nothing. WASI is linked because every `wasm32-wasip2` guest imports
//! it, but with no preopened directories, no environment, no arguments, no sockets (TCP, UDP
//! and name lookup disabled), stdin closed, stdout discarded and stderr captured up to
//! [`STDERR_CAPTURE_BYTES`] (so a panic message reaches the trail). Clocks are frozen at zero
//! (a tier cannot time anything, so it cannot behave differently under load or leak timing),
//! and randomness is a ChaCha generator seeded from the tier name and request id (a replay
//! of the same request gives the same answer).
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod faults;
#[cfg(feature = "remote")]
mod http;
mod types;
mod wasi;

#[cfg(feature = "remote")]
pub use http::HttpGrant;
/// Outbound HTTP grant of a tier (this build has no remote-model support: there is none).
#[cfg(not(feature = "remote"))]
#[derive(Debug)]
pub enum HttpGrant {}

pub use faults::classify;
use faults::{tier_error, truncate};
pub use types::{
    Description, FeatureAllowlist, Prediction, TierKind, TierOutcome, TierRequest, lower,
    lower_allowed,
};
use wasi::{frozen_timers, wasi_ctx};

use crate::config::ParamValue;
use crate::limits::{MemoryLimitHit, TierLimiter, TierLimits};
use crate::reason::FallbackReason;
use crate::request::{FeatureValue, Request};

/// Generated bindings of the `tierhost:tier/tier` world (documented in `wit/tier.wit`).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "tier",
        path: "wit",
        exports: { default: async },
    });
}

use bindings::tierhost::tier::{host as wit_host, types as wit};

/// A tier's parameters in the form `params` returns them (built once per tier, shared by its calls).
#[derive(Clone, Default)]
pub struct Params(Arc<Vec<wit_host::Param>>);

impl Params {
    /// Lowers flattened config parameters.
    pub fn new(params: &[(String, ParamValue)]) -> Self {
        Self(Arc::new(
            params
                .iter()
                .map(|(name, value)| wit_host::Param {
                    name: name.clone(),
                    value: match value {
                        ParamValue::Bool(b) => wit::Value::Boolean(*b),
                        ParamValue::Integer(i) => wit::Value::Integer(*i),
                        ParamValue::Float(x) => wit::Value::Float(*x),
                        ParamValue::Text(s) => wit::Value::Text(s.clone()),
                    },
                })
                .collect(),
        ))
    }
}

/// A compiled tier pre-instantiated against the host's linker.
pub type TierPre = bindings::TierPre<CallState>;
/// An instantiated tier.
pub type TierInstance = bindings::Tier;

/// Bytes of a tier's stderr kept per call (enough for a panic message and its location).
pub const STDERR_CAPTURE_BYTES: usize = 4096;
/// Longest abstain reason or tier error message kept, in bytes (the rest is cut, with `...`).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Entries of a store's resource table (WASI streams and pollables a tier holds at once): a
/// Rust guest uses a handful; the cap bounds the host memory a handle flood can take.
pub const MAX_RESOURCE_HANDLES: usize = 1024;
/// Host-call data allowance per transfer beyond the tier's own output limit (log lines, WASI
/// writes, list and string headers).
const HOSTCALL_HEADROOM_BYTES: usize = 64 * 1024;

/// Bytes the guest may hand the host in one transfer (one host call or one returned answer):
/// twice the tier's `max_output_bytes` plus [`HOSTCALL_HEADROOM_BYTES`]. Anything larger is
/// refused while it is lifted, before the host allocates it (wasmtime's default is 128 MiB).
pub fn hostcall_fuel(limits: &TierLimits) -> usize {
    usize::try_from(limits.max_output_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(HOSTCALL_HEADROOM_BYTES)
}

/// A tier-supplied string made safe to print: control characters (ESC, CR, newlines, ...)
/// become escapes, so a tier cannot forge log lines or redraw a terminal.
pub fn printable(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Largest random buffer a tier may ask for in one call.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The data of one tier call's store (reused across calls only for `instances = "reuse"`).
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: TierLimiter,
    stderr: MemoryOutputPipe,
    params: Params,
    model: Arc<[u8]>,
    tier: Arc<str>,
    request_id: String,
    log_budget: u64,
    log_bytes: u64,
    logs_dropped: u64,
    /// Wall-clock instant the current call must stop at.
    deadline_at: Instant,
    /// Epoch ticks to wait before checking `deadline_at` again.
    recheck_ticks: u64,
    /// wasi:http state: what the tier may reach and what it was refused.
    #[cfg(feature = "remote")]
    http: http::HttpState,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(feature = "remote")]
impl wasmtime_wasi_http::WasiHttpView for CallState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

impl wit::Host for CallState {}

impl wit_host::Host for CallState {
    fn log(&mut self, level: wit_host::LogLevel, message: String) {
        let message = printable(message);
        let len = message.len() as u64;
        if self.log_bytes + len > self.log_budget {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += len;
        let (tier, request_id) = (&*self.tier, self.request_id.as_str());
        match level {
            wit_host::LogLevel::Debug => {
                tracing::debug!(target: "tierhost::tier", tier, request_id, "{message}")
            }
            wit_host::LogLevel::Info => {
                tracing::info!(target: "tierhost::tier", tier, request_id, "{message}")
            }
            wit_host::LogLevel::Warn => {
                tracing::warn!(target: "tierhost::tier", tier, request_id, "{message}")
            }
            wit_host::LogLevel::Error => {
                tracing::error!(target: "tierhost::tier", tier, request_id, "{message}")
            }
        }
    }

    fn params(&mut self) -> Vec<wit_host::Param> {
        self.params.0.as_ref().clone()
    }

    fn model(&mut self) -> Vec<u8> {
        self.model.to_vec()
    }
}

/// Links the host imports and capability-free WASI into the linker, and wasi:http (every
/// request checked against the calling tier's `[tier.http]` grant, see [`HttpGrant`]).
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    #[cfg(feature = "remote")]
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    bindings::Tier::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    frozen_timers(linker)
}

/// The store settings of one tier: its limits, params and model grant.
pub struct StoreSetup<'a> {
    /// Tier name (seeds randomness, tags log lines).
    pub tier: &'a Arc<str>,
    /// Per-call limits.
    pub limits: &'a TierLimits,
    /// Parameters returned by `params`.
    pub params: &'a Params,
    /// Bytes returned by `model`.
    pub model: &'a Arc<[u8]>,
    /// Outbound HTTP the tier may use (`[tier.http]`); none when `None`.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub http: Option<&'a Arc<HttpGrant>>,
}

/// A new store for one tier call (or a warm instance), with the tier's memory limiter and the
/// wall-clock deadline check on epoch ticks.
pub fn new_store(engine: &Engine, setup: &StoreSetup<'_>, request_id: &str) -> Store<CallState> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&**setup.tier, request_id).hash(&mut hasher);
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
    let state = CallState {
        wasi: wasi_ctx(hasher.finish(), stderr.clone()),
        table: {
            let mut table = ResourceTable::new();
            table.set_max_capacity(MAX_RESOURCE_HANDLES);
            table
        },
        limiter: TierLimiter::new(setup.limits.max_memory_bytes()),
        stderr,
        params: setup.params.clone(),
        model: setup.model.clone(),
        tier: setup.tier.clone(),
        request_id: request_id.to_string(),
        log_budget: setup.limits.max_log_bytes,
        log_bytes: 0,
        logs_dropped: 0,
        deadline_at: Instant::now(),
        recheck_ticks: 1,
        #[cfg(feature = "remote")]
        http: http::HttpState::new(setup.http.cloned()),
    };
    let mut store = Store::new(engine, state);
    store.set_hostcall_fuel(hostcall_fuel(setup.limits));
    store.limiter(|s| &mut s.limiter);
    // Epoch ticks only say "time to look at the clock": the deadline itself is a wall-clock
    // instant, so a late or bursty ticker can make a cut-off late by a tick, never early.
    // Between checks the call yields to the async runtime, so a guest that computes for a long
    // time never holds a worker thread (or a hedged call racing it in the same task) hostage.
    store.epoch_deadline_callback(|ctx| {
        let data = ctx.data();
        if Instant::now() >= data.deadline_at {
            Err(wasmtime::Error::new(Trap::Interrupt))
        } else {
            Ok(UpdateDeadline::Yield(data.recheck_ticks))
        }
    });
    store
}

/// Prepares a store for its next call: resets per-call counters, sets the fuel and the
/// wall-clock deadline.
pub fn arm(
    store: &mut Store<CallState>,
    limits: &TierLimits,
    deadline: Duration,
    deadline_ticks: u64,
    request_id: &str,
) {
    let data = store.data_mut();
    data.request_id.clear();
    data.request_id.push_str(request_id);
    data.log_bytes = 0;
    data.logs_dropped = 0;
    data.limiter.hit = None;
    data.deadline_at = Instant::now() + deadline;
    data.recheck_ticks = 1;
    #[cfg(feature = "remote")]
    data.http.arm();
    // Only fails when fuel is disabled, which the engine never does.
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(deadline_ticks);
}

/// What the host refused the current call (an HTTP request outside its grant), if anything:
/// such a call is failed whatever the tier returned.
pub fn denied(store: &mut Store<CallState>) -> Option<String> {
    #[cfg(feature = "remote")]
    return store.data_mut().http.take_denied();
    #[cfg(not(feature = "remote"))]
    {
        let _ = store;
        None
    }
}

/// Log lines the current call wrote past its budget.
pub fn logs_dropped(store: &Store<CallState>) -> u64 {
    store.data().logs_dropped
}

/// Calls `predict` on an instance and lifts the result.
pub async fn call_predict(
    instance: &TierInstance,
    store: &mut Store<CallState>,
    request: &TierRequest,
) -> wasmtime::Result<Result<TierOutcome, FallbackReason>> {
    Ok(match instance.call_predict(store, request).await? {
        Ok(wit::Outcome::Answer(p)) => Ok(TierOutcome::Answer(p.into())),
        Ok(wit::Outcome::Abstain(reason)) => Ok(TierOutcome::Abstain(truncate(
            printable(reason),
            MAX_MESSAGE_BYTES,
        ))),
        Err(e) => Err(tier_error(e)),
    })
}

/// Calls `describe` on a fresh instance of `pre` under the tier's `limits` (fuel, memory,
/// output, logs) with `deadline` (used when loading a plugin, off the request path).
pub async fn describe(
    engine: &Engine,
    pre: &TierPre,
    limits: &TierLimits,
    deadline: Duration,
    deadline_ticks: u64,
) -> Result<Description, FallbackReason> {
    let tier: Arc<str> = Arc::from("describe");
    let setup = StoreSetup {
        tier: &tier,
        limits,
        params: &Params::default(),
        model: &Arc::from(Vec::new()),
        http: None,
    };
    let mut store = new_store(engine, &setup, "describe");
    arm(&mut store, limits, deadline, deadline_ticks, "describe");
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    match tokio::time::timeout(deadline, call).await {
        Err(_) => Err(FallbackReason::Deadline {
            deadline_us: deadline.as_micros() as u64,
        }),
        Ok(Err(e)) => Err(classify(&e, &store, limits, deadline)),
        Ok(Ok(d)) => Ok(Description {
            name: d.name,
            version: d.version,
            kind: match d.kind {
                wit::TierKind::Model => TierKind::Model,
                wit::TierKind::Rules => TierKind::Rules,
                wit::TierKind::SafeDefault => TierKind::SafeDefault,
                wit::TierKind::Other => TierKind::Other,
            },
        }),
    }
}
