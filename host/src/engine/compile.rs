//! Compiling an untrusted plugin: in a child process (`tierhost compile-component`) under
//! CPU-time and memory limits, so a pathological component cannot hold `check` or a reload, or
//! in process for embedders without the binary; and the in-memory cache in front of it.
use super::*;

/// Environment variable naming the `tierhost` executable that compiles plugins in a child
/// process (library embedders set it; the `tierhost` binary uses itself).
pub const COMPILER_ENV: &str = "TIERHOST_COMPILER";

/// The executable that compiles untrusted plugins in a bounded child process:
/// `$TIERHOST_COMPILER`, else this process when it is the `tierhost` binary. A library
/// embedded elsewhere without the variable compiles in process: only the plugin size limit
/// applies there.
pub(super) fn compiler_exe() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(COMPILER_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "tierhost").then_some(exe)
}

/// Wall-clock time a compile child gets: this many times its CPU limit, plus
/// [`COMPILE_WALL_SLACK`]. The CPU limit is what stops a pathological plugin; the wall bound
/// only catches a child that stops using CPU, and must not refuse a healthy compile that a busy
/// host (a reload while every core serves requests, a test run beside other builds) gives a
/// fraction of a core.
const COMPILE_WALL_FACTOR: u32 = 4;
/// Extra wall-clock time a compile child gets beyond [`COMPILE_WALL_FACTOR`] times its CPU limit.
const COMPILE_WALL_SLACK: Duration = Duration::from_secs(30);
impl TierEngine {
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
    /// past [`COMPILE_WALL_FACTOR`] times the CPU limit plus [`COMPILE_WALL_SLACK`] of wall
    /// time, and loads the artifact it
    /// wrote into a private directory of this user.
    pub(super) fn compile_in_child(
        &self,
        exe: &Path,
        wasm: &[u8],
        key: &str,
    ) -> Result<Component, LoadError> {
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
        let wall = Duration::from_secs(limits.compile_timeout_s) * COMPILE_WALL_FACTOR
            + COMPILE_WALL_SLACK;
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
