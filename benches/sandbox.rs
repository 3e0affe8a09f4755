//! Sandbox cost, measured side by side in one run and printed as ratios:
//!
//! - the rules tier as a native Rust function (the very same `logic.rs` source the guest is
//!   built from) vs through the sandbox with a fresh instance per call vs a reused instance;
//! - a 4-tier cascade whose primary answers vs one whose primary traps on every call.
//!
//! Run: `cargo bench --bench sandbox` (add `-- --smoke` for a quick check that it works).
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
mod machine;

use common::config;

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

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        mean,
    }
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

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_nanos() as f64 / 1000.0)
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

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (warmup, iterations) = if smoke { (50, 200) } else { (5_000, 50_000) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = TierEngine::new(&EngineConfig::default(), Path::new(".")).expect("engine");
    let req = request();

    // Native baseline.
    let params = RuleParams::default();
    let native = time_sync(warmup, iterations, || {
        native_rules(black_box(&req), &params)
    });

    // The whole timed loop runs inside one `block_on`, as a server's task would.
    let measure_request = |toml: String, request: &Request, iterations: usize| -> Stats {
        runtime.block_on(async {
            let cascade = Cascade::with_engine(engine.clone(), &config(&toml))
                .await
                .expect("loads");
            assert!(cascade.load_errors().is_empty());
            let mut samples = Vec::with_capacity(iterations);
            for i in 0..warmup + iterations {
                let t = Instant::now();
                black_box(cascade.predict(black_box(request)).await);
                if i >= warmup {
                    samples.push(t.elapsed());
                }
            }
            stats(samples)
        })
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

    let fresh = measure(RULES_FRESH.into(), iterations);
    let reused = measure(RULES_REUSE.into(), iterations);
    let cascade_ok = measure(four_tiers("ok"), iterations / 2);
    let cascade_fault = measure(four_tiers("trap"), iterations / 2);

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
    println!(
        "cascade with faulting primary / healthy p50: {:.2}x",
        cascade_fault.p50.as_nanos() as f64 / cascade_ok.p50.as_nanos().max(1) as f64
    );
}
