//! Soak: `tierhost serve` (the real binary, in its own process) answers a long run of requests
//! over HTTP at bounded concurrency while 20% of primary calls fault in every way a tier can
//! (5% traps, 5% infinite loops, 5% hangs, 5% memory bombs: `builtin:chaos` mode `mixed`),
//! the rules tier is hot-swapped every few seconds (a new sha256 each time, applied through
//! `POST /admin/reload`), and the audit log is on. Checks, and prints:
//!
//! - every request answered (no connection error, no lost request) and no 5xx;
//! - the server's RSS and open file descriptors, sampled every second, flat within 10% from
//!   the first to the last tenth of the run (after a warm-up of 5% of the requests, during
//!   which pool slots, warm instances and allocator arenas are first touched).
//!
//! Run: `cargo bench --bench soak` (1,000,000 requests, 32 connections; ~5-10 min on 2 cores).
//! Options: `--requests N`, `--connections C`, `--swap-every-s S` (default 3), `--smoke`
//! (20,000 requests). Exits non-zero when a check fails.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[path = "../tests/common/mod.rs"]
mod common;
mod machine;
mod support;

use common::http::{Http, HttpClient, Proc, free_port, serve_command};
use common::variant_of;
use support::{arg, flag};

fn cascade(audit: &Path) -> String {
    format!(
        r#"
[cascade]
name = "soak"
budget_ms = 100
audit_log = "{}"

[server]
max_in_flight = 1024
watch = false

[[tier]]
name = "primary"
plugin = "builtin:chaos"
min_confidence = 0.8
[tier.limits]
deadline_ms = 20
[tier.params]
mode = "mixed"
label = "allow"
confidence = 0.9

[[tier]]
name = "rules"
plugin = "rules.wasm"
min_confidence = 0.3
"#,
        audit.display()
    )
}

fn body(i: u64) -> Bytes {
    let amount = [42.5, 120.0, 2000.0, 7000.0, 9000.0][(i % 5) as usize];
    let age = [900, 300, 40, 3][(i % 4) as usize];
    Bytes::from(format!(
        r#"{{"id":"soak-{i}","features":{{"amount":{amount},"account_age_days":{age},"merchant_category":"crypto","is_international":true,"has_international_history":false}}}}"#
    ))
}

/// (RSS in KiB, open file descriptors) of `pid`.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    server_errors: AtomicU64,
    other_status: AtomicU64,
    connection_errors: AtomicU64,
    by_primary: AtomicU64,
}

fn main() {
    let smoke = flag("--smoke");
    let total = arg::<u64>("--requests").unwrap_or(if smoke { 20_000 } else { 1_000_000 });
    let connections = arg::<u64>("--connections").unwrap_or(32);
    let swap_every = Duration::from_secs(arg::<u64>("--swap-every-s").unwrap_or(3));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let passed = runtime.block_on(soak(total, connections, swap_every));
    if !passed {
        std::process::exit(1);
    }
}

async fn soak(total: u64, connections: u64, swap_every: Duration) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = tierhost::builtin::get("rules").expect("builtin rules");
    let rules_path: PathBuf = dir.path().join("rules.wasm");
    std::fs::write(&rules_path, rules).expect("write rules");
    let config = dir.path().join("cascade.toml");
    std::fs::write(&config, cascade(&dir.path().join("audit.jsonl"))).expect("write config");
    let port = free_port();
    let server = Proc::spawn(&mut serve_command(&config, port));
    let pid = server.id();
    let base = format!("http://127.0.0.1:{port}");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    Http::new(&base).wait_ready().await;

    println!(
        "tierhost soak: {total} requests, {connections} connections, 20% primary faults (trap, loop, hang, memory bomb), rules hot-swapped every {} s, audit log on ({})\n",
        swap_every.as_secs(),
        machine::describe()
    );
    let counts = Arc::new(Counts::default());
    let done = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();

    // Memory and descriptor samples, once a second, tagged with the requests done so far.
    let sampler = {
        let (counts, done) = (counts.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some((rss, fds)) = sample(pid) {
                    samples.push((counts.ok.load(Ordering::Relaxed), rss, fds));
                }
            }
            samples
        })
    };

    // Hot swaps of the rules tier: a new digest each time, applied by the admin endpoint.
    let swapper = {
        let (client, base, mut stop) = (client.clone(), base.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let (mut applied, mut rejected) = (0u64, 0u64);
            let mut tag = 0u64;
            // Until the load ends: wake every `swap_every`, or at once when told to stop.
            while tokio::time::timeout(swap_every, stop.changed())
                .await
                .is_err()
            {
                tag += 1;
                if std::fs::write(&rules_path, variant_of(rules, &tag.to_string())).is_err() {
                    rejected += 1;
                    continue;
                }
                let request = hyper::Request::post(format!("{base}/admin/reload"))
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                match client.request(request).await {
                    Ok(r) if r.status().is_success() => applied += 1,
                    _ => rejected += 1,
                }
            }
            (applied, rejected)
        })
    };

    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, counts) = (client.clone(), counts.clone());
        let url = format!("{base}/v1/predict");
        tasks.push(tokio::spawn(async move {
            loop {
                let i = counts.sent.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    counts.sent.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                let request = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(body(i)))
                    .expect("request");
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let bytes = response.into_body().collect().await.map(|b| b.to_bytes());
                        match bytes {
                            Ok(b) if status.is_success() => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                                if b.windows(29)
                                    .any(|w| w == br#""served_by":{"tier":"primary""#)
                                {
                                    counts.by_primary.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ if status.is_server_error() => {
                                counts.server_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                counts.other_status.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        counts.connection_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut last_report = Instant::now();
    for task in tasks {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "  {} / {total} requests, {:.0} req/s",
                    counts.ok.load(Ordering::Relaxed),
                    counts.ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        task.await.expect("load task");
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let samples = sampler.await.expect("sampler");
    let (applied, rejected) = swapper.await.expect("swapper");
    let final_sample = sample(pid);
    drop(server);

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (sent, ok) = (c(&counts.sent), c(&counts.ok));
    let lost = sent - ok;
    println!("| measure | value |\n|---|---:|");
    println!("| requests sent | {sent} |");
    println!("| answered 200 | {ok} |");
    println!("| lost (sent - answered) | {lost} |");
    println!("| 5xx | {} |", c(&counts.server_errors));
    println!("| other non-200 | {} |", c(&counts.other_status));
    println!("| connection errors | {} |", c(&counts.connection_errors));
    println!(
        "| throughput | {:.0} req/s over {seconds:.0} s |",
        ok as f64 / seconds
    );
    println!(
        "| served by the primary | {:.1}% |",
        c(&counts.by_primary) as f64 * 100.0 / ok.max(1) as f64
    );
    println!("| hot swaps applied / failed | {applied} / {rejected} |");

    // RSS and fds: mean of the first and last tenth of the samples after the warm-up.
    let warm = samples
        .iter()
        .filter(|(done, _, _)| *done >= total / 20)
        .copied()
        .collect::<Vec<_>>();
    let tenth = (warm.len() / 10).max(1);
    let mean = |s: &[(u64, u64, u64)], f: fn(&(u64, u64, u64)) -> u64| {
        s.iter().map(f).sum::<u64>() as f64 / s.len().max(1) as f64
    };
    // Flatness is judged on runs long enough for the allocator and the instance pool to have
    // settled (the 1M run: ~110 s); a smoke run only reports it.
    let judged = warm.len() >= 60;
    let mut flat = true;
    if warm.len() >= 4 {
        let (first, last) = (&warm[..tenth], &warm[warm.len() - tenth..]);
        for (name, f) in [
            (
                "RSS (KiB)",
                (|s: &(u64, u64, u64)| s.1) as fn(&(u64, u64, u64)) -> u64,
            ),
            ("open fds", |s: &(u64, u64, u64)| s.2),
        ] {
            let (a, b) = (mean(first, f), mean(last, f));
            let drift = b / a.max(1.0) - 1.0;
            println!(
                "| {name}: first tenth / last tenth | {a:.0} / {b:.0} ({:+.1}%) |",
                drift * 100.0
            );
            flat &= !judged || drift.abs() <= 0.10;
        }
    } else {
        println!(
            "| RSS / fds | {} samples after warm-up: too short to compare (final: {final_sample:?}) |",
            warm.len()
        );
    }
    if !judged {
        println!("(memory and descriptors not judged: under 60 s of samples after warm-up)");
    }
    let passed = lost == 0
        && c(&counts.server_errors) == 0
        && c(&counts.other_status) == 0
        && c(&counts.connection_errors) == 0
        && rejected == 0
        && flat;
    println!(
        "\n{}",
        if passed {
            "PASS: every request answered, no 5xx, memory and descriptors flat (when judged)"
        } else {
            "FAIL: see the table"
        }
    );
    passed
}
