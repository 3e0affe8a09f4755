//! Least privilege for features (`[[tier]] features = [...]`): a tier sees only the features
//! its allowlist names, byte for byte, on every path a tier is called (a plain turn, a hedged
//! turn with injected latency, the reload gate's samples); tiers without a list see the whole
//! request; `tierhost check` warns when a tier reads a feature its list hides. The probe is
//! the test-only guest `plugins/feature-echo`, which answers with the names it received.
use crate::common;

use std::process::Command;

use common::{cascade, test_guest};
use tierhost::{Answer, Config, Decision, FallbackReason, HiddenFeatureRead, Request};

/// The probe tier: echoes the feature names it gets; `extra` is more TOML for the entry.
fn probe(name: &str, extra: &str) -> String {
    format!(
        "[[tier]]\nname = \"{name}\"\nplugin = \"{}\"\n{extra}\n",
        test_guest("feature_echo").display()
    )
}

/// A request from `(name, JSON value)` pairs, through the real JSON parser, in this order.
fn request(id: &str, features: &[(String, &str)]) -> Request {
    let fields: Vec<String> = features
        .iter()
        .map(|(name, value)| format!("{}:{value}", serde_json::to_string(name).unwrap()))
        .collect();
    Request::from_json(&format!(
        r#"{{"id":"{id}","features":{{{}}}}}"#,
        fields.join(",")
    ))
    .expect("valid request")
}

/// What the serving tier saw: its reasons (the names, in order) and its score (their count).
fn seen(answer: &Answer) -> (Vec<String>, f64) {
    match &answer.decision {
        Decision::Answer { reasons, score, .. } => (reasons.clone(), *score),
        other => panic!("expected an answer, got {other:?}: {answer:?}"),
    }
}

/// 600 features: fillers, and names a byte away from the allowed `amount` and `café` (NFC).
fn crowded_request() -> Request {
    let mut features: Vec<(String, &str)> = (0..580).map(|i| (format!("f{i}"), "1")).collect();
    let look_alikes = [
        "Amount",
        "AMOUNT",
        "amount ",
        " amount",
        "\u{430}mount",         // Cyrillic а
        "am\u{43e}unt",         // Cyrillic о
        "\u{ff41}\u{ff4d}ount", // fullwidth ａｍ
        "amount\u{200b}",       // zero-width space
        "amount\u{a0}",         // no-break space
        "cafe\u{301}",          // café decomposed (NFD)
        "CAF\u{c9}",            // CAFÉ
        "caf\u{e9}s",
        "amoun",
    ];
    features.extend(look_alikes.iter().map(|n| (n.to_string(), "2")));
    features.insert(100, ("caf\u{e9}".to_string(), r#""yes""#));
    features.push(("amount".to_string(), "9000"));
    features.push(("country".to_string(), r#""FR""#));
    assert!(features.len() > 590);
    request("crowded", &features)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_with_an_allowlist_sees_only_the_features_it_names_byte_for_byte() {
    let cascade = cascade(&probe(
        "probe",
        "features = [\"amount\", \"caf\u{e9}\", \"not-in-the-request\"]\n[tier.limits]\ndeadline_ms = 10000",
    ))
    .await;
    let answer = cascade.predict(&crowded_request()).await;
    assert_eq!(answer.served_by.tier, "probe", "{answer:?}");
    // Exactly the two byte-equal names, in the caller's order; no look-alike got through.
    assert_eq!(
        seen(&answer),
        (vec!["caf\u{e9}".to_string(), "amount".to_string()], 2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_without_an_allowlist_see_the_whole_request_in_the_same_walk() {
    // The first tier needs `country`, which its list hides: it falls through naming it. The
    // second has no list and sees all 596 features.
    let toml = format!(
        "[cascade]\nbudget_ms = 60000\n{}{}",
        probe(
            "narrow",
            "features = [\"amount\"]\n[tier.params]\nrequire = \"amount,country\"\n[tier.limits]\ndeadline_ms = 10000",
        ),
        probe(
            "wide",
            "[tier.limits]\ndeadline_ms = 10000\nmax_reasons = 1024\nmax_output_bytes = 65536",
        )
    );
    let request = crowded_request();
    let answer = cascade(&toml).await.predict(&request).await;
    assert_eq!(answer.served_by.tier, "wide", "{answer:?}");
    assert_eq!(
        answer.trail[0].reason,
        Some(FallbackReason::TierError {
            error: "missing-feature".into(),
            message: "country".into()
        })
    );
    let all: Vec<String> = request.features.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(seen(&answer), (all.clone(), all.len() as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_tier_with_injected_latency_sees_only_its_features() {
    // The slow tier waits 30 ms (chaos latency) before its call; its hedge starts after 1 ms
    // and the next tier abstains, so the slow tier serves, through the hedged turn.
    let toml = format!(
        "[cascade]\nbudget_ms = 60000\n{}{}",
        probe(
            "slow",
            "features = [\"amount\"]\n[tier.limits]\ndeadline_ms = 10000\n[tier.chaos]\nmode = \"latency\"\nlatency_ms = 30\n[tier.hedge]\nafter_ms = 1.0",
        ),
        "[[tier]]\nname = \"next\"\nplugin = \"builtin:constant\"\n[tier.limits]\ndeadline_ms = 10000\n[tier.params]\nabstain = \"no\"\n"
    );
    let answer = cascade(&toml).await.predict(&crowded_request()).await;
    assert_eq!(answer.served_by.tier, "slow", "{answer:?}");
    assert!(answer.trail[1].hedged, "the hedge ran: {answer:?}");
    assert_eq!(seen(&answer), (vec!["amount".to_string()], 1.0));
}

fn sample(id: &str, names: &[&str]) -> Request {
    let features: Vec<(String, &str)> = names.iter().map(|n| (n.to_string(), "1")).collect();
    request(id, &features)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_checked_as_the_tier_sees_them_and_hidden_reads_are_reported() {
    let toml = format!(
        "{}{}",
        probe(
            "narrow",
            "features = [\"amount\"]\n[tier.params]\nrequire = \"amount,country\"\n[tier.limits]\ndeadline_ms = 10000",
        ),
        // Reads `country` too, but has no list: it gets it, nothing to report.
        probe(
            "open",
            "[tier.params]\nrequire = \"country\"\n[tier.limits]\ndeadline_ms = 10000",
        )
    );
    let cascade = cascade(&toml).await;
    let samples = [
        sample("no-country", &["amount"]),
        sample("with-country", &["amount", "country", "email"]),
        sample("again", &["country", "amount"]),
    ];
    assert_eq!(
        cascade.hidden_feature_reads(&samples).await,
        vec![HiddenFeatureRead {
            tier: "narrow".into(),
            feature: "country".into(),
            request_id: "with-country".into(),
        }],
        "once per tier and feature; `no-country` lacks it anyway"
    );
    // The reload gate calls the tier with its view too: it fails for want of `country`.
    let failure = cascade.check_samples(&samples[1..]).await.unwrap_err();
    assert_eq!(failure.tier, "narrow");
    assert_eq!(
        failure.reason,
        FallbackReason::TierError {
            error: "missing-feature".into(),
            message: "country".into()
        }
    );
    // With `country` allowed, the same samples pass.
    let allowed = toml.replace(
        "features = [\"amount\"]",
        "features = [\"amount\", \"country\"]",
    );
    let cascade = common::cascade(&allowed).await;
    assert!(cascade.hidden_feature_reads(&samples).await.is_empty());
    cascade.check_samples(&samples[1..]).await.unwrap();
}

#[test]
fn an_allowlist_needs_distinct_non_empty_names() {
    let parse = |features: &str| {
        Config::parse(
            &format!("[[tier]]\nname = \"t\"\nplugin = \"builtin:rules\"\nfeatures = {features}\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .map(|c| c.tiers[0].features.clone())
        .map_err(|e| e.to_string())
    };
    let err = parse("[\"amount\", \"\"]").unwrap_err();
    assert!(
        err.contains("tier[0]).features") && err.contains("non-empty"),
        "{err}"
    );
    let err = parse("[\"amount\", \"country\", \"amount\"]").unwrap_err();
    assert!(err.contains("`amount` is listed twice"), "{err}");
    // Names differing only by case are different features.
    assert_eq!(
        parse("[\"amount\", \"Amount\"]").unwrap(),
        Some(vec!["amount".to_string(), "Amount".to_string()])
    );
    assert_eq!(
        parse("[]").unwrap(),
        Some(vec![]),
        "a tier may see no feature"
    );
}

#[test]
fn check_warns_naming_the_tier_and_the_feature_it_reads_outside_its_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("samples.jsonl"),
        "{\"id\":\"s1\",\"features\":{\"amount\":10,\"country\":\"FR\"}}\n",
    )
    .unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(
        &config,
        format!(
            "[cascade]\ncheck_samples = \"samples.jsonl\"\n{}",
            probe(
                "team-rules",
                "features = [\"amount\"]\n[tier.params]\nrequire = \"amount,country\"\n[tier.limits]\ndeadline_ms = 10000",
            )
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .expect("run tierhost");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains(
            "WARN  tier \"team-rules\" reads feature `country`, which its features allowlist hides"
        ),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("features: [\"amount\"]"), "{stdout}");
    // A reload would be refused by the same samples: check says so and fails.
    assert!(
        stderr.contains("tier \"team-rules\" failed sample request `s1`"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");

    // Allowed, the same config passes without a warning.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "features = [\"amount\"]",
            "features = [\"amount\", \"country\"]",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .expect("run tierhost");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("WARN"), "{stdout}");
    assert!(stdout.contains("config OK"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}
