//! Config identity: every answer names the config digest it was served under (beside the
//! plugin's sha256), cache hits and the safe default's answers included; `tierhost diff`
//! prints what a reload from one config to another would change, with `diff`'s exit codes.
use crate::common;

use std::path::Path;

use common::{RULES_TIER, cascade, config, request, tierhost};
use tierhost::{CacheStatus, Cascade, SAFE_DEFAULT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_the_config_digest_it_was_served_under() {
    let toml = format!("[cache]\n{RULES_TIER}");
    let digest = config(&toml).answer_digest();
    let cascade = cascade(&toml).await;
    assert_eq!(cascade.config_digest(), digest);

    let first = cascade.predict(&request("a")).await;
    assert_eq!(first.served_by.tier, "rules");
    assert_eq!(first.served_by.config_digest, digest);
    assert!(first.served_by.sha256.is_some());
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["served_by"]["config_digest"], digest.as_str());

    // The same request again is a cache hit: no tier runs, the digest is still named.
    let hit = cascade.predict(&request("a")).await;
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert_eq!(hit.served_by.config_digest, digest);

    // Another threshold is another config: its answers name another digest.
    let stricter = RULES_TIER.replace("min_confidence = 0.3", "min_confidence = 0.99");
    let other = common::cascade(&stricter).await;
    let answer = other.predict(&request("b")).await;
    assert_eq!(answer.served_by.tier, SAFE_DEFAULT, "{answer:?}");
    assert_eq!(
        answer.served_by.config_digest,
        config(&stricter).answer_digest()
    );
    assert_ne!(answer.served_by.config_digest, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_loaded_twice_has_one_digest() {
    let a = Cascade::with_engine(common::engine(), &config(RULES_TIER))
        .await
        .unwrap();
    let b = common::cascade(RULES_TIER).await;
    assert_eq!(a.config_digest(), b.config_digest());
    assert_eq!(a.config_digest().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_answer_names_the_digest_of_the_config_serving_now_across_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("[server]\nwatch = false\n{}", common::RULES_FILE_TIER);
    let path = common::write_config_dir(dir.path(), &toml);
    let service = tierhost::CascadeService::start(&path).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = common::http::Http::new(format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(tierhost::server::serve(service.clone(), listener));

    let before = tierhost::Config::load(&path).unwrap().answer_digest();
    let (status, answer) = http.predict("before").await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["served_by"]["config_digest"],
        before.as_str(),
        "{answer}"
    );
    assert!(answer["served_by"]["sha256"].is_string());
    let tiers = http.get_json("/v1/tiers").await;
    assert_eq!(tiers["config_digest"], before.as_str(), "{tiers}");

    // A new threshold, reloaded: answers and /v1/tiers name the new digest.
    std::fs::write(
        &path,
        toml.replace("min_confidence = 0.3", "min_confidence = 0.35"),
    )
    .unwrap();
    let after = tierhost::Config::load(&path).unwrap().answer_digest();
    assert_ne!(after, before);
    let report = service.reload("test").await;
    assert_eq!(
        report.outcome,
        tierhost::ReloadOutcome::Applied,
        "{report:?}"
    );
    let (_, answer) = http.predict("after").await;
    assert_eq!(
        answer["served_by"]["config_digest"],
        after.as_str(),
        "{answer}"
    );
    let tiers = http.get_json("/v1/tiers").await;
    assert_eq!(tiers["config_digest"], after.as_str(), "{tiers}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn diff_prints_what_a_reload_would_change_with_diffs_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let rules = tierhost::builtin::get("rules").unwrap();
    std::fs::write(dir.path().join("rules-v1.wasm"), rules).unwrap();
    std::fs::write(
        dir.path().join("rules-v2.wasm"),
        common::variant_of(rules, "v2"),
    )
    .unwrap();
    let old = write(
        dir.path(),
        "old.toml",
        "[cascade]\nbudget_ms = 100\n\
         [[tier]]\nname = \"primary\"\nplugin = \"builtin:linear\"\nmin_confidence = 0.8\n\
         [[tier]]\nname = \"rules\"\nplugin = \"rules-v1.wasm\"\n[tier.limits]\nfuel = 10_000_000\n\
         [[tier]]\nname = \"legacy\"\nplugin = \"builtin:constant\"\n",
    );
    let new = write(
        dir.path(),
        "new.toml",
        "[cascade]\nbudget_ms = 150\n\
         [[tier]]\nname = \"rules\"\nplugin = \"rules-v2.wasm\"\nfeatures = [\"amount\"]\n[tier.limits]\nfuel = 20_000_000\n\
         [[tier]]\nname = \"primary\"\nplugin = \"builtin:linear\"\nmin_confidence = 0.9\n\
         [tier.breaker]\n\
         [[tier]]\nname = \"small\"\nplugin = \"builtin:constant\"\n",
    );
    let (code, stdout, stderr) = tierhost(&["diff", &old, &new]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    for line in [
        "+ tier \"small\" added at position 2: builtin:constant (sha256 ",
        "- tier \"legacy\" removed (was at position 2)",
        "~ tier order: primary, rules -> rules, primary",
        "~ tier \"rules\" plugin re-versioned: sha256 ",
        "~ tier \"rules\" plugin: \"rules-v1.wasm\" -> \"rules-v2.wasm\"",
        "~ tier \"rules\" limits.fuel: 10000000 -> 20000000",
        "~ tier \"rules\" features: unset -> [\"amount\"]",
        "~ tier \"primary\" min_confidence: 0.8 -> 0.9",
        "~ tier \"primary\" breaker: unset -> {",
        "~ cascade.budget_ms: 100 -> 150",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    assert!(stdout.starts_with("config_digest "), "{stdout}");
    assert!(!stdout.contains("(unchanged)"), "{stdout}");

    // As JSON, typed.
    let (code, stdout, _) = tierhost(&["diff", "--json", &old, &new]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["change"] == "tier-reversioned" && c["tier"] == "rules"),
        "{stdout}"
    );

    // The same config: nothing to say, exit 0.
    let (code, stdout, _) = tierhost(&["diff", &old, &old]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("(unchanged)") && stdout.contains("no changes"),
        "{stdout}"
    );

    // Trouble: exit 2 with the reason.
    let (code, _, stderr) = tierhost(&["diff", &old, "/nonexistent/new.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/new.toml"), "{stderr}");
    let bad = write(dir.path(), "bad.toml", "[[tier]]\nname = \"x\"\n");
    let (code, _, stderr) = tierhost(&["diff", &old, &bad]);
    assert_eq!(code, 2, "{stderr}");
}
