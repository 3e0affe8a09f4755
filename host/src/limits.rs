//! Sandbox limits: what one tier call may consume, what the engine as a whole provides, and
//! the per-store resource limiter that enforces the memory limit and records when it trips.
//!
//! Defaults are strict: a tier gets a small CPU and memory budget and a short deadline, and
//! must ask for more in its config. Each default below says why it has its value; the README
//! lists them all.
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Default fuel per call: a six-feature rules call uses ~26k fuel and a tight loop burns
/// ~8 G fuel/s, so 10 M is ~400x headroom for rules yet stops a runaway loop in ~1.3 ms of CPU.
pub const DEFAULT_FUEL: u64 = 10_000_000;
/// Default linear-memory limit: a Rust guest starts at ~1.1 MiB; 16 MiB leaves room for
/// request data and small models without letting one tier hoard host memory.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 16;
/// Default wall-clock deadline per call: fallback tiers must be fast to be useful; the primary
/// model usually gets more in its config.
pub const DEFAULT_DEADLINE_MS: u64 = 20;
/// Default limit on an answer's label plus reasons: explanations are short, a 10 MB reason is
/// an attack or a bug.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 * 1024;
/// Default log bytes a tier may write per call; the rest is dropped and counted.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 4 * 1024;
/// Default number of reasons an answer may carry: explanations name a few rules or features;
/// 400,000 empty reasons fit in any byte limit and are still an attack.
pub const DEFAULT_MAX_REASONS: u64 = 32;

/// `[tier.limits]`: per-call limits of one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierLimits {
    /// Fuel (roughly: wasm instructions) per call, including instantiation.
    pub fuel: u64,
    /// Largest linear memory the tier may grow to, in MiB.
    pub max_memory_mib: u64,
    /// Wall-clock deadline per call, in milliseconds (capped by what is left of the request
    /// budget).
    pub deadline_ms: u64,
    /// Largest label + reasons of an answer, in bytes.
    pub max_output_bytes: u64,
    /// Log bytes kept per call.
    pub max_log_bytes: u64,
    /// Most reasons an answer may carry.
    pub max_reasons: u64,
}

impl Default for TierLimits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_FUEL,
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            deadline_ms: DEFAULT_DEADLINE_MS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_reasons: DEFAULT_MAX_REASONS,
        }
    }
}

impl TierLimits {
    /// Memory limit in bytes.
    pub fn max_memory_bytes(&self) -> u64 {
        self.max_memory_mib * MIB
    }

    /// Checks the limits against the engine's ceilings; the error is `(field, problem)`.
    pub fn validate(&self, engine: &EngineConfig) -> Result<(), (&'static str, String)> {
        if self.fuel == 0 {
            return Err(("fuel", "must be greater than 0".into()));
        }
        if self.deadline_ms == 0 {
            return Err(("deadline_ms", "must be greater than 0".into()));
        }
        if self.max_memory_mib == 0 {
            return Err(("max_memory_mib", "must be greater than 0".into()));
        }
        if self.max_memory_mib > engine.max_memory_mib {
            return Err((
                "max_memory_mib",
                format!(
                    "{} MiB is above the engine ceiling engine.max_memory_mib = {}",
                    self.max_memory_mib, engine.max_memory_mib
                ),
            ));
        }
        if self.max_output_bytes == 0 {
            return Err(("max_output_bytes", "must be greater than 0".into()));
        }
        Ok(())
    }
}

/// Default wasm stack: recursion-heavy code needs to be cut off long before the host's own
/// stack is at risk; 256 KiB is ample for rules and small models.
pub const DEFAULT_MAX_WASM_STACK_KIB: u64 = 256;
/// Default epoch tick: a deadline is enforced at most one tick (1 ms) late, for 1000 cheap
/// wake-ups per second on one background thread (250 us cost ~4% of a core under load).
pub const DEFAULT_EPOCH_TICK_US: u64 = 1000;
/// Default number of instances alive at once across all tiers (pooling allocator slots).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Default ceiling for any tier's memory limit (sizes the pooling allocator's slots).
pub const DEFAULT_ENGINE_MAX_MEMORY_MIB: u64 = 512;

/// Default largest plugin file: 32 MiB, three times the largest builtin tier (the ONNX tier,
/// tract included, is ~10 MB).
pub const DEFAULT_MAX_PLUGIN_MIB: u64 = 32;
/// Default CPU time a plugin's compilation may take: the 10 MB ONNX tier compiles in ~26 s on
/// a busy 2-core machine; 120 s leaves 4x headroom while a pathological component (one huge
/// function) is refused instead of holding `check` or a reload for minutes.
pub const DEFAULT_COMPILE_TIMEOUT_S: u64 = 120;
/// Default memory a compilation may use: the ONNX tier peaks at a few hundred MiB.
pub const DEFAULT_COMPILE_MAX_MEMORY_MIB: u64 = 2048;

/// `[engine]`: settings shared by every tier, fixed when the host starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Wasm stack per call, in KiB. wasmtime applies it engine-wide, so it is not per tier.
    pub max_wasm_stack_kib: u64,
    /// Period of the epoch ticker that enforces deadlines, in microseconds.
    pub epoch_tick_us: u64,
    /// Instances alive at once across all tiers; a call beyond it is shed to the next tier.
    pub max_instances: u32,
    /// Ceiling for any tier's `max_memory_mib`.
    pub max_memory_mib: u64,
    /// Directory for compiled components (relative to the config). Unset: compile in memory
    /// at every start.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Largest plugin file, in MiB; larger ones are refused before they are parsed.
    pub max_plugin_mib: u64,
    /// CPU seconds (and, with slack, wall seconds) one plugin's compilation may take.
    pub compile_timeout_s: u64,
    /// Memory one plugin's compilation may use, in MiB (beyond what the compiler process holds
    /// once its engine is built).
    pub compile_max_memory_mib: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_wasm_stack_kib: DEFAULT_MAX_WASM_STACK_KIB,
            epoch_tick_us: DEFAULT_EPOCH_TICK_US,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memory_mib: DEFAULT_ENGINE_MAX_MEMORY_MIB,
            cache_dir: None,
            max_plugin_mib: DEFAULT_MAX_PLUGIN_MIB,
            compile_timeout_s: DEFAULT_COMPILE_TIMEOUT_S,
            compile_max_memory_mib: DEFAULT_COMPILE_MAX_MEMORY_MIB,
        }
    }
}

impl EngineConfig {
    /// Checks the values; the error is `(field, problem)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(16..=8 * 1024).contains(&self.max_wasm_stack_kib) {
            return Err(("max_wasm_stack_kib", "must be within 16..=8192".into()));
        }
        if !(50..=100_000).contains(&self.epoch_tick_us) {
            return Err(("epoch_tick_us", "must be within 50..=100000".into()));
        }
        if !(1..=100_000).contains(&self.max_instances) {
            return Err(("max_instances", "must be within 1..=100000".into()));
        }
        if !(1..=4096).contains(&self.max_memory_mib) {
            return Err(("max_memory_mib", "must be within 1..=4096".into()));
        }
        if !(1..=1024).contains(&self.max_plugin_mib) {
            return Err(("max_plugin_mib", "must be within 1..=1024".into()));
        }
        if !(1..=3600).contains(&self.compile_timeout_s) {
            return Err(("compile_timeout_s", "must be within 1..=3600".into()));
        }
        if !(64..=65_536).contains(&self.compile_max_memory_mib) {
            return Err(("compile_max_memory_mib", "must be within 64..=65536".into()));
        }
        Ok(())
    }
}

/// What a limiter saw trip during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimitHit {
    /// Bytes (memories) or elements (tables) asked for.
    pub requested: u64,
    /// The limit.
    pub limit: u64,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit: asked for {} bytes, limit {}",
            self.requested, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitHit {}

/// Elements a tier's tables may hold: Rust guests use a few hundred for indirect calls.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-store limiter: refuses growth past the tier's memory limit with a typed error (so the
/// host classifies the fault as `memory-limit`, not as a guest abort) and remembers the hit.
#[derive(Debug)]
pub struct TierLimiter {
    max_memory_bytes: usize,
    /// Set when a growth was refused, whether by this limit or by the pooling allocator.
    pub hit: Option<MemoryLimitHit>,
}

impl TierLimiter {
    /// A limiter for `max_memory_bytes` of linear memory.
    pub fn new(max_memory_bytes: u64) -> Self {
        Self {
            max_memory_bytes: usize::try_from(max_memory_bytes).unwrap_or(usize::MAX),
            hit: None,
        }
    }
}

impl wasmtime::ResourceLimiter for TierLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            let hit = MemoryLimitHit {
                requested: desired as u64,
                limit: self.max_memory_bytes as u64,
            };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(hit));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The pooling allocator's own slot size was exceeded: same fault for the tier.
        self.hit.get_or_insert(MemoryLimitHit {
            requested: 0,
            limit: self.max_memory_bytes as u64,
        });
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let hit = MemoryLimitHit {
                requested: desired as u64,
                limit: MAX_TABLE_ELEMENTS as u64,
            };
            self.hit = Some(hit);
            return Err(wasmtime::Error::new(hit));
        }
        Ok(true)
    }
}
