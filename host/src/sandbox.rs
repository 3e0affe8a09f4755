//! Running one tier call in its sandbox: the store and its limits, the capability-free WASI
//! context, the host imports (`log`, `params`), fresh or reused instances, and the
//! classification of every way a call can go wrong into a [`FallbackReason`].
//!
//! This module never decides what happens next; it reports what the tier did. Acceptance
//! checks live in [`crate::acceptance`] and routing in [`crate::cascade`].
//!
//! What a tier can reach: nothing. WASI is linked because every `wasm32-wasip2` guest imports
//! it, but with no preopened directories, no environment, no arguments, no sockets (TCP, UDP
//! and name lookup disabled), stdin closed, stdout discarded and stderr captured up to
//! [`STDERR_CAPTURE_BYTES`] (so a panic message reaches the trail). Clocks are frozen at zero
//! (a tier cannot time anything, so it cannot behave differently under load or leak timing),
//! and randomness is a ChaCha generator seeded from the tier name and request id (a replay
//! of the same request gives the same answer).
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::config::{InstanceMode, ParamValue};
use crate::limits::{MemoryLimitHit, TierLimiter, TierLimits};
use crate::plugin::Plugin;
use crate::reason::FallbackReason;
use crate::request::{FeatureValue, Request};

/// Generated bindings of the `tierhost:tier/tier` world (documented in `wit/tier.wit`).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "tier",
        path: "../wit",
        exports: { default: async },
    });
}

use bindings::tierhost::tier::{host as wit_host, types as wit};

/// Bytes of a tier's stderr kept per call (enough for a panic message and its location).
pub const STDERR_CAPTURE_BYTES: usize = 4096;
/// Largest random buffer a tier may ask for in one call.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The data of one tier's store.
pub struct TierState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: TierLimiter,
    stderr: MemoryOutputPipe,
    params: Arc<Vec<wit_host::Param>>,
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
}

impl WasiView for TierState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for TierState {}

impl wit_host::Host for TierState {
    fn log(&mut self, level: wit_host::LogLevel, message: String) {
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
        self.params.as_ref().clone()
    }

    fn model(&mut self) -> Vec<u8> {
        self.model.to_vec()
    }
}

/// Links the host imports and capability-free WASI into the linker.
pub(crate) fn add_to_linker(linker: &mut Linker<TierState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::Tier::add_to_linker::<TierState, HasSelf<TierState>>(linker, |s| s)?;
    Ok(())
}

/// Clocks frozen at zero: tiers see the UNIX epoch and a monotonic clock that never moves.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

fn wasi_ctx(seed: u64, stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(StdRng::seed_from_u64(seed))
        .insecure_random(StdRng::seed_from_u64(seed.rotate_left(17)))
        .insecure_random_seed(u128::from(seed))
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// What a tier returned (before the host's acceptance checks).
#[derive(Debug, Clone)]
pub enum TierAnswer {
    /// An answer.
    Answer(wit::Prediction),
    /// An abstention with the tier's reason.
    Abstain(String),
}

/// The report of one call.
#[derive(Debug)]
pub struct CallReport {
    /// The tier's answer, or why there is none.
    pub result: Result<TierAnswer, FallbackReason>,
    /// Wall time of the call, instantiation included.
    pub elapsed: Duration,
    /// Fuel the call consumed (instantiation included).
    pub fuel_used: u64,
    /// Log lines the tier wrote past its budget.
    pub logs_dropped: u64,
}

type Warm = (Store<TierState>, bindings::Tier);

/// One tier ready to be called: its plugin, limits and params, and its warm instances when it
/// reuses them.
pub struct Sandbox {
    plugin: Arc<Plugin>,
    name: Arc<str>,
    limits: TierLimits,
    params: Arc<Vec<wit_host::Param>>,
    model: Arc<[u8]>,
    mode: InstanceMode,
    warm: Mutex<Vec<Warm>>,
    max_warm: usize,
}

impl Sandbox {
    /// A sandbox for `plugin` serving as tier `name`.
    pub fn new(
        plugin: Arc<Plugin>,
        name: &str,
        limits: TierLimits,
        params: &[(String, ParamValue)],
        model: Arc<[u8]>,
        mode: InstanceMode,
        max_warm: usize,
    ) -> Self {
        let params = params
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
            .collect();
        Self {
            plugin,
            name: Arc::from(name),
            limits,
            params: Arc::new(params),
            model,
            mode,
            warm: Mutex::new(Vec::new()),
            max_warm,
        }
    }

    /// The plugin this tier runs.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The tier's limits.
    pub fn limits(&self) -> &TierLimits {
        &self.limits
    }

    fn new_store(&self, request_id: &str) -> Store<TierState> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&*self.name, request_id).hash(&mut hasher);
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let state = TierState {
            wasi: wasi_ctx(hasher.finish(), stderr.clone()),
            table: ResourceTable::new(),
            limiter: TierLimiter::new(self.limits.max_memory_bytes()),
            stderr,
            params: self.params.clone(),
            model: self.model.clone(),
            tier: self.name.clone(),
            request_id: request_id.to_string(),
            log_budget: self.limits.max_log_bytes,
            log_bytes: 0,
            logs_dropped: 0,
            deadline_at: Instant::now(),
            recheck_ticks: 1,
        };
        let mut store = Store::new(self.plugin.engine().engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Epoch ticks only say "time to look at the clock": the deadline itself is a wall-clock
        // instant, so a late or bursty ticker can make a cut-off late by a tick, never early.
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            if Instant::now() >= data.deadline_at {
                Err(wasmtime::Error::new(Trap::Interrupt))
            } else {
                Ok(UpdateDeadline::Continue(data.recheck_ticks))
            }
        });
        store
    }

    fn arm(&self, store: &mut Store<TierState>, deadline: Duration, request_id: &str) {
        let data = store.data_mut();
        data.request_id.clear();
        data.request_id.push_str(request_id);
        data.log_bytes = 0;
        data.logs_dropped = 0;
        data.limiter.hit = None;
        data.deadline_at = Instant::now() + deadline;
        data.recheck_ticks = 1;
        // Only fails when fuel is disabled, which the engine never does.
        let _ = store.set_fuel(self.limits.fuel);
        store.set_epoch_deadline(self.plugin.engine().deadline_ticks(deadline));
    }

    /// Calls the tier's `predict` with `deadline` of wall time. Never panics; every fault is
    /// returned as a [`FallbackReason`]. The request is lowered once per cascade walk with
    /// [`lower`], not once per tier.
    pub async fn predict(&self, request: &TierRequest, deadline: Duration) -> CallReport {
        let started = Instant::now();
        let reused = match self.mode {
            InstanceMode::Reuse => self.warm.lock().ok().and_then(|mut w| w.pop()),
            InstanceMode::Fresh => None,
        };
        let (mut store, instance) = match reused {
            Some((store, instance)) => (store, Some(instance)),
            None => (self.new_store(&request.id), None),
        };
        self.arm(&mut store, deadline, &request.id);

        let pre = self.plugin.pre();
        let outcome = {
            let call = async {
                let instance = match instance {
                    Some(i) => i,
                    None => pre.instantiate_async(&mut store).await?,
                };
                let result = instance.call_predict(&mut store, request).await?;
                Ok::<_, wasmtime::Error>((instance, result))
            };
            tokio::time::timeout(deadline, call).await
        };

        let fuel_used = self
            .limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let logs_dropped = store.data().logs_dropped;
        let (result, keep) = match outcome {
            Err(_elapsed) => (
                Err(FallbackReason::Deadline {
                    deadline_us: deadline.as_micros() as u64,
                }),
                None,
            ),
            Ok(Err(error)) => (Err(classify(&error, &store, &self.limits, deadline)), None),
            Ok(Ok((instance, Ok(wit::Outcome::Answer(p))))) => {
                (Ok(TierAnswer::Answer(p)), Some(instance))
            }
            Ok(Ok((instance, Ok(wit::Outcome::Abstain(reason))))) => {
                (Ok(TierAnswer::Abstain(reason)), Some(instance))
            }
            Ok(Ok((instance, Err(e)))) => (Err(tier_error(e)), Some(instance)),
        };
        if let (InstanceMode::Reuse, Some(instance)) = (self.mode, keep)
            && let Ok(mut warm) = self.warm.lock()
            && warm.len() < self.max_warm
        {
            warm.push((store, instance));
        }
        CallReport {
            result,
            elapsed: started.elapsed(),
            fuel_used,
            logs_dropped,
        }
    }

    /// Calls `describe` on a fresh instance (used when loading and checking a plugin).
    pub(crate) async fn describe_fresh(
        plugin: &Plugin,
        deadline: Duration,
    ) -> Result<wit::Description, FallbackReason> {
        let limits = TierLimits::default();
        let sandbox = Sandbox::new(
            Arc::new(plugin.clone()),
            "describe",
            limits.clone(),
            &[],
            Arc::from(Vec::new()),
            InstanceMode::Fresh,
            0,
        );
        let mut store = sandbox.new_store("describe");
        sandbox.arm(&mut store, deadline, "describe");
        let call = async {
            let instance = plugin.pre().instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        };
        match tokio::time::timeout(deadline, call).await {
            Err(_) => Err(FallbackReason::Deadline {
                deadline_us: deadline.as_micros() as u64,
            }),
            Ok(Err(e)) => Err(classify(&e, &store, &limits, deadline)),
            Ok(Ok(d)) => Ok(d),
        }
    }
}

/// A request in the form tiers receive it.
pub type TierRequest = wit::Request;

/// Converts a request to the form tiers receive.
pub fn lower(request: &Request) -> TierRequest {
    wit::Request {
        id: request.id.clone(),
        features: request
            .features
            .iter()
            .map(|(name, value)| wit::Feature {
                name: name.clone(),
                value: match value {
                    FeatureValue::Null => wit::Value::Null,
                    FeatureValue::Bool(b) => wit::Value::Boolean(*b),
                    FeatureValue::Integer(i) => wit::Value::Integer(*i),
                    FeatureValue::Float(x) => wit::Value::Float(*x),
                    FeatureValue::Text(s) => wit::Value::Text(s.clone()),
                },
            })
            .collect(),
    }
}

fn tier_error(e: wit::TierError) -> FallbackReason {
    let (error, message) = match e {
        wit::TierError::InvalidInput(m) => ("invalid-input", m),
        wit::TierError::MissingFeature(m) => ("missing-feature", m),
        wit::TierError::BadParams(m) => ("bad-params", m),
        wit::TierError::Internal(m) => ("internal", m),
    };
    FallbackReason::TierError {
        error: error.into(),
        message: truncate(message, 1024),
    }
}

/// Maps a wasmtime error from instantiation or a call to its fault kind.
fn classify(
    error: &wasmtime::Error,
    store: &Store<TierState>,
    limits: &TierLimits,
    deadline: Duration,
) -> FallbackReason {
    let memory = |hit: &MemoryLimitHit| FallbackReason::MemoryLimit {
        requested: hit.requested,
        limit: limits.max_memory_bytes(),
    };
    if let Some(hit) = store.data().limiter.hit.as_ref() {
        return memory(hit);
    }
    if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
        return memory(hit);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => FallbackReason::OutOfFuel { limit: limits.fuel },
            Trap::Interrupt => FallbackReason::Deadline {
                deadline_us: deadline.as_micros() as u64,
            },
            Trap::StackOverflow => FallbackReason::StackOverflow,
            other => FallbackReason::Trap {
                message: with_stderr(other.to_string(), store),
            },
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return FallbackReason::Shed {
            detail: "instance pool is full (engine.max_instances)".into(),
        };
    }
    FallbackReason::Trap {
        message: with_stderr(format!("{error:#}"), store),
    }
}

fn with_stderr(message: String, store: &Store<TierState>) -> String {
    let stderr = store.data().stderr.contents();
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        message
    } else {
        truncate(
            format!("{message}; guest stderr: {stderr}"),
            STDERR_CAPTURE_BYTES,
        )
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
