//! Python and JavaScript tiers (componentize-py / componentize-js, built by
//! `scripts/polyglot.sh` into target/polyglot/) in the unchanged host, with no capability beyond
//! any other tier's:
//!
//! - the fraud rules ported to Python (`examples/fraud/python/app.py`) and to JavaScript
//!   (`examples/fraud/js/app.js`) each answer exactly like the Rust rules tier (label, score, confidence, reasons; or the same error kind and message) on
//!   `examples/fraud/requests.jsonl` and on 1,500 generated requests covering edge values,
//!   missing and null features, wrong types and shuffled feature order;
//! - a Python tier that loops, raises or allocates without bound is cut off (out-of-fuel or
//!   deadline, trap with the Python traceback in the detail, memory-limit) and the request is
//!   answered by the next tier; a JavaScript tier that loops is cut off too.
//!
//! The components must exist: with `TIERHOST_REQUIRE_POLYGLOT=1` (set by scripts/test.sh) a
//! missing one fails the test; without it the tests say loudly that they skipped.
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tierhost::{Answer, Cascade, Config, EngineConfig, Request, TierEngine};

fn component(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/polyglot/{name}.wasm"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("TIERHOST_REQUIRE_POLYGLOT").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run ./scripts/polyglot.sh (TIERHOST_REQUIRE_POLYGLOT=1)",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run ./scripts/polyglot.sh; set TIERHOST_REQUIRE_POLYGLOT=1 to fail instead)",
        path.display()
    );
    None
}

/// An engine whose compiled components are cached on disk: an 18 MB Python component takes
/// seconds to compile, once per machine.
fn engine() -> TierEngine {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/polyglot/compiled");
    let config = EngineConfig {
        cache_dir: Some(cache),
        ..EngineConfig::default()
    };
    TierEngine::new(&config, Path::new(".")).expect("engine")
}

async fn load(engine: &TierEngine, toml: &str) -> Cascade {
    let config = Config::parse(toml, Path::new("test.toml"), Path::new(".")).expect("config");
    Cascade::with_engine(engine.clone(), &config)
        .await
        .expect("cascade loads")
}

/// The example's rules params, with the limits a Python tier needs on a loaded machine: the
/// tests are about answers, not speed, so the deadline is generous.
fn rules_tier(plugin: &str) -> String {
    format!(
        r#"[cascade]
budget_ms = 60000
[safe_default]
label = "review"
[[tier]]
name = "rules"
plugin = "{plugin}"
min_confidence = 0.0
instances = "reuse"
[tier.limits]
deadline_ms = 30000
fuel = 100_000_000
max_memory_mib = 64
[tier.params]
high_amount = 5000
new_account_days = 7
high_risk_categories = "gambling,crypto,wire_transfer"
"#
    )
}

/// What must match between the two tiers: the decision and, per trail entry, the step and the
/// reason (kind, error kind, message).
fn comparable(answer: &Answer) -> Value {
    let full = serde_json::to_value(answer).unwrap();
    let trail: Vec<Value> = full["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"tier": e["tier"], "step": e["step"], "reason": e["reason"]}))
        .collect();
    json!({
        "decision": full["decision"],
        "served_by": full["served_by"]["tier"],
        "trail": trail,
    })
}

/// A deterministic generator of varied requests (xorshift).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize].clone()
    }

    fn request(&mut self, i: usize) -> Request {
        let (r1, r2, r3) = (self.next(), self.next(), self.next());
        let amount = self.pick(&[
            json!(0),
            json!(42.5),
            json!(4999.999),
            json!(5000),
            json!(5000.0),
            json!(5000.000001),
            json!(-10),
            json!(1e300),
            json!(9_007_199_254_740_993i64),
            json!(r1 % 20_000),
            json!((r2 % 2_000_000) as f64 / 100.0),
            json!(true),
            json!("5000"),
            Value::Null,
        ]);
        let age = self.pick(&[
            json!(0),
            json!(6.999),
            json!(7),
            json!(7.0),
            json!(365),
            json!(r3 % 30),
            json!(-1),
            json!(false),
            json!("old"),
            Value::Null,
        ]);
        let category = self.pick(&[
            json!("crypto"),
            json!("gambling"),
            json!("wire_transfer"),
            json!("grocery"),
            json!(" crypto"),
            json!(""),
            json!(7),
            Value::Null,
        ]);
        let flag = |g: &mut Gen| {
            g.pick(&[
                json!(true),
                json!(false),
                json!(0),
                json!(1),
                json!(2),
                json!("yes"),
                Value::Null,
            ])
        };
        let international = flag(self);
        let history = flag(self);
        let mut features: Vec<(&str, Value)> = vec![
            ("amount", amount),
            ("account_age_days", age),
            ("merchant_category", category),
            ("is_international", international),
            ("has_international_history", history),
        ];
        // Leave some features out, and shuffle the order.
        features.retain(|_| !self.next().is_multiple_of(8));
        for k in (1..features.len()).rev() {
            let j = (self.next() % (k as u64 + 1)) as usize;
            features.swap(k, j);
        }
        let object: serde_json::Map<String, Value> = features
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Request::from_json(&json!({"id": format!("gen-{i}"), "features": object}).to_string())
            .expect("a valid request")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rules_answer_exactly_like_the_rust_rules() {
    same_answers_as_the_rust_rules("fraud-rules-py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_rules_answer_exactly_like_the_rust_rules() {
    same_answers_as_the_rust_rules("fraud-rules-js").await;
}

async fn same_answers_as_the_rust_rules(name: &str) {
    let Some(python) = component(name) else {
        return;
    };
    let engine = engine();
    let rust = load(&engine, &rules_tier("builtin:rules")).await;
    let python = load(&engine, &rules_tier(python.to_str().unwrap())).await;

    let mut requests: Vec<Request> = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fraud/requests.jsonl"
    ))
    .unwrap()
    .lines()
    .map(|l| Request::from_json(l).unwrap())
    .collect();
    let examples = requests.len();
    let mut generator = Gen(0x9e37_79b9_7f4a_7c15);
    requests.extend((0..1500).map(|i| generator.request(i)));

    let (mut served, mut fell) = (0, 0);
    for request in &requests {
        let (r, p) = (rust.predict(request).await, python.predict(request).await);
        assert_eq!(
            comparable(&r),
            comparable(&p),
            "request {}: Rust and {name} differ",
            request.id
        );
        if r.served_by.tier == "rules" {
            served += 1;
            assert_eq!(p.served_by.plugin.as_deref(), Some(name));
        } else {
            fell += 1;
        }
    }
    // The generated set exercises both paths, each many times.
    assert!(served > 300 && fell > 300, "served {served}, fell {fell}");
    eprintln!(
        "{name}: {} requests ({examples} examples + 1500 generated): identical; {served} answered by the rules, {fell} fell back",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_tier_that_loops_raises_or_hoards_memory_is_contained() {
    let Some(faults) = component("faults-py") else {
        return;
    };
    let engine = engine();
    for (mode, expected, detail) in [
        ("loop", &["out-of-fuel", "deadline"][..], "out of fuel"),
        ("raise", &["trap"][..], "ValueError: a bug in the tier"),
        ("allocate", &["memory-limit"][..], "limit 67108864"),
    ] {
        let toml = format!(
            r#"[cascade]
budget_ms = 60000
[safe_default]
label = "review"
[[tier]]
name = "python"
plugin = "{}"
[tier.limits]
deadline_ms = 30000
fuel = 100_000_000
max_memory_mib = 64
[tier.params]
mode = "{mode}"
[[tier]]
name = "rules"
plugin = "builtin:rules"
min_confidence = 0.0
[tier.limits]
deadline_ms = 30000
"#,
            faults.display()
        );
        let cascade = load(&engine, &toml).await;
        for i in 0..3 {
            let request = Request::from_json(&format!(
                r#"{{"id":"{mode}-{i}","features":{{"amount":9000,"account_age_days":3}}}}"#
            ))
            .unwrap();
            let answer = cascade.predict(&request).await;
            assert_eq!(answer.served_by.tier, "rules", "{mode}: {answer:?}");
            let kinds = answer.fallback_kinds();
            assert_eq!(kinds.len(), 1, "{mode}: {kinds:?}");
            assert!(expected.contains(&kinds[0]), "{mode}: {kinds:?}");
            let trail = serde_json::to_string(&answer.trail).unwrap();
            // A loop may also be cut by the deadline on a very slow machine.
            assert!(
                trail.contains(detail) || kinds[0] == "deadline",
                "{mode}: {trail}"
            );
        }
    }
    // The same component, well behaved, is served: nothing about the tier is broken for good.
    let ok = load(
        &engine,
        &format!(
            "[cascade]\nbudget_ms = 60000\n[[tier]]\nname = \"python\"\nplugin = \"{}\"\n[tier.limits]\ndeadline_ms = 30000\n",
            faults.display()
        ),
    )
    .await;
    let answer = ok
        .predict(&Request::from_json(r#"{"id":"ok","features":{}}"#).unwrap())
        .await;
    assert_eq!(answer.served_by.tier, "python", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_tier_that_loops_is_contained() {
    let Some(looping) = component("loop-js") else {
        return;
    };
    let toml = format!(
        "[cascade]\nbudget_ms = 60000\n[[tier]]\nname = \"js\"\nplugin = \"{}\"\n[tier.limits]\ndeadline_ms = 30000\n{RULES}",
        looping.display()
    );
    let cascade = load(&engine(), &toml).await;
    for i in 0..3 {
        let request = Request::from_json(&format!(
            r#"{{"id":"js-{i}","features":{{"amount":9000,"account_age_days":3}}}}"#
        ))
        .unwrap();
        let answer = cascade.predict(&request).await;
        assert_eq!(answer.served_by.tier, "rules", "{answer:?}");
        let kinds = answer.fallback_kinds();
        assert!(
            kinds == ["out-of-fuel"] || kinds == ["deadline"],
            "{kinds:?}"
        );
    }
}

const RULES: &str = "[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\nmin_confidence = 0.0\n[tier.limits]\ndeadline_ms = 30000\n";
