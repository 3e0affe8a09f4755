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

/// Environment variable naming the `tierhost` executable that compiles plugins in a child
/// process (library embedders set it; the `tierhost` binary uses itself).
pub const COMPILER_ENV: &str = "TIERHOST_COMPILER";

/// The executable that compiles untrusted plugins in a bounded child process:
/// `$TIERHOST_COMPILER`, else this process when it is the `tierhost` binary. A library
/// embedded elsewhere without the variable compiles in process: only the plugin size limit
/// applies there.
fn compiler_exe() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(COMPILER_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "tierhost").then_some(exe)
}

/// Extra wall-clock time a compile child gets beyond its CPU limit (a loaded machine).
const COMPILE_WALL_SLACK: Duration = Duration::from_secs(30);

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

        let cache_dir = limits.cache_dir.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                base_dir.join(d)
            }
        });
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

    /// Compiles a component, or returns it from the in-memory or disk cache. Keyed by the
    /// wasm's sha256 and the engine's compatibility hash.
    pub fn compile(&self, wasm: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let limit = self.inner.limits.max_plugin_mib;
        if wasm.len() as u64 > limit * MIB as u64 {
            return Err(LoadError::TooLarge {
                bytes: wasm.len() as u64,
                limit_mib: limit,
            });
        }
        let key = format!("{sha256}-{}", self.inner.compat_hash);
        if let Some(c) = self
            .inner
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            StatCounters::count(&self.inner.stats.memory_hits);
            return Ok(c);
        }
        let started = Instant::now();
        let cached = match &self.inner.cache_dir {
            Some(dir) => self.load_cached(dir, &key)?,
            None => None,
        };
        let component = match cached {
            Some(c) => {
                StatCounters::count(&self.inner.stats.disk_hits);
                c
            }
            None => {
                let c = match &self.inner.compiler {
                    Some(exe) => self.compile_in_child(exe, wasm, &key)?,
                    None => Component::new(&self.inner.engine, wasm)
                        .map_err(|e| LoadError::Compile(format!("{e:#}")))?,
                };
                if let Some(dir) = &self.inner.cache_dir {
                    self.store_cached(dir, &key, &c)?;
                }
                StatCounters::count(&self.inner.stats.compiled);
                tracing::info!(
                    sha256,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled component"
                );
                c
            }
        };
        if let Ok(mut m) = self.inner.compiled.lock() {
            m.insert(key, component.clone());
        }
        Ok(component)
    }

    /// Compiles `wasm` in a child process (`<exe> compile-component`) limited to
    /// `compile_timeout_s` of CPU and `compile_max_memory_mib` of memory, killed if it runs
    /// past the CPU limit plus [`COMPILE_WALL_SLACK`] of wall time, and loads the artifact it
    /// wrote into a private directory of this user.
    fn compile_in_child(&self, exe: &Path, wasm: &[u8], key: &str) -> Result<Component, LoadError> {
        use std::process::{Command, Stdio};
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let limits = &self.inner.limits;
        let dir = std::env::temp_dir().join(format!(
            "tierhost-compile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir)?;
        let cleanup = RemoveOnDrop(dir.clone());
        let input = dir.join(format!("{key}.wasm"));
        let output = dir.join(format!("{key}.cwasm"));
        write_private(&input, wasm)?;
        let engine = serde_json::to_string(&EngineConfig {
            cache_dir: None,
            ..limits.clone()
        })
        .map_err(|e| LoadError::Cache(e.to_string()))?;
        let child = Command::new(exe)
            .arg("compile-component")
            .arg("--engine")
            .arg(&engine)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .env_remove(COMPILER_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LoadError::Cache(format!("cannot start {}: {e}", exe.display())))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let wall = Duration::from_secs(limits.compile_timeout_s) + COMPILE_WALL_SLACK;
        let result = match rx.recv_timeout(wall) {
            Ok(result) => result,
            Err(_) => {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                let _ = rx.recv();
                return Err(LoadError::CompileLimit(format!(
                    "still compiling after {} s of wall time (engine.compile_timeout_s = {})",
                    wall.as_secs(),
                    limits.compile_timeout_s
                )));
            }
        };
        let out = result.map_err(|e| LoadError::Cache(format!("compile child: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr.trim().lines().last().unwrap_or("").to_string();
        if !out.status.success() {
            use std::os::unix::process::ExitStatusExt;
            return Err(match (out.status.signal(), out.status.code()) {
                (Some(sig), _) if sig == libc_sigxcpu() || sig == 9 => {
                    LoadError::CompileLimit(format!(
                        "used more than engine.compile_timeout_s = {} s of CPU",
                        limits.compile_timeout_s
                    ))
                }
                _ if stderr.contains("memory allocation") => LoadError::CompileLimit(format!(
                    "needed more than engine.compile_max_memory_mib = {} MiB",
                    limits.compile_max_memory_mib
                )),
                (_, Some(COMPILE_EXIT_INVALID)) => LoadError::Compile(message),
                _ => LoadError::CompileLimit(format!(
                    "the compiler process failed ({}): {message}",
                    out.status
                )),
            });
        }
        check_private(&output)?;
        // SAFETY: the artifact was written by this host's own compiler process (the same
        // binary, the same engine settings) into a directory only this user can write, and
        // wasmtime checks its header against this engine.
        let component = unsafe { Component::deserialize_file(&self.inner.engine, &output) }
            .map_err(|e| LoadError::Cache(format!("compiled artifact: {e:#}")));
        drop(cleanup);
        component
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

    fn load_cached(&self, dir: &Path, key: &str) -> Result<Option<Component>, LoadError> {
        let path = dir.join(format!("{key}.cwasm"));
        if !path.exists() {
            return Ok(None);
        }
        check_private(dir)?;
        check_private(&path)?;
        // SAFETY: the file sits in a directory that only this user can write, under a name
        // derived from the wasm's digest and this engine's compatibility hash, and was written
        // by `store_cached` (atomically, via a temporary file and rename). wasmtime also checks
        // the artifact's header against the engine.
        match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached component");
                let _ = std::fs::remove_file(&path);
                StatCounters::count(&self.inner.stats.disk_discarded);
                Ok(None)
            }
        }
    }

    fn store_cached(&self, dir: &Path, key: &str, component: &Component) -> Result<(), LoadError> {
        let bytes = component
            .serialize()
            .map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        create_private_dir(dir)?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        write_private(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(format!("{key}.cwasm")))
            .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))
    }
}

/// Exit code of `tierhost compile-component` for a file that is not a valid component.
pub const COMPILE_EXIT_INVALID: i32 = 3;

/// SIGXCPU: the kernel's signal for a process past its CPU-time limit.
const fn libc_sigxcpu() -> i32 {
    24
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The body of `tierhost compile-component`: limits this process to the engine's compile CPU
/// time and memory, compiles `input` with an engine built from `engine` (the parent's
/// settings, so the artifact is compatible) and writes the artifact to `output`. Returns the
/// process exit code: 0 on success, 3 (`COMPILE_EXIT_INVALID`) for an invalid component, 2 for
/// anything else.
pub fn compile_component_main(engine: &str, input: &Path, output: &Path) -> i32 {
    let limits: EngineConfig = match serde_json::from_str(engine) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bad --engine settings: {e}");
            return 2;
        }
    };
    let engine = match TierEngine::new(&limits, Path::new(".")) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Err(e) = limit_compile_process(&limits) {
        eprintln!("cannot limit the compiler process: {e}");
        return 2;
    }
    let wasm = match std::fs::read(input) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            return 2;
        }
    };
    let component = match Component::new(engine.engine(), &wasm) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return COMPILE_EXIT_INVALID;
        }
    };
    let bytes = match component.serialize() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return 2;
        }
    };
    match write_private(output, &bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// Limits this (compiler) process: `compile_timeout_s` of CPU, and `compile_max_memory_mib` of
/// data beyond what it holds now. Called after the engine is built, so the engine's own
/// reservations (the pooling allocator maps its table pool writable) are not counted against
/// the compilation.
#[cfg(target_os = "linux")]
fn limit_compile_process(limits: &EngineConfig) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let status = std::fs::read_to_string("/proc/self/status")?;
    let data_now_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmData in /proc/self/status"))?;
    let data = data_now_kib * 1024 + limits.compile_max_memory_mib * 1024 * 1024;
    let cpu = limits.compile_timeout_s;
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(cpu),
            maximum: Some(cpu + 1),
        },
    )?;
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(data),
            maximum: Some(data),
        },
    )?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn limit_compile_process(_limits: &EngineConfig) -> std::io::Result<()> {
    Ok(())
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

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))?;
    }
    check_private(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))
}

/// Refuses a cache path that another user owns or that others can write to.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))?;
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid || meta.mode() & 0o022 != 0 || meta.file_type().is_symlink() {
        return Err(LoadError::Cache(format!(
            "{} must be owned by uid {uid}, not a symlink, and not writable by group or others; \
             refusing to load compiled code from it",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))
}
#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))
}
#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), LoadError> {
    Err(LoadError::Cache(
        "the disk cache is only supported on unix".into(),
    ))
}
