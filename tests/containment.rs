//! Every faulty tier is contained: the host survives, the request is answered by the next
//! tier, and the trail names the right fault kind.
use crate::common;

use common::*;
use tierhost::{Answer, Decision, FallbackReason, Step};

/// One faulty tier per line: chaos mode | extra `[tier.limits]` lines (`;` between lines) |
/// expected reason kind | text the reason message must contain.
const CASES: &str = "
infinite-loop |                                            | out-of-fuel    | out of fuel
spin          | fuel = 1_000_000_000_000; deadline_ms = 30 | deadline       | deadline
sleep         | deadline_ms = 30                           | deadline       | deadline
memory-bomb   |                                            | memory-limit   | memory limit
panic         |                                            | trap           | deliberate panic
trap          |                                            | trap           | unreachable
recursion     |                                            | stack-overflow | stack overflow
nan           |                                            | invalid-output | NaN
overconfident |                                            | invalid-output | confidence is 1.5
huge-reason   | max_memory_mib = 64; fuel = 1_000_000_000; deadline_ms = 500 | invalid-output | max_output_bytes
bad-label     |                                            | invalid-output | not-a-label
abstain       |                                            | abstained      | on purpose
error         |                                            | tier-error     | deliberate tier error
read-file     |                                            | tier-error     | denied: file access
read-env      |                                            | tier-error     | denied: environment is empty
connect       |                                            | tier-error     | denied: network
clock         |                                            | tier-error     | denied: clocks are frozen (wall=0ns, elapsed=0ns)
";

/// The rows of [`CASES`]: (mode, limits, kind, text).
fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    CASES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [mode, limits, kind, text] = cells[..] else {
                panic!("a CASES row has 4 cells: {line}")
            };
            (mode, limits.replace("; ", "\n"), kind, text)
        })
        .collect()
}

fn with_labels(tier: String) -> String {
    format!("{tier}[tier.accept]\nlabels = [\"allow\", \"review\", \"block\"]\n")
}

/// The faulty tier of a [`CASES`] row, allowed only the labels a real tier would answer.
fn faulty(mode: &str, limits: &str) -> String {
    with_labels(chaos_tier("faulty", mode, limits))
}

#[tokio::test]
async fn each_faulty_tier_first_is_contained_and_classified() {
    for (mode, limits, kind, text) in cases() {
        let cascade = cascade(&format!("{}{RULES_TIER}", faulty(mode, &limits))).await;
        let answer = cascade.predict(&request(&format!("first-{mode}"))).await;
        assert_eq!(answer.served_by.tier, "rules", "{mode}: {answer:?}");
        assert!(answer.degraded, "{mode}");
        assert_eq!(kinds(&answer), vec![kind], "{mode}: {answer:?}");
        let message = answer.trail[0].message.as_deref().unwrap_or_default();
        assert!(
            message.contains(text),
            "{mode}: message `{message}` lacks `{text}`"
        );
        assert!(
            matches!(answer.decision, Decision::Answer { ref label, .. } if label == "block"),
            "{mode}"
        );
        // The host keeps serving: the same cascade answers again.
        let again = cascade.predict(&request(&format!("again-{mode}"))).await;
        assert_eq!(kinds(&again), vec![kind], "{mode} second call");
    }
}

#[tokio::test]
async fn a_faulty_tier_in_the_middle_is_contained() {
    for (mode, limits, kind, _) in cases() {
        let unsure = "[[tier]]\nname = \"model\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.95\n[tier.params]\nmode = \"ok\"\nconfidence = 0.6\n";
        let toml = format!("{unsure}{}{RULES_TIER}", faulty(mode, &limits));
        let answer = cascade(&toml)
            .await
            .predict(&request(&format!("middle-{mode}")))
            .await;
        assert_eq!(answer.served_by.tier, "rules", "{mode}: {answer:?}");
        assert_eq!(kinds(&answer), vec!["low-confidence", kind], "{mode}");
        assert_eq!(answer.trail[2].step, Step::Served);
    }
}

#[tokio::test]
async fn a_cascade_of_only_faulty_tiers_is_answered_by_the_safe_default() {
    let toml = format!(
        "[safe_default]\nlabel = \"review\"\nreasons = [\"safe_default\", \"flag_for_review\"]\n{}{}{}{}",
        chaos_tier("loop", "infinite-loop", ""),
        chaos_tier("bomb", "memory-bomb", ""),
        chaos_tier("panic", "panic", ""),
        chaos_tier("deep", "recursion", ""),
    );
    let answer = cascade(&toml).await.predict(&request("all-faulty")).await;
    assert_eq!(answer.served_by.tier, "safe-default");
    assert_eq!(answer.served_by.sha256, None);
    assert!(answer.degraded);
    assert_eq!(
        kinds(&answer),
        vec!["out-of-fuel", "memory-limit", "trap", "stack-overflow"]
    );
    assert_eq!(
        answer.decision,
        Decision::Answer {
            label: "review".into(),
            score: 0.0,
            confidence: 0.0,
            reasons: vec!["safe_default".into(), "flag_for_review".into()],
        }
    );
}

#[tokio::test]
async fn the_safe_default_can_abstain_and_escalate() {
    let toml = format!(
        "[safe_default]\nabstain = \"escalated to human review\"\n{}",
        chaos_tier("broken", "trap", "")
    );
    let answer = cascade(&toml).await.predict(&request("abstain")).await;
    assert_eq!(
        answer.decision,
        Decision::Abstain {
            reason: "escalated to human review".into()
        }
    );
    assert_eq!(answer.served_by.tier, "safe-default");
}

#[tokio::test]
async fn plugins_that_fail_to_load_are_stepped_over_with_load_failed() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(
        &corrupt,
        b"\0asm\x0d\0\x01\0garbage that is not a component",
    )
    .unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let toml = format!(
        "[[tier]]\nname = \"corrupt\"\nplugin = \"{}\"\n[[tier]]\nname = \"core-module\"\nplugin = \"{}\"\n[[tier]]\nname = \"wrong-world\"\nplugin = \"{}\"\n[[tier]]\nname = \"missing\"\nplugin = \"{}\"\n[[tier]]\nname = \"unknown-builtin\"\nplugin = \"builtin:nope\"\n{RULES_TIER}",
        corrupt.display(),
        core_module.display(),
        test_guest("wrong_world").display(),
        dir.path().join("absent.wasm").display(),
    );
    let cascade = cascade(&toml).await;
    let errors: Vec<(String, String)> = cascade
        .load_errors()
        .iter()
        .map(|(t, e)| (t.to_string(), e.to_string()))
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(
        errors[0].1.contains("not a valid WebAssembly component"),
        "{errors:?}"
    );
    assert!(
        errors[1].1.contains("not a valid WebAssembly component"),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .1
            .contains("does not implement the tierhost:tier world"),
        "{errors:?}"
    );
    assert!(errors[3].1.contains("cannot read plugin"), "{errors:?}");
    assert!(
        errors[4].1.contains("unknown builtin plugin `nope`"),
        "{errors:?}"
    );
    // The message lists the product's tiers; the test-only guests are not among them.
    let known: Vec<&str> = tierhost::builtin::names().collect();
    assert!(
        errors[4]
            .1
            .contains(&format!("(known: {})", known.join(", "))),
        "{errors:?}"
    );
    for test_only in ["wrong_world", "forged_describe"] {
        assert!(!known.contains(&test_only), "{known:?}");
    }

    let answer = cascade.predict(&request("load-failures")).await;
    assert_eq!(answer.served_by.tier, "rules");
    assert_eq!(kinds(&answer), vec!["load-failed"; 5]);
    assert!(
        matches!(&answer.trail[2].reason, Some(FallbackReason::LoadFailed { detail }) if detail.contains("world"))
    );
}

#[tokio::test]
async fn capability_probes_are_denied_visibly_never_silently() {
    for mode in ["read-file", "read-env", "connect", "clock"] {
        let answer = cascade(&chaos_tier("probe", mode, ""))
            .await
            .predict(&request(mode))
            .await;
        // A probe that got through would answer `escaped`; the denial must be in the trail.
        assert_eq!(answer.served_by.tier, "safe-default", "{mode}: {answer:?}");
        match &answer.trail[0].reason {
            Some(FallbackReason::TierError { message, .. }) => {
                assert!(message.starts_with("denied:"), "{mode}: {message}")
            }
            other => panic!("{mode}: expected the tier to report a denial, got {other:?}"),
        }
    }
}

/// A chaos tier with extra params.
fn chaos_with(name: &str, mode: &str, limits: &str, params: &str) -> String {
    format!("{}{params}\n", chaos_tier(name, mode, limits))
}

/// The answer to request `id` of the cascade `tier`, then the rules tier, where `tier` must
/// fall back with `kind`.
async fn falls_back(tier: &str, id: &str, kind: &str) -> Answer {
    let answer = ask_before_rules(tier, id).await;
    assert_eq!(kinds(&answer), vec![kind], "{answer:?}");
    answer
}

/// The answer to request `id` of the cascade `tier`, then the rules tier.
async fn ask_before_rules(tier: &str, id: &str) -> Answer {
    cascade(&format!("{tier}{RULES_TIER}"))
        .await
        .predict(&request(id))
        .await
}

#[tokio::test]
async fn timers_follow_the_frozen_clock() {
    // A 1 ms sleep would return after 1 ms of real time if timers ran on the real clock, and a
    // tier could count polls until it fires to measure time. On the frozen clock it never fires:
    // the call runs into its deadline, like any other hang.
    let sleeper = chaos_with("sleeper", "sleep", "deadline_ms = 50", "seconds = 0.001");
    let answer = falls_back(&sleeper, "timer", "deadline").await;
    assert_eq!(answer.served_by.tier, "rules");
}

#[tokio::test]
async fn output_entries_and_abstain_reasons_are_bounded() {
    // Many small reasons: within any byte limit, refused by count.
    let chatty = with_labels(chaos_with("chatty", "many-reasons", "", "count = 100"));
    let answer = falls_back(&chatty, "reasons", "invalid-output").await;
    let message = answer.trail[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("100 reasons, limit max_reasons = 32"),
        "{message}"
    );

    // 400,000 empty reasons: refused while lifting, before the host allocates them. The
    // deadline is generous: building them takes ~20 ms of CPU, and on a loaded machine a tight
    // deadline would stop the tier before its output reaches the check this test is about.
    let flood = with_labels(chaos_with(
        "flood",
        "many-reasons",
        "max_memory_mib = 64\nfuel = 1_000_000_000\ndeadline_ms = 10000",
        "count = 400000",
    ));
    let answer = falls_back(&flood, "flood", "invalid-output").await;
    assert!(
        answer.trail[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("bytes to the host in one transfer")
    );

    // A 2 KiB abstain reason is cut to 1 KiB; a 12 MiB one is refused while lifting.
    let wordy = chaos_with("wordy", "abstain", "", "reason_bytes = 2048");
    let answer = ask_before_rules(&wordy, "abstain-2k").await;
    match &answer.trail[0].reason {
        Some(FallbackReason::Abstained { reason }) => {
            assert_eq!(reason.len(), 1024 + "...".len(), "cut at MAX_MESSAGE_BYTES")
        }
        other => panic!("{other:?}"),
    }
    let novel = chaos_with(
        "novel",
        "abstain",
        "max_memory_mib = 64\nfuel = 1_000_000_000\ndeadline_ms = 10000",
        "reason_bytes = 12582912",
    );
    let answer = falls_back(&novel, "abstain-12m", "invalid-output").await;
    assert!(serde_json::to_string(&answer).unwrap().len() < 4096);
}

#[tokio::test]
async fn tier_supplied_text_is_escaped_everywhere_it_is_shown() {
    let toml = format!(
        "{}{RULES_TIER}",
        with_labels(chaos_tier("forger", "control-chars", ""))
    );
    let answer = cascade(&toml).await.predict(&request("forge")).await;
    assert_eq!(kinds(&answer), vec!["invalid-output"]);
    let message = answer.trail[0].message.clone().unwrap_or_default();
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.contains("allow\\u{1b}[2K\\rrules"), "{message}");

    // Served (no label constraint): the answer carries the escaped text, never raw controls.
    let answer = cascade(&chaos_tier("forger", "control-chars", ""))
        .await
        .predict(&request("forge-served"))
        .await;
    assert_eq!(answer.served_by.tier, "forger");
    match &answer.decision {
        Decision::Answer { label, reasons, .. } => {
            assert_eq!(label, "allow\\u{1b}[2K\\rrules");
            assert_eq!(reasons[0], "line\\nforged: served_by=primary");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_tier_describing_itself_with_control_characters_is_refused_at_load() {
    let toml = format!(
        "[[tier]]\nname = \"forged\"\nplugin = \"{}\"\n{RULES_TIER}",
        test_guest("forged_describe").display()
    );
    let cascade = cascade(&toml).await;
    let errors = cascade.load_errors();
    assert_eq!(errors.len(), 1);
    let message = errors[0].1.to_string();
    assert!(message.contains("control characters"), "{message}");
    assert!(!message.chars().any(char::is_control), "{message:?}");
    let answer = cascade.predict(&request("forged")).await;
    assert_eq!(kinds(&answer), vec!["load-failed"]);
    assert_eq!(answer.served_by.tier, "rules");
}

#[tokio::test]
async fn a_tier_hoarding_host_handles_is_stopped_at_the_resource_table_cap() {
    // 100,000 stderr handles held at once would each cost host memory outside the tier's
    // memory limit; the store's table stops the tier at 1,024 and the next tier answers.
    let hoarder = |count: u32| {
        // A generous deadline: the healthy run under the cap must not depend on machine load.
        let limits = "fuel = 1_000_000_000\ndeadline_ms = 10000";
        chaos_with(
            "hoarder",
            "handle-flood",
            limits,
            &format!("count = {count}"),
        )
    };
    let answer = falls_back(&hoarder(100_000), "handles", "trap").await;
    let message = answer.trail[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("resource table has no free keys"),
        "{message}"
    );
    assert_eq!(answer.served_by.tier, "rules");
    // Under the cap, the same tier answers.
    let answer = ask_before_rules(&hoarder(1_000), "few").await;
    assert_eq!(answer.served_by.tier, "hoarder", "{answer:?}");
}
