//! Limit boundaries: just under a limit succeeds, just over is stopped with that limit's kind;
//! a hung tier is cut off within its deadline plus a small bound; no state survives between
//! requests to a fresh-instance tier, and a reused instance keeps its state until it faults.
use crate::common;

use std::time::{Duration, Instant};

use common::*;
use tierhost::{Decision, FallbackReason, Step};

fn burn_tier(fuel: u64, iterations: u64) -> String {
    format!(
        "[[tier]]\nname = \"burn\"\nplugin = \"builtin:chaos\"\n[tier.limits]\nfuel = {fuel}\n[tier.params]\nmode = \"burn\"\niterations = {iterations}\n"
    )
}

#[tokio::test]
async fn fuel_slightly_above_need_succeeds_and_slightly_below_is_out_of_fuel() {
    let iterations = 200_000;
    // Fuel is deterministic: measure what the call needs with plenty, then set limits 2% around it.
    let probe = cascade(&burn_tier(1_000_000_000, iterations))
        .await
        .predict(&request("probe"))
        .await;
    assert_eq!(probe.trail[0].step, Step::Served, "{probe:?}");
    let need = probe.trail[0].fuel_used;
    assert!(
        need > iterations,
        "fuel used {need} should exceed the loop count"
    );

    let enough = cascade(&burn_tier(need + need / 50, iterations))
        .await
        .predict(&request("enough"))
        .await;
    assert_eq!(enough.served_by.tier, "burn", "{enough:?}");
    assert_eq!(enough.trail[0].fuel_used, need);

    let short = cascade(&burn_tier(need - need / 50, iterations))
        .await
        .predict(&request("short"))
        .await;
    assert_eq!(short.served_by.tier, "safe-default");
    assert_eq!(kinds(&short), vec!["out-of-fuel"]);
}

fn alloc_tier(limit_mib: u64, bytes: u64) -> String {
    format!(
        "[[tier]]\nname = \"alloc\"\nplugin = \"builtin:chaos\"\n[tier.limits]\nmax_memory_mib = {limit_mib}\n[tier.params]\nmode = \"alloc\"\nbytes = {bytes}\n"
    )
}

#[tokio::test]
async fn memory_slightly_below_limit_succeeds_and_slightly_above_is_memory_limit() {
    const MIB: u64 = 1024 * 1024;
    // A Rust guest starts with ~1.1 MiB of linear memory; 8 MiB more stays under 10 MiB...
    let fits = cascade(&alloc_tier(10, 8 * MIB))
        .await
        .predict(&request("fits"))
        .await;
    assert_eq!(fits.served_by.tier, "alloc", "{fits:?}");
    // ...9 MiB more does not.
    let over = cascade(&alloc_tier(10, 9 * MIB))
        .await
        .predict(&request("over"))
        .await;
    assert_eq!(over.served_by.tier, "safe-default");
    match &over.trail[0].reason {
        Some(FallbackReason::MemoryLimit { requested, limit }) => {
            assert_eq!(*limit, 10 * MIB);
            assert!(*requested > 10 * MIB, "requested {requested}");
        }
        other => panic!("expected memory-limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hung_tier_is_cut_off_within_its_deadline_plus_a_small_bound() {
    const DEADLINE_MS: u64 = 40;
    // Generous on a loaded 2-core CI machine; typical overshoot is one epoch tick (250 us).
    const BOUND_MS: u64 = 25;
    for mode in ["spin", "sleep"] {
        let toml = format!(
            "{}{RULES_TIER}",
            chaos_tier(
                "hung",
                mode,
                &format!("fuel = 1_000_000_000_000\ndeadline_ms = {DEADLINE_MS}")
            )
        );
        let cascade = cascade(&toml).await;
        let started = Instant::now();
        let answer = cascade.predict(&request(mode)).await;
        let wall = started.elapsed();
        assert_eq!(kinds(&answer), vec!["deadline"], "{mode}");
        assert_eq!(answer.served_by.tier, "rules");
        let tier_ms = answer.trail[0].elapsed_us as f64 / 1000.0;
        assert!(
            tier_ms >= (DEADLINE_MS - 1) as f64 && tier_ms <= (DEADLINE_MS + BOUND_MS) as f64,
            "{mode}: hung tier took {tier_ms:.2} ms for a {DEADLINE_MS} ms deadline"
        );
        // The request returned promptly too, leaving out the healthy tier's own time (no
        // wall-clock bound is put on a healthy tier).
        let healthy = Duration::from_micros(answer.trail[1].elapsed_us);
        assert!(
            wall.saturating_sub(healthy) < Duration::from_millis(DEADLINE_MS + BOUND_MS + 20),
            "{mode}: request took {wall:?}, {healthy:?} of it in the rules tier"
        );
    }
}

#[tokio::test]
async fn the_request_budget_caps_each_tier_and_skips_the_rest() {
    let toml = format!(
        "[cascade]\nbudget_ms = 25\n{}{RULES_TIER}",
        chaos_tier(
            "hung",
            "spin",
            "fuel = 1_000_000_000_000\ndeadline_ms = 1000"
        )
    );
    let cascade = cascade(&toml).await;
    let started = Instant::now();
    let answer = cascade.predict(&request("budget")).await;
    assert!(
        started.elapsed() < Duration::from_millis(25 + 30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(kinds(&answer), vec!["deadline", "budget-exhausted"]);
    assert_eq!(answer.served_by.tier, "safe-default");
    assert_eq!(answer.trail[1].step, Step::Skipped);
}

#[tokio::test]
async fn no_state_survives_between_requests_in_fresh_instance_mode() {
    let toml = chaos_tier("counter", "count", "");
    let cascade = cascade(&toml).await;
    for i in 0..3 {
        let answer = cascade.predict(&request(&format!("fresh-{i}"))).await;
        match answer.decision {
            Decision::Answer {
                score, ref reasons, ..
            } => {
                assert_eq!(
                    score, 1.0,
                    "call {i} saw state from an earlier call: {reasons:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A `count` tier (answers with the number of calls its instance has seen) that keeps one warm
/// instance, with `max_memory_mib` of memory and room in fuel and time for large requests.
fn counter_tier(name: &str, max_memory_mib: u64) -> String {
    format!(
        "[[tier]]\nname = \"{name}\"\nplugin = \"builtin:chaos\"\ninstances = \"reuse\"\nwarm_instances = 1\n\
         [tier.limits]\nmax_memory_mib = {max_memory_mib}\nfuel = 1_000_000_000\ndeadline_ms = 10000\n\
         [tier.params]\nmode = \"count\"\n"
    )
}

/// A request with 6 MB of text features: copying it into a tier's memory needs more than 4 MiB.
fn big_request(id: &str) -> tierhost::Request {
    let text = "x".repeat(60_000);
    let features: Vec<String> = (0..100).map(|i| format!(r#""f{i}":"{text}""#)).collect();
    tierhost::Request::from_json(&format!(
        r#"{{"id":"{id}","features":{{{}}}}}"#,
        features.join(",")
    ))
    .expect("valid request")
}

/// Which tier served and with what count, and the trail's fallback kinds.
fn served(answer: &tierhost::Answer) -> (&str, f64, Vec<&'static str>) {
    match answer.decision {
        Decision::Answer { score, .. } => (answer.served_by.tier.as_str(), score, kinds(answer)),
        ref other => panic!("{other:?}: {answer:?}"),
    }
}

#[tokio::test]
async fn reuse_mode_keeps_a_warm_instance_and_discards_it_after_a_fault() {
    // `fragile` faults (memory-limit) on a large request: the host must copy it into the
    // tier's memory, past its 4 MiB. `sturdy` has room for it.
    let toml = format!(
        "[cascade]\nbudget_ms = 60000\n{}{}",
        counter_tier("fragile", 4),
        counter_tier("sturdy", 64)
    );
    let cascade = cascade(&toml).await;
    let small = |id: &str| request(id);

    // Warm: one instance answers call after call and keeps its globals.
    for n in 1..=3 {
        let answer = cascade.predict(&small(&format!("warm-{n}"))).await;
        assert_eq!(served(&answer), ("fragile", n as f64, vec![]), "{answer:?}");
    }

    // The fault: the warm instance (3 calls) faults; `sturdy` answers with its first call.
    let answer = cascade.predict(&big_request("fault-1")).await;
    assert_eq!(
        served(&answer),
        ("sturdy", 1.0, vec!["memory-limit"]),
        "{answer:?}"
    );
    assert!(
        matches!(&answer.trail[0].reason, Some(FallbackReason::MemoryLimit { limit, .. }) if *limit == 4 << 20),
        "{answer:?}"
    );

    // The faulted instance is gone: `fragile` starts again from a fresh one.
    let answer = cascade.predict(&small("after-fault")).await;
    assert_eq!(served(&answer), ("fragile", 1.0, vec![]), "{answer:?}");

    // Fault again: the unfaulted warm instance of `sturdy` kept its state (its second call),
    // after serving a large request; `fragile`'s faulted instance is discarded again.
    let answer = cascade.predict(&big_request("fault-2")).await;
    assert_eq!(
        served(&answer),
        ("sturdy", 2.0, vec!["memory-limit"]),
        "{answer:?}"
    );
    let answer = cascade.predict(&small("after-second-fault")).await;
    assert_eq!(served(&answer), ("fragile", 1.0, vec![]), "{answer:?}");
    let answer = cascade.predict(&small("still-warm")).await;
    assert_eq!(served(&answer), ("fragile", 2.0, vec![]), "{answer:?}");
}

#[tokio::test]
async fn log_output_is_bounded_per_call_and_the_drop_is_counted() {
    let toml = "[[tier]]\nname = \"chatty\"\nplugin = \"builtin:chaos\"\n[tier.limits]\nmax_log_bytes = 4096\n[tier.params]\nmode = \"log-flood\"\nbytes = 65536\n";
    let answer = cascade(toml).await.predict(&request("flood")).await;
    assert_eq!(answer.served_by.tier, "chatty");
    // 64 lines of 1 KiB, 4 fit in the 4 KiB budget.
    assert_eq!(answer.trail[0].logs_dropped, 60);
}

/// A component that declares the per-component maximum of core instances (16) and tables (8).
fn wide_component() -> Vec<u8> {
    let mut text = String::from("(component (core module $t (table 1 funcref)) (core module $m)");
    for i in 0..16 {
        let module = if i < 8 { "$t" } else { "$m" };
        text.push_str(&format!(" (core instance (instantiate {module}))"));
    }
    text.push(')');
    wat::parse_str(&text).expect("valid component text")
}

#[tokio::test]
async fn components_that_declare_many_core_instances_cannot_exhaust_the_pool() {
    // Before the pool was sized per component, 4 component slots came with 16 core-instance
    // slots: the second wide component failed to instantiate while 3 component slots were free.
    let limits = tierhost::EngineConfig {
        max_instances: 4,
        ..Default::default()
    };
    let engine = tierhost::TierEngine::new(&limits, std::path::Path::new(".")).unwrap();
    let component =
        wasmtime::component::Component::new(engine.engine(), wide_component()).expect("compiles");
    let linker = wasmtime::component::Linker::<()>::new(engine.engine());
    let mut live = Vec::new();
    for i in 0..4 {
        let mut store = wasmtime::Store::new(engine.engine(), ());
        linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap_or_else(|e| panic!("wide component {i} of 4 failed: {e:#}"));
        live.push(store);
    }
    // The fifth is refused by the component-slot limit itself (engine.max_instances).
    let mut store = wasmtime::Store::new(engine.engine(), ());
    let err = linker
        .instantiate_async(&mut store, &component)
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some(),
        "{err:#}"
    );
}
