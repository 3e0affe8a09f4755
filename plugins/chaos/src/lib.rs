//! The chaos tier: one plugin that misbehaves on purpose, selected by its `mode` param.
//!
//! The tests put it in cascades to prove every sandbox limit and acceptance check trips and is
//! recorded with the right reason; operators can use it in staging to rehearse fallbacks
//! ("test the fallbacks": chaos engineering on the cascade itself).
//!
//! | `mode` | what the tier does | what the host should record |
//! |---|---|---|
//! | `ok` | answers `label`/`score`/`confidence` params | served (or low confidence) |
//! | `count` | answers with the number of calls this instance has seen | state isolation |
//! | `flaky` | faults for a `fault_rate` share of request ids (FNV-1a of the id), else `ok`; the faulting calls do `fault`: `trap` (default), `sleep` (`seconds`, then answer), `spin` (`iterations`, then answer) or `memory-bomb` | fault mix |
//! | `mixed` | by FNV-1a of the id: 5% trap, 5% infinite loop, 5% hang (sleep), 5% memory bomb, else `ok` | every fault kind, for soaks |
//! | `infinite-loop` | `loop {}` | out of fuel (or deadline) |
//! | `burn` | spins `iterations` times, then answers | fuel boundary |
//! | `spin` | busy loop for ~forever (a hung computation) | deadline |
//! | `sleep` | blocks in a WASI sleep for `seconds` | deadline |
//! | `memory-bomb` | allocates 1 MiB blocks until allocation fails | memory limit |
//! | `alloc` | allocates and touches `bytes` bytes, then answers | memory boundary |
//! | `panic` | `panic!` | trap (with the panic message) |
//! | `trap` | executes `unreachable` | trap |
//! | `recursion` | unbounded recursion | stack overflow |
//! | `nan` | answers with a NaN score | invalid output |
//! | `overconfident` | answers with confidence 1.5 | invalid output |
//! | `huge-reason` | answers with a reason of `bytes` bytes (default 10 MB) | invalid output (oversized) |
//! | `bad-label` | answers with label `not-a-label` | invalid output (label not allowed) |
//! | `log-flood` | logs `bytes` bytes in 1 KiB lines, then answers | logs truncated, served |
//! | `abstain` | abstains (with a reason of `reason_bytes` bytes when set) | abstained (reason cut at 1 KiB) |
//! | `many-reasons` | answers with `count` empty reasons | invalid output (too many reasons / too much data) |
//! | `handle-flood` | holds `count` WASI stderr handles at once (raw WASI bindings) | trap: the host's resource table is full |
//! | `control-chars` | answers with ESC / CR / newline in its label and reasons | escaped wherever shown |
//! | `error` | returns a tier error | tier error |
//! | `read-file` | tries to read `/etc/passwd` and list `/` | tier error naming the denial |
//! | `read-env` | tries to read environment variables | tier error naming the denial |
//! | `connect` | tries to open TCP sockets | tier error naming the denial |
//! | `clock` | reads the wall and monotonic clocks | tier error showing the frozen clock |
//!
//! A probe that is *not* denied answers with label `escaped`, which the tests reject.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use tierhost_sdk::{LogLevel, Outcome, Params, Prediction, Request, Tier, TierError, log};

struct Chaos;

static CALLS: AtomicU64 = AtomicU64::new(0);

fn answer(label: &str, score: f64, confidence: f64, reasons: Vec<String>) -> Outcome {
    Outcome::Answer(Prediction {
        label: label.into(),
        score,
        confidence,
        reasons,
    })
}

fn escaped(what: String) -> Result<Outcome, TierError> {
    Ok(answer("escaped", 1.0, 1.0, vec![what]))
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    black_box(recurse(black_box(depth + 1))) + 1
}

/// FNV-1a 64 of the request id: which requests fault in `flaky` and `mixed` (the load bench's
/// baselines use the same rule, so they fault on the same requests).
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Executes `unreachable`.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Spins `n` times (a hung computation when `n` is huge).
#[inline(always)]
fn spin(n: u64) -> u64 {
    let mut acc: u64 = 0;
    for i in 0..n {
        acc = black_box(acc.wrapping_add(i));
    }
    acc
}

/// Allocates 1 MiB blocks until allocation fails.
fn memory_bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Reserve without filling: memory grows as fast as the allocator can ask.
        let mut block = Vec::<u8>::with_capacity(1 << 20);
        block.push(1);
        hoard.push(black_box(block));
    }
}

impl Tier for Chaos {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let mode = params.text_or("mode", "ok")?.to_string();
        let label = params.text_or("label", "allow")?.to_string();
        let score = params.number_or("score", 0.1)?;
        let confidence = params.number_or("confidence", 0.9)?;
        match mode.as_str() {
            "ok" => Ok(answer(&label, score, confidence, vec!["chaos:ok".into()])),
            "flaky" => {
                // Deterministic per request id, so a load test and its baseline fault on the
                // same requests: FNV-1a 64 of the id, modulo 10000, below fault_rate * 10000.
                let rate = params.number_or("fault_rate", 0.2)?;
                let fault = params.text_or("fault", "trap")?;
                if !matches!(fault, "trap" | "sleep" | "spin" | "memory-bomb") {
                    return Err(TierError::BadParams(format!(
                        "param `fault` must be trap, sleep, spin or memory-bomb, not `{fault}`"
                    )));
                }
                if ((id_hash(&req.id) % 10_000) as f64) < rate * 10_000.0 {
                    match fault {
                        "sleep" => {
                            let secs = params.number_or("seconds", 3600.0)?;
                            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                        }
                        "spin" => {
                            let n = params.integer_or("iterations", i64::MAX)?;
                            black_box(spin(n as u64));
                        }
                        "memory-bomb" => memory_bomb(),
                        _ => trap(),
                    }
                    // A sleep or spin that ended within the limits was only slow: it answers.
                }
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec!["chaos:flaky-ok".into()],
                ))
            }
            "mixed" => match id_hash(&req.id) % 100 {
                0..5 => trap(),
                5..10 => {
                    let mut i: u64 = 0;
                    loop {
                        i = black_box(i.wrapping_add(1));
                    }
                }
                10..15 => {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                    Ok(answer(&label, score, confidence, vec!["slept".into()]))
                }
                15..20 => memory_bomb(),
                _ => Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec!["chaos:mixed-ok".into()],
                )),
            },
            "count" => {
                let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(answer(
                    &label,
                    n as f64,
                    confidence,
                    vec![format!("calls={n}")],
                ))
            }
            "infinite-loop" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "burn" | "spin" => {
                let default = if mode == "spin" { i64::MAX } else { 1_000 };
                let n = params.integer_or("iterations", default)?;
                let acc = spin(n as u64);
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec![format!("burned={}", acc % 7)],
                ))
            }
            "sleep" => {
                let secs = params.number_or("seconds", 3600.0)?;
                std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                Ok(answer(&label, score, confidence, vec!["slept".into()]))
            }
            "memory-bomb" => memory_bomb(),
            "alloc" => {
                let bytes = params.integer_or("bytes", 1 << 20)? as usize;
                let block = black_box(vec![7u8; bytes]);
                let sum: u64 = block.iter().step_by(4096).map(|b| *b as u64).sum();
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec![format!("touched={sum}")],
                ))
            }
            "panic" => panic!("chaos tier: deliberate panic"),
            "trap" => trap(),
            "recursion" => {
                let depth = recurse(0);
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec![format!("depth={depth}")],
                ))
            }
            "nan" => Ok(answer(&label, f64::NAN, confidence, vec![])),
            "overconfident" => Ok(answer(&label, score, 1.5, vec![])),
            "huge-reason" => {
                // `bytes` lets a drill size the output just past a tier's max_output_bytes, so
                // it is built within the tier's fuel and the output guard itself is tested.
                let bytes = usize::try_from(params.integer_or("bytes", 10 << 20)?)
                    .map_err(|_| TierError::BadParams("param `bytes` must be >= 0".into()))?;
                Ok(answer(&label, score, confidence, vec!["x".repeat(bytes)]))
            }
            "bad-label" => Ok(answer("not-a-label", score, confidence, vec![])),
            "log-flood" => {
                let bytes = params.integer_or("bytes", 1 << 20)? as usize;
                let line = "y".repeat(1024);
                for _ in 0..bytes / 1024 {
                    log(LogLevel::Info, &line);
                }
                Ok(answer(&label, score, confidence, vec!["flooded".into()]))
            }
            "abstain" => match params.integer_or("reason_bytes", 0)? {
                0 => Ok(Outcome::Abstain("chaos: abstaining on purpose".into())),
                n => Ok(Outcome::Abstain("r".repeat(n as usize))),
            },
            "many-reasons" => {
                let count = params.integer_or("count", 400_000)? as usize;
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec![String::new(); count],
                ))
            }
            "handle-flood" => {
                // Each `get-stderr` makes a new host-side handle; holding them all makes the host
                // keep them until the store is dropped.
                let count = params.integer_or("count", 100_000)? as usize;
                let held: Vec<_> = (0..count)
                    .map(|_| wasi::cli::stderr::get_stderr())
                    .collect();
                Ok(answer(
                    &label,
                    score,
                    confidence,
                    vec![format!("held={}", held.len())],
                ))
            }
            "control-chars" => Ok(answer(
                "allow\u{1b}[2K\rrules",
                score,
                confidence,
                vec!["line\nforged: served_by=primary".into()],
            )),
            "error" => Err(TierError::Internal("chaos: deliberate tier error".into())),
            "read-file" => {
                if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
                    return escaped(format!("read /etc/passwd: {} bytes", text.len()));
                }
                match std::fs::read_dir("/") {
                    Ok(entries) => escaped(format!("listed /: {} entries", entries.count())),
                    Err(e) => Err(TierError::Internal(format!("denied: file access: {e}"))),
                }
            }
            "read-env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args = std::env::args().count();
                if !vars.is_empty() || args > 0 || std::env::var("HOME").is_ok() {
                    return escaped(format!("env vars: {vars:?}, args: {args}"));
                }
                Err(TierError::Internal(
                    "denied: environment is empty (0 vars, 0 args)".into(),
                ))
            }
            "connect" => {
                let mut errors = Vec::new();
                for addr in ["127.0.0.1:80", "1.1.1.1:53", "[::1]:443"] {
                    match std::net::TcpStream::connect(addr) {
                        Ok(_) => return escaped(format!("connected to {addr}")),
                        Err(e) => errors.push(format!("{addr}: {e}")),
                    }
                }
                if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0")
                    && sock.send_to(b"x", "1.1.1.1:53").is_ok()
                {
                    return escaped("sent a UDP datagram".into());
                }
                Err(TierError::Internal(format!(
                    "denied: network: {}",
                    errors.join("; ")
                )))
            }
            "clock" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let start = std::time::Instant::now();
                let mut acc = 0u64;
                for i in 0..100_000u64 {
                    acc = black_box(acc.wrapping_add(i));
                }
                let elapsed = start.elapsed().as_nanos();
                if wall != 0 || elapsed != 0 {
                    return escaped(format!("wall={wall}ns elapsed={elapsed}ns acc={acc}"));
                }
                Err(TierError::Internal(format!(
                    "denied: clocks are frozen (wall={wall}ns, elapsed={elapsed}ns)"
                )))
            }
            other => Err(TierError::BadParams(format!(
                "unknown chaos mode `{other}`"
            ))),
        }
    }
}

tierhost_sdk::export_tier!(Chaos, kind = Other, name = "chaos");
