//! The one place that owns wasmtime configuration: the engine (component model, pooling
//! allocator, fuel, epoch interruption, stack), the epoch ticker that enforces deadlines, the
//! linker every tier is instantiated against, and the compiled-component cache.
//!
//! Compilation happens here, off the request path. The disk cache only ever deserializes
//! files this host wrote: the cache directory must be owned by the current user and closed to
//! everyone else, or it is refused.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::error::{EngineError, LoadError};
use crate::guest::{self, CallState};
use crate::limits::EngineConfig;

mod compile;
mod disk_cache;

use compile::compiler_exe;
pub use compile::{COMPILER_ENV, compile_component_main};
use disk_cache::{check_private, create_private_dir, write_private};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Stack the host's own code (WASI and host imports) gets on top of the wasm stack on each
/// call's fiber; wasmtime requires the fiber stack to be larger than `max_wasm_stack`.
const HOST_STACK_HEADROOM: usize = MIB;
/// Core instances per component: a Rust `wasm32-wasip2` component holds its main module plus
/// the small shim modules `wasm-component-ld` adds; 16 is well above what they need.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Tables per component (the main module's indirect-call table plus shims).
const MAX_TABLES_PER_COMPONENT: u32 = 8;
/// Linear memory kept resident (not returned to the OS) when a pooled slot is reused: enough
/// for a small guest's heap, so a fresh instance does not page-fault its way back in.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 2 * MIB;
/// Table bytes kept resident between instances for the same reason.
const TABLE_KEEP_RESIDENT: usize = 64 * KIB;

/// A configured wasmtime engine plus everything shared by all tiers.
#[derive(Clone)]
pub struct TierEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: EngineConfig,
    compat_hash: String,
    cache_dir: Option<PathBuf>,
    compiled: Mutex<HashMap<String, Component>>,
    /// Where each component [`TierEngine::compile`] handed out came from.
    stats: StatCounters,
    /// The executable that compiles plugins in a child process under CPU and memory limits
    /// (see [`compiler_exe`]); `None`: compile in this process.
    compiler: Option<PathBuf>,
}

/// Where the components an engine handed out came from, counted since it was built (see
/// [`TierEngine::compile_stats`]). Each component [`TierEngine::compile`] returns counts once, in
/// `memory_hits`, `disk_hits` or `compiled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompileStats {
    /// Returned from the engine's in-memory cache (compiled or read earlier by this engine).
    pub memory_hits: u64,
    /// Deserialized from an artifact in `engine.cache_dir` (no compilation).
    pub disk_hits: u64,
    /// Compiled from the wasm (in the compiler child process or in process).
    pub compiled: u64,
    /// Artifacts found in `engine.cache_dir` that could not be deserialized (stale, truncated,
    /// for another engine) and were deleted; the component was compiled instead.
    pub disk_discarded: u64,
}

#[derive(Default)]
struct StatCounters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiled: AtomicU64,
    disk_discarded: AtomicU64,
}

impl StatCounters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CompileStats {
        CompileStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            disk_discarded: self.disk_discarded.load(Ordering::Relaxed),
        }
    }
}

impl TierEngine {
    /// Builds the engine from the `[engine]` section. `base_dir` resolves a relative
    /// `cache_dir`.
    pub fn new(limits: &EngineConfig, base_dir: &Path) -> Result<Self, EngineError> {
        let stack = limits.max_wasm_stack_kib as usize * KIB;
        let mut pool = PoolingAllocationConfig::new();
        let slots = limits.max_instances;
        // Every component instance can have its per-component maximum of core instances,
        // memories and tables at once: a component that declares many of them can exhaust
        // only its own tier's share of component slots (its bulkhead), never the pool's
        // core-instance or table slots that other tiers need. The extra slots are address
        // space reserved lazily, not memory.
        pool.total_component_instances(slots)
            .total_core_instances(slots * MAX_CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots)
            .total_tables(slots * MAX_TABLES_PER_COMPONENT)
            .total_stacks(slots)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(1)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .max_memory_size(limits.max_memory_mib as usize * MIB)
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            // Reset only the pages an instance actually touched (Linux >= 6.7; a no-op elsewhere).
            .pagemap_scan(Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(stack)
            .async_stack_size(stack + HOST_STACK_HEADROOM)
            // A trap is classified by its kind and a panic by the guest's captured stderr;
            // walking the wasm stack on every trap (thousands of frames on a stack overflow)
            // would make a fault storm expensive for no gain in the trail.
            .wasm_backtrace_max_frames(None)
            .cranelift_opt_level(OptLevel::Speed)
            // Compile on the (low-priority) loading thread only: a hot swap must not take every
            // core away from requests in flight.
            .parallel_compilation(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        guest::add_to_linker(&mut linker).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat_hash = format!("{:016x}", hasher.finish());

        let cache_dir = limits
            .cache_dir
            .as_ref()
            .map(|d| crate::config::resolve_path(base_dir, d));
        spawn_epoch_ticker(&engine, Duration::from_micros(limits.epoch_tick_us))?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                limits: limits.clone(),
                compat_hash,
                cache_dir,
                compiled: Mutex::new(HashMap::new()),
                stats: StatCounters::default(),
                compiler: compiler_exe(),
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The linker every tier is instantiated against (host imports + capability-free WASI).
    pub fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    /// Engine-wide settings.
    pub fn limits(&self) -> &EngineConfig {
        &self.inner.limits
    }

    /// Epoch ticks a deadline corresponds to (at least one).
    pub fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.inner.limits.epoch_tick_us.max(1);
        (deadline.as_micros() as u64).div_ceil(tick).max(1)
    }

    /// Where the components this engine handed out came from: memory cache, disk cache or
    /// compiled (and how many disk artifacts were unusable). Tells a cache that works from one
    /// that silently recompiles.
    pub fn compile_stats(&self) -> CompileStats {
        self.inner.stats.snapshot()
    }

    /// Forgets compiled components whose wasm digest `keep` rejects (called after a reload,
    /// with the digests the new cascade uses): without it every hot-swapped version would stay
    /// compiled and mapped for the life of the process. Cascades still serving keep their own
    /// references, so nothing in use is freed early.
    pub fn retain_compiled(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut compiled) = self.inner.compiled.lock() {
            compiled.retain(|key, _| keep(key.split('-').next().unwrap_or(key)));
        }
    }
}

/// Advances the engine's epoch every `period`, drift-free (sleeps until `t0 + k * period`). A
/// tick makes a call whose deadline has come look at the wall clock (see the sandbox), so a
/// deadline is enforced at most about one tick late and never early. The thread
/// holds only a weak reference and exits within one tick of the last `Engine` clone (held by
/// components and instances too) being dropped.
fn spawn_epoch_ticker(engine: &Engine, period: Duration) -> Result<(), EngineError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tierhost-epoch".into())
        .spawn(move || {
            let start = Instant::now();
            let mut k: u32 = 0;
            loop {
                k = k.wrapping_add(1);
                let next = start + period * k;
                match next.checked_duration_since(Instant::now()) {
                    Some(wait) => std::thread::sleep(wait),
                    // Stalled (host overloaded): resume the schedule from now instead of
                    // bursting ticks; deadlines are re-checked against the wall clock anyway.
                    None => k = (start.elapsed().as_nanos() / period.as_nanos().max(1)) as u32,
                }
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(drop)
        .map_err(|e| EngineError(format!("cannot start the epoch ticker thread: {e}")))
}
