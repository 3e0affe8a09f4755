//! The cascade's memory, end to end through real sandboxes: the circuit breaker (driven by an
//! injected clock, never by sleeping), hedging, the embedded prediction cache, and policy state
//! across hot swaps.
use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tierhost::{BreakerState, CacheStatus, Cascade, ManualClock, PolicyMemory, Request, Step};

async fn load(toml: &str, memory: &PolicyMemory) -> Cascade {
    Cascade::with_memory(engine(), &config(toml), memory)
        .await
        .expect("cascade loads")
}

fn memory() -> (PolicyMemory, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (PolicyMemory::new(clock.clone()), clock)
}

/// `toml` loaded with a policy memory of its own (on a clock nobody moves).
async fn load_alone(toml: &str) -> Cascade {
    load(toml, &memory().0).await
}

/// A primary that answers `allow`, trapping (injected) while the clock is in [1 s, 2 s).
const FLAPPING_PRIMARY: &str = r#"
[[tier]]
name = "primary"
plugin = "builtin:chaos"
params = { mode = "ok" }
chaos = { mode = "trap", from_s = 1.0, until_s = 2.0 }
breaker = { window_calls = 10, minimum_calls = 4, failure_rate = 0.5, open_ms = 5000, half_open_calls = 2 }
"#;

fn breaker_state(cascade: &Cascade) -> BreakerState {
    cascade.tiers()[0]
        .policies
        .breaker
        .as_ref()
        .expect("primary has a breaker")
        .state()
}

#[tokio::test]
async fn breaker_opens_skips_without_calling_then_probes_and_closes() {
    let (memory, clock) = memory();
    let cascade = load(&format!("{FLAPPING_PRIMARY}{RULES_TIER}"), &memory).await;
    let ask = |id: &str| request(id);

    // Healthy: the primary serves.
    let a = cascade.predict(&ask("h1")).await;
    assert_eq!(a.served_by.tier, "primary");

    // Outage: with the healthy call, 3 traps make 3 of 4 calls failed (closed -> open).
    clock.set(Duration::from_secs(1));
    for i in 0..3 {
        let a = cascade.predict(&ask(&format!("down-{i}"))).await;
        assert_eq!(kinds(&a), vec!["trap"]);
        assert_eq!(a.served_by.tier, "rules");
    }
    assert_eq!(breaker_state(&cascade), BreakerState::Open);

    // Open: the primary is skipped at no cost: no instance, no fuel, no time.
    let a = cascade.predict(&ask("skipped")).await;
    assert_eq!(kinds(&a), vec!["breaker-open"]);
    assert_eq!(a.trail[0].step, Step::Skipped);
    assert_eq!((a.trail[0].fuel_used, a.trail[0].elapsed_us), (0, 0));
    assert_eq!(a.served_by.tier, "rules");

    // Still open just before open_ms has passed, even though the outage ended.
    clock.set(Duration::from_millis(1_000 + 4_999));
    assert_eq!(
        kinds(&cascade.predict(&ask("still-open")).await),
        vec!["breaker-open"]
    );

    // open -> half-open: probes go through; two good probes close it (half-open -> closed).
    clock.set(Duration::from_secs(6));
    let a = cascade.predict(&ask("probe-1")).await;
    assert_eq!(a.served_by.tier, "primary");
    assert_eq!(breaker_state(&cascade), BreakerState::HalfOpen);
    cascade.predict(&ask("probe-2")).await;
    assert_eq!(breaker_state(&cascade), BreakerState::Closed);
    assert_eq!(cascade.predict(&ask("h2")).await.served_by.tier, "primary");
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let (memory, clock) = memory();
    let toml = FLAPPING_PRIMARY.replace("until_s = 2.0", "until_s = 100.0");
    let cascade = load(&format!("{toml}{RULES_TIER}"), &memory).await;
    clock.set(Duration::from_secs(1));
    for i in 0..4 {
        cascade.predict(&request(&format!("down-{i}"))).await;
    }
    assert_eq!(breaker_state(&cascade), BreakerState::Open);
    clock.set(Duration::from_secs(7));
    let a = cascade.predict(&request("probe")).await;
    assert_eq!(kinds(&a), vec!["trap"], "the probe was called and trapped");
    assert_eq!(breaker_state(&cascade), BreakerState::HalfOpen);
    cascade.predict(&request("probe-2")).await;
    assert_eq!(
        breaker_state(&cascade),
        BreakerState::Open,
        "half-open -> open"
    );
}

#[tokio::test]
async fn breaker_counts_bad_results_when_configured() {
    // A tier that answers, but never confidently enough: outcome-aware breaker.
    let toml = format!(
        "[[tier]]\nname = \"unsure\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.9\n[tier.params]\nmode = \"ok\"\nconfidence = 0.2\n[tier.breaker]\nwindow_calls = 4\nminimum_calls = 4\nfailure_on = [\"low-confidence\"]\n{RULES_TIER}"
    );
    let cascade = load_alone(&toml).await;
    for i in 0..4 {
        let a = cascade.predict(&request(&format!("u{i}"))).await;
        assert_eq!(kinds(&a), vec!["low-confidence"]);
    }
    let a = cascade.predict(&request("u5")).await;
    assert_eq!(kinds(&a), vec!["breaker-open"]);
}

#[tokio::test]
async fn breaker_state_survives_a_swap_of_another_tier_and_resets_for_a_new_plugin() {
    let (memory, clock) = memory();
    let before = load(&format!("{FLAPPING_PRIMARY}{RULES_TIER}"), &memory).await;
    clock.set(Duration::from_secs(1));
    for i in 0..4 {
        before.predict(&request(&format!("down-{i}"))).await;
    }
    assert_eq!(breaker_state(&before), BreakerState::Open);

    // Hot swap of the *other* tier (rules -> constant): the primary's breaker stays open.
    let constant = "[[tier]]\nname = \"rules\"\nplugin = \"builtin:constant\"\n";
    let swapped = load(&format!("{FLAPPING_PRIMARY}{constant}"), &memory).await;
    assert_eq!(breaker_state(&swapped), BreakerState::Open);
    assert_eq!(
        kinds(&swapped.predict(&request("after-swap")).await),
        vec!["breaker-open"]
    );

    // The primary's plugin changes: a different tier now, with a closed breaker.
    let new_primary = FLAPPING_PRIMARY.replace("builtin:chaos", "builtin:constant");
    let replaced = load(&format!("{new_primary}{constant}"), &memory).await;
    assert_eq!(breaker_state(&replaced), BreakerState::Closed);
}

/// A primary blocked in a WASI sleep (on the frozen clock: until its deadline) with
/// `[tier.hedge]` `hedge`, then the rules tier.
fn sleeping_primary(limits: &str, hedge: &str) -> String {
    format!(
        "{}[tier.hedge]\n{hedge}\n{RULES_TIER}",
        chaos_tier("primary", "sleep", limits)
    )
}

#[tokio::test]
async fn a_hung_tier_is_hedged_and_the_next_tier_serves() {
    // The primary blocks for an hour inside a host call; its deadline is far away. After 1 ms
    // the rules tier is started in parallel and its answer is served.
    let hedged = sleeping_primary("deadline_ms = 60000", "after_ms = 1");
    let cascade = load_alone(&format!("[cascade]\nbudget_ms = 120000\n{hedged}")).await;
    let a = cascade.predict(&request("hedged")).await;
    assert_eq!(a.served_by.tier, "rules");
    assert_eq!(a.trail.len(), 2);
    assert_eq!(a.trail[0].step, Step::Cancelled);
    assert_eq!(kinds(&a), vec!["hedged"]);
    assert!(a.trail[1].hedged && a.trail[1].step == Step::Served);
    let hedge = cascade.tiers()[0].policies.hedge.as_ref().unwrap();
    assert_eq!(hedge.counts(), (1, 1));
}

#[tokio::test]
async fn hedges_stop_at_max_share() {
    // Only the first call may be hedged (1 + 1% of 1 call); the second waits for the primary's
    // deadline like an unhedged tier.
    let cascade = load_alone(&sleeping_primary(
        "deadline_ms = 30",
        "after_ms = 1\nmax_share = 0.01",
    ))
    .await;
    let first = cascade.predict(&request("one")).await;
    assert_eq!(kinds(&first), vec!["hedged"]);
    let second = cascade.predict(&request("two")).await;
    assert_eq!(kinds(&second), vec!["deadline"]);
    assert!(second.trail.iter().all(|e| !e.hedged));
    assert_eq!(second.served_by.tier, "rules");
}

#[tokio::test]
async fn a_fast_tier_wins_its_own_race() {
    // The hedge target hangs; whether or not the hedge started, the primary serves.
    let toml = format!(
        "[[tier]]\nname = \"primary\"\nplugin = \"builtin:rules\"\n[tier.hedge]\nafter_ms = 0.001\n{}",
        chaos_tier("hang", "sleep", "deadline_ms = 60000")
    );
    let cascade = load_alone(&format!("[cascade]\nbudget_ms = 120000\n{toml}")).await;
    let a = cascade.predict(&request("fast")).await;
    assert_eq!(a.served_by.tier, "primary");
    assert!(!a.degraded);
    if let Some(hedge) = a.trail.get(1) {
        assert_eq!(hedge.step, Step::Cancelled);
        assert!(hedge.hedged && hedge.reason.is_none());
    }
}

const CACHED: &str = "[cache]\nttl_s = 60\n";

#[tokio::test]
async fn identical_requests_hit_the_cache_in_any_feature_order() {
    let cascade = load_alone(&format!("{CACHED}{RULES_TIER}")).await;
    let first = cascade.predict(&request("first")).await;
    assert_eq!(first.cache, Some(CacheStatus::Miss));
    assert!(!first.trail.is_empty());
    // Same features, other order, other id.
    let reordered = Request::from_json(
        r#"{"id":"again","features":{"has_international_history":false,"is_international":true,"merchant_category":"crypto","account_age_days":3,"amount":9000}}"#,
    )
    .unwrap();
    let hit = cascade.predict(&reordered).await;
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert_eq!(hit.request_id, "again");
    assert!(hit.trail.is_empty(), "no tier was called");
    assert_eq!(hit.decision, first.decision);
    assert_eq!(
        hit.served_by, first.served_by,
        "the original provenance is kept"
    );
    // A different value is a different request.
    let other = Request::from_json(
        r#"{"id":"other","features":{"amount":9001,"account_age_days":3,"merchant_category":"crypto","is_international":true,"has_international_history":false}}"#,
    )
    .unwrap();
    assert_eq!(cascade.predict(&other).await.cache, Some(CacheStatus::Miss));
}

#[tokio::test]
async fn a_hot_swap_of_any_tier_makes_the_next_identical_request_a_miss() {
    let (memory, _clock) = memory();
    let two_tiers = |last: &str| {
        format!(
            "{CACHED}[[tier]]\nname = \"primary\"\nplugin = \"builtin:rules\"\n[[tier]]\nname = \"last\"\nplugin = \"{last}\"\n"
        )
    };
    let before = load(&two_tiers("builtin:constant"), &memory).await;
    before.predict(&request("a")).await;
    assert_eq!(
        before.predict(&request("b")).await.cache,
        Some(CacheStatus::Hit)
    );
    // Same config, reloaded: the embedded cache is kept across the reload.
    let reloaded = load(&two_tiers("builtin:constant"), &memory).await;
    assert_eq!(
        reloaded.predict(&request("c")).await.cache,
        Some(CacheStatus::Hit)
    );
    // A tier that never served the request is swapped: still a miss (never a stale answer).
    let swapped = load(&two_tiers("builtin:linear"), &memory).await;
    assert_eq!(
        swapped.predict(&request("d")).await.cache,
        Some(CacheStatus::Miss)
    );
}

#[tokio::test]
async fn degraded_answers_are_cached_only_when_asked() {
    let toml = format!("{CACHED}{}{RULES_TIER}", chaos_tier("primary", "trap", ""));
    let cascade = load_alone(&toml).await;
    cascade.predict(&request("a")).await;
    let again = cascade.predict(&request("b")).await;
    assert_eq!(again.cache, Some(CacheStatus::Miss));
    assert_eq!(kinds(&again), vec!["trap"]);

    let toml = toml.replace("ttl_s = 60", "ttl_s = 60\ncache_degraded = true");
    let cascade = load_alone(&toml).await;
    cascade.predict(&request("a")).await;
    let again = cascade.predict(&request("b")).await;
    assert_eq!(again.cache, Some(CacheStatus::Hit));
    assert!(again.degraded && again.served_by.tier == "rules");
}

#[test]
fn bad_policy_values_are_rejected_naming_the_field() {
    let bad = |extra: &str| {
        tierhost::Config::parse(
            extra,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .unwrap_err()
        .to_string()
    };
    let tier = "[[tier]]\nname = \"a\"\nplugin = \"builtin:rules\"\n";
    let e = bad(&format!(
        "{tier}[tier.breaker]\nfailure_rate = 2.0\n{RULES_TIER}"
    ));
    assert!(
        e.contains("tier \"a\" (tier[0]).breaker.failure_rate"),
        "{e}"
    );
    let e = bad(&format!(
        "{tier}[tier.breaker]\nfailure_on = [\"oops\"]\n{RULES_TIER}"
    ));
    assert!(
        e.contains("breaker.failure_on") && e.contains("oops"),
        "{e}"
    );
    let e = bad(&format!(
        "{tier}[tier.breaker]\nwindow = \"sliding\"\n{RULES_TIER}"
    ));
    assert!(e.contains("window"), "{e}");
    let e = bad(&format!(
        "{tier}[tier.hedge]\nafter = \"p200\"\n{RULES_TIER}"
    ));
    assert!(e.contains("hedge.after"), "{e}");
    let e = bad(&format!("{tier}[tier.hedge]\nafter_ms = 1\n"));
    assert!(e.contains("hedge") && e.contains("last tier"), "{e}");
    let e = bad(&format!("[cache]\nbackend = \"redis\"\n{tier}"));
    assert!(e.contains("cache.url"), "{e}");
    let e = bad(&format!("[cache]\nttl_s = 0\n{tier}"));
    assert!(e.contains("cache.ttl_s"), "{e}");
    let e = bad(&format!(
        "{tier}[tier.chaos]\nmode = \"latency\"\n{RULES_TIER}"
    ));
    assert!(e.contains("chaos.latency_ms"), "{e}");
}
