//! The `tierhost` binary: clear errors for bad config and bad requests, a JSON answer for a
//! good one, a working demo. Nothing panics.
use std::process::Command;

use crate::common::tierhost;

fn example(file: &str) -> String {
    format!("{}/examples/fraud/{file}", env!("CARGO_MANIFEST_DIR"))
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
    each_file_is_refused("bad.toml", &cases, &["check", "--config"]);
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
    let config = example("cascade.toml");
    each_file_is_refused("req.json", &cases, &["run", "--config", &config, "--input"]);
}

/// Writes each case's text to its own file (`name` with the case's number before the
/// extension), runs `tierhost` with `args` and that file, and expects exit 1 with an error that
/// names the file and contains the case's expected text.
fn each_file_is_refused(name: &str, cases: &[(&str, &str)], args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (stem, extension) = name.split_once('.').unwrap();
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = format!("{stem}{i}.{extension}");
        let path = dir.path().join(&file);
        std::fs::write(&path, text).unwrap();
        let (code, stdout, stderr) = tierhost(&[args, &[path.to_str().unwrap()]].concat());
        assert_eq!(code, 1, "case {i}: {stdout}{stderr}");
        assert!(
            stderr.contains(&file),
            "case {i} does not name the file: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "case {i}: expected `{expected}` in: {stderr}"
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
    let phishing = |f: &str| format!("{}/examples/phishing/{f}", env!("CARGO_MANIFEST_DIR"));
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
    assert_eq!(doc["rows"], 133);
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

/// A logistic tier that is surest of its wrong answers on the fixture (`allow` for the big
/// frauds), then the rules: no threshold reaches 90%; the rules are left alone; exit 3.
#[test]
fn calibrate_prints_toml_lines_and_exits_3_when_a_target_is_out_of_reach() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(
        &config,
        "[[tier]]\nname = \"wrong\"\nplugin = \"builtin:linear\"\n[tier.params.weights]\namount = -0.001\n\
         [[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n",
    )
    .unwrap();
    let data = format!("{}/tests/fixtures/eval.csv", env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = tierhost(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        &data,
        "--labels",
        "1=block,0=allow",
        "--target-accuracy",
        "0.9",
    ]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "# tierhost calibrate --method empirical --target-accuracy 0.9 on {data} (6 rows)"
            )
            .as_str(),
            "# tier \"wrong\": no threshold reaches accuracy 0.9 on this data",
            "# tier \"rules\" (rules): not a model, left as is",
        ]
    );
}

/// `calibrate --method conformal --write` on the phishing example: Learn-then-Test thresholds
/// in cascade order, written into a copy of the config with every comment and every other line
/// unchanged (only the certified tier's threshold); the written config loads and carries the
/// note. An alpha below what 132 validation rows support is refused, with the count or bound,
/// and nothing is written.
#[test]
fn calibrate_conformal_writes_thresholds_in_place_and_refuses_an_impossible_alpha() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/examples/phishing/cascade.toml")).unwrap();
    // The copy must find the example's models and data: rebase relative paths.
    let config = dir.path().join("cascade.toml");
    let text = example.replace("\"models/", &format!("\"{root}/examples/phishing/models/"));
    std::fs::write(&config, &text).unwrap();
    let data = format!("{root}/examples/phishing/data/validation.csv");
    let calibrate = |alpha: &str, write: bool, extra: &[&str]| {
        let mut args = vec![
            "calibrate",
            "--config",
            config.to_str().unwrap(),
            "--data",
            &data,
            "--labels",
            "1=phishing,0=legitimate",
            "--method",
            "conformal",
            "--alpha",
            alpha,
            "--delta",
            "0.1",
        ];
        if write {
            args.push("--write");
        }
        args.extend_from_slice(extra);
        tierhost(&args)
    };

    // Impossible: 0.001 needs ~2300 answered rows with no error; there are 132 rows.
    let (code, stdout, stderr) = calibrate("0.001", true, &[]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("too few rows for alpha 0.001"), "{stdout}");
    assert!(stdout.contains("needs >= 2302 answered rows"), "{stdout}");
    assert!(stderr.contains("not writing"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "nothing written"
    );

    // 0.05: the primary gets a certified threshold; the small model, on the rows the primary
    // leaves it, cannot be certified. The primary's threshold is written, the small model's
    // stays as it was, and the exit status says not every tier was certified.
    let (code, stdout, stderr) = calibrate("0.05", true, &[]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert_no_panic(&stderr);
    let chosen: Vec<(String, f64)> = stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[[tier]] name = \"")?;
            let (name, rest) = rest.split_once('"')?;
            let value = rest
                .split("min_confidence = ")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    assert_eq!(chosen.len(), 1, "only the primary is certified: {stdout}");
    assert_eq!(chosen[0].0, "primary");
    assert!(
        stdout.contains("with probability >= 0.9 (Learn-then-Test)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# tier \"small-model\": infeasible at alpha 0.05"),
        "{stdout}"
    );
    assert!(
        stderr.contains("writing only the tiers that got a threshold"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&config).unwrap();
    // Every line but the primary's threshold is unchanged, comments included.
    let (old_lines, new_lines): (Vec<&str>, Vec<&str>) =
        (text.lines().collect(), written.lines().collect());
    assert_eq!(old_lines.len(), new_lines.len(), "{written}");
    for (old, new) in old_lines.iter().zip(&new_lines).filter(|(a, b)| a != b) {
        assert!(old.starts_with("min_confidence = "), "{old}");
        assert!(
            new.starts_with(&format!("min_confidence = {}", chosen[0].1))
                && new.contains("--method conformal --alpha 0.05 --delta 0.1 on validation.csv (132 rows, sha256 "),
            "{new}"
        );
    }
    let before: toml::Table = toml::from_str(&text).unwrap();
    let after: toml::Table = toml::from_str(&written).unwrap();
    let threshold = |doc: &toml::Table, i: usize| doc["tier"][i]["min_confidence"].as_float();
    assert_eq!(threshold(&after, 0), Some(chosen[0].1));
    assert_eq!(
        threshold(&after, 1),
        threshold(&before, 1),
        "the small model's stays"
    );
    let (code, stdout, stderr) = tierhost(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // check shows how the threshold was chosen.
    assert!(
        stdout.contains("calibration: tier \"primary\" min_confidence calibrated "),
        "{stdout}"
    );
    assert!(
        stdout.contains("--method conformal --alpha 0.05"),
        "{stdout}"
    );
    // The small model's earlier note (the example's, from `--scope alone`) is untouched.
    assert!(
        stdout.contains("calibration: tier \"small-model\" min_confidence calibrated ")
            && stdout.contains("--scope alone"),
        "{stdout}"
    );

    // --scope alone: each model tier on every row (the guarantee while the tiers before it
    // are down). The small model, on all 132 rows, gets a certified threshold too.
    let (code, stdout, stderr) = calibrate("0.05", true, &["--scope", "alone"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("[[tier]] name = \"small-model\": min_confidence = ")
            && stdout.contains("on the 132 rows reaching it"),
        "{stdout}"
    );
    assert!(stdout.contains("# wrote 2 threshold(s)"), "{stdout}");
    let written: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    for i in 0..2 {
        let t = written["tier"][i]["min_confidence"].as_float().unwrap();
        assert!(t > 0.5 && t <= 1.0, "{t}");
    }
}

/// A valid component whose one core function has `n` instructions: cheap to write, slow to
/// compile (the class of plugin that held `tierhost check` for minutes).
fn huge_function_component(n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 24);
    body.push_str("(component (core module (func (export \"f\") (result i32) i32.const 0");
    for i in 0..n {
        body.push_str(&format!(" i32.const {} i32.add", i % 1000));
    }
    body.push_str(")))");
    wat::parse_str(&body).expect("valid component text")
}

/// Writes `plugin` as `<name>.wasm` and a config (`config` text) beside it, then runs
/// `tierhost check` on it: (exit code, stdout + stderr).
fn check_with_plugin(name: &str, plugin: &[u8], config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{name}.wasm")), plugin).unwrap();
    let path = dir.path().join("cascade.toml");
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = tierhost(&["check", "--config", path.to_str().unwrap()]);
    (code, format!("{stdout}{stderr}"))
}

/// `tierhost check` on `config`, whose tier `name` is a component too large to compile under
/// its limits: exit 1, compilation stopped, the error naming the `limit`. Returns the output.
fn check_stops_compiling(name: &str, config: &str, limit: &str) -> String {
    let (code, text) = check_with_plugin(name, &huge_function_component(400_000), config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("compilation stopped") && text.contains(limit),
        "{text}"
    );
    text
}

#[test]
fn check_stops_a_compilation_that_runs_past_its_limit() {
    let text = check_stops_compiling(
        "slow",
        "[engine]\ncompile_timeout_s = 1\n[[tier]]\nname = \"slow\"\nplugin = \"slow.wasm\"\n[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n",
        "compile_timeout_s = 1",
    );
    assert!(
        text.contains("ok    rules"),
        "the other tiers still load: {text}"
    );
}

#[test]
fn check_refuses_a_plugin_over_the_size_limit_before_parsing_it() {
    let (code, text) = check_with_plugin(
        "big",
        &vec![0u8; 2 << 20],
        "[engine]\nmax_plugin_mib = 1\n[[tier]]\nname = \"big\"\nplugin = \"big.wasm\"\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("plugin is 2097152 bytes, the limit is engine.max_plugin_mib = 1 MiB"),
        "{text}"
    );
}

#[test]
fn drill_breaks_every_tier_every_way_and_reports_the_matrix() {
    const FAULTS: [&str; 9] = [
        "loop",
        "memory-bomb",
        "trap",
        "stack-overflow",
        "hang",
        "nan",
        "oversized-output",
        "abstain",
        "load-failure",
    ];
    let (config, samples) = (example("cascade.toml"), example("requests.jsonl"));
    let (code, stdout, stderr) = tierhost(&["drill", "--config", &config, "--samples", &samples]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("tier "))
        .unwrap_or_default();
    for fault in FAULTS {
        assert!(header.contains(fault), "no `{fault}` column: {stdout}");
    }
    for tier in ["primary", "small-model", "rules"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{tier} ")))
            .unwrap_or_else(|| panic!("no row for {tier}: {stdout}"));
        assert_eq!(row.matches('✓').count(), FAULTS.len(), "{row}");
    }
    assert!(stdout.contains("all 27 cells ✓"), "{stdout}");

    // One sample the primary serves: the tiers below it are never exercised, which is a gap.
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.jsonl");
    std::fs::write(
        &one,
        r#"{"id":"legit-grocery","features":{"amount":42.5,"account_age_days":900,"merchant_category":"grocery","is_international":false,"has_international_history":false}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = tierhost(&[
        "drill",
        "--config",
        &config,
        "--samples",
        one.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["gaps"], 18);
    assert_eq!(report["tiers"][0]["cells"][4]["status"], "pass");
    assert_eq!(report["tiers"][0]["cells"][4]["seen"]["deadline"], 1);
    assert_eq!(report["tiers"][1]["cells"][0]["status"], "untested");

    // No sample set: a clear error, not a panic.
    let (code, _, stderr) = tierhost(&["drill", "--config", &config]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cascade.check_samples"), "{stderr}");
    assert_no_panic(&stderr);
}

#[test]
fn check_stops_a_compilation_that_needs_more_memory_than_allowed() {
    check_stops_compiling(
        "hungry",
        "[engine]\ncompile_max_memory_mib = 64\ncompile_timeout_s = 600\n[[tier]]\nname = \"hungry\"\nplugin = \"hungry.wasm\"\n",
        "compile_max_memory_mib = 64",
    );
}

/// `tierhost eval --escalations` commits the rows of one scenario that escalate (primary-down
/// by default) to a review queue; reviewers label them (`tierhost review resolve`, or the
/// store as the review page does), `review export` writes them in the eval CSV layout, and
/// `tierhost eval` reads that file back: escalations become training rows.
#[test]
fn eval_escalations_are_reviewed_exported_and_evaluated_again() {
    use tierhost::escalation::EscalationStore;
    use tierhost::eval::{parse_labels, read_labeled_csv};
    let phishing = |f: &str| format!("{}/examples/phishing/{f}", env!("CARGO_MANIFEST_DIR"));
    let (config, data) = (phishing("cascade.toml"), phishing("data/test.csv"));
    let labels = "1=phishing,0=legitimate";
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("q.db");
    let q = queue.to_str().unwrap();
    let eval = |extra: &[&str]| {
        let args = [
            &["eval", "--config", &config, "--labels", labels, "--json"][..],
            extra,
        ]
        .concat();
        tierhost(&args)
    };

    let (code, stdout, stderr) = eval(&[
        "--data",
        &data,
        "--scenario",
        "normal",
        "--scenario",
        "primary-down",
        "--escalations",
        q,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let down = &doc["runs"][1];
    assert_eq!(down["name"], "primary-down");
    let escalated = down["abstentions"].as_u64().unwrap() as usize;
    assert!(escalated > 0, "{down}");
    assert_eq!(doc["escalations"]["scenario"], "primary-down");
    assert_eq!(doc["escalations"]["recorded"], escalated);
    assert_eq!(doc["escalations"]["not_recorded"], 0);
    assert!(
        stderr.contains(&format!(
            "wrote {escalated} escalations of scenario primary-down to {q}"
        )),
        "{stderr}"
    );

    // Only primary-down's abstentions are in the queue: the normal run and the baselines
    // escalate nowhere.
    let (code, stdout, stderr) = tierhost(&[
        "review", "--queue", q, "list", "--status", "all", "--limit", "1000", "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), escalated);
    for item in items {
        assert_eq!(item["trail"][0]["tier"], "primary", "{item}");
        assert_ne!(item["trail"][0]["step"], "served", "{item}");
        assert_eq!(item["decision"]["outcome"], "abstain", "{item}");
    }

    // Reviewers give each the label the data set knows to be true: three through the CLI,
    // the rest through the store.
    let truth: std::collections::BTreeMap<String, tierhost::eval::LabeledRow> =
        read_labeled_csv(data.as_ref(), "label", &parse_labels(labels).unwrap())
            .unwrap()
            .into_iter()
            .map(|row| (row.request.id.clone(), row))
            .collect();
    let row_of = |item: &serde_json::Value| &truth[item["request_id"].as_str().unwrap()];
    for item in &items[..3] {
        let id = item["id"].as_str().unwrap();
        let label = &row_of(item).label;
        let (code, stdout, stderr) = tierhost(&[
            "review", "--queue", q, "resolve", id, "--label", label, "--note", "checked", "--by",
            "tester",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains(&format!("resolved {id} (")) && stdout.contains(label.as_str()),
            "{stdout}"
        );
    }
    let id = items[0]["id"].as_str().unwrap();
    let (code, _, stderr) = tierhost(&["review", "--queue", q, "resolve", id, "--label", "x"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("already resolved") && stderr.contains("tester"),
        "{stderr}"
    );
    let store = EscalationStore::open(&queue).unwrap();
    for item in &items[3..] {
        let id = item["id"].as_str().unwrap();
        store
            .resolve(id, &row_of(item).label, None, Some("store"), &[])
            .unwrap();
    }
    assert_eq!(store.stats().unwrap().pending, 0);

    let rows = dir.path().join("rows.csv");
    let (code, _, stderr) = tierhost(&[
        "review",
        "--queue",
        q,
        "export",
        "--format",
        "csv",
        "--labels",
        labels,
        "--out",
        rows.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("exported {escalated} resolved escalations")),
        "{stderr}"
    );
    let header = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(header(&rows), header(data.as_ref()), "the eval CSV layout");
    // The exported rows are the escalated rows of the data set, features and labels alike.
    let as_text = |row: &tierhost::eval::LabeledRow| {
        serde_json::to_string(&(&row.request.features, &row.label)).unwrap()
    };
    let mut exported: Vec<String> =
        read_labeled_csv(&rows, "label", &parse_labels(labels).unwrap())
            .unwrap()
            .iter()
            .map(as_text)
            .collect();
    let mut expected: Vec<String> = items.iter().map(|i| as_text(row_of(i))).collect();
    exported.sort();
    expected.sort();
    assert_eq!(exported, expected);

    let (code, stdout, stderr) = eval(&["--data", rows.to_str().unwrap(), "--scenario", "normal"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["rows"], escalated);
    assert_eq!(doc["runs"][0]["requests"], escalated);
    assert!(doc.get("escalations").is_none(), "{doc}");
}

/// `--escalations` on a cascade in which nothing escalates, or for a scenario that is not
/// run, is refused before anything is replayed or written.
#[test]
fn eval_escalations_refuse_a_cascade_that_never_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(
        &config,
        "[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n",
    )
    .unwrap();
    let data = format!("{}/tests/fixtures/eval.csv", env!("CARGO_MANIFEST_DIR"));
    let queue = dir.path().join("q.db");
    let args = |extra: &[&'static str]| {
        [
            &[
                "eval",
                "--config",
                config.to_str().unwrap(),
                "--data",
                &data,
                "--labels",
                "1=block,0=allow",
                "--escalations",
                queue.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat()
    };
    let (code, _, stderr) = tierhost(&args(&[]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("would ever escalate")
            && stderr.contains("[safe_default] does not abstain")
            && stderr.contains("[safe_default] abstain = \"...\""),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "[safe_default]\nabstain = \"review\"\n[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n",
    )
    .unwrap();
    let (code, _, stderr) = tierhost(&args(&[
        "--scenario",
        "normal",
        "--escalations-scenario",
        "shift",
    ]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("scenario `shift` is not among the scenarios run"),
        "{stderr}"
    );
    assert!(!queue.exists(), "nothing was written");
    assert_no_panic(&stderr);
}

/// `eval --shadow` on the phishing data with two candidates whose decisions are known: the
/// primary's own component (the trees tier) with a custom section appended (new sha256, same
/// code, same model: it must agree on every request both answer) and, for the rules tier, the
/// constant tier (it answers `review`, a label the tier does not accept: it must agree on none
/// and never be served). Candidate paths are relative to the current directory.
#[test]
fn eval_shadow_prints_the_decision_diff_of_candidates_on_the_phishing_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut trees_v2 = tierhost::builtin::get("trees").unwrap().to_vec();
    // A custom section (id 0, size 5, name "v2", payload "xx"): same behaviour, new sha256.
    trees_v2.extend_from_slice(&[0, 5, 2, b'v', b'2', b'x', b'x']);
    std::fs::write(dir.path().join("trees-v2.wasm"), &trees_v2).unwrap();
    std::fs::write(
        dir.path().join("constant.wasm"),
        tierhost::builtin::get("constant").unwrap(),
    )
    .unwrap();
    let phishing = |f: &str| format!("{}/examples/phishing/{f}", env!("CARGO_MANIFEST_DIR"));
    let eval = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tierhost"))
            .current_dir(dir.path())
            .args(["eval", "--config", &phishing("cascade.toml")])
            .args(["--data", &phishing("data/test.csv")])
            .args([
                "--labels",
                "1=phishing,0=legitimate",
                "--scenario",
                "normal",
            ])
            .args(["--shadow", "primary=trees-v2.wasm"])
            .args(["--shadow", "rules=constant.wasm"])
            .args(extra)
            .output()
            .expect("run tierhost");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_no_panic(&stderr);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let text = eval(&[]);
    assert!(
        text.contains("Shadow runs during scenario `normal`"),
        "{text}"
    );
    let (primary, rules) = (
        text.find("shadow of tier `primary`")
            .expect("the primary's block"),
        text.find("shadow of tier `rules`")
            .expect("the rules tier's block"),
    );
    assert!(primary < rules, "blocks in the order given");
    assert!(
        text[primary..rules].contains(": agreement 1.0000\n"),
        "{text}"
    );
    assert!(text[rules..].contains(": agreement 0.0000\n"), "{text}");
    assert!(
        text[rules..].contains("candidate: review 0.0000 (conf 1.0000, not served)"),
        "the disagreeing requests are listed with both outcomes: {text}"
    );

    let doc: serde_json::Value = serde_json::from_str(&eval(&["--json"])).unwrap();
    let normal = &doc["runs"][0];
    assert_eq!(normal["name"], "normal");
    assert_eq!(doc["shadow"]["scenario"], "normal");
    let reports = doc["shadow"]["reports"].as_array().unwrap();
    let (primary, rules) = (&reports[0], &reports[1]);
    // Every call of the tier that finished was shadowed: all of them but those a hedge
    // cancelled (at most one per hedge).
    let shadowed_every_call = |report: &serde_json::Value, tier: &str| {
        let (calls, made, hedges) = (
            report["calls"].as_u64().unwrap(),
            normal["latency"][tier]["calls"].as_u64().unwrap(),
            normal["hedges"].as_u64().unwrap(),
        );
        assert!(
            calls <= made && calls + hedges >= made,
            "{tier}: {calls} shadowed, {made} calls made, {hedges} hedges"
        );
        assert_eq!(report["dropped"], 0);
    };

    assert_eq!(primary["tier"], "primary");
    shadowed_every_call(primary, "primary");
    assert!(primary["both_answered"].as_u64().unwrap() > 0, "{primary}");
    assert_eq!(primary["agreed"], primary["both_answered"]);
    assert_eq!(primary["agreement"], 1.0);
    assert_eq!(primary["served_differently"], 0);
    assert_eq!(primary["score_delta"]["max"], 0.0);
    use sha2::Digest;
    assert_eq!(
        primary["candidate"]["Ok"]["sha256"],
        hex::encode(sha2::Sha256::digest(&trees_v2)),
        "the candidate is the file named relative to the current directory"
    );
    assert_ne!(
        primary["candidate"]["Ok"]["sha256"],
        primary["live"]["sha256"]
    );

    assert_eq!(rules["tier"], "rules");
    shadowed_every_call(rules, "rules");
    let compared = rules["both_answered"].as_u64().unwrap();
    assert!(compared > 0, "{rules}");
    assert_eq!(rules["agreed"], 0);
    assert_eq!(rules["agreement"], 0.0);
    let disagreements = rules["disagreements"].as_array().unwrap();
    assert!(disagreements.len() as u64 >= compared, "{rules}");
    // Every request the live rules served is a disagreement (the candidate's `review` is
    // never served, or the candidate faulted): those are the requests the rules served, and
    // the ones the candidate answered are the ones served differently.
    let (mut live_served, mut compared_served) = (0, 0);
    for d in disagreements {
        let id = d["request_id"].as_str().unwrap();
        let row: usize = id.strip_prefix("row-").unwrap().parse().unwrap();
        assert!((1..=250).contains(&row), "{id}");
        if d["candidate"]["outcome"] == "answer" {
            assert_eq!(d["candidate"]["label"], "review", "{d}");
            assert_eq!(d["candidate"]["served"], false, "{d}");
        }
        if d["live"]["served"] == true {
            live_served += 1;
            compared_served += u64::from(d["candidate"]["outcome"] == "answer");
        }
    }
    assert_eq!(
        normal["served_by"]["rules"]["requests"], live_served,
        "{normal}"
    );
    assert_eq!(rules["served_differently"], compared_served);
}

/// `eval --alpha --bootstrap --train` on the phishing example: the answered error of each tier
/// with its interval and verdict, the bootstrap of the conformal calibration, and the rows the
/// test split shares with the training split (none: the split is by feature vector; counted
/// independently here).
#[test]
fn eval_checks_the_risk_promise_and_counts_rows_shared_with_training() {
    use tierhost::eval::{parse_labels, read_labeled_csv};
    let phishing = |f: &str| format!("{}/examples/phishing/{f}", env!("CARGO_MANIFEST_DIR"));
    let labels = "1=phishing,0=legitimate";
    let (test, train) = (phishing("data/test.csv"), phishing("data/train.csv"));
    let (code, stdout, stderr) = tierhost(&[
        "eval",
        "--config",
        &phishing("cascade.toml"),
        "--data",
        &test,
        "--labels",
        labels,
        "--scenario",
        "normal",
        "--alpha",
        "0.05",
        "--bootstrap",
        "40",
        "--train",
        &train,
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_no_panic(&stderr);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    // Shared rows, counted here from the raw CSV lines (features only, label column dropped).
    let features_of = |path: &str| -> Vec<String> {
        let rows =
            read_labeled_csv(path.as_ref(), "label", &parse_labels(labels).unwrap()).unwrap();
        rows.iter()
            .map(|r| format!("{:?}", r.request.features))
            .collect()
    };
    let train_set: std::collections::HashSet<String> = features_of(&train).into_iter().collect();
    let expected = features_of(&test)
        .iter()
        .filter(|f| train_set.contains(*f))
        .count();
    // The example's split is deduplicated by feature vector: nothing shared, nothing to warn.
    assert_eq!(
        expected, 0,
        "the phishing split shares no row with training"
    );
    assert_eq!(doc["shared_with_train"]["shared"], expected);
    assert!(!stderr.contains("have the same features"), "{stderr}");
    // Evaluated against itself as "training" data, every row is shared, and it says so.
    let (code, stdout, stderr) = tierhost(&[
        "eval",
        "--config",
        &phishing("cascade.toml"),
        "--data",
        &test,
        "--labels",
        labels,
        "--scenario",
        "normal",
        "--train",
        &test,
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let itself: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = features_of(&test).len();
    assert_eq!(itself["shared_with_train"]["shared"], rows);
    assert!(
        stderr.contains(&format!(
            "{rows} of the {rows} evaluated rows (100.0%) have the same features as a row of"
        )),
        "{stderr}"
    );

    let promise = &doc["promise"];
    assert_eq!(promise["rows"], rows);
    let answered = promise["answered"].as_array().unwrap();
    assert_eq!(answered.len(), 3, "every tier of the cascade");
    let mut reaching = rows;
    for tier in answered {
        // The walk: each tier sees what the tiers before it did not keep.
        assert_eq!(tier["reaching"], reaching, "{tier}");
        reaching -= tier["kept"].as_u64().unwrap() as usize;
        let (kept, errors) = (
            tier["kept"].as_f64().unwrap(),
            tier["errors"].as_f64().unwrap(),
        );
        let [lo, hi] = [0, 1].map(|i| tier["interval"][i].as_f64().unwrap());
        if kept > 0.0 {
            assert!(lo <= errors / kept && errors / kept <= hi, "{tier}");
        }
        let verdict = tier["verdict"].as_str().unwrap();
        let expected_verdict = if kept == 0.0 {
            "no-answers"
        } else if hi <= 0.05 {
            "certified"
        } else if errors / kept <= 0.05 {
            "within-not-certified"
        } else {
            "exceeds"
        };
        assert_eq!(verdict, expected_verdict, "{tier}");
    }
    assert_eq!(promise["splits"], 40);
    let bootstrap = promise["bootstrap"].as_array().unwrap();
    assert_eq!(bootstrap.len(), 2, "the two model tiers");
    for tier in bootstrap {
        let (calibrated, held) = (
            tier["calibrated"].as_u64().unwrap(),
            tier["held"].as_u64().unwrap(),
        );
        assert!(held <= calibrated && calibrated <= 40, "{tier}");
    }

    // Without --alpha, --bootstrap is refused by the argument parser, with the reason.
    let (code, _, stderr) = tierhost(&[
        "eval",
        "--config",
        &phishing("cascade.toml"),
        "--data",
        &test,
        "--bootstrap",
        "5",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--alpha"), "{stderr}");
}
