//! The cascade as a user sees it: provenance on every answer, fallback events in the audit
//! file, the example config, determinism, the compiled-component disk cache (counted: a cache
//! that silently recompiles fails), and the reload gate (`check_samples`) of a cascade and of a
//! service.
use crate::common;

use common::*;
use tierhost::{Decision, Request};

#[tokio::test]
async fn answers_carry_provenance_and_the_trail() {
    let toml = format!(
        "[[tier]]\nname = \"model\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.9\n[tier.params]\nmode = \"ok\"\nconfidence = 0.5\n{RULES_TIER}"
    );
    let answer = cascade(&toml).await.predict(&request("prov")).await;
    assert_eq!(answer.request_id, "prov");
    assert_eq!(answer.served_by.tier, "rules");
    assert_eq!(answer.served_by.plugin.as_deref(), Some("fraud-rules"));
    assert_eq!(answer.served_by.version.as_deref(), Some("0.1.0"));
    let sha = answer.served_by.sha256.clone().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(answer.degraded);
    assert_eq!(kinds(&answer), vec!["low-confidence"]);
    assert!(answer.trail[0].fuel_used > 0 && answer.trail[1].fuel_used > 0);
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(json["trail"][0]["reason"]["kind"], "low-confidence");
    assert_eq!(json["trail"][0]["reason"]["min_confidence"], 0.9);
    assert_eq!(json["trail"][1]["step"], "served");
    assert_eq!(json["decision"]["outcome"], "answer");
    assert_eq!(
        json["decision"]["reasons"],
        serde_json::json!([
            "high_amount",
            "new_account",
            "high_risk_category",
            "unusual_international"
        ])
    );
}

#[tokio::test]
async fn the_first_tier_serving_is_not_degraded() {
    let answer = cascade(RULES_TIER).await.predict(&request("primary")).await;
    assert!(!answer.degraded);
    assert_eq!(answer.trail.len(), 1);
}

#[tokio::test]
async fn every_fallback_writes_one_audit_line() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let toml = format!(
        "[cascade]\nname = \"audited\"\naudit_log = \"{}\"\n{}{}{RULES_TIER}",
        audit.display(),
        chaos_tier("a", "panic", ""),
        chaos_tier("b", "nan", ""),
    );
    let cascade = cascade(&toml).await;
    cascade.predict(&request("audit-1")).await;
    cascade.predict(&request("audit-2")).await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0]["request_id"], "audit-1");
    assert_eq!(lines[0]["from_tier"], "a");
    assert_eq!(lines[0]["reason"], "trap");
    assert_eq!(lines[0]["to_tier"], "b");
    assert_eq!(lines[1]["from_tier"], "b");
    assert_eq!(lines[1]["reason"], "invalid-output");
    assert_eq!(lines[1]["to_tier"], "rules");
    assert_eq!(lines[1]["served_by"], "rules");
    assert_eq!(lines[1]["served_version"], "0.1.0");
    assert_eq!(lines[1]["output"]["label"], "block");
    assert_eq!(lines[1]["cascade"], "audited");
    assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[3]["request_id"], "audit-2");
}

#[tokio::test]
async fn the_example_cascade_routes_each_sample_as_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fraud");
    let config = tierhost::Config::load(&root.join("cascade.toml")).unwrap();
    let cascade = tierhost::Cascade::with_engine(engine(), &config)
        .await
        .unwrap();
    assert!(cascade.load_errors().is_empty());
    let expected = [
        ("legit-grocery", "primary", "allow"),
        ("crypto-new-account", "primary", "block"),
        ("ambiguous", "small-model", "allow"),
        ("no-merchant", "small-model", "allow"),
        ("no-account-age", "rules", "block"),
        ("no-amount", "safe-default", "review"),
    ];
    let text = std::fs::read_to_string(root.join("requests.jsonl")).unwrap();
    for (line, (id, tier, label)) in text.lines().zip(expected) {
        let answer = cascade.predict(&Request::from_json(line).unwrap()).await;
        assert_eq!(answer.request_id, id);
        assert_eq!(answer.served_by.tier, tier, "{id}: {answer:?}");
        assert!(
            matches!(&answer.decision, Decision::Answer { label: l, .. } if l == label),
            "{id}"
        );
    }
}

#[tokio::test]
async fn the_same_request_gets_the_same_answer() {
    let cascade = cascade(RULES_TIER).await;
    let a = cascade.predict(&request("same")).await;
    let b = cascade.predict(&request("same")).await;
    assert_eq!(a.decision, b.decision);
    assert_eq!(
        a.trail[0].fuel_used, b.trail[0].fuel_used,
        "fuel is deterministic"
    );
}

/// Where an engine's components came from: (memory hits, disk hits, compiled, disk artifacts
/// discarded).
fn sources(engine: &tierhost::TierEngine) -> (u64, u64, u64, u64) {
    let s = engine.compile_stats();
    (s.memory_hits, s.disk_hits, s.compiled, s.disk_discarded)
}

#[tokio::test]
async fn the_disk_cache_round_trips_and_refuses_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    use tierhost::{EngineConfig, Plugin, TierEngine};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let limits = EngineConfig {
        cache_dir: Some(cache.clone()),
        ..EngineConfig::default()
    };
    let wasm = tierhost::builtin::get("rules").unwrap();
    let load = async |engine: &TierEngine| {
        Plugin::from_bytes(engine, "rules", wasm, &Default::default()).await
    };

    // First engine compiles and writes the artifact, private to this user; asked again, it
    // answers from memory.
    let first = TierEngine::new(&limits, dir.path()).unwrap();
    load(&first).await.unwrap();
    assert_eq!(sources(&first), (0, 0, 1, 0));
    load(&first).await.unwrap();
    assert_eq!(sources(&first), (1, 0, 1, 0));
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second engine reads it from disk, compiles nothing, and the tier works.
    let second = TierEngine::new(&limits, dir.path()).unwrap();
    let plugin = load(&second).await.unwrap();
    assert_eq!(plugin.info().name, "fraud-rules");
    assert_eq!(
        sources(&second),
        (0, 1, 0, 0),
        "the disk cache was not used"
    );

    // An unusable artifact is counted, deleted and replaced by a compilation, never loaded.
    // (Replaced by a rename, not truncated in place: the second engine has the file mapped.)
    let artifact = std::fs::read(&files[0]).unwrap();
    replace_atomically(&files[0], &artifact[..artifact.len() / 2]);
    let third = TierEngine::new(&limits, dir.path()).unwrap();
    load(&third).await.unwrap();
    assert_eq!(sources(&third), (0, 0, 1, 1));
    let fourth = TierEngine::new(&limits, dir.path()).unwrap();
    load(&fourth).await.unwrap();
    assert_eq!(
        sources(&fourth),
        (0, 1, 0, 0),
        "the rewritten artifact is read"
    );

    // Once others can write to the directory, cached code is refused, not loaded.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifth = TierEngine::new(&limits, dir.path()).unwrap();
    let error = load(&fifth).await.err().expect("refused");
    assert!(
        error.to_string().contains("refusing to load compiled code"),
        "{error}"
    );
    assert_eq!(sources(&fifth), (0, 0, 0, 0));
}

/// Whether the chaos tier's `flaky` mode traps on `id` at `fault_rate` (its FNV-1a rule).
fn flaky_faults_on(id: &str, fault_rate: f64) -> bool {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    ((hash % 10_000) as f64) < fault_rate * 10_000.0
}

/// Sample requests for the reload gate: the first passes a `flaky` tier at rate 0.5, the second
/// makes it trap.
fn gate_samples() -> (Vec<Request>, String) {
    let find = |faults: bool| {
        (0..)
            .map(|i| format!("sample-{i}"))
            .find(|id| flaky_faults_on(id, 0.5) == faults)
            .unwrap()
    };
    let (good, bad) = (find(false), find(true));
    (vec![request(&good), request(&bad)], bad)
}

/// A tier that must answer (not fall through) within generous limits, with `mode` and `params`.
fn gated_tier(name: &str, mode: &str, params: &str) -> String {
    format!(
        "[[tier]]\nname = \"{name}\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.9\n[tier.limits]\ndeadline_ms = 10000\n[tier.params]\nmode = \"{mode}\"\n{params}\n"
    )
}

/// The reload gate of the cascade `toml` on the gate samples.
async fn gate(toml: &str) -> Result<(), tierhost::SampleFailure> {
    cascade(toml).await.check_samples(&gate_samples().0).await
}

#[tokio::test]
async fn check_samples_rejects_a_tier_that_faults_on_a_sample_and_names_both() {
    let bad = gate_samples().1;
    let flaky = gated_tier("flaky", "flaky", "fault_rate = 0.5");
    let error = gate(&format!("{RULES_TIER}{flaky}"))
        .await
        .expect_err("a tier that traps on a sample fails the check");
    assert_eq!(
        (error.tier.as_str(), error.request_id.as_str()),
        ("flaky", bad.as_str())
    );
    assert_eq!(error.reason.kind(), "trap", "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "tier \"flaky\" failed sample request `{bad}`: trap"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn check_samples_passes_healthy_tiers_even_below_their_min_confidence() {
    // Low confidence and abstaining are the tier's judgement, not faults.
    let checked = gate(&format!(
        "{}{}{RULES_TIER}",
        gated_tier("unsure", "ok", "confidence = 0.1"),
        gated_tier("abstainer", "abstain", "")
    ))
    .await;
    assert!(checked.is_ok(), "{checked:?}");
}

#[tokio::test]
async fn reload_with_check_samples_rejects_a_faulting_candidate_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (samples, bad) = gate_samples();
    let lines: Vec<String> = samples.iter().map(|r| request_json(&r.id)).collect();
    std::fs::write(dir.path().join("samples.jsonl"), lines.join("\n")).unwrap();
    let path = dir.path().join("cascade.toml");
    let write_config = |tiers: &str| {
        let toml = format!(
            "[cascade]\nbudget_ms = 60000\ncheck_samples = \"samples.jsonl\"\n[server]\nwatch = false\n{tiers}"
        );
        std::fs::write(&path, toml).unwrap();
    };
    write_config(RULES_TIER);
    let service = tierhost::CascadeService::start(&path).await.unwrap();
    let served_by = async |id: &str| service.predict(&request(id)).await.served_by.tier;
    assert_eq!(served_by("before").await, "rules");

    // A candidate whose new first tier traps on a sample is rejected, naming both.
    write_config(&format!(
        "{}{RULES_TIER}",
        gated_tier("flaky", "flaky", "fault_rate = 0.5")
    ));
    let report = service.reload("test").await;
    assert_eq!(report.outcome, tierhost::ReloadOutcome::Rejected);
    let reason = report.reason.unwrap_or_default();
    assert!(
        reason.contains("tier \"flaky\"") && reason.contains(&format!("`{bad}`")),
        "{reason}"
    );
    assert_eq!(service.current().generation, 1);
    let answer = service.predict(&request(&bad)).await;
    assert_eq!(answer.served_by.tier, "rules", "the old cascade serves");
    assert!(answer.trail.iter().all(|e| e.tier == "rules"), "{answer:?}");

    // A healthy candidate passes the same gate and serves.
    write_config(&format!(
        "{}{RULES_TIER}",
        gated_tier("model", "ok", "confidence = 0.95")
    ));
    let report = service.reload("test").await;
    assert_eq!(
        report.outcome,
        tierhost::ReloadOutcome::Applied,
        "{report:?}"
    );
    assert_eq!(service.current().generation, 2);
    assert_eq!(served_by("after").await, "model");
}
