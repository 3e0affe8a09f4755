//! Escalation queue benchmark: what the durable review queue costs `tierhost serve` when every
//! request escalates. One cascade (the primary traps on every call and the safe default
//! abstains, so every answer waits for its escalation to be committed), served by the real
//! binary and driven closed loop (each connection sends its next request as soon as the last
//! is answered: the maximum throughput), in three variants:
//!
//! - `queue off`: no `[escalation]` section, nothing is written;
//! - `queue on, sync = normal`: committed escalations survive a crash of the process;
//! - `queue on, sync = full` (the default): every group commit is fsync'd.
//!
//! Each repetition runs every variant on a freshly started server and a fresh queue file, in a
//! rotating order, so the ratios on / off are measured side by side (per repetition). After an
//! `on` run the queue must hold at least as many escalations as were answered (each answer
//! confirmed its commit). The load generator is pinned to core 0 and the server to core 1 with
//! `taskset` when there are 2+ cores.
//!
//! Run: `cargo bench --bench escalation` (3 repetitions of 5 s per variant, ~1.5 min).
//! Options: `--seconds S`, `--repetitions N`, `--connections C` (default 32), `--smoke` (one
//! repetition of 1 s, ~10 s). Exits 1 when a run failed a request or the queue holds fewer
//! escalations than were answered.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
// Shared with the load bench, which uses the rest of it.
#[allow(dead_code)]
mod loadgen;
mod machine;
mod support;

use common::http::{Http, free_port};
use loadgen::{RunStats, Server, closed_loop, count, median_range, ms, percent, quantile_ms};
use support::{arg, flag};

/// A request not answered this long after it was sent is lost.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server gets to exit after SIGTERM (its queue writer finishes what it was given)
/// before its process group is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The target: the queue costs at most 20% of the throughput at 32 connections.
const TARGET_RATIO: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Off,
    Normal,
    Full,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Off, Variant::Normal, Variant::Full];

    fn label(self) -> &'static str {
        match self {
            Variant::Off => "queue off",
            Variant::Normal => "queue on, sync = normal",
            Variant::Full => "queue on, sync = full",
        }
    }

    /// The `[escalation]` section, none for `Off`.
    fn section(self) -> &'static str {
        match self {
            Variant::Off => "",
            Variant::Normal => "[escalation]\nqueue = \"queue.db\"\nsync = \"normal\"\n",
            Variant::Full => "[escalation]\nqueue = \"queue.db\"\nsync = \"full\"\n",
        }
    }
}

/// The same cascade in every variant; only `[escalation]` differs.
fn cascade_toml(variant: Variant) -> String {
    format!(
        "[cascade]\nname = \"escalation-bench\"\nbudget_ms = 100\n\
         [server]\nmax_in_flight = 1024\nwatch = false\n\
         [safe_default]\nabstain = \"escalated to human review\"\n{}{}",
        variant.section(),
        common::chaos_tier("primary", "trap", "")
    )
}

/// One measured run.
struct Run {
    stats: RunStats,
    /// Escalations in the queue after the run (warm-up included); none when the queue is off.
    queued: Option<u64>,
    /// Answers the server gave (warm-up included).
    answered: u64,
}

struct Bench {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    server_core: Option<usize>,
    runs: usize,
    connections: usize,
    warmup: f64,
    seconds: f64,
}

impl Bench {
    /// Starts `tierhost serve` with `variant`'s cascade in a fresh directory (a fresh queue)
    /// and waits until it answers `/healthz`; returns the server and its directory.
    fn start(&mut self, variant: Variant) -> (Server, PathBuf) {
        self.runs += 1;
        let dir = self.dir.path().join(format!("run-{}", self.runs));
        std::fs::create_dir_all(&dir).expect("run directory");
        let config = common::write_config_dir(&dir, &cascade_toml(variant));
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
        (server, dir)
    }

    fn closed(&self, server: &Server, prefix: &str, seconds: f64) -> RunStats {
        self.runtime.block_on(closed_loop(
            &server.base,
            "/v1/predict",
            prefix,
            self.connections,
            Duration::from_secs_f64(seconds),
            TIMEOUT,
            None,
        ))
    }

    /// A warm-up, then the measured run with the server's CPU counted around it; the server is
    /// stopped (SIGTERM) and its queue counted.
    fn run(&mut self, variant: Variant) -> Run {
        let (mut server, dir) = self.start(variant);
        let warm = self.closed(&server, "warm", self.warmup);
        let (cpu0, t0) = (server.cpu_seconds(), Instant::now());
        let mut stats = self.closed(&server, "load", self.seconds);
        stats.server_cpu = server.cpu_seconds() - cpu0;
        stats.wall = t0.elapsed().as_secs_f64();
        server.stop(STOP_GRACE);
        let queued = (variant != Variant::Off).then(|| {
            tierhost::escalation::EscalationStore::open(&dir.join("queue.db"))
                .and_then(|store| store.stats())
                .map_or(0, |stats| stats.pending)
        });
        Run {
            answered: warm.ok + stats.ok,
            stats,
            queued,
        }
    }
}

fn column(runs: &[Run], f: impl Fn(&Run) -> f64, show: impl Fn(f64) -> String) -> String {
    median_range(runs.iter().map(f).collect(), show)
}

/// The filesystem type of `dir` (where the queue files are), as `stat -f` names it.
fn filesystem(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "an unknown filesystem".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

fn main() {
    let smoke = flag("--smoke");
    let seconds: f64 = arg("--seconds").unwrap_or(if smoke { 1.0 } else { 5.0 });
    let reps: usize = arg("--repetitions").unwrap_or(if smoke { 1 } else { 3 });
    let connections: usize = arg("--connections").unwrap_or(32);
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
    let mut bench = Bench {
        // Beside the build, on the disk the project lives on (not a tmpfs /tmp), so an fsync
        // costs what it costs there.
        dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir"),
        runtime,
        server_core: pinned.then_some(1),
        runs: 0,
        connections,
        warmup,
        seconds,
    };

    println!("escalation queue benchmark: {machine}");
    println!(
        "queue files on {} ({})",
        filesystem(bench.dir.path()),
        bench.dir.path().display()
    );
    if pinned {
        println!(
            "load generator pinned to core 0, the server (its whole process tree) to core 1 (taskset)"
        );
    } else {
        println!("NOT pinned: load generator and server share the cores");
    }
    println!(
        "cascade: the primary traps on every call and the safe default abstains, so every request escalates; the variants differ only in [escalation]"
    );
    println!(
        "every figure: median (min..max) of {reps} run(s) of {seconds} s, closed loop at {connections} connections, variants interleaved in a rotating order, each run on a freshly started server and a fresh queue file after a {warmup} s warm-up"
    );

    let mut results: Vec<Vec<Run>> = Variant::ALL.iter().map(|_| Vec::new()).collect();
    let mut problems = Vec::new();
    for rep in 0..reps {
        for offset in 0..Variant::ALL.len() {
            let index = (rep + offset) % Variant::ALL.len();
            let variant = Variant::ALL[index];
            let run = bench.run(variant);
            eprintln!(
                "  [{}] repetition {}/{reps}: {}: {:.0} req/s{}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
                rep + 1,
                variant.label(),
                run.stats.rps(),
                run.queued
                    .map_or(String::new(), |q| format!(", {q} escalations in the queue"))
            );
            if run.stats.ok == 0 || run.stats.errors > 0 || run.stats.lost > 0 {
                problems.push(format!(
                    "{}: {} answered, {} errors, {} lost",
                    variant.label(),
                    run.stats.ok,
                    run.stats.errors,
                    run.stats.lost
                ));
            }
            if let Some(queued) = run.queued
                && queued < run.answered
            {
                problems.push(format!(
                    "{}: {} answers, but only {queued} escalations in the queue",
                    variant.label(),
                    run.answered
                ));
            }
            results[index].push(run);
        }
    }

    println!();
    println!(
        "| variant | req/s | p50 (ms) | p99 (ms) | errors | lost | server CPU (cores) | server CPU per answer (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (variant, runs) in Variant::ALL.iter().zip(&results) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            variant.label(),
            column(runs, |r| r.stats.rps(), count),
            column(runs, |r| quantile_ms(&r.stats, 0.5), ms),
            column(runs, |r| quantile_ms(&r.stats, 0.99), ms),
            column(runs, |r| r.stats.errors as f64, count),
            column(runs, |r| r.stats.lost as f64, count),
            column(runs, |r| r.stats.cpu_share(), |x| format!("{x:.2}")),
            column(runs, |r| r.stats.cpu_per_answer_us(), |x| format!("{x:.1}")),
        );
    }
    println!();
    let off = &results[0];
    for (variant, runs) in Variant::ALL.iter().zip(&results).skip(1) {
        let ratios: Vec<f64> = runs
            .iter()
            .zip(off)
            .map(|(on, off)| on.stats.rps() / off.stats.rps().max(1e-9))
            .collect();
        let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{} / queue off throughput at {connections} connections: {} (per repetition); target >= {} (the queue costs at most {}): {}",
            variant.label(),
            median_range(ratios, percent),
            percent(TARGET_RATIO),
            percent(1.0 - TARGET_RATIO),
            if worst >= TARGET_RATIO {
                "met in every repetition"
            } else {
                "NOT met in every repetition"
            }
        );
    }
    println!();
    println!(
        "{} server starts, {:.0} s in all{}",
        bench.runs,
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
