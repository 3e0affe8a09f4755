//! Every fallback reason is produced for real: a table from each `FallbackReason` kind to a
//! cascade (and, where a state must be set up first, what to do before the request) in which a
//! real tier, `subject`, falls back with exactly that reason. The test fails naming any kind
//! in `FallbackReason::KINDS` that has no entry, so a new kind cannot be added without a test
//! that produces it.
//!
//! Every kind here is produced end to end through `Cascade::predict` with real sandboxes; the
//! two that need a state first use the narrowest public handle on it: `shed` holds the tier's
//! only bulkhead slot with a request in flight (observed through `CascadeTier::in_flight`, not
//! a pause), `breaker-open` forces the tier's breaker open as an operator would.
use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use tierhost::{Answer, BreakerMode, Cascade, Decision, FallbackReason};

/// Room for a healthy or faulting tier on a loaded machine: only the cases about time set
/// their own deadline or budget.
const ROOMY_BUDGET: &str = "[cascade]\nbudget_ms = 60000\n";
const ROOMY_LIMITS: &str = "deadline_ms = 10000";

/// What must happen before the case's request.
enum Setup {
    None,
    /// An operator forces `subject`'s breaker open.
    ForceBreakerOpen,
    /// Another request holds `subject`'s only bulkhead slot (`max_concurrent = 1`).
    HoldTheOnlySlot,
}

struct Case {
    kind: &'static str,
    toml: String,
    setup: Setup,
}

/// The tier under test, called `subject`: `top` goes in its `[[tier]]` table, `tables` after.
fn subject(plugin: &str, top: &str, tables: &str) -> String {
    format!("[[tier]]\nname = \"subject\"\nplugin = \"{plugin}\"\n{top}\n{tables}\n")
}

/// `subject` as the chaos tier in `mode`, with its limits, then `more` (params, then tables).
fn chaos_subject(mode: &str, top: &str, limits: &str, more: &str) -> String {
    subject(
        "builtin:chaos",
        top,
        &format!("[tier.limits]\n{limits}\n[tier.params]\nmode = \"{mode}\"\n{more}"),
    )
}

/// A faulting `subject` in `mode` with roomy limits, and the rules tier after it.
fn faulty(kind: &'static str, mode: &str) -> Case {
    Case {
        kind,
        toml: format!(
            "{ROOMY_BUDGET}{}{RULES_TIER}",
            chaos_subject(mode, "", ROOMY_LIMITS, "")
        ),
        setup: Setup::None,
    }
}

fn case(kind: &'static str, toml: String, setup: Setup) -> Case {
    Case { kind, toml, setup }
}

/// Feature statistics under which the standard request's `amount` (9000) was never seen.
fn small_amounts_stats(dir: &Path) -> String {
    let path = dir.join("stats.json");
    std::fs::write(
        &path,
        r#"{"features": {"amount": {"min": 1, "max": 100, "mean": 50, "std": 20, "p01": 2, "p99": 99}}}"#,
    )
    .unwrap();
    path.display().to_string()
}

/// The table: every entry makes `subject` fall back with `kind`.
fn cases(dir: &Path) -> Vec<Case> {
    vec![
        faulty("out-of-fuel", "infinite-loop"),
        faulty("memory-limit", "memory-bomb"),
        case(
            "deadline",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                chaos_subject("spin", "", "fuel = 1_000_000_000_000\ndeadline_ms = 30", "")
            ),
            Setup::None,
        ),
        faulty("stack-overflow", "recursion"),
        faulty("trap", "trap"),
        faulty("tier-error", "error"),
        faulty("invalid-output", "nan"),
        faulty("abstained", "abstain"),
        case(
            "low-confidence",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                chaos_subject(
                    "ok",
                    "min_confidence = 0.9",
                    ROOMY_LIMITS,
                    "confidence = 0.5"
                )
            ),
            Setup::None,
        ),
        case(
            "load-failed",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                subject(&test_guest("wrong_world").display().to_string(), "", "")
            ),
            Setup::None,
        ),
        // The first tier spins past the 25 ms budget; nothing is left for `subject`.
        case(
            "budget-exhausted",
            format!(
                "[cascade]\nbudget_ms = 25\n{}{}",
                chaos_tier(
                    "hung",
                    "spin",
                    "fuel = 1_000_000_000_000\ndeadline_ms = 1000"
                ),
                subject("builtin:rules", "", "")
            ),
            Setup::None,
        ),
        case(
            "out-of-distribution",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                subject(
                    "builtin:rules",
                    "",
                    &format!("[tier.ood]\nstats = \"{}\"\n", small_amounts_stats(dir))
                )
            ),
            Setup::None,
        ),
        case(
            "shed",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                chaos_subject("sleep", "max_concurrent = 1", ROOMY_LIMITS, "")
            ),
            Setup::HoldTheOnlySlot,
        ),
        case(
            "breaker-open",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                chaos_subject("ok", "", ROOMY_LIMITS, "[tier.breaker]\n")
            ),
            Setup::ForceBreakerOpen,
        ),
        // `subject` is the remote-model tier asking a model the grant does not cover: refused
        // by the host before anything is sent (nothing listens there either way).
        case(
            "capability-denied",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                subject(
                    "builtin:kserve",
                    "",
                    &format!(
                        "[tier.limits]\n{ROOMY_LIMITS}\n[tier.params]\n\
                         url = \"http://127.0.0.1:9/v2/models/other/infer\"\n\
                         features = \"amount\"\n[tier.http]\n\
                         allow = [\"http://127.0.0.1:9/v2/models/fraud\"]\n"
                    )
                )
            ),
            Setup::None,
        ),
        // `subject` blocks (a WASI sleep on the frozen clock); after 1 ms the rules tier is
        // started beside it, answers, and `subject` is cancelled.
        case(
            "hedged",
            format!(
                "{ROOMY_BUDGET}{}{RULES_TIER}",
                chaos_subject(
                    "sleep",
                    "",
                    "deadline_ms = 60000",
                    "[tier.hedge]\nafter_ms = 1\n"
                )
            ),
            Setup::None,
        ),
    ]
}

/// Loads the case's cascade, sets up its state and asks the standard request.
async fn run(case: &Case) -> Answer {
    let cascade = Arc::new(cascade(&case.toml).await);
    let subject = || {
        cascade
            .tiers()
            .iter()
            .find(|t| t.config.name == "subject")
            .expect("the case has a tier named subject")
    };
    let id = format!("reason-{}", case.kind);
    match case.setup {
        Setup::None => cascade.predict(&request(&id)).await,
        Setup::ForceBreakerOpen => {
            let breaker = subject().policies.breaker.as_ref().expect("[tier.breaker]");
            breaker.force(BreakerMode::Open);
            cascade.predict(&request(&id)).await
        }
        Setup::HoldTheOnlySlot => {
            let holder = {
                let cascade: Arc<Cascade> = cascade.clone();
                tokio::spawn(async move { cascade.predict(&request("holder")).await })
            };
            wait_for("the holding request to take the slot", async || {
                (subject().in_flight() == 1).then_some(())
            })
            .await;
            let answer = cascade.predict(&request(&id)).await;
            holder.abort();
            answer
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fallback_reason_kind_is_produced_by_a_real_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases(dir.path());

    let missing: Vec<&str> = FallbackReason::KINDS
        .iter()
        .copied()
        .filter(|kind| !cases.iter().any(|c| c.kind == *kind))
        .collect();
    assert!(
        missing.is_empty(),
        "no case in tests/reasons.rs produces these FallbackReason kinds: {missing:?}"
    );
    let unknown: Vec<&str> = cases
        .iter()
        .map(|c| c.kind)
        .filter(|kind| !FallbackReason::KINDS.contains(kind))
        .collect();
    assert!(unknown.is_empty(), "not FallbackReason kinds: {unknown:?}");

    let mut failures = Vec::new();
    for case in &cases {
        let answer = run(case).await;
        let recorded: Vec<(&str, &str)> = answer
            .trail
            .iter()
            .filter_map(|e| Some((e.tier.as_str(), e.reason.as_ref()?.kind())))
            .collect();
        if !recorded.contains(&("subject", case.kind)) {
            failures.push(format!("{}: trail recorded {recorded:?}", case.kind));
        }
        if !matches!(answer.decision, Decision::Answer { .. }) {
            failures.push(format!(
                "{}: not answered: {:?}",
                case.kind, answer.decision
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
