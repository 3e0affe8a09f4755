//! `tierhost eval`: exact counts on a hand-checked fixture, scenarios force the tiers they
//! claim to, injected chaos faults the share it is told to, and the model grant reaches tiers.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use tierhost::eval::{self, Scenario};

/// The phishing example: its directory, its cascade and the test split.
fn phishing() -> (std::path::PathBuf, tierhost::Config, Vec<eval::LabeledRow>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing");
    let config = tierhost::Config::load(&root.join("cascade.toml")).unwrap();
    let labels = BTreeMap::from([
        ("1".into(), "phishing".into()),
        ("0".into(), "legitimate".into()),
    ]);
    let rows = eval::read_labeled_csv(&root.join("data/test.csv"), "label", &labels).unwrap();
    (root, config, rows)
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
    let cascade = eval::load(
        &engine(),
        &Scenario::Normal.apply(&config, rows.len(), eval::DEFAULT_ROWS_PER_S),
    )
    .await
    .unwrap();
    let (normal, _) = eval::run("normal", &cascade, &rows, "block", || {}).await;
    assert_eq!(normal.requests, 6);
    assert_eq!(normal.accuracy_answered, Some(4.0 / 6.0));
    assert_eq!(normal.coverage, 1.0);
    assert_eq!(normal.fallback_rate, 0.0);
    assert_eq!(normal.served_by["primary"].requests, 6);

    // primary-down: the rules answer everything. By hand: rows 2, 4, 5 have amount > 5000
    // and a new account (0.30 + 0.25 = 0.55 >= 0.5 -> block); rows 1 and 3 are old accounts
    // with small amounts (allow); row 6 (80, 20 days) scores 0 -> allow but is fraud. 5/6 right.
    let cascade = eval::load(
        &engine(),
        &Scenario::PrimaryDown.apply(&config, rows.len(), eval::DEFAULT_ROWS_PER_S),
    )
    .await
    .unwrap();
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
        let cascade = eval::load(
            &engine(),
            &scenario.apply(&config, rows.len(), eval::DEFAULT_ROWS_PER_S),
        )
        .await
        .unwrap();
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
    let cascade = eval::load(
        &engine(),
        &Scenario::FaultMix.apply(&config, rows.len(), eval::DEFAULT_ROWS_PER_S),
    )
    .await
    .unwrap();
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
    let cascade = eval::load(&engine(), &runs[1].1).await.unwrap();
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
    let cascade = eval::load(&engine(), &alone).await.unwrap();
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
    let cascade = eval::load(&engine(), &alone).await.unwrap();
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
    let cascade = eval::load(
        &engine(),
        &Scenario::PrimaryDown.apply(&config, rows.len(), eval::DEFAULT_ROWS_PER_S),
    )
    .await
    .unwrap();
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

#[tokio::test]
async fn calibration_hits_its_target_on_the_data_it_was_fitted_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing");
    let mut config = tierhost::Config::load(&root.join("cascade.toml")).unwrap();
    let labels = BTreeMap::from([
        ("1".into(), "phishing".into()),
        ("0".into(), "legitimate".into()),
    ]);
    let rows = eval::read_labeled_csv(&root.join("data/validation.csv"), "label", &labels).unwrap();
    let target = 0.98;

    let (_, alone) = eval::single_tier_configs(&config).remove(0);
    let cascade = eval::load(&engine(), &alone).await.unwrap();
    let (_, answers) = eval::run("primary alone", &cascade, &rows, "phishing", || {}).await;
    let scored: Vec<(f64, bool)> = rows
        .iter()
        .zip(&answers)
        .map(|(row, a)| match &a.decision {
            tierhost::Decision::Answer {
                label, confidence, ..
            } => (*confidence, *label == row.label),
            other => panic!("{other:?}"),
        })
        .collect();
    let c = eval::calibrate(&scored, rows.len(), target).expect("reachable on this data");
    assert!(c.accuracy >= target && c.coverage > 0.5, "{c:?}");

    // The cascade with that threshold keeps exactly that accuracy on the primary's share.
    config.tiers[0].min_confidence = c.min_confidence;
    let cascade = eval::load(&engine(), &config).await.unwrap();
    let (report, _) = eval::run("calibrated", &cascade, &rows, "phishing", || {}).await;
    let primary = &report.served_by["primary"];
    assert!(primary.accuracy.unwrap() >= target, "{primary:?}");
    assert!(
        (primary.share - c.coverage).abs() < 1e-9,
        "{primary:?} vs {c:?}"
    );
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
        let replayed = scenario.rows(&rows);
        let config = scenario.apply(&config, replayed.len(), eval::DEFAULT_ROWS_PER_S);
        async move {
            let cascade = eval::load(&engine(), &config).await.unwrap();
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
    // and the primary serves the healthy stretch at the end.
    let (flapping, answers) = replay(Scenario::PrimaryFlapping).await;
    assert!(flapping.fallbacks["primary:breaker-open"] > 0);
    let tail = &answers[answers.len() - rows.len() / 4..];
    let by_primary = tail
        .iter()
        .filter(|a| a.served_by.tier == "primary")
        .count();
    assert!(
        by_primary * 10 >= tail.len() * 8,
        "{by_primary} of the last {} rows served by the primary",
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
