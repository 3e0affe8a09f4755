//! Shadow-run benchmark: what a tier's shadow costs the live requests of `tierhost serve`
//! (issue 12: "the live answers are unchanged and their latency is not affected: p99 with
//! shadow on ≤ 1.1x off, with the shadow doing 5 ms of work per call").
//!
//! One cascade, served by the real binary: a single live tier (`builtin:rules`, a fresh
//! instance per call) named `primary`. The `on` variant adds `[tier.shadow]` with `share = 1.0`
//! and the default queue and bulkhead; the candidate is `builtin:chaos` in mode `burn`, its
//! `iterations` calibrated in this process before anything else so that one call takes ~5 ms
//! of CPU. With a few thousand requests per second offered to a candidate that can finish a
//! few hundred, its queue stays full and most requests are not shadowed (`dropped`): the
//! candidate's thread is busy all the time, which is the worst case for the live requests that
//! share its core.
//!
//! A third variant is a control: no shadow, but a process spinning on the server's core (this
//! program with `--spin`), by default under `SCHED_IDLE` as the shadow thread runs. A core that
//! never idles answers differently (on a VM, no halt and wake-up of the virtual CPU between
//! requests), which a busy shadow also causes; the ratio shadow on / spinner is the shadow's
//! own cost with that effect taken out. `--spinner nice19` runs the spinner at nice 19 under
//! the normal policy instead: what the shadow would cost at nice 19.
//!
//! Each repetition runs every variant on freshly started servers, in a rotating order, and per
//! server: 200 check requests (label, serving tier, sha256 and reasons must be the same with
//! and without the shadow), a warm-up, an open loop at a fixed rate well below saturation
//! (calibrated so the server without shadow uses ~50% of its core; latency measured from each
//! request's scheduled send time), then a closed loop at 32 connections (the server saturated
//! by live traffic). Shadow calls and dropped requests come from `GET
//! /v1/tiers/primary/shadow`. The load generator is pinned to core 0 and the server to core 1
//! with `taskset` when there are 2+ cores.
//!
//! Measure on a quiet machine, and run the built bench program without `nice` (the servers
//! inherit its nice value). Run: `cargo bench --bench shadow` (5 repetitions, ~5 min).
//! Options: `--seconds S` (open loop per run, default 10), `--closed-seconds S` (default 5),
//! `--repetitions N`, `--rate R` (open-loop requests/s instead of the calibrated one),
//! `--connections C` (default 32), `--spinner idle|nice19`, `--smoke` (one short repetition,
//! ~20 s). Exits 1 when a run failed or lost a request, or the live answers differ between
//! the variants.
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
// Shared with the load bench, which uses the rest of it.
#[allow(dead_code)]
mod loadgen;
mod machine;
mod support;

use common::http::{Http, free_port};
use loadgen::{
    HttpClient, OpenLoop, RunStats, Server, closed_loop, count, median_range, ms, open_loop,
    quantile_ms,
};
use serde_json::Value;
use support::{arg, flag};

/// A request not answered this long after it was due is lost.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server gets to exit after SIGTERM before its process group is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The target: p99 of live requests with the shadow on at most 1.1x off.
const TARGET_P99_RATIO: f64 = 1.1;
/// CPU time one candidate call is calibrated to take.
const CANDIDATE_MS: f64 = 5.0;
/// Share of the server's core the open loop's rate is calibrated to use without shadow.
const TARGET_BUSY: f64 = 0.5;
/// Open loop: most requests in flight at once (connections of the generator).
const MAX_IN_FLIGHT: usize = 256;
/// Check requests whose answers must not change with the shadow on.
const CHECKS: u64 = 200;
/// The live tier, as `GET /v1/tiers/{name}/shadow` names it.
const LIVE_TIER: &str = "primary";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Off,
    /// No shadow, but a process spinning on the server's core: the control that tells the
    /// shadow's own cost from the cost of a core that never idles.
    Busy,
    On,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Off, Variant::Busy, Variant::On];

    fn label(self) -> &'static str {
        match self {
            Variant::Off => "shadow off",
            Variant::Busy => "shadow off, spinner on the server's core",
            Variant::On => "shadow on (5 ms candidate, share 1.0)",
        }
    }
}

/// The control spinner's scheduling (`--spinner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spinner {
    /// `SCHED_IDLE`, as the shadow thread runs (`chrt --idle 0`): the default.
    Idle,
    /// Nice 19 under the normal policy (`nice -n 19`): what the shadow would cost at nice 19.
    Nice19,
}

/// The candidate's `[tier.shadow]`: `builtin:chaos` burning `iterations`, with fuel and a
/// deadline that never stop it (it may wait a long time for CPU at nice 19).
fn shadow_section(iterations: u64) -> String {
    format!(
        "[tier.shadow]\nplugin = \"builtin:chaos\"\nshare = 1.0\n\
         params = {{ mode = \"burn\", iterations = {iterations} }}\n\
         limits = {{ fuel = 1_000_000_000_000, deadline_ms = 60_000 }}\n"
    )
}

/// The served cascade; only `[tier.shadow]` differs between the variants.
fn cascade_toml(variant: Variant, iterations: u64) -> String {
    let shadow = match variant {
        Variant::Off | Variant::Busy => String::new(),
        Variant::On => shadow_section(iterations),
    };
    format!(
        "[cascade]\nname = \"shadow-bench\"\nbudget_ms = 100\n\
         [server]\nmax_in_flight = 1024\nwatch = false\n\
         [[tier]]\nname = \"{LIVE_TIER}\"\nplugin = \"builtin:rules\"\n\
         [tier.limits]\ndeadline_ms = 50\n{shadow}"
    )
}

/// `iterations` of the burn loop that take [`CANDIDATE_MS`] of CPU, found by timing the
/// candidate alone in a cascade of its own in this process (same CPU, same sandbox and
/// limits); returns them with the median time of one call at that count.
fn calibrate(runtime: &tokio::runtime::Runtime, samples: usize) -> (u64, Duration) {
    let time_calls = |iterations: u64| -> Duration {
        let toml = format!(
            "[cascade]\nbudget_ms = 60000\n\
             [[tier]]\nname = \"candidate\"\nplugin = \"builtin:chaos\"\n\
             [tier.limits]\nfuel = 1_000_000_000_000\ndeadline_ms = 60_000\n\
             [tier.params]\nmode = \"burn\"\niterations = {iterations}\n"
        );
        let config = tierhost::Config::parse(&toml, Path::new("calibrate.toml"), Path::new("."))
            .expect("calibration config");
        runtime.block_on(async {
            let cascade = tierhost::Cascade::load_strict(&config)
                .await
                .expect("calibration cascade");
            let request = common::request("calibrate");
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples + 2 {
                let started = Instant::now();
                let answer = cascade.predict(&request).await;
                times.push(started.elapsed());
                assert_eq!(
                    answer.served_by.tier, "candidate",
                    "the burning candidate answers: {answer:?}"
                );
            }
            // The first calls warm the instance pool and caches.
            let mut times = times.split_off(2);
            times.sort();
            times[times.len() / 2]
        })
    };
    let mut iterations: u64 = 1_000_000;
    for _ in 0..3 {
        let took = time_calls(iterations).as_secs_f64() * 1000.0;
        iterations = ((iterations as f64) * CANDIDATE_MS / took.max(1e-3)).round() as u64;
    }
    (iterations, time_calls(iterations))
}

/// Serving tier, label, sha256 of the version that served, and the reason kinds of an answer.
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
        "{} {} {} [{}]",
        answer["served_by"]["tier"].as_str().unwrap_or("?"),
        answer["decision"]["label"].as_str().unwrap_or("?"),
        answer["served_by"]["sha256"].as_str().unwrap_or("?"),
        kinds.join(", ")
    )
}

/// Shadow calls and dropped requests so far (zero without a shadow).
#[derive(Debug, Clone, Copy, Default)]
struct ShadowCounts {
    calls: f64,
    dropped: f64,
    candidate_p50_us: f64,
}

impl ShadowCounts {
    fn since(self, before: ShadowCounts) -> ShadowCounts {
        ShadowCounts {
            calls: self.calls - before.calls,
            dropped: self.dropped - before.dropped,
            candidate_p50_us: self.candidate_p50_us,
        }
    }
}

/// One server's measurements.
struct Run {
    open: RunStats,
    closed: RunStats,
    open_shadow: ShadowCounts,
    closed_shadow: ShadowCounts,
    /// Signatures of the check requests' answers.
    answers: Vec<String>,
}

struct Bench {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
    server_core: Option<usize>,
    starts: usize,
    iterations: u64,
    warmup: f64,
    spinner: Spinner,
}

impl Bench {
    /// Starts `tierhost serve` with `variant`'s cascade and waits until it answers `/healthz`.
    fn start(&mut self, variant: Variant) -> Server {
        self.starts += 1;
        let dir = self.dir.path().join(format!("run-{}", self.starts));
        std::fs::create_dir_all(&dir).expect("run directory");
        let config = common::write_config_dir(&dir, &cascade_toml(variant, self.iterations));
        let port = free_port();
        let mut server = Server::start(
            Path::new(env!("CARGO_BIN_EXE_tierhost")),
            &[
                "serve".into(),
                "--config".into(),
                config.display().to_string(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
            ],
            &[("RUST_LOG".into(), "error".into())],
            self.server_core,
            format!("http://127.0.0.1:{port}"),
            None,
        );
        let http = Http::new(&server.base);
        self.runtime.block_on(common::wait_for(
            "tierhost serve to answer /healthz",
            async || {
                assert!(
                    server.alive(),
                    "tierhost serve exited before it was healthy"
                );
                matches!(http.try_send("GET", "/healthz", "").await, Ok((200, _))).then_some(())
            },
        ));
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

    /// `measure` on `server` with the server's CPU and the wall time counted around it.
    fn measured(&self, server: &Server, measure: impl FnOnce() -> RunStats) -> RunStats {
        let (cpu0, own0, t0) = (
            server.cpu_seconds(),
            loadgen::own_cpu_seconds(),
            Instant::now(),
        );
        let mut stats = measure();
        stats.server_cpu = server.cpu_seconds() - cpu0;
        stats.generator_cpu = loadgen::own_cpu_seconds() - own0;
        stats.wall = t0.elapsed().as_secs_f64();
        stats
    }

    /// The live tier's shadow counts (zero when it has no shadow: 404).
    fn shadow(&self, server: &Server) -> ShadowCounts {
        let http = Http::new(&server.base);
        let (status, body) = self
            .runtime
            .block_on(http.get(&format!("/v1/tiers/{LIVE_TIER}/shadow")));
        if status != 200 {
            return ShadowCounts::default();
        }
        let report: Value = serde_json::from_str(&body).expect("shadow report JSON");
        ShadowCounts {
            calls: report["calls"].as_f64().unwrap_or(0.0),
            dropped: report["dropped"].as_f64().unwrap_or(0.0),
            candidate_p50_us: report["latency_us"]["candidate"]["p50"]
                .as_f64()
                .unwrap_or(0.0),
        }
    }

    /// The signatures of the check requests' answers, sent one at a time.
    fn answers(&self, server: &Server) -> Vec<String> {
        let http = Http::new(&server.base);
        (0..CHECKS)
            .map(|i| {
                let body = loadgen::body("check", i);
                self.runtime
                    .block_on(http.try_send("POST", "/v1/predict", body))
                    .ok()
                    .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
                    .map(|v| signature(&v))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// A process spinning on the server's core (this program with `--spin`) under the
    /// `--spinner` policy, in its own process group; stopped when dropped.
    fn spinner(&self) -> Server {
        let exe = std::env::current_exe().expect("this program's path");
        let mut args: Vec<String> = match self.spinner {
            Spinner::Idle => vec!["--idle".into(), "0".into()],
            Spinner::Nice19 => vec!["-n".into(), "19".into()],
        };
        args.extend([exe.display().to_string(), "--spin".into()]);
        Server::start(
            Path::new(match self.spinner {
                Spinner::Idle => "chrt",
                Spinner::Nice19 => "nice",
            }),
            &args,
            &[],
            self.server_core,
            String::new(),
            None,
        )
    }

    /// One server: check answers, warm up, open loop at `rate`, closed loop.
    fn run(&mut self, variant: Variant, rate: f64, seconds: f64, closed: (usize, f64)) -> Run {
        let mut server = self.start(variant);
        let answers = self.answers(&server);
        let spinner = (variant == Variant::Busy).then(|| self.spinner());
        self.open(&server, "warm", rate, self.warmup);
        let s0 = self.shadow(&server);
        let open = self.measured(&server, || self.open(&server, "open", rate, seconds));
        let s1 = self.shadow(&server);
        let closed = self.measured(&server, || {
            self.closed(&server, "closed", closed.0, closed.1)
        });
        let s2 = self.shadow(&server);
        server.stop(STOP_GRACE);
        drop(spinner);
        Run {
            open,
            closed,
            open_shadow: s1.since(s0),
            closed_shadow: s2.since(s1),
            answers,
        }
    }

    /// An open-loop rate at which the server without shadow uses ~[`TARGET_BUSY`] of its
    /// core: a first guess from the CPU per answer of a closed loop, then corrected by the
    /// CPU share an open loop at that rate really used. Returns the rate and that share.
    fn calibrate_rate(&mut self, seconds: f64, connections: usize) -> (f64, f64) {
        let mut server = self.start(Variant::Off);
        self.closed(&server, "warm", connections, self.warmup);
        let closed = self.measured(&server, || {
            self.closed(&server, "rate", connections, seconds)
        });
        let mut rate = TARGET_BUSY / (closed.cpu_per_answer_us() * 1e-6);
        let mut busy = 0.0;
        for _ in 0..2 {
            rate = (rate / 100.0).round().max(1.0) * 100.0;
            let open = self.measured(&server, || self.open(&server, "rate", rate, seconds));
            busy = open.cpu_share();
            eprintln!(
                "  rate calibration: {rate:.0} req/s open loop used {:.0}% of the server's core",
                busy * 100.0
            );
            rate *= TARGET_BUSY / busy.max(1e-3);
        }
        server.stop(STOP_GRACE);
        ((rate / 100.0).round().max(1.0) * 100.0, busy)
    }
}

fn column(
    runs: &[&RunStats],
    f: impl Fn(&RunStats) -> f64,
    show: impl Fn(f64) -> String,
) -> String {
    median_range(runs.iter().map(|r| f(r)).collect(), show)
}

fn ratio(x: f64) -> String {
    format!("{x:.2}x")
}

fn main() {
    if flag("--spin") {
        // The `Busy` variant's spinner (see `Bench::spinner`): burn CPU until stopped.
        let mut i = 0u64;
        loop {
            i = std::hint::black_box(i.wrapping_add(1));
        }
    }
    let smoke = flag("--smoke");
    let seconds: f64 = arg("--seconds").unwrap_or(if smoke { 2.0 } else { 10.0 });
    let closed_seconds: f64 = arg("--closed-seconds").unwrap_or(if smoke { 1.0 } else { 5.0 });
    let reps: usize = arg("--repetitions").unwrap_or(if smoke { 1 } else { 5 });
    let connections: usize = arg("--connections").unwrap_or(32);
    let fixed_rate: Option<f64> = arg("--rate");
    let spinner = match arg::<String>("--spinner").as_deref() {
        None | Some("idle") => Spinner::Idle,
        Some("nice19") => Spinner::Nice19,
        Some(other) => {
            eprintln!("--spinner {other}: expected idle or nice19");
            std::process::exit(2);
        }
    };
    let warmup = if smoke { 0.3 } else { 1.0 };
    let began = Instant::now();

    // Pin before the runtime starts its threads (they inherit the mask).
    let machine = machine::describe();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && loadgen::pin_self(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime.block_on(async { loadgen::client(MAX_IN_FLIGHT) });

    println!("shadow run benchmark: {machine}");
    // The server inherits this process's nice value; under `nice` it competes as an equal
    // with other niced work on the machine, and the shadow thread (nice 19) gets more of it.
    let nice = rustix::process::getpriority_process(None).unwrap_or(0);
    println!("nice value of this process and the servers it starts: {nice}");
    if pinned {
        println!(
            "load generator pinned to core 0, the server (its whole process tree) to core 1 (taskset)"
        );
    } else {
        println!("NOT pinned: load generator and server share the cores");
    }
    let (iterations, per_call) = calibrate(&runtime, if smoke { 5 } else { 20 });
    println!(
        "candidate: builtin:chaos mode burn, iterations = {iterations}: {:.2} ms per call alone (median, this process, core 0)",
        per_call.as_secs_f64() * 1000.0
    );

    let mut bench = Bench {
        dir: tempfile::tempdir().expect("tempdir"),
        runtime,
        client,
        server_core: pinned.then_some(1),
        starts: 0,
        iterations,
        warmup,
        spinner,
    };
    let rate = match fixed_rate {
        Some(rate) => {
            println!("open loop at {rate:.0} req/s (--rate)");
            rate
        }
        None => {
            let (rate, busy) = bench.calibrate_rate(if smoke { 1.0 } else { 2.0 }, connections);
            println!(
                "open loop at {rate:.0} req/s: calibrated so the server without shadow uses ~{:.0}% of its core (the last calibration run: {:.0}%)",
                TARGET_BUSY * 100.0,
                busy * 100.0
            );
            rate
        }
    };
    println!(
        "cascade: one live tier `{LIVE_TIER}` (builtin:rules, fresh instance per call); `on` adds [tier.shadow] with share = 1.0, default max_concurrent and max_queued"
    );
    println!(
        "control: the spinner on the server's core runs {}",
        match spinner {
            Spinner::Idle => "under SCHED_IDLE (chrt --idle 0), as the shadow thread does",
            Spinner::Nice19 => "at nice 19 (nice -n 19) under the normal policy (--spinner nice19)",
        }
    );
    println!(
        "every figure: median (min..max) of {reps} run(s), variants interleaved in a rotating order, each on a freshly started server: {CHECKS} check requests, a {warmup} s warm-up, {seconds} s open loop, then {closed_seconds} s closed loop at {connections} connections"
    );

    let mut results: Vec<Vec<Run>> = Variant::ALL.iter().map(|_| Vec::new()).collect();
    let mut problems = Vec::new();
    for rep in 0..reps {
        for offset in 0..Variant::ALL.len() {
            let index = (rep + offset) % Variant::ALL.len();
            let variant = Variant::ALL[index];
            let run = bench.run(variant, rate, seconds, (connections, closed_seconds));
            eprintln!(
                "  [{}] repetition {}/{reps}: {}: open p99 {} ms, closed {:.0} req/s, shadow calls {:.0} / dropped {:.0}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                rep + 1,
                variant.label(),
                ms(quantile_ms(&run.open, 0.99)),
                run.closed.rps(),
                run.open_shadow.calls + run.closed_shadow.calls,
                run.open_shadow.dropped + run.closed_shadow.dropped,
            );
            for (what, stats) in [("open loop", &run.open), ("closed loop", &run.closed)] {
                if stats.ok == 0 || stats.errors > 0 || stats.lost > 0 {
                    problems.push(format!(
                        "{}, {what}: {} answered, {} errors, {} lost",
                        variant.label(),
                        stats.ok,
                        stats.errors,
                        stats.lost
                    ));
                }
            }
            results[index].push(run);
        }
    }
    // The live answers must not change with the shadow on.
    let reference = &results[0][0].answers;
    for (variant, runs) in Variant::ALL.iter().zip(&results) {
        for run in runs {
            let differ = run
                .answers
                .iter()
                .zip(reference)
                .filter(|(a, b)| a != b || a.is_empty())
                .count();
            if differ > 0 {
                problems.push(format!(
                    "{}: {differ} of {CHECKS} check answers differ from shadow off's",
                    variant.label()
                ));
            }
        }
    }

    println!();
    println!(
        "| variant | loop | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | errors | lost | server CPU (cores) | shadow calls | dropped |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (variant, runs) in Variant::ALL.iter().zip(&results) {
        for (name, stats, shadow) in [
            (
                format!("open, {rate:.0} req/s"),
                runs.iter().map(|r| &r.open).collect::<Vec<_>>(),
                runs.iter().map(|r| r.open_shadow).collect::<Vec<_>>(),
            ),
            (
                format!("closed, {connections} conn."),
                runs.iter().map(|r| &r.closed).collect(),
                runs.iter().map(|r| r.closed_shadow).collect(),
            ),
        ] {
            println!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                variant.label(),
                column(&stats, |s| s.rps(), count),
                column(&stats, |s| quantile_ms(s, 0.5), ms),
                column(&stats, |s| quantile_ms(s, 0.99), ms),
                column(&stats, |s| quantile_ms(s, 0.999), ms),
                column(&stats, |s| s.errors as f64, count),
                column(&stats, |s| s.lost as f64, count),
                column(&stats, |s| s.cpu_share(), |x| format!("{x:.2}")),
                median_range(shadow.iter().map(|s| s.calls).collect(), count),
                median_range(shadow.iter().map(|s| s.dropped).collect(), count),
            );
        }
    }
    println!();
    let (off, busy, on) = (&results[0], &results[1], &results[2]);
    let candidate_p50: Vec<f64> = on
        .iter()
        .map(|r| r.closed_shadow.candidate_p50_us / 1000.0)
        .collect();
    println!(
        "candidate call in the server (wall time, p50 of its last 4096 calls, waiting for CPU at the lowest priority included): {} ms",
        median_range(candidate_p50, ms)
    );
    let generator_lag: Vec<f64> = results
        .iter()
        .flatten()
        .map(|r| r.open.lag_p99.as_secs_f64() * 1000.0)
        .collect();
    println!(
        "open loop: the generator's own lag (p99 of how late a request was sent): {} ms",
        median_range(generator_lag, ms)
    );
    // Ratios of one variant to another, repetition by repetition.
    let paired = |a: &[Run], b: &[Run], f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| f(a) / f(b).max(1e-9))
            .collect()
    };
    let open_p99 = |r: &Run| quantile_ms(&r.open, 0.99);
    let open_p999 = |r: &Run| quantile_ms(&r.open, 0.999);
    let closed_p99 = |r: &Run| quantile_ms(&r.closed, 0.99);
    let closed_rps = |r: &Run| r.closed.rps();
    let p99_open = paired(on, off, &open_p99);
    let met = p99_open.iter().filter(|&&x| x <= TARGET_P99_RATIO).count();
    let median_p99 = {
        let mut v = p99_open.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "open loop at {rate:.0} req/s, p99 shadow on / off: {} (per repetition); target <= {TARGET_P99_RATIO}x: {} (median), met in {met} of {} repetitions",
        median_range(p99_open, ratio),
        if median_p99 <= TARGET_P99_RATIO {
            "met"
        } else {
            "NOT met"
        },
        on.len().min(off.len())
    );
    println!(
        "open loop, p99.9 shadow on / off: {}",
        median_range(paired(on, off, &open_p999), ratio)
    );
    println!(
        "closed loop at {connections} connections, p99 shadow on / off: {}; req/s on / off: {}",
        median_range(paired(on, off, &closed_p99), ratio),
        median_range(paired(on, off, &closed_rps), ratio)
    );
    println!(
        "control (the cost of a core that never idles, without a shadow): spinner / off: open p99 {}, p99.9 {}; closed p99 {}, req/s {}",
        median_range(paired(busy, off, &open_p99), ratio),
        median_range(paired(busy, off, &open_p999), ratio),
        median_range(paired(busy, off, &closed_p99), ratio),
        median_range(paired(busy, off, &closed_rps), ratio)
    );
    println!(
        "the shadow's own cost (shadow on / spinner): open p99 {}, p99.9 {}; closed p99 {}, req/s {}",
        median_range(paired(on, busy, &open_p99), ratio),
        median_range(paired(on, busy, &open_p999), ratio),
        median_range(paired(on, busy, &closed_p99), ratio),
        median_range(paired(on, busy, &closed_rps), ratio)
    );
    println!(
        "live answers with the shadow on: {}",
        if problems.iter().any(|p| p.contains("check answers")) {
            "DIFFERENT from shadow off"
        } else {
            "identical to shadow off on every check request of every run"
        }
    );
    println!();
    println!(
        "{} server starts, {:.0} s in all{}",
        bench.starts,
        began.elapsed().as_secs_f64(),
        if smoke { " (smoke run)" } else { "" }
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        std::process::exit(1);
    }
}
