//! Sandbox cost, measured side by side in one run and printed as ratios:
//!
//! - the rules tier as a native Rust function (the very same `logic.rs` source the guest is
//!   built from) vs through the sandbox with a fresh instance per call vs a reused instance;
//! - a 4-tier cascade whose primary answers vs one whose primary traps on every call;
//! - the wasmtime floor (`floor.rs`): the same component called through wasmtime directly with
//!   the least setup a call needs, fresh and reused, so tierhost's own per-call cost shows;
//! - a hot swap whose compiled artifact is already in the disk cache (`[engine] cache_dir`):
//!   `CascadeService::reload_with` between two versions of the rules tier, timed end to end;
//! - the host's work per request outside tier calls (lowering, policies, acceptance, trail,
//!   answer): a request's time minus the time of its tier calls as the trail records them.
//!
//! Run: `cargo bench --bench sandbox` (add `-- --smoke` for a quick check that it works;
//! `-- --profile fresh|reused|trap` loops one path for 20 s, for `perf record`).
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use tierhost::EngineConfig;
use tierhost::{Cascade, FeatureValue, Request, TierEngine};

#[path = "../plugins/rules/src/logic.rs"]
#[allow(dead_code)]
mod rules_logic;

use rules_logic::{RuleParams, Transaction};

#[path = "../tests/common/mod.rs"]
mod common;
mod floor;
mod machine;
#[cfg(feature = "native-onnx")]
mod onnx_native;
mod support;
mod timing;

use common::{config, variant_of};
use timing::{Stats, stats, us};

#[path = "../plugins/trees/src/logic.rs"]
#[allow(dead_code)]
mod trees_logic;

const PHISHING_ROW: &str = r#"{"id":"bench-tree","features":{"empty_server_form_handler":0.5,"popup_window":0,"https":1,"request_from_other_domain":0.5,"anchor_from_other_domain":0,"is_popular":0.5,"long_url":1,"age_of_domain":1,"ip_in_url":0}}"#;

/// Native baseline of the tree tier: the same evaluation source, features found by name.
fn native_trees(req: &Request, model: &trees_logic::Model) -> Option<f64> {
    let x: Vec<f64> = model
        .features
        .iter()
        .map(|f| match req.feature(f) {
            Some(FeatureValue::Float(x)) => Some(*x),
            Some(FeatureValue::Integer(i)) => Some(*i as f64),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let raw = trees_logic::raw_score(model, &x).ok()?;
    Some(1.0 / (1.0 + (-raw).exp()))
}

fn request() -> Request {
    Request::from_json(
        r#"{"id":"bench","features":{"amount":9000,"account_age_days":3,"merchant_category":"crypto","is_international":true,"has_international_history":false,"channel":"web"}}"#,
    )
    .expect("valid request")
}

/// The native baseline does what the guest does: find each feature by name in the request,
/// check its type, then apply the rules.
fn native_rules(req: &Request, params: &RuleParams) -> Option<rules_logic::Verdict> {
    let number = |name: &str| match req.feature(name) {
        Some(FeatureValue::Integer(i)) => Some(*i as f64),
        Some(FeatureValue::Float(x)) => Some(*x),
        _ => None,
    };
    let flag = |name: &str| matches!(req.feature(name), Some(FeatureValue::Bool(true)));
    let tx = Transaction {
        amount: number("amount")?,
        account_age_days: number("account_age_days"),
        merchant_category: match req.feature("merchant_category") {
            Some(FeatureValue::Text(s)) => Some(s.as_str()),
            _ => None,
        },
        is_international: flag("is_international"),
        has_international_history: flag("has_international_history"),
    };
    Some(rules_logic::evaluate(&tx, params))
}

/// Times `f` `iterations` times after `warmup` untimed calls.
fn time_sync<R>(warmup: usize, iterations: usize, mut f: impl FnMut() -> R) -> Stats {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        black_box(f());
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    stats(samples)
}

const RULES_FRESH: &str = "[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n";
const RULES_REUSE: &str = "[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\ninstances = \"reuse\"\nwarm_instances = 1\n";

fn four_tiers(primary_mode: &str) -> String {
    format!(
        "[[tier]]\nname = \"primary\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.8\n[tier.params]\nmode = \"{primary_mode}\"\n\
         [[tier]]\nname = \"small-model\"\nplugin = \"builtin:linear\"\nmin_confidence = 0.99\n[tier.params]\nbias = -1.5\n[tier.params.weights]\namount = 0.8\naccount_age_days = -0.03\n[tier.params.scales]\namount = 1000.0\n\
         [[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\nmin_confidence = 0.3\n\
         [[tier]]\nname = \"constant\"\nplugin = \"builtin:constant\"\n"
    )
}

/// The phishing small model: native tract vs the `builtin:onnx` tier (warm instance, via the
/// cascade, as the phishing cascade runs it).
#[cfg(feature = "native-onnx")]
fn onnx_rows(
    measure: &dyn Fn(String, &Request, usize) -> Stats,
    request: &Request,
    warmup: usize,
    iterations: usize,
) -> Vec<(&'static str, Stats, f64)> {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing/models/small_model.onnx");
    let native = onnx_native::NativeOnnx::load(&model).expect("small_model.onnx loads natively");
    assert!(
        native.predict(request).is_some(),
        "the bench row has every input feature"
    );
    let native_stats = time_sync(warmup, iterations, || native.predict(black_box(request)));
    let tier = measure(
        format!(
            "[[tier]]\nname = \"small-model\"\nplugin = \"builtin:onnx\"\nmodel = \"{}\"\ninstances = \"reuse\"\nwarm_instances = 1\n[tier.limits]\nfuel = 20_000_000\n[tier.params]\nfeatures = \"{}\"\n",
            model.display(),
            onnx_native::FEATURES.join(",")
        ),
        request,
        iterations,
    );
    let ratio = tier.p50.as_nanos() as f64 / native_stats.p50.as_nanos().max(1) as f64;
    vec![
        (
            "phishing small model (ONNX via tract), native (same tract)",
            native_stats,
            1.0,
        ),
        (
            "phishing small model, builtin:onnx tier, reused instance, via cascade",
            tier,
            ratio,
        ),
    ]
}

#[cfg(not(feature = "native-onnx"))]
fn onnx_rows(
    _measure: &dyn Fn(String, &Request, usize) -> Stats,
    _request: &Request,
    _warmup: usize,
    _iterations: usize,
) -> Vec<(&'static str, Stats, f64)> {
    Vec::new()
}

/// Times hot swaps between two versions of the rules tier whose compiled artifacts are in the
/// disk cache (each swap evicts the other version from memory, so it is read from disk).
fn hot_swaps(runtime: &tokio::runtime::Runtime, swaps: usize) -> Stats {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = tierhost::builtin::get("rules").expect("builtin rules");
    for tag in ["a", "b"] {
        std::fs::write(
            dir.path().join(format!("{tag}.wasm")),
            variant_of(rules, tag),
        )
        .expect("write plugin");
    }
    let version = |tag: &str| {
        let text = format!(
            "[engine]\ncache_dir = \"cache\"\n[[tier]]\nname = \"rules\"\nplugin = \"{tag}.wasm\"\n"
        );
        tierhost::Config::parse(&text, &dir.path().join("cascade.toml"), dir.path())
            .expect("swap config")
    };
    runtime.block_on(async {
        let service = tierhost::CascadeService::new(version("a"))
            .await
            .expect("service");
        // Compile b once (into the disk cache), then swap back and forth.
        let first = service.reload_with(version("b"), "bench").await;
        assert_eq!(first.outcome, tierhost::ReloadOutcome::Applied, "{first:?}");
        let mut samples = Vec::with_capacity(swaps);
        for i in 0..swaps {
            let next = version(if i % 2 == 0 { "a" } else { "b" });
            let t = Instant::now();
            let report = service.reload_with(next, "bench").await;
            samples.push(t.elapsed());
            assert_eq!(
                report.outcome,
                tierhost::ReloadOutcome::Applied,
                "{report:?}"
            );
        }
        let stats_now = service.current().cascade.engine().compile_stats();
        assert!(
            stats_now.disk_hits >= swaps as u64,
            "swaps must read the disk cache: {stats_now:?}"
        );
        stats(samples)
    })
}

fn main() {
    let smoke = support::flag("--smoke");
    let (warmup, iterations) = if smoke { (50, 200) } else { (5_000, 50_000) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = TierEngine::new(&EngineConfig::default(), Path::new(".")).expect("engine");
    let req = request();
    if let Some(path) = support::arg::<String>("--profile") {
        let toml = match path.as_str() {
            "fresh" => RULES_FRESH.to_string(),
            "reused" => RULES_REUSE.to_string(),
            "trap" => four_tiers("trap"),
            other => panic!("--profile {other}: expected fresh, reused or trap"),
        };
        runtime.block_on(async {
            let cascade = Cascade::with_engine(engine.clone(), &config(&toml))
                .await
                .expect("loads");
            let until = Instant::now() + Duration::from_secs(20);
            let mut calls = 0u64;
            while Instant::now() < until {
                for _ in 0..1000 {
                    black_box(cascade.predict(black_box(&req)).await);
                }
                calls += 1000;
            }
            println!("{calls} requests on the {path} path");
        });
        return;
    }

    // Native baseline.
    let params = RuleParams::default();
    let native = time_sync(warmup, iterations, || {
        native_rules(black_box(&req), &params)
    });

    // The whole timed loop runs inside one `block_on`, as a server's task would.
    // Each request's wall time, and that time minus its tier calls (the host's own work).
    let measure_both = |toml: String, request: &Request, iterations: usize| -> (Stats, Stats) {
        runtime.block_on(async {
            let cascade = Cascade::with_engine(engine.clone(), &config(&toml))
                .await
                .expect("loads");
            assert!(cascade.load_errors().is_empty());
            let mut samples = Vec::with_capacity(iterations);
            let mut host_work = Vec::with_capacity(iterations);
            for i in 0..warmup + iterations {
                let t = Instant::now();
                let answer = cascade.predict(black_box(request)).await;
                let elapsed = t.elapsed();
                if i >= warmup {
                    let calls: u64 = answer.trail.iter().map(|e| e.elapsed_us).sum();
                    samples.push(elapsed);
                    host_work.push(elapsed.saturating_sub(Duration::from_micros(calls)));
                }
                black_box(answer);
            }
            (stats(samples), stats(host_work))
        })
    };
    let measure_request = |toml: String, request: &Request, iterations: usize| {
        measure_both(toml, request, iterations).0
    };
    let measure = |toml: String, iterations: usize| measure_request(toml, &req, iterations);
    // The phishing primary (100 trees, 9 features): native vs sandbox with a warm instance.
    let trees_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing/models/primary_trees.json");
    let tree_model = trees_logic::parse(&std::fs::read(&trees_path).expect("primary_trees.json"))
        .expect("valid trees");
    let tree_req = Request::from_json(PHISHING_ROW).expect("valid row");
    let native_trees_stats = time_sync(warmup, iterations, || {
        native_trees(black_box(&tree_req), &tree_model)
    });
    let trees_sandbox = measure_request(
        format!(
            "[[tier]]\nname = \"primary\"\nplugin = \"builtin:trees\"\nmodel = \"{}\"\ninstances = \"reuse\"\nwarm_instances = 1\n",
            trees_path.display()
        ),
        &tree_req,
        iterations,
    );

    let onnx = onnx_rows(&measure_request, &tree_req, warmup, iterations);

    let fresh = measure(RULES_FRESH.into(), iterations);
    // The same rules in Python (componentize-py) and JavaScript (componentize-js), built by
    // scripts/polyglot.sh: components with the interpreter inside (18 and 12 MB); their limits
    // are the templates'.
    let polyglot = |file: &str| {
        let wasm =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/polyglot/{file}.wasm"));
        wasm.exists().then(|| {
            let tier = |instances: &str| {
                format!(
                    "[cascade]\nbudget_ms = 10000\n[[tier]]\nname = \"rules\"\nplugin = \"{}\"\n{instances}[tier.limits]\ndeadline_ms = 5000\nfuel = 50_000_000\nmax_memory_mib = 64\n",
                    wasm.display()
                )
            };
            let n = if smoke { 100 } else { 3_000 };
            (
                measure(tier(""), n),
                measure(tier("instances = \"reuse\"\nwarm_instances = 1\n"), n),
            )
        })
    };
    let polyglot = [
        ("Python (componentize-py)", polyglot("fraud-rules-py")),
        ("JavaScript (componentize-js)", polyglot("fraud-rules-js")),
    ];
    let (reused, host_work) = measure_both(RULES_REUSE.into(), &req, iterations);
    // The floor: the same rules component, called through wasmtime directly.
    let rules_wasm = tierhost::builtin::get("rules").expect("builtin rules");
    let lowered = floor::lower(&req);
    let measure_floor = |floor: floor::Floor| {
        runtime.block_on(async {
            let fresh = floor::time_async(warmup, iterations, || floor.call_fresh(&lowered)).await;
            let mut warm = floor.warm().await;
            let mut reused = Vec::with_capacity(iterations);
            for i in 0..warmup + iterations {
                let t = Instant::now();
                black_box(floor::call_warm(&mut warm, &lowered).await);
                if i >= warmup {
                    reused.push(t.elapsed());
                }
            }
            (stats(fresh), stats(reused))
        })
    };
    let (floor_fresh, floor_reused) =
        measure_floor(floor::Floor::new(rules_wasm, false).expect("floor engine"));
    let (limits_fresh, limits_reused) =
        measure_floor(floor::Floor::new(rules_wasm, true).expect("floor engine"));
    let cascade_ok = measure(four_tiers("ok"), iterations / 2);
    let cascade_fault = measure(four_tiers("trap"), iterations / 2);

    let swaps = hot_swaps(&runtime, if smoke { 4 } else { 50 });

    println!(
        "tierhost sandbox benchmark ({iterations} iterations each after {warmup} warm-up; {})\n",
        machine::describe()
    );
    println!("| path | p50 (us) | p99 (us) | mean (us) | p50 vs native |");
    println!("|---|---:|---:|---:|---:|");
    let ratio = |s: &Stats| s.p50.as_nanos() as f64 / native.p50.as_nanos().max(1) as f64;
    for (name, s) in [
        ("rules, native Rust function (same source)", &native),
        ("rules tier, sandbox, fresh instance per call", &fresh),
        ("rules tier, sandbox, reused instance", &reused),
        (
            "rules, wasmtime floor, fresh instance per call",
            &floor_fresh,
        ),
        ("rules, wasmtime floor, reused instance", &floor_reused),
        (
            "rules, wasmtime floor + fuel + epoch, fresh instance",
            &limits_fresh,
        ),
        (
            "rules, wasmtime floor + fuel + epoch, reused instance",
            &limits_reused,
        ),
        ("4-tier cascade, primary answers", &cascade_ok),
        (
            "4-tier cascade, primary traps -> 3 tiers tried",
            &cascade_fault,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.1}x |",
            us(s.p50),
            us(s.p99),
            us(s.mean),
            ratio(s)
        );
    }
    for (name, s, r) in &onnx {
        println!(
            "| {name} | {} | {} | {} | {r:.1}x vs native ONNX |",
            us(s.p50),
            us(s.p99),
            us(s.mean)
        );
    }
    if onnx.is_empty() {
        println!(
            "| phishing small model (ONNX), native vs builtin:onnx | - | - | - | run with `--features native-onnx` |"
        );
    }
    for (lang, measured) in &polyglot {
        match measured {
            Some((fresh, reused)) => {
                for (how, s) in [
                    ("fresh instance per call", fresh),
                    ("reused instance", reused),
                ] {
                    println!(
                        "| rules in {lang}, {how} | {} | {} | {} | {:.1}x |",
                        us(s.p50),
                        us(s.p99),
                        us(s.mean),
                        ratio(s)
                    );
                }
            }
            None => println!("| rules in {lang} | - | - | - | run ./scripts/polyglot.sh first |"),
        }
    }
    let tree_ratio =
        trees_sandbox.p50.as_nanos() as f64 / native_trees_stats.p50.as_nanos().max(1) as f64;
    for (name, s, r) in [
        (
            "phishing trees (100 x depth 3), native (same source)",
            &native_trees_stats,
            1.0,
        ),
        (
            "phishing trees tier, sandbox, reused instance, via cascade",
            &trees_sandbox,
            tree_ratio,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {r:.1}x vs native trees |",
            us(s.p50),
            us(s.p99),
            us(s.mean)
        );
    }
    println!();
    println!(
        "fresh / reused p50: {:.2}x",
        fresh.p50.as_nanos() as f64 / reused.p50.as_nanos().max(1) as f64
    );
    let vs = |a: &Stats, b: &Stats| a.p50.as_nanos() as f64 / b.p50.as_nanos().max(1) as f64;
    println!(
        "tierhost fresh / floor fresh p50: {:.2}x (target <= 1.3x)",
        vs(&fresh, &floor_fresh)
    );
    println!(
        "tierhost reused / floor reused p50: {:.2}x (target <= 1.5x)",
        vs(&reused, &floor_reused)
    );
    println!(
        "tierhost fresh / (floor + fuel + epoch) fresh p50: {:.2}x; reused: {:.2}x (the limits' own cost taken out)",
        vs(&fresh, &limits_fresh),
        vs(&reused, &limits_reused)
    );
    println!(
        "host work per request outside tier calls (1-tier cascade, reused): p50 {} us, p99 {} us (target p50 <= 2 us)",
        us(host_work.p50),
        us(host_work.p99)
    );
    println!(
        "hot swap of a tier from the disk cache (reload_with, load + describe + swap): p50 {:.2} ms, p99 {:.2} ms over {} swaps (target <= 50 ms)",
        swaps.p50.as_secs_f64() * 1e3,
        swaps.p99.as_secs_f64() * 1e3,
        if smoke { 4 } else { 50 }
    );
    println!(
        "cascade with faulting primary / healthy p50: {:.2}x",
        cascade_fault.p50.as_nanos() as f64 / cascade_ok.p50.as_nanos().max(1) as f64
    );
}
