//! The `tierhost` binary: clear errors for bad config and bad requests, a JSON answer for a
//! good one, a working demo. Nothing panics.
use std::process::Command;

fn tierhost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(args)
        .output()
        .expect("run tierhost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(file: &str) -> String {
    format!("{}/../examples/fraud/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_accepts_the_example_and_names_its_tiers() {
    let (code, stdout, stderr) = tierhost(&["check", "--config", &example("cascade.toml")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("config OK"));
    for tier in ["primary", "small-model", "rules"] {
        assert!(stdout.contains(tier), "{stdout}");
    }
}

#[test]
fn check_names_the_file_tier_and_field_of_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[tier]]\nname = \"p\"\nplugin = \"missing.wasm\"\n",
            "tier \"p\".plugin: cannot read plugin",
        ),
        (
            "[[tier]]\nname = \"p\"\nplugin = \"builtin:rules\"\n[tier.limits]\ndeadline_ms = 0\n",
            "tier \"p\" (tier[0]).limits.deadline_ms: must be greater than 0",
        ),
        (
            "[[tier]]\nname = \"p\"\nplugin = \"builtin:rules\"\nmin_confidense = 0.5\n",
            "unknown field `min_confidense`",
        ),
        (
            "[[tier]]\nname = \"p\"\nplugin = \"builtin:rules\"\n[tier.limits]\nmax_memory_mib = 100000\n",
            "above the engine ceiling",
        ),
        ("[cascade]\nbudget_ms = \"fast\"\n", "budget_ms"),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let (code, stdout, stderr) = tierhost(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "case {i}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("bad{i}.toml")),
            "case {i} does not name the file: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in: {stderr}"
        );
        assert_no_panic(&stderr);
    }
    let (code, _, stderr) = tierhost(&["check", "--config", "/nonexistent/cascade.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/cascade.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn run_prints_the_answer_with_its_trail() {
    let (code, stdout, stderr) = tierhost(&[
        "run",
        "--config",
        &example("cascade.toml"),
        "--input",
        &example("request.json"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["request_id"], "legit-grocery");
    assert_eq!(answer["served_by"]["tier"], "primary");
    assert_eq!(answer["decision"]["label"], "allow");
    assert_eq!(answer["trail"][0]["step"], "served");
}

#[test]
fn run_rejects_bad_request_json_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"features\": {\"amount\": [1, 2]}}",
            "feature `amount`: arrays are not supported",
        ),
        (
            "{\"features\": {\"amount\": 1}, \"extra\": 1}",
            "unknown field `extra`",
        ),
        ("not json", "request is not valid JSON"),
        ("{\"id\": 5, \"features\": {}}", "invalid type"),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("req{i}.json"));
        std::fs::write(&path, body).unwrap();
        let (code, _, stderr) = tierhost(&[
            "run",
            "--config",
            &example("cascade.toml"),
            "--input",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "case {i}");
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in {stderr}"
        );
        assert!(
            stderr.contains(&format!("req{i}.json")),
            "case {i} does not name the file: {stderr}"
        );
        assert_no_panic(&stderr);
    }
}

#[test]
fn the_demo_runs_on_embedded_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
        .args(["demo", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 12);
    // In the second run the primary loops forever and is cut off by fuel every time.
    for answer in &answers[6..] {
        assert_eq!(answer["trail"][0]["reason"]["kind"], "out-of-fuel");
        assert_ne!(answer["served_by"]["tier"], "primary");
    }
}

#[test]
fn eval_prints_json_and_rejects_bad_arguments_clearly() {
    let phishing = |f: &str| format!("{}/../examples/phishing/{f}", env!("CARGO_MANIFEST_DIR"));
    let config = phishing("cascade.toml");
    let data = phishing("data/test.csv");
    let (code, stdout, stderr) = tierhost(&[
        "eval",
        "--config",
        &config,
        "--data",
        &data,
        "--labels",
        "1=phishing,0=legitimate",
        "--scenario",
        "normal",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["rows"], 250);
    assert_eq!(doc["runs"][0]["name"], "normal");
    assert_eq!(
        doc["runs"].as_array().unwrap().len(),
        4,
        "normal + each of the 3 tiers alone"
    );

    let (code, _, stderr) = tierhost(&[
        "eval",
        "--config",
        &config,
        "--data",
        &data,
        "--scenario",
        "meteor-strike",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unknown scenario `meteor-strike`") && stderr.contains("primary-down"),
        "{stderr}"
    );
    let (code, _, stderr) = tierhost(&["eval", "--config", &config, "--data", "/nonexistent.csv"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent.csv"), "{stderr}");
    let (code, _, stderr) = tierhost(&[
        "calibrate",
        "--config",
        &config,
        "--data",
        &data,
        "--target-accuracy",
        "1.5",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--target-accuracy must be within (0, 1]"),
        "{stderr}"
    );
    assert_no_panic(&stderr);
}
