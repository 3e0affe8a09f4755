//! Load benchmark: `tierhost serve` against the HTTP floor and two hand-written Python services,
//! under the faults users fear, measured open loop.
//!
//! Systems, each answering the same 4-level cascade (flaky primary -> logistic small model ->
//! rules -> safe default) with the same thresholds, limits and answer fields; the primary
//! faults on the same request ids everywhere (FNV-1a 64 of the id):
//!
//! - `tierhost serve` (the real binary, fresh instances: the default), primary `builtin:chaos`
//!   in `flaky` mode, its faulting share trapping, sleeping, spinning or allocating inside the
//!   sandbox, where the deadline (20 ms), fuel and memory (16 MiB) limits stop it;
//! - the HTTP floor: this bench's own binary serving the same axum route shape, decoding
//!   requests with `tierhost::Request::from_json` and encoding a `tierhost::Answer`, with the
//!   cascade as a native Rust function (same logic, the rules from the very same source; no
//!   wasm, no service, no limits);
//! - Python, tiers in threads (benches/baseline, `BASELINE_ISOLATION=thread`): article 004's
//!   `ResilientPredictor` on Starlette + uvicorn (2 workers), each tier call on its own thread
//!   pool with a timeout; a timed-out call's thread runs on;
//! - Python, tiers in supervised processes (`BASELINE_ISOLATION=process`): each tier in
//!   forkserver worker processes, SIGKILLed and restarted on a timeout or a crash.
//!
//! Fault mixes: `exceptions` (20% of primary calls raise / trap), `hangs` (1% block for 2 s),
//! `cpu-loop` (1% spin), `memory-bomb` (0.5% allocate without bound; the Python processes
//! run under `ulimit -v`). Sections:
//!
//! 1. closed loop, max throughput (`exceptions` mix), every system including the floor:
//!    tierhost's throughput as a share of the floor's (issue 10's target: >= 70%);
//! 2. open loop at a fixed rate, per mix: req/s, p50 / p99 / p99.9 from the scheduled send
//!    time, errors, lost requests, worker and tier-process restarts, server CPU;
//! 3. hot swap: tierhost's p99 while the rules tier is swapped every second vs steady.
//!
//! Every figure is the median (min..max) of `--repetitions` runs (default 5), the systems
//! interleaved in a rotating order, each run on a freshly started server (stopped, with its
//! whole process group, before the next starts). The generator is pinned to core 0 and the
//! servers to core 1 with `taskset` when there are 2+ cores and taskset works.
//!
//! Run: `cargo bench --bench load` (~15 min; needs python3: the baseline's venv is created
//! by benches/baseline/setup.sh). Options: `--seconds S` per run (default 5), `--repetitions
//! N` (5), `--rate R` open-loop requests/s (default 1000), `--connections C` closed loop (32),
//! `--no-python`, `--sections closed,open,swap` (default all), `--mixes exceptions,hangs,...`
//! (default all), `--smoke` (one 1 s repetition; the Python systems only when their venv
//! already exists; < 1 min). Exits 1 when a run answered nothing or tierhost failed a request.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tierhost::{
    Answer, Decision, FallbackReason, FeatureValue, Request, ServedBy, Step, TrailEntry,
};

#[path = "../tests/common/mod.rs"]
mod common;
mod loadgen;
mod machine;
mod support;

#[path = "../plugins/rules/src/logic.rs"]
#[allow(dead_code)]
mod rules_logic;

use common::http::{Http, free_port};
use common::variant_of;
use loadgen::{
    HttpClient, OpenLoop, RunStats, Server, closed_loop, count, median_range, ms, open_loop,
    percent, quantile_ms,
};
use support::{arg, flag};

/// Open-loop rate when `--rate` is not given: about a quarter of the closed-loop maximum of
/// the slowest system (Python with tiers in processes: ~3,500 req/s on one core of this
/// machine), so every system, healthy, uses at most ~1/3 of its core, as a provisioned
/// service would; what the faults cost then shows as latency, errors and lost requests rather
/// than as plain overload. `--rate 2000` shows the same mixes closer to saturation.
const DEFAULT_RATE: f64 = 1000.0;
/// A request not answered this long after its scheduled time is lost.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Open loop: at most this many requests in flight (connections).
const MAX_IN_FLIGHT: usize = 256;
/// How long a server gets to exit after SIGTERM before its process group is SIGKILLed. Short:
/// its measurement is over, and uvicorn otherwise spends ~2 s closing the generator's idle
/// keep-alive connections.
const STOP_GRACE: Duration = Duration::from_millis(300);
/// Python: uvicorn worker processes.
const PY_WORKERS: &str = "2";

// ---------------------------------------------------------------------------------------------
// Fault mixes and systems
// ---------------------------------------------------------------------------------------------

struct Mix {
    name: &'static str,
    what: &'static str,
    /// Share of request ids on which the primary faults.
    rate: f64,
    /// The chaos tier's `fault` in `flaky` mode.
    chaos: &'static str,
    /// The Python baseline's `BASELINE_FAULT`.
    python: &'static str,
}

const MIXES: [Mix; 4] = [
    Mix {
        name: "exceptions",
        what: "20% of primary calls raise (tierhost: trap)",
        rate: 0.2,
        chaos: "trap",
        python: "exception",
    },
    Mix {
        name: "hangs",
        what: "1% of primary calls block for 2 s (tierhost: WASI sleep)",
        rate: 0.01,
        chaos: "sleep",
        python: "hang",
    },
    Mix {
        name: "cpu-loop",
        what: "1% of primary calls spin (Python: for 2 s; tierhost: without end)",
        rate: 0.01,
        chaos: "spin",
        python: "spin",
    },
    Mix {
        name: "memory-bomb",
        what: "0.5% of primary calls allocate 1 MiB blocks without bound",
        rate: 0.005,
        chaos: "memory-bomb",
        python: "memory-bomb",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Floor,
    Tierhost,
    PyThread,
    PyProcess,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Floor => "HTTP floor (axum + JSON, native cascade)",
            System::Tierhost => "tierhost serve (fresh instances)",
            System::PyThread => "Python, tiers in threads (timeouts)",
            System::PyProcess => "Python, tiers in supervised processes",
        }
    }

    fn python(self) -> Option<&'static str> {
        match self {
            System::PyThread => Some("thread"),
            System::PyProcess => Some("process"),
            _ => None,
        }
    }
}

fn cascade_toml(mix: &Mix) -> String {
    format!(
        r#"
[cascade]
name = "load-bench"
budget_ms = 100

[server]
max_in_flight = 1024
watch = false

[safe_default]
label = "review"
reasons = ["safe_default", "flag_for_review"]

[[tier]]
name = "primary"
plugin = "builtin:chaos"
min_confidence = 0.8
[tier.params]
mode = "flaky"
fault_rate = {rate}
fault = "{fault}"
seconds = 2.0
label = "allow"
score = 0.1
confidence = 0.9

[[tier]]
name = "small-model"
plugin = "builtin:linear"
min_confidence = 0.7
[tier.accept]
labels = ["allow", "block"]
[tier.params]
bias = -1.5
[tier.params.weights]
amount = 0.8
account_age_days = -0.03
[tier.params.scales]
amount = 1000.0

[[tier]]
name = "rules"
plugin = "rules.wasm"
min_confidence = 0.3
"#,
        rate = mix.rate,
        fault = mix.chaos,
    )
}

// ---------------------------------------------------------------------------------------------
// The HTTP floor: the same route shape, request decoding and answer encoding, a native cascade
// ---------------------------------------------------------------------------------------------

/// The bench cascade as plain Rust: same tiers, thresholds, acceptance checks and trail.
struct NativeCascade {
    fault_rate: f64,
    rules: rules_logic::RuleParams,
}

const VERSION: &str = "0.1.0";
/// Stands in for a plugin's sha256 and the config digest in the provenance (same length as
/// the real ones).
const DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

type TierResult = Result<(String, f64, f64, Vec<String>), FallbackReason>;

fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn tier_error(error: &str, message: String) -> FallbackReason {
    FallbackReason::TierError {
        error: error.into(),
        message,
    }
}

/// A numeric feature as the tier SDK reads it.
fn number(req: &Request, name: &str) -> Result<Option<f64>, FallbackReason> {
    match req.feature(name) {
        None | Some(FeatureValue::Null) => Ok(None),
        Some(FeatureValue::Integer(i)) => Ok(Some(*i as f64)),
        Some(FeatureValue::Float(x)) => Ok(Some(*x)),
        Some(FeatureValue::Bool(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        Some(FeatureValue::Text(_)) => Err(tier_error(
            "invalid-input",
            format!("feature `{name}` must be a number, got text"),
        )),
    }
}

fn require_number(req: &Request, name: &str) -> Result<f64, FallbackReason> {
    number(req, name)?.ok_or_else(|| tier_error("missing-feature", name.to_string()))
}

fn flag_feature(req: &Request, name: &str) -> Result<bool, FallbackReason> {
    match req.feature(name) {
        None | Some(FeatureValue::Null) | Some(FeatureValue::Integer(0)) => Ok(false),
        Some(FeatureValue::Bool(b)) => Ok(*b),
        Some(FeatureValue::Integer(1)) => Ok(true),
        Some(_) => Err(tier_error(
            "invalid-input",
            format!("feature `{name}` must be a boolean"),
        )),
    }
}

impl NativeCascade {
    fn primary(&self, req: &Request) -> TierResult {
        if ((fnv1a64(&req.id) % 10_000) as f64) < self.fault_rate * 10_000.0 {
            return Err(FallbackReason::Trap {
                message: "wasm trap: wasm `unreachable` instruction executed".into(),
            });
        }
        Ok(("allow".into(), 0.1, 0.9, vec!["chaos:flaky-ok".into()]))
    }

    fn small_model(&self, req: &Request) -> TierResult {
        let mut z = -1.5;
        let mut terms = Vec::new();
        for (name, weight, scale) in [("account_age_days", -0.03, 1.0), ("amount", 0.8, 1000.0)] {
            let c = weight * require_number(req, name)? / scale;
            z += c;
            if c != 0.0 {
                terms.push((name, c));
            }
        }
        terms.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let reasons = terms
            .iter()
            .take(3)
            .map(|(n, c)| format!("{n}:{c:+.3}"))
            .collect();
        let p = 1.0 / (1.0 + (-z).exp());
        Ok(if p >= 0.5 {
            ("block".into(), p, p, reasons)
        } else {
            ("allow".into(), p, 1.0 - p, reasons)
        })
    }

    fn rules(&self, req: &Request) -> TierResult {
        let tx = rules_logic::Transaction {
            amount: require_number(req, "amount")?,
            account_age_days: number(req, "account_age_days")?,
            merchant_category: match req.feature("merchant_category") {
                Some(FeatureValue::Text(s)) => Some(s.as_str()),
                None | Some(FeatureValue::Null) => None,
                Some(_) => {
                    return Err(tier_error(
                        "invalid-input",
                        "feature `merchant_category` must be text".into(),
                    ));
                }
            },
            is_international: flag_feature(req, "is_international")?,
            has_international_history: flag_feature(req, "has_international_history")?,
        };
        let verdict = rules_logic::evaluate(&tx, &self.rules);
        Ok((verdict.label.into(), verdict.score, 0.4, verdict.reasons))
    }

    fn predict(&self, req: &Request) -> Answer {
        type Tier = fn(&NativeCascade, &Request) -> TierResult;
        let tiers: [(&str, &str, Tier, f64, &[&str]); 3] = [
            ("primary", "chaos", Self::primary, 0.8, &[]),
            (
                "small-model",
                "logistic",
                Self::small_model,
                0.7,
                &["allow", "block"],
            ),
            ("rules", "fraud-rules", Self::rules, 0.3, &[]),
        ];
        let started = Instant::now();
        let mut trail = Vec::with_capacity(tiers.len());
        for (index, (name, plugin, call, min_confidence, labels)) in tiers.into_iter().enumerate() {
            let t = Instant::now();
            let verdict = call(self, req).and_then(|(label, score, confidence, reasons)| {
                let bytes = label.len() + reasons.iter().map(String::len).sum::<usize>();
                if !score.is_finite()
                    || !(0.0..=1.0).contains(&confidence)
                    || label.is_empty()
                    || (!labels.is_empty() && !labels.contains(&label.as_str()))
                    || bytes > 16 * 1024
                {
                    return Err(FallbackReason::InvalidOutput {
                        detail: "answer breaks the contract".into(),
                    });
                }
                if confidence < min_confidence {
                    return Err(FallbackReason::LowConfidence {
                        confidence,
                        min_confidence,
                    });
                }
                Ok(Decision::Answer {
                    label,
                    score,
                    confidence,
                    reasons,
                })
            });
            let mut entry = TrailEntry::new(name, Some(VERSION.into()));
            entry.elapsed_us = t.elapsed().as_micros() as u64;
            match verdict {
                Ok(decision) => {
                    entry.step = Step::Served;
                    trail.push(entry);
                    return Answer {
                        request_id: req.id.clone(),
                        decision,
                        served_by: ServedBy {
                            tier: name.into(),
                            plugin: Some(plugin.into()),
                            version: Some(VERSION.into()),
                            sha256: Some(DIGEST.into()),
                            config_digest: DIGEST.into(),
                        },
                        degraded: index > 0,
                        elapsed_us: started.elapsed().as_micros() as u64,
                        cache: None,
                        trail,
                        escalation: None,
                    };
                }
                Err(reason) => {
                    let mut entry = entry.fell_back(reason);
                    entry.step = Step::FellThrough;
                    trail.push(entry);
                }
            }
        }
        Answer {
            request_id: req.id.clone(),
            decision: Decision::Answer {
                label: "review".into(),
                score: 0.0,
                confidence: 0.0,
                reasons: vec!["safe_default".into(), "flag_for_review".into()],
            },
            served_by: ServedBy {
                tier: tierhost::SAFE_DEFAULT.into(),
                plugin: None,
                version: None,
                sha256: None,
                config_digest: DIGEST.into(),
            },
            degraded: true,
            elapsed_us: started.elapsed().as_micros() as u64,
            cache: None,
            trail,
            escalation: None,
        }
    }
}

async fn floor_predict(State(cascade): State<Arc<NativeCascade>>, body: Bytes) -> Response {
    let error = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": message })),
        )
            .into_response()
    };
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error("body is not UTF-8".into()),
    };
    match Request::from_json(text) {
        Ok(request) => axum::Json(cascade.predict(&request)).into_response(),
        Err(e) => error(e.to_string()),
    }
}

/// `--serve-floor PORT`: this binary as the HTTP floor server, on a runtime built as
/// `tierhost serve` builds its own.
fn serve_floor(port: u16, fault_rate: f64) {
    let cascade = Arc::new(NativeCascade {
        fault_rate,
        rules: rules_logic::RuleParams::default(),
    });
    let router = Router::new()
        .route("/v1/predict", post(floor_predict))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .with_state(cascade);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the floor's port");
        axum::serve(listener, router).await.expect("floor server");
    });
}

// ---------------------------------------------------------------------------------------------
// Starting the systems
// ---------------------------------------------------------------------------------------------

struct Bench {
    root: PathBuf,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
    server_core: Option<usize>,
    python: bool,
    starts: u64,
    smoke: bool,
}

impl Bench {
    /// The config directory of `mix` (its cascade.toml and rules.wasm), written once.
    fn config(&self, mix: &Mix) -> PathBuf {
        let dir = self.dir.path().join(mix.name);
        let config = dir.join("cascade.toml");
        if !config.exists() {
            std::fs::create_dir_all(&dir).expect("config dir");
            common::write_config_dir(&dir, &cascade_toml(mix));
        }
        config
    }

    /// Starts `system` serving `mix` and waits until it answers `/healthz`.
    fn start(&mut self, system: System, mix: &Mix) -> Server {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        self.starts += 1;
        let listen = format!("127.0.0.1:{port}");
        let mut server = match system {
            System::Tierhost => Server::start(
                Path::new(env!("CARGO_BIN_EXE_tierhost")),
                &[
                    "serve".into(),
                    "--config".into(),
                    self.config(mix).display().to_string(),
                    "--listen".into(),
                    listen,
                ],
                &[("RUST_LOG".into(), "error".into())],
                self.server_core,
                base,
                None,
            ),
            System::Floor => Server::start(
                &std::env::current_exe().expect("own path"),
                &[
                    "--serve-floor".into(),
                    port.to_string(),
                    "--fault-rate".into(),
                    mix.rate.to_string(),
                ],
                &[],
                self.server_core,
                base,
                None,
            ),
            System::PyThread | System::PyProcess => {
                let events = self.dir.path().join(format!("events-{}.log", self.starts));
                let envs = [
                    ("BASELINE_ISOLATION", system.python().unwrap_or("thread")),
                    ("BASELINE_FAULT", mix.python),
                    ("BASELINE_FAULT_RATE", &mix.rate.to_string()),
                    ("BASELINE_EVENTS", &events.display().to_string()),
                    ("BASELINE_LOG_LEVEL", "ERROR"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()));
                Server::start(
                    &self.root.join("benches/baseline/run.sh"),
                    &[port.to_string(), PY_WORKERS.into()],
                    &envs,
                    self.server_core,
                    base,
                    Some(events),
                )
            }
        };
        let http = Http::new(&server.base);
        let started = Instant::now();
        loop {
            if self
                .runtime
                .block_on(http.try_send("GET", "/healthz", ""))
                .is_ok_and(|(s, _)| s == 200)
            {
                break;
            }
            assert!(
                server.alive(),
                "{} exited before it answered /healthz",
                system.label()
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} did not answer /healthz within 60 s",
                system.label()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn open(&self, server: &Server, prefix: &str, rate: f64, seconds: f64) -> RunStats {
        open_loop(
            self.runtime.handle(),
            &self.client,
            &format!("{}/v1/predict", server.base),
            prefix,
            OpenLoop {
                rate,
                duration: Duration::from_secs_f64(seconds),
                max_in_flight: MAX_IN_FLIGHT,
                timeout: TIMEOUT,
            },
        )
    }

    fn closed(&self, server: &Server, prefix: &str, connections: usize, seconds: f64) -> RunStats {
        self.runtime.block_on(closed_loop(
            &server.base,
            "/v1/predict",
            prefix,
            connections,
            Duration::from_secs_f64(seconds),
            TIMEOUT,
            None,
        ))
    }

    /// Checks that `server` gives the native cascade's answers (serving tier, label, the
    /// reason kind of each step down) on 200 requests; a line for the output.
    fn agreement(&self, server: &Server) -> (u64, u64, Option<String>) {
        let reference = NativeCascade {
            fault_rate: MIXES[0].rate,
            rules: rules_logic::RuleParams::default(),
        };
        let http = Http::new(&server.base);
        let (mut same, mut total, mut first) = (0, 0, None);
        for i in 0..200 {
            let body = loadgen::body("check", i);
            let want = signature(
                &serde_json::to_value(
                    reference.predict(
                        &Request::from_json(std::str::from_utf8(&body).expect("utf-8"))
                            .expect("request"),
                    ),
                )
                .expect("json"),
            );
            let got = self
                .runtime
                .block_on(http.try_send("POST", "/v1/predict", body))
                .ok()
                .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
                .map(|v| signature(&v))
                .unwrap_or_default();
            total += 1;
            if got == want {
                same += 1;
            } else if first.is_none() {
                first = Some(format!("check-{i}: expected {want}, got {got}"));
            }
        }
        (same, total, first)
    }
}

/// Serving tier, label and the fallback reason kinds of an answer.
fn signature(answer: &Value) -> String {
    let kinds: Vec<&str> = answer["trail"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|e| e["reason"]["kind"].as_str())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {} [{}]",
        answer["served_by"]["tier"].as_str().unwrap_or("?"),
        answer["decision"]["label"].as_str().unwrap_or("?"),
        kinds.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// One measured run and what happened to the server around it.
struct Run {
    stats: RunStats,
    worker_restarts: Option<u64>,
    tier_restarts: Option<u64>,
    died: bool,
}

/// Runs a measurement on a running server: CPU and restarts counted around it.
fn measure(server: &mut Server, system: System, run: impl FnOnce(&Server) -> RunStats) -> Run {
    let (workers0, tiers0) = (server.events("worker-start"), server.events("tier-restart"));
    let (cpu0, own0, t0) = (
        server.cpu_seconds(),
        loadgen::own_cpu_seconds(),
        Instant::now(),
    );
    let mut stats = run(server);
    stats.server_cpu = server.cpu_seconds() - cpu0;
    stats.generator_cpu = loadgen::own_cpu_seconds() - own0;
    stats.wall = t0.elapsed().as_secs_f64();
    let python = system.python().is_some();
    Run {
        stats,
        worker_restarts: python.then(|| server.events("worker-start") - workers0),
        tier_restarts: (system == System::PyProcess)
            .then(|| server.events("tier-restart") - tiers0),
        died: !server.alive(),
    }
}

fn column(runs: &[Run], f: impl Fn(&Run) -> f64, show: impl Fn(f64) -> String) -> String {
    median_range(runs.iter().map(f).collect(), show)
}

fn optional_column(runs: &[Run], f: impl Fn(&Run) -> Option<u64>) -> String {
    if runs.iter().all(|r| f(r).is_none()) {
        return "-".into();
    }
    median_range(
        runs.iter().map(|r| f(r).unwrap_or(0) as f64).collect(),
        count,
    )
}

fn restarts(runs: &[Run]) -> String {
    let died = runs.iter().filter(|r| r.died).count();
    let workers = optional_column(runs, |r| r.worker_restarts);
    match (died, workers.as_str()) {
        (0, "-") => "0".into(),
        (0, _) => workers,
        (n, _) => format!("{workers}; server died in {n} run(s)"),
    }
}

fn rotate<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    let n = items.len();
    (0..n).map(|i| items[(i + by) % n]).collect()
}

fn progress(text: &str) {
    eprintln!(
        "  [{}] {text}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
}

/// Whether the Python baselines can run; `Err` says why not. The full run creates the venv
/// (benches/baseline/setup.sh); the smoke run only uses one that already exists.
fn python_ready(root: &Path, smoke: bool) -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let runs = Command::new(&python)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        return Err(format!(
            "{python} not found (install it, e.g. apt-get install python3 python3-venv)"
        ));
    }
    let target = std::env::var("TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    if smoke && !target.join("baseline-venv/bin/python").exists() {
        return Err("no venv yet (benches/baseline/setup.sh creates it; the full run does)".into());
    }
    let setup = Command::new(root.join("benches/baseline/setup.sh"))
        .stdout(Stdio::null())
        .status();
    match setup {
        Ok(s) if s.success() => Ok(()),
        _ => Err("benches/baseline/setup.sh failed".into()),
    }
}

fn main() {
    if let Some(port) = arg::<u16>("--serve-floor") {
        serve_floor(port, arg("--fault-rate").unwrap_or(0.2));
        return;
    }
    let smoke = flag("--smoke");
    let seconds: f64 = arg("--seconds").unwrap_or(if smoke { 1.0 } else { 5.0 });
    let reps: usize = arg("--repetitions").unwrap_or(if smoke { 1 } else { 5 });
    let rate: f64 = arg("--rate").unwrap_or(DEFAULT_RATE);
    let connections: usize = arg("--connections").unwrap_or(32);
    let warmup = if smoke { 0.3 } else { 1.0 };
    let sections: String = arg("--sections").unwrap_or_else(|| "closed,open,swap".into());
    let section = |name: &str| sections.split(',').any(|s| s == name);
    let mix_filter: Option<String> = arg("--mixes");
    let mixes: Vec<&Mix> = MIXES
        .iter()
        .filter(|m| {
            mix_filter
                .as_ref()
                .is_none_or(|f| f.split(',').any(|n| n == m.name))
        })
        .collect();
    let began = Instant::now();

    // Pin before the runtime starts its threads (they inherit the mask).
    let machine = machine::describe();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && loadgen::pin_self(0);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = if flag("--no-python") {
        Err("--no-python".to_string())
    } else {
        python_ready(&root, smoke)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime.block_on(async { loadgen::client(MAX_IN_FLIGHT) });
    let mut bench = Bench {
        root,
        dir: tempfile::tempdir().expect("tempdir"),
        runtime,
        client,
        server_core: pinned.then_some(1),
        python: python.is_ok(),
        starts: 0,
        smoke,
    };

    println!("load benchmark: {machine}");
    if pinned {
        println!(
            "load generator pinned to core 0, each server (its whole process tree) to core 1 (taskset)"
        );
    } else if cores < 2 {
        println!("NOT pinned: one core only; load generator and servers share it");
    } else {
        println!(
            "NOT pinned: taskset (util-linux) is missing or failed; load generator and servers share the cores"
        );
    }
    if let Err(why) = &python {
        println!("Python baselines skipped: {why}");
    }
    println!(
        "every figure: median (min..max) of {reps} run(s) of {seconds} s, systems interleaved in a rotating order, each run on a freshly started server after a {warmup} s warm-up"
    );
    println!(
        "a request not answered within {} s of its scheduled time, or whose connection broke, is lost; lost requests count as infinitely slow (∞) in the percentiles",
        TIMEOUT.as_secs()
    );

    let mut all: Vec<System> = vec![System::Floor, System::Tierhost];
    if bench.python {
        all.extend([System::PyThread, System::PyProcess]);
    }
    let mut problems = Vec::new();
    let mut check = |system: System, mix: &str, run: &Run| {
        if run.stats.ok == 0 {
            problems.push(format!(
                "{} answered no request in the {mix} mix",
                system.label()
            ));
        }
        if system == System::Tierhost && (run.stats.errors > 0 || run.stats.lost > 0) {
            problems.push(format!(
                "tierhost serve: {} errors, {} lost requests in the {mix} mix",
                run.stats.errors, run.stats.lost
            ));
        }
    };

    // 1. Closed loop, max throughput, `exceptions` mix.
    let exceptions = &MIXES[0];
    let mut closed: BTreeMap<System, Vec<Run>> = BTreeMap::new();
    let mut agreement = BTreeMap::new();
    for rep in 0..reps {
        if !section("closed") {
            break;
        }
        for system in rotate(&all, rep) {
            let mut server = bench.start(system, exceptions);
            if rep == 0 {
                agreement.insert(system, bench.agreement(&server));
            }
            bench.closed(&server, "warm", connections, warmup);
            let run = measure(&mut server, system, |s| {
                bench.closed(s, "load", connections, seconds)
            });
            server.stop(STOP_GRACE);
            progress(&format!(
                "closed loop, repetition {}/{reps}: {}: {:.0} req/s",
                rep + 1,
                system.label(),
                run.stats.rps()
            ));
            check(system, "closed-loop exceptions", &run);
            closed.entry(system).or_default().push(run);
        }
    }

    if section("closed") {
        println!();
        println!(
            "## Closed loop, maximum throughput: {connections} connections, mix `exceptions` ({})",
            exceptions.what
        );
        println!();
        println!(
            "| system | req/s | p50 (ms) | p99 (ms) | errors | lost | server CPU (cores) | generator CPU (cores) | served by primary |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (system, runs) in &closed {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                system.label(),
                column(runs, |r| r.stats.rps(), count),
                column(runs, |r| quantile_ms(&r.stats, 0.5), ms),
                column(runs, |r| quantile_ms(&r.stats, 0.99), ms),
                column(runs, |r| r.stats.errors as f64, count),
                column(runs, |r| r.stats.lost as f64, count),
                column(runs, |r| r.stats.cpu_share(), |x| format!("{x:.2}")),
                column(runs, |r| r.stats.generator_share(), |x| format!("{x:.2}")),
                column(runs, |r| r.stats.primary_share(), percent),
            );
        }
        println!();
        for (system, (same, total, first)) in &agreement {
            println!(
                "{}: same answers as the native cascade (serving tier, label, reason kinds) on {same}/{total} requests{}",
                system.label(),
                first
                    .as_ref()
                    .map_or(String::new(), |f| format!("; first difference: {f}"))
            );
        }
        if let (Some(th), Some(floor)) = (closed.get(&System::Tierhost), closed.get(&System::Floor))
        {
            let ratios: Vec<f64> = th
                .iter()
                .zip(floor)
                .map(|(t, f)| t.stats.rps() / f.stats.rps().max(1e-9))
                .collect();
            println!(
                "tierhost serve / HTTP floor throughput at {connections} connections: {} (per repetition); issue 10's target: >= 70%",
                median_range(ratios, percent)
            );
            let per_answer = |runs: &[Run]| {
                runs.iter()
                    .map(|r| r.stats.cpu_per_answer_us())
                    .collect::<Vec<_>>()
            };
            let cpu_ratios: Vec<f64> = th
                .iter()
                .zip(floor)
                .map(|(t, f)| f.stats.cpu_per_answer_us() / t.stats.cpu_per_answer_us().max(1e-9))
                .collect();
            println!(
                "server CPU per answer: tierhost {} µs, floor {} µs; floor / tierhost CPU per answer: {} (the throughput ratio if both saturated their core)",
                median_range(per_answer(th), |x| format!("{x:.1}")),
                median_range(per_answer(floor), |x| format!("{x:.1}")),
                median_range(cpu_ratios, percent),
            );
            if pinned && floor.iter().any(|r| r.stats.cpu_share() < 0.85) {
                println!(
                    "note: the floor's server used less than 85% of its core in some run: the load generator (one core) may be the limit there, which flatters the ratio"
                );
            }
        }
    }

    // 2. Open loop per mix.
    let mut open: Vec<BTreeMap<System, Vec<Run>>> = mixes.iter().map(|_| BTreeMap::new()).collect();
    for rep in 0..reps {
        if !section("open") {
            break;
        }
        for (m, mix) in mixes.iter().enumerate() {
            let mut systems: Vec<System> = all
                .iter()
                .copied()
                .filter(|s| *s != System::Floor || mix.name == "exceptions")
                .collect();
            systems = rotate(&systems, rep + m);
            for system in systems {
                let mut server = bench.start(system, mix);
                bench.open(&server, "warm", rate, warmup);
                let run = measure(&mut server, system, |s| {
                    bench.open(s, "load", rate, seconds)
                });
                server.stop(STOP_GRACE);
                progress(&format!(
                    "open loop, repetition {}/{reps}, {}: {}: {} sent, {:.0} req/s, p99 {} ms, {} errors, {} lost",
                    rep + 1,
                    mix.name,
                    system.label(),
                    run.stats.sent,
                    run.stats.rps(),
                    ms(quantile_ms(&run.stats, 0.99)),
                    run.stats.errors,
                    run.stats.lost
                ));
                check(system, mix.name, &run);
                open[m].entry(system).or_default().push(run);
            }
        }
    }
    if open.iter().any(|r| !r.is_empty()) {
        println!();
        println!(
            "worker restarts: Python, uvicorn worker processes started again after one died (counted from the baseline's events file); tierhost has one process, and 0 means it stayed up. Tier process restarts: tier processes the process-isolated baseline killed (timeout) or lost (crash) and replaced. Server CPU: the server's whole process tree, in cores, over the run and its drain. Generator lag: how late the generator started sending requests against their schedule (its own delay, included in the latencies)."
        );
    }
    for (mix, results) in mixes.iter().zip(&open) {
        if results.is_empty() {
            continue;
        }
        println!();
        println!(
            "## Open loop at {rate:.0} req/s, mix `{}`: {}",
            mix.name, mix.what
        );
        println!();
        println!(
            "| system | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | errors | lost | worker restarts | tier process restarts | server CPU (cores) | served by primary | generator lag p99 (ms) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (system, runs) in results {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                system.label(),
                column(runs, |r| r.stats.rps(), count),
                column(runs, |r| quantile_ms(&r.stats, 0.5), ms),
                column(runs, |r| quantile_ms(&r.stats, 0.99), ms),
                column(runs, |r| quantile_ms(&r.stats, 0.999), ms),
                column(runs, |r| r.stats.errors as f64, count),
                column(runs, |r| r.stats.lost as f64, count),
                restarts(runs),
                optional_column(runs, |r| r.tier_restarts),
                column(runs, |r| r.stats.cpu_share(), |x| format!("{x:.2}")),
                column(runs, |r| r.stats.primary_share(), percent),
                column(runs, |r| r.stats.lag_p99.as_secs_f64() * 1000.0, ms),
            );
        }
        if let Some(runs) = results.get(&System::Tierhost) {
            // Issue 10: under hangs and CPU loops, tierhost's p99 stays within its request
            // budget (+ the scheduling grace `tierhost serve` allows) with 0 errors.
            let bound = 100.0 + 50.0;
            let worst_p99 = runs
                .iter()
                .map(|r| quantile_ms(&r.stats, 0.99))
                .fold(0.0, f64::max);
            let failed: u64 = runs.iter().map(|r| r.stats.errors + r.stats.lost).sum();
            println!();
            println!(
                "tierhost under `{}`: worst p99 {} ms against the 100 ms budget + 50 ms grace: {}; {failed} errors or lost requests in all runs",
                mix.name,
                ms(worst_p99),
                if worst_p99 <= bound {
                    "within"
                } else {
                    "NOT within"
                },
            );
        }
    }

    // 3. Hot swap: p99 while the rules tier is swapped every second vs steady state.
    if section("swap") {
        let swap_dir = bench.dir.path().join("swap");
        std::fs::create_dir_all(&swap_dir).expect("swap dir");
        let config = common::write_config_dir(&swap_dir, &cascade_toml(exceptions));
        let rules_path = swap_dir.join("rules.wasm");
        let rules = tierhost::builtin::get("rules")
            .expect("builtin rules")
            .to_vec();
        let mut server = {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let server = Server::start(
                Path::new(env!("CARGO_BIN_EXE_tierhost")),
                &[
                    "serve".into(),
                    "--config".into(),
                    config.display().to_string(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                ],
                &[("RUST_LOG".into(), "error".into())],
                bench.server_core,
                base,
                None,
            );
            bench.runtime.block_on(Http::new(&server.base).wait_ready());
            server
        };
        bench.open(&server, "warm", rate, warmup);
        let swaps_total = Arc::new(AtomicU64::new(0));
        let mut steady_runs = Vec::new();
        let mut swapping_runs = Vec::new();
        let mut failed_reloads = 0u64;
        let mut reload_ms = Vec::new();
        for rep in 0..reps {
            for swapping in rotate(&[false, true], rep) {
                if !swapping {
                    let run = measure(&mut server, System::Tierhost, |s| {
                        bench.open(s, "load", rate, seconds)
                    });
                    check(System::Tierhost, "hot-swap steady", &run);
                    steady_runs.push(run);
                    continue;
                }
                let done = Arc::new(AtomicBool::new(false));
                let swapper = {
                    let (done, swaps, rules_path, rules) = (
                        done.clone(),
                        swaps_total.clone(),
                        rules_path.clone(),
                        rules.clone(),
                    );
                    let (client, base) = (bench.client.clone(), server.base.clone());
                    bench.runtime.spawn(async move {
                        let (mut failures, mut times) = (0u64, Vec::new());
                        let mut tick = tokio::time::interval(Duration::from_secs(1));
                        tick.tick().await;
                        while !done.load(Ordering::Relaxed) {
                            tick.tick().await;
                            if done.load(Ordering::Relaxed) {
                                break;
                            }
                            let n = swaps.fetch_add(1, Ordering::Relaxed);
                            let tmp = rules_path.with_extension("tmp");
                            std::fs::write(&tmp, variant_of(&rules, &n.to_string()))
                                .expect("write variant");
                            std::fs::rename(&tmp, &rules_path).expect("swap file");
                            let request = hyper::Request::post(format!("{base}/admin/reload"))
                                .body(Full::new(Bytes::new()))
                                .expect("request");
                            let t = Instant::now();
                            let ok = match client.request(request).await {
                                Ok(r) => {
                                    let ok = r.status().is_success();
                                    let _ = r.into_body().collect().await;
                                    ok
                                }
                                Err(_) => false,
                            };
                            times.push(t.elapsed().as_secs_f64() * 1000.0);
                            failures += u64::from(!ok);
                        }
                        (failures, times)
                    })
                };
                let run = measure(&mut server, System::Tierhost, |s| {
                    bench.open(s, "load", rate, seconds)
                });
                done.store(true, Ordering::Relaxed);
                let (failures, times) = bench.runtime.block_on(swapper).expect("swapper");
                failed_reloads += failures;
                reload_ms.extend(times);
                check(System::Tierhost, "hot-swap swapping", &run);
                swapping_runs.push(run);
            }
            progress(&format!("hot swap, repetition {}/{reps}", rep + 1));
        }
        server.stop(STOP_GRACE);
        println!();
        println!(
            "## Hot swap: tierhost serve, open loop at {rate:.0} req/s, mix `exceptions`, the rules tier replaced (a new sha256: compiled anew) and reloaded every second vs steady state, same server"
        );
        println!();
        println!("| run | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | errors | lost |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, runs) in [
            ("steady", &steady_runs),
            ("swapping every second", &swapping_runs),
        ] {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} |",
                column(runs, |r| r.stats.rps(), count),
                column(runs, |r| quantile_ms(&r.stats, 0.5), ms),
                column(runs, |r| quantile_ms(&r.stats, 0.99), ms),
                column(runs, |r| quantile_ms(&r.stats, 0.999), ms),
                column(runs, |r| r.stats.errors as f64, count),
                column(runs, |r| r.stats.lost as f64, count),
            );
        }
        let ratios: Vec<f64> = swapping_runs
            .iter()
            .zip(&steady_runs)
            .map(|(s, t)| quantile_ms(&s.stats, 0.99) / quantile_ms(&t.stats, 0.99).max(1e-9))
            .collect();
        println!();
        println!(
            "hot swap: {} swaps, {failed_reloads} failed reload calls; reload call {} ms; p99 swapping / steady: {} (per repetition; issue 10's target: <= 1.1x)",
            swaps_total.load(Ordering::Relaxed),
            median_range(reload_ms, ms),
            median_range(ratios, |x| format!("{x:.2}x")),
        );
    }
    println!();
    println!(
        "{} server starts, {:.0} s in all{}",
        bench.starts,
        began.elapsed().as_secs_f64(),
        if bench.smoke { " (smoke run)" } else { "" }
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        std::process::exit(1);
    }
}
