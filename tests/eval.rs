//! `tierhost eval`: exact counts on a hand-checked fixture, scenarios force the tiers they
//! claim to, injected chaos faults the share it is told to, and the model grant reaches tiers.
use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use tierhost::eval::{self, Scenario};

/// The phishing example: its directory, its cascade and the test split.
fn phishing() -> (std::path::PathBuf, tierhost::Config, Vec<eval::LabeledRow>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing");
    let config = tierhost::Config::load(&root.join("cascade.toml")).unwrap();
    (root, config, phishing_rows("test"))
}

/// One split (`train`, `validation`, `test`) of the phishing example's data.
fn phishing_rows(split: &str) -> Vec<eval::LabeledRow> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/phishing/data/{split}.csv"));
    let labels = eval::parse_labels("1=phishing,0=legitimate").unwrap();
    eval::read_labeled_csv(&path, "label", &labels).unwrap()
}

/// A cascade loaded for a replay at the default rate.
async fn load(config: &tierhost::Config) -> eval::ReplayCascade {
    eval::load_strict(&engine(), config, eval::DEFAULT_ROWS_PER_S)
        .await
        .unwrap()
}

/// The breast-cancer example (the second real data set): its directory, cascade and test split.
fn breast_cancer() -> (std::path::PathBuf, tierhost::Config, Vec<eval::LabeledRow>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/breast-cancer");
    let config = tierhost::Config::load(&root.join("cascade.toml")).unwrap();
    let labels = eval::parse_labels("1=malignant,0=benign").unwrap();
    let rows = eval::read_labeled_csv(&root.join("data/test.csv"), "label", &labels).unwrap();
    (root, config, rows)
}

/// The cascade `scenario` makes of `config`, for a replay of `rows`.
async fn load_scenario(
    scenario: Scenario,
    config: &tierhost::Config,
    rows: &[eval::LabeledRow],
) -> eval::ReplayCascade {
    load(&scenario.apply(config, rows.len(), eval::DEFAULT_ROWS_PER_S)).await
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("1".into(), "block".into()), ("0".into(), "allow".into())])
}

fn fixture() -> Vec<eval::LabeledRow> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval.csv");
    eval::read_labeled_csv(&path, "label", &labels()).unwrap()
}

/// primary: always "block" with confidence 0.9; fallback: the fraud rules with `block` from a
/// score of 0.5 (amount > 5000 and a new account: 0.30 + 0.25).
const CASCADE: &str = "[safe_default]\nabstain = \"escalate\"\n\
[[tier]]\nname = \"primary\"\nplugin = \"builtin:chaos\"\nmin_confidence = 0.5\n[tier.params]\nmode = \"ok\"\nlabel = \"block\"\nscore = 0.9\nconfidence = 0.9\n\
[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n[tier.params]\nblock_at = 0.5\nreview_at = 0.5\n";

#[tokio::test]
async fn eval_counts_match_a_hand_checked_fixture() {
    let rows = fixture();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[1].label, "block");
    let config = config(CASCADE);

    // normal: the primary says "block" to all 6 rows; 4 of them are fraud.
    let cascade = load_scenario(Scenario::Normal, &config, &rows).await;
    let (normal, _) = eval::run("normal", &cascade, &rows, "block", || {}).await;
    assert_eq!(normal.requests, 6);
    assert_eq!(normal.accuracy_answered, Some(4.0 / 6.0));
    assert_eq!(normal.coverage, 1.0);
    assert_eq!(normal.fallback_rate, 0.0);
    assert_eq!(normal.served_by["primary"].requests, 6);

    // primary-down: the rules answer everything. By hand: rows 2, 4, 5 have amount > 5000
    // and a new account (0.30 + 0.25 = 0.55 >= 0.5 -> block); rows 1 and 3 are old accounts
    // with small amounts (allow); row 6 (80, 20 days) scores 0 -> allow but is fraud. 5/6 right.
    let cascade = load_scenario(Scenario::PrimaryDown, &config, &rows).await;
    let (down, answers) = eval::run("primary-down", &cascade, &rows, "block", || {}).await;
    assert!(
        answers.iter().all(|a| a.served_by.tier == "rules"),
        "primary-down never serves from the primary"
    );
    assert_eq!(down.accuracy_answered, Some(5.0 / 6.0));
    assert_eq!(down.fallback_rate, 1.0);
    assert_eq!(down.fallbacks["primary:trap"], 6);
    // Scores 0.55 for rows 2, 4, 5 and 0 for the rest: of the 8 (fraud, legit) pairs, 6 are
    // ordered right and 2 tie: AUC = (6 + 2 / 2) / 8.
    assert_eq!(down.served_by["rules"].auc, Some(0.875));

    for (scenario, kind) in [
        (Scenario::PrimarySlow, "deadline"),
        (Scenario::PrimaryGarbage, "invalid-output"),
    ] {
        let cascade = load_scenario(scenario, &config, &rows).await;
        let (report, answers) = eval::run(scenario.name(), &cascade, &rows, "block", || {}).await;
        assert!(
            answers.iter().all(|a| a.served_by.tier == "rules"),
            "{}",
            scenario.name()
        );
        assert_eq!(
            report.fallbacks[&format!("primary:{kind}")],
            6,
            "{}",
            scenario.name()
        );
    }
}

#[tokio::test]
async fn fault_mix_injects_its_share_of_faults() {
    let rows: Vec<eval::LabeledRow> = (0..1000)
        .map(|i| eval::LabeledRow {
            request: request(&format!("mix-{i}")),
            label: "block".into(),
        })
        .collect();
    let config = config(CASCADE);
    let cascade = load_scenario(Scenario::FaultMix, &config, &rows).await;
    let (report, _) = eval::run("fault-mix", &cascade, &rows, "block", || {}).await;
    let faults = report.fallbacks["primary:trap"];
    assert!(
        (150..=250).contains(&faults),
        "{faults} of 1000 primary calls faulted at rate 0.2"
    );
    assert_eq!(report.coverage, 1.0, "every request is still answered");
}

#[tokio::test]
async fn single_tier_baselines_run_each_tier_alone() {
    let config = config(CASCADE);
    let runs = eval::single_tier_configs(&config);
    assert_eq!(
        runs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["primary alone", "rules alone"]
    );
    let cascade = load(&runs[1].1).await;
    let (report, _) = eval::run(&runs[1].0, &cascade, &fixture(), "block", || {}).await;
    assert_eq!(report.served_by["rules"].requests, 6);
    assert_eq!(report.accuracy_answered, Some(5.0 / 6.0));
}

#[tokio::test]
async fn the_phishing_cascade_runs_its_model_and_rules_from_granted_files() {
    let (root, config, rows) = phishing();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/metrics.json")).unwrap())
            .unwrap();

    // The tree tier in the sandbox reproduces scikit-learn's test accuracy exactly.
    let (_, alone) = eval::single_tier_configs(&config).remove(0);
    let cascade = load(&alone).await;
    let (report, _) = eval::run("primary alone", &cascade, &rows, "phishing", || {}).await;
    let expected = metrics["test"]["primary_gbt"]["accuracy"]
        .as_f64()
        .expect("metrics.json has the primary's test accuracy");
    assert!(
        (report.accuracy_answered.unwrap() - expected).abs() < 1e-9,
        "{report:?} vs {expected}"
    );

    // The ONNX tier (tract inside the sandbox) reproduces the logistic model's test accuracy.
    let (_, alone) = eval::single_tier_configs(&config).remove(1);
    let cascade = load(&alone).await;
    let (report, _) = eval::run("small-model alone", &cascade, &rows, "phishing", || {}).await;
    let expected = metrics["test"]["small_logistic"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        (report.accuracy_answered.unwrap() - expected).abs() < 1e-9,
        "{report:?} vs {expected}"
    );
    assert_eq!(
        cascade.cascade.tiers()[0]
            .sandbox
            .as_ref()
            .unwrap()
            .plugin()
            .info()
            .name,
        "onnx"
    );

    // With the primary down, every request is still answered or escalated, never lost.
    let cascade = load_scenario(Scenario::PrimaryDown, &config, &rows).await;
    let (down, _) = eval::run("primary-down", &cascade, &rows, "phishing", || {}).await;
    assert!(!down.served_by.contains_key("primary"));
    assert_eq!(
        down.served_by.values().map(|q| q.requests).sum::<usize>() + down.abstentions,
        rows.len()
    );
}

#[tokio::test]
async fn the_ood_guard_routes_out_of_range_rows_past_the_primary_and_keeps_the_rest() {
    let stats = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats.json");
    let toml = CASCADE.replace(
        "[[tier]]\nname = \"rules\"",
        &format!(
            "[tier.ood]\nstats = \"{}\"\n[[tier]]\nname = \"rules\"",
            stats.display()
        ),
    );
    let cascade = tierhost::Cascade::with_engine(engine(), &config(&toml))
        .await
        .unwrap();
    let in_range = tierhost::Request::from_json(
        r#"{"id":"in","features":{"amount":900,"account_age_days":30}}"#,
    )
    .unwrap();
    let answer = cascade.predict(&in_range).await;
    assert_eq!(answer.served_by.tier, "primary");

    let out_of_range = tierhost::Request::from_json(
        r#"{"id":"out","features":{"amount":250000,"account_age_days":30}}"#,
    )
    .unwrap();
    let answer = cascade.predict(&out_of_range).await;
    assert_eq!(answer.served_by.tier, "rules");
    assert_eq!(kinds(&answer), vec!["out-of-distribution"]);
    let message = answer.trail[0].message.as_deref().unwrap();
    assert!(
        message.contains("`amount` = 250000 outside the training range"),
        "{message}"
    );
    assert_eq!(answer.trail[0].fuel_used, 0, "the primary was never called");

    let missing =
        tierhost::Request::from_json(r#"{"id":"missing","features":{"amount":900}}"#).unwrap();
    assert_eq!(
        kinds(&cascade.predict(&missing).await),
        vec!["out-of-distribution"]
    );
}

/// `tierhost calibrate --target-accuracy 0.97` on the phishing validation split: the empirical
/// thresholds (the example's cascade.toml carries conformal ones) and the rules left alone;
/// the cascade with the primary's threshold keeps that accuracy on exactly the share
/// calibration promised.
#[tokio::test]
async fn calibration_chooses_the_examples_thresholds_and_hits_its_target() {
    let (_, mut config, _) = phishing();
    let rows = phishing_rows("validation");
    let target = 0.97;
    let tiers = eval::calibrate_tiers(&engine(), &config, &rows, target)
        .await
        .unwrap();
    let lines: Vec<String> = tiers.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "[[tier]] name = \"primary\": min_confidence = 0.9464  # accuracy 0.9726 on the 55.3% of rows it keeps",
            "[[tier]] name = \"small-model\": min_confidence = 0.8761  # accuracy 0.9718 on the 53.8% of rows it keeps",
            "# tier \"rules\" (rules): not a model, left as is",
        ]
    );
    let mut chosen = Vec::new();
    for (tier, configured) in tiers.iter().zip(&config.tiers) {
        assert_eq!(tier.tier, configured.name);
        if let eval::CalibrationOutcome::Threshold(c) = &tier.outcome {
            assert!(c.accuracy >= target, "{c:?}");
            chosen.push(c.clone());
        }
    }
    assert_eq!(chosen.len(), 2, "two model tiers");
    assert_eq!(tiers[2].kind, tierhost::TierKind::Rules);
    assert!(tiers.iter().all(eval::TierCalibration::reached));

    // The cascade with that threshold keeps exactly that accuracy on the primary's share.
    let c = &chosen[0];
    config.tiers[0].min_confidence = c.min_confidence;
    let cascade = load(&config).await;
    let (report, _) = eval::run("calibrated", &cascade, &rows, "phishing", || {}).await;
    let primary = &report.served_by["primary"];
    assert!(primary.accuracy.unwrap() >= target, "{primary:?}");
    assert!(
        (primary.share - c.coverage).abs() < 1e-9,
        "{primary:?} vs {c:?}"
    );
}

/// Two logistic tiers on the fixture, `bias + 0.001 * amount`: `right` (bias -1) ranks the rows
/// almost perfectly, `wrong` (weight -0.001) answers `allow` to all and is most sure of the big
/// frauds. Then the fraud rules.
const MODELS: &str = "[safe_default]\nabstain = \"escalate\"\n\
[[tier]]\nname = \"right\"\nplugin = \"builtin:linear\"\n[tier.params]\nbias = -1.0\n[tier.params.weights]\namount = 0.001\n\
[[tier]]\nname = \"wrong\"\nplugin = \"builtin:linear\"\n[tier.params]\nbias = 0.0\n[tier.params.weights]\namount = -0.001\n\
[[tier]]\nname = \"rules\"\nplugin = \"builtin:rules\"\n";

#[tokio::test]
async fn calibration_thresholds_model_tiers_and_reports_an_unreachable_target() {
    let config = config(MODELS);
    let rows = fixture();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    // `right` by confidence: amounts 12000, 9000, 7000 (block, right), 50 (allow, right),
    // 80 (allow, wrong: fraud), 100 (allow, right). At 0.9 the lowest threshold is 50's
    // confidence: 4 of 6 rows, all right; at 0.8, 100's: every row, 5 of 6 right.
    // `wrong` by confidence: 12000, 9000, 7000 wrong first: no threshold reaches either.
    for (target, amount, accuracy, coverage) in
        [(0.9, 50.0, 1.0, 4.0 / 6.0), (0.8, 100.0, 5.0 / 6.0, 1.0)]
    {
        let tiers = eval::calibrate_tiers(&engine(), &config, &rows, target)
            .await
            .unwrap();
        let eval::CalibrationOutcome::Threshold(c) = &tiers[0].outcome else {
            panic!("{target}: {:?}", tiers[0]);
        };
        let confidence = 1.0 - sigmoid(-1.0 + 0.001 * amount);
        assert!(
            (c.min_confidence - confidence).abs() < 1e-9,
            "{target}: {c:?}"
        );
        assert_eq!((c.accuracy, c.coverage), (accuracy, coverage), "{target}");
        assert_eq!(tiers[1].outcome, eval::CalibrationOutcome::Unreachable);
        assert!(tiers[0].reached() && !tiers[1].reached());
        assert_eq!(tiers[2].outcome, eval::CalibrationOutcome::NotAModel);
        assert_eq!(
            tiers[1].to_string(),
            format!("# tier \"wrong\": no threshold reaches accuracy {target} on this data")
        );
    }
    assert_eq!(
        eval::calibrate_tiers(&engine(), &config, &rows, 0.5)
            .await
            .unwrap()[1]
            .outcome,
        eval::CalibrationOutcome::Unreachable
    );

    for target in [0.0, 1.5, f64::NAN] {
        let error = eval::calibrate_tiers(&engine(), &config, &rows, target).await;
        assert!(
            matches!(error, Err(eval::EvalError::TargetAccuracy(_))),
            "{target}: {error:?}"
        );
    }
}

/// The whole report on the fixture: the scenarios asked for, then each tier alone; the numbers
/// of `eval_counts_match_a_hand_checked_fixture`; progress over every row; the primary's curve;
/// the Markdown, the JSON document and the report directory.
#[tokio::test]
async fn the_evaluation_report_runs_scenarios_then_baselines_and_writes_its_files() {
    let config = config(CASCADE);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval.csv");
    let data = eval::Dataset::read(&path, "label", &labels()).unwrap();
    let options = eval::EvalOptions {
        scenarios: vec![Scenario::Normal, Scenario::PrimaryDown],
        positive_label: "block".into(),
        ..eval::EvalOptions::default()
    };
    let mut seen: Vec<(String, usize, usize)> = Vec::new();
    let report = eval::evaluate(&engine(), &config, &data, &options, |p| {
        seen.push((p.run.to_string(), p.done, p.total));
    })
    .await
    .unwrap();

    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["normal", "primary-down", "primary alone", "rules alone"]
    );
    let accuracy: Vec<Option<f64>> = report.runs.iter().map(|r| r.accuracy_answered).collect();
    let (four, five) = (Some(4.0 / 6.0), Some(5.0 / 6.0));
    assert_eq!(accuracy, [four, five, four, five]);
    assert_eq!(report.runs[1].fallbacks["primary:trap"], 6);
    assert_eq!(report.tiers, ["primary", "rules"]);
    // Each run announced at its start, then every row: 4 x (1 + 6) calls, 24 rows in all.
    assert_eq!(seen.len(), 28);
    assert!(seen.iter().all(|(_, _, total)| *total == 24));
    assert_eq!(seen[0], ("normal".into(), 0, 24));
    assert_eq!(seen[7], ("primary-down".into(), 6, 24));
    assert_eq!(seen[27], ("rules alone".into(), 24, 24));

    // The primary alone answers `block` at 0.9 to every row, 4 of 6 right: kept up to a
    // threshold of 0.9, dropped entirely at 0.95.
    let curve = &report.primary_coverage_curve;
    assert_eq!(curve.len(), eval::CURVE_THRESHOLDS.len());
    assert_eq!(curve[8], (0.9, 1.0, four));
    assert_eq!(curve[9], (0.95, 0.0, None));

    let summary = report.summary();
    for line in [
        "| normal | 66.7% | 100.0% | 0.0% | 0 | 100.0% / 66.7% | - | - |",
        "| primary-down | 83.3% | 100.0% | 100.0% | 0 | - | 100.0% / 83.3% | - |",
        "Accuracy vs coverage of `primary` as its min_confidence varies:",
        "| 0.90 | 100.0% | 66.7% |",
        "| 0.95 | 0.0% | - |",
    ] {
        assert!(summary.contains(line), "no `{line}` in:\n{summary}");
    }

    let doc = serde_json::to_value(&report).unwrap();
    assert_eq!(doc["rows"], 6);
    assert_eq!(doc["rows_per_s"], eval::DEFAULT_ROWS_PER_S);
    assert_eq!(doc["positive_label"], "block");
    assert_eq!(doc["config"], "test.toml");
    assert_eq!(doc["data"], path.to_str().unwrap());
    assert_eq!(doc["runs"][3]["name"], "rules alone");
    assert!(doc.get("tiers").is_none());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    report.write(&out).unwrap();
    let written = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let heading = format!(
        "# tierhost eval: test.toml on {} (6 rows, replayed as 100 requests/s)\n",
        path.display()
    );
    assert!(written.starts_with(&heading), "{written}");
    assert!(written.ends_with(&summary));
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("runs.json")).unwrap()).unwrap();
    assert_eq!(runs, doc);
    for svg in ["tier_mix.svg", "accuracy_vs_coverage.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}: {}", &text[..40]);
    }
    // A report directory that cannot be made is an error naming it.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let error = report.write(&blocked.join("report")).unwrap_err();
    assert!(matches!(error, eval::EvalError::Write { .. }), "{error}");
}

/// The phishing example's scenarios for the cascade's memory: the breaker bounds what a slow or
/// flapping primary costs, hedging bounds the heavy tail's extra calls, replays hit the cache.
/// Only counts are asserted (the machine's speed never decides a test).
#[tokio::test]
async fn phishing_breaker_hedging_and_cache_scenarios() {
    let (_, config, rows) = phishing();
    let breaker = config.tiers[0]
        .breaker
        .clone()
        .expect("the example has a breaker");
    let replay = |scenario: Scenario| {
        let replayed = scenario.rows(&rows, &config, eval::DEFAULT_ROWS_PER_S);
        let config = scenario.apply(&config, replayed.len(), eval::DEFAULT_ROWS_PER_S);
        async move {
            let cascade = load(&config).await;
            eval::run(scenario.name(), &cascade, &replayed, "phishing", || {}).await
        }
    };

    // primary-slow: the breaker opens after minimum_calls slow calls; later requests skip the
    // primary without calling it (at most one probe round in the replay).
    let (slow, answers) = replay(Scenario::PrimarySlow).await;
    let primary_calls = slow.latency["primary"].calls;
    assert!(
        primary_calls <= breaker.minimum_calls + breaker.half_open_calls,
        "{primary_calls} primary calls"
    );
    assert!(slow.fallbacks["primary:breaker-open"] >= rows.len() - primary_calls - 10);
    assert!(
        answers.iter().skip(primary_calls + 1).all(|a| a.trail[0]
            .reason
            .as_ref()
            .map(|r| r.kind())
            != Some("deadline"))
    );

    // primary-down: the same, for a trapping primary.
    let (down, _) = replay(Scenario::PrimaryDown).await;
    assert!(down.latency["primary"].calls <= breaker.minimum_calls + breaker.half_open_calls);

    // primary-flapping: the breaker opens during the outage, probes after it, closes again,
    // and the primary answers the healthy stretch at the end (served, or passed on only
    // because its confidence was below the threshold, exactly as in the normal run).
    let (flapping, answers) = replay(Scenario::PrimaryFlapping).await;
    assert!(flapping.fallbacks["primary:breaker-open"] > 0);
    let tail = &answers[answers.len() - rows.len() / 4..];
    let by_primary = tail
        .iter()
        .filter(|a| {
            a.trail[0].tier == "primary"
                && matches!(
                    a.trail[0].reason.as_ref().map(|r| r.kind()),
                    None | Some("low-confidence")
                )
        })
        .count();
    assert!(
        by_primary * 10 >= tail.len() * 8,
        "the primary answered {by_primary} of the last {} rows",
        tail.len()
    );
    assert!(
        tail.iter()
            .all(|a| a.trail[0].reason.as_ref().map(|r| r.kind()) != Some("breaker-open"))
    );

    // Heavy tail: hedging adds at most 1 + max_share of the primary's calls.
    let (plain, _) = replay(Scenario::PrimaryHeavyTail).await;
    let (hedged, _) = replay(Scenario::PrimaryHeavyTailHedged).await;
    assert_eq!(plain.hedges, 0);
    assert!(hedged.hedges > 0);
    let max_share = config.tiers[0].hedge.as_ref().unwrap().max_share;
    assert!(
        hedged.hedges as f64 <= 1.0 + max_share * hedged.latency["primary"].calls as f64,
        "{} hedges",
        hedged.hedges
    );
    assert!(eval::hedging_comparison(&[plain, hedged]).is_some());

    // repeat: every row of the second pass whose first answer was not degraded is a hit.
    let (repeat, answers) = replay(Scenario::Repeat).await;
    let second = &answers[rows.len()..];
    let cacheable = answers[..rows.len()].iter().filter(|a| !a.degraded).count();
    let hits = second
        .iter()
        .filter(|a| a.cache == Some(tierhost::CacheStatus::Hit))
        .count();
    assert!(hits >= cacheable, "{hits} hits, {cacheable} cacheable");
    assert!(repeat.cache_hits >= hits);
}

/// The breast-cancer cascade: the tree tier and the linear tier (30 and 3 real-valued
/// features) reproduce scikit-learn's test accuracy in the sandbox, the linear tier's params in
/// cascade.toml are the ones train.py exported, and with the primary down every request is
/// still answered or referred.
#[tokio::test]
async fn the_breast_cancer_cascade_reproduces_its_models() {
    let (root, config, rows) = breast_cancer();
    assert_eq!(rows.len(), 114);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("models/metrics.json")).unwrap())
            .unwrap();
    for (index, name, key) in [
        (0, "primary", "primary_gbt"),
        (1, "small-model", "small_logistic"),
    ] {
        let (_, alone) = eval::single_tier_configs(&config).remove(index);
        let cascade = load(&alone).await;
        let (report, _) = eval::run(name, &cascade, &rows, "breast-cancer", || {}).await;
        let expected = metrics["test"][key]["accuracy"].as_f64().unwrap();
        assert!(
            (report.accuracy_answered.unwrap() - expected).abs() < 1e-9,
            "{name}: {report:?} vs {expected}"
        );
        assert_eq!(report.abstentions, 0, "{name} answers every row alone");
    }

    let exported: toml::Table = toml::from_str(
        &std::fs::read_to_string(root.join("models/small_model_params.toml")).unwrap(),
    )
    .unwrap();
    let configured = &config.tiers[1].params;
    for key in [
        "bias",
        "threshold",
        "positive_label",
        "negative_label",
        "weights",
        "scales",
    ] {
        assert_eq!(configured.get(key), exported.get(key), "params.{key}");
    }

    let cascade = load_scenario(Scenario::PrimaryDown, &config, &rows).await;
    let (down, _) = eval::run("primary-down", &cascade, &rows, "breast-cancer", || {}).await;
    assert!(!down.served_by.contains_key("primary"));
    assert!(down.served_by["small-model"].requests > 0, "{down:?}");
    assert_eq!(
        down.served_by.values().map(|q| q.requests).sum::<usize>() + down.abstentions,
        rows.len()
    );
}
