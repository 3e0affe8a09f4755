//! The cascade as a user sees it: provenance on every answer, fallback events in the audit
//! file, the example config, and determinism.
mod common;

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

#[tokio::test]
async fn the_disk_cache_round_trips_and_refuses_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    use tierhost::EngineConfig;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let limits = EngineConfig {
        cache_dir: Some(cache.clone()),
        ..EngineConfig::default()
    };
    let wasm = tierhost::builtin::get("rules").unwrap();

    // First engine compiles and writes the artifact, private to this user.
    let first = tierhost::TierEngine::new(&limits, dir.path()).unwrap();
    tierhost::Plugin::from_bytes(&first, "rules", wasm, &Default::default())
        .await
        .unwrap();
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

    // A second engine loads it from disk and the tier works.
    let second = tierhost::TierEngine::new(&limits, dir.path()).unwrap();
    let plugin = tierhost::Plugin::from_bytes(&second, "rules", wasm, &Default::default())
        .await
        .unwrap();
    assert_eq!(plugin.info().name, "fraud-rules");

    // Once others can write to the directory, cached code is refused, not loaded.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let third = tierhost::TierEngine::new(&limits, dir.path()).unwrap();
    let error = tierhost::Plugin::from_bytes(&third, "rules", wasm, &Default::default())
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("refusing to load compiled code"),
        "{error}"
    );
}
