//! Load benchmark: `tierhost serve` vs the hand-written Python service a team would build
//! instead (benches/baseline: Starlette + uvicorn, 2 workers, uvloop, httptools, orjson), both
//! answering the same 4-level cascade (flaky primary with 20% crashes -> logistic small model
//! -> rules -> safe default) with the same thresholds, the same request ids (so the same
//! requests fault) and fallback logs filtered on both. Then tierhost's p99 while a tier is
//! hot-swapped 100 times under load vs steady state.
//!
//! Run: `cargo bench --bench load` (needs python3; the baseline's venv is created by
//! benches/baseline/setup.sh). Options: `--seconds N` per run (default 10), `--connections C`
//! (default 32), `--smoke` (1 s runs, tierhost only).
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

const CASCADE: &str = r#"
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
fault_rate = 0.2
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
"#;

fn body(i: u64) -> Bytes {
    // Varied but realistic features; the id decides whether the primary crashes (FNV-1a, same
    // rule on both sides).
    let amount = [42.5, 120.0, 2000.0, 7000.0, 9000.0][(i % 5) as usize];
    let age = [900, 300, 40, 3][(i % 4) as usize];
    let category = ["grocery", "crypto", "electronics", "wire_transfer"][(i % 4) as usize];
    Bytes::from(format!(
        r#"{{"id":"load-{i}","features":{{"amount":{amount},"account_age_days":{age},"merchant_category":"{category}","is_international":{},"has_international_history":false}}}}"#,
        i.is_multiple_of(3)
    ))
}

struct RunStats {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    served_by_primary: f64,
}

async fn run_load(
    client: &HttpClient,
    url: &str,
    connections: usize,
    duration: Duration,
) -> RunStats {
    run_load_until(client, url, connections, duration, None).await
}

/// A 1 s warm-up run against the server at `base`, then the measured run.
async fn warm_then_run(
    client: &HttpClient,
    base: &str,
    connections: usize,
    duration: Duration,
) -> RunStats {
    let url = format!("{base}/v1/predict");
    run_load(client, &url, connections, Duration::from_secs(1)).await;
    run_load(client, &url, connections, duration).await
}

/// Closed-loop load for `duration`, or until `done` is set when given.
async fn run_load_until(
    client: &HttpClient,
    url: &str,
    connections: usize,
    duration: Duration,
    done: Option<Arc<AtomicBool>>,
) -> RunStats {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let primary = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, next, errors, primary) = (
            client.clone(),
            url.to_string(),
            next.clone(),
            errors.clone(),
            primary.clone(),
        );
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let finished = || match &done {
                Some(done) => done.load(Ordering::Relaxed),
                None => Instant::now() >= deadline,
            };
            while !finished() {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let request = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(body(i)))
                    .expect("request");
                let t = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let bytes = response.into_body().collect().await.map(|b| b.to_bytes());
                        latencies.push(t.elapsed());
                        match bytes {
                            Ok(b) if ok => {
                                if memchr(&b, br#""served_by":{"tier":"primary""#) {
                                    primary.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    RunStats {
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50: pick(0.50),
        p99: pick(0.99),
        served_by_primary: primary.load(Ordering::Relaxed) as f64 / all.len().max(1) as f64,
    }
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn print_row(name: &str, s: &RunStats) {
    println!(
        "| {name} | {:.0} | {} | {} | {} | {} | {:.1}% |",
        s.requests as f64 / s.seconds,
        ms(s.p50),
        ms(s.p99),
        s.requests,
        s.errors,
        s.served_by_primary * 100.0
    );
}

fn main() {
    let smoke = flag("--smoke");
    let seconds: u64 = if smoke {
        1
    } else {
        arg("--seconds").unwrap_or(10)
    };
    let connections = arg::<usize>("--connections").unwrap_or(32);
    let duration = Duration::from_secs(seconds);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_path = dir.path().join("rules.wasm");
    let rules = tierhost::builtin::get("rules").expect("builtin rules");
    std::fs::write(&rules_path, rules).expect("write rules.wasm");
    let config = dir.path().join("cascade.toml");
    std::fs::write(&config, CASCADE).expect("write config");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();

    let port = free_port();
    let _tierhost = Proc::spawn(&mut serve_command(&config, port));
    let th = format!("http://127.0.0.1:{port}");
    runtime.block_on(Http::new(&th).wait_ready());

    println!(
        "load benchmark: {connections} connections, closed loop, {seconds} s per run, 20% primary faults; {}, shared by server and load generator\n",
        machine::describe()
    );
    println!("| run | req/s | p50 (ms) | p99 (ms) | requests | errors | served by primary |");
    println!("|---|---:|---:|---:|---:|---:|---:|");

    let steady = runtime.block_on(warm_then_run(&client, &th, connections, duration));
    print_row("tierhost serve", &steady);

    // p99 while the rules tier is swapped 100 times under load (the run lasts until the 100th
    // swap is applied, pacing one swap every `duration / 100`).
    let done = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (client, done, swaps, rules_path, th) = (
            client.clone(),
            done.clone(),
            swaps.clone(),
            rules_path.clone(),
            th.clone(),
        );
        let rules = rules.to_vec();
        let pause = duration / 100;
        runtime.spawn(async move {
            let mut failures = 0;
            for n in 0..100u32 {
                let tmp = rules_path.with_extension("tmp");
                std::fs::write(&tmp, variant_of(&rules, &n.to_string())).expect("write variant");
                std::fs::rename(&tmp, &rules_path).expect("swap file");
                let request = hyper::Request::post(format!("{th}/admin/reload"))
                    .body(Full::new(Bytes::new()))
                    .expect("req");
                match client.request(request).await {
                    Ok(r) if r.status().is_success() => {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => failures += 1,
                }
                tokio::time::sleep(pause).await;
            }
            done.store(true, Ordering::Relaxed);
            failures
        })
    };
    let swapping = runtime.block_on(run_load_until(
        &client,
        &format!("{th}/v1/predict"),
        connections,
        duration,
        Some(done),
    ));
    let swap_failures = runtime.block_on(swapper).expect("swapper");
    print_row(
        &format!(
            "tierhost serve, {} hot swaps during the run",
            swaps.load(Ordering::Relaxed)
        ),
        &swapping,
    );

    let baseline = if smoke {
        None
    } else {
        let bport = free_port();
        let _guard = Proc::spawn(
            Command::new(root.join("benches/baseline/run.sh"))
                .arg(bport.to_string())
                .arg("2")
                .env("BASELINE_FAULT_RATE", "0.2")
                .env("BASELINE_LOG_LEVEL", "ERROR")
                .stdout(Stdio::null()),
        );
        let url = format!("http://127.0.0.1:{bport}");
        runtime.block_on(Http::new(&url).wait_ready());
        let stats = runtime.block_on(warm_then_run(&client, &url, connections, duration));
        print_row("Python baseline (Starlette + uvicorn, 2 workers)", &stats);
        Some(stats)
    };

    println!();
    println!(
        "hot swap: {} swaps applied, {} failed reload calls, {} failed requests; p99 swapping / steady: {:.2}x",
        swaps.load(Ordering::Relaxed),
        swap_failures,
        swapping.errors,
        swapping.p99.as_secs_f64() / steady.p99.as_secs_f64().max(1e-9)
    );
    if let Some(b) = baseline {
        println!(
            "tierhost / Python: throughput {:.1}x, p50 {:.2}x, p99 {:.2}x (lower is better for latency)",
            (steady.requests as f64 / steady.seconds) / (b.requests as f64 / b.seconds).max(1e-9),
            steady.p50.as_secs_f64() / b.p50.as_secs_f64().max(1e-9),
            steady.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-9),
        );
    }
}
