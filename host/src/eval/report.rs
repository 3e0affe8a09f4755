//! The report of a whole evaluation: the run list (every scenario, then each tier alone as a
//! baseline), replayed with a progress callback ([`evaluate`]); its Markdown summary (runs, the
//! shifted rows, latency and tier calls, the hedging comparison, the primary's accuracy vs
//! coverage), its JSON document, and the report directory (`summary.md`, `runs.json`, SVGs).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::answer::EscalationReceipt;
use crate::cascade::SAFE_DEFAULT;
use crate::config::{Config, EscalationConfig};
use crate::engine::TierEngine;
use crate::eval::{
    DEFAULT_ROWS_PER_S, Dataset, EvalError, LabeledRow, RunReport, Scenario, ShadowCandidates,
    ShadowRuns, coverage_curve, load_escalating, load_strict, plots, run, scored,
    single_tier_configs,
};

/// The `min_confidence` values at which the primary's accuracy vs coverage is reported.
pub const CURVE_THRESHOLDS: [f64; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// What an evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The scenarios, in report order (each tier alone follows them as a baseline).
    pub scenarios: Vec<Scenario>,
    /// The positive class, for AUC.
    pub positive_label: String,
    /// The request rate the replay stands for: the cascade's clock advances by
    /// `1 / rows_per_s` seconds per row.
    pub rows_per_s: f64,
    /// Where the escalations of one scenario are committed; none by default (every other run
    /// escalates nowhere).
    pub escalations: Option<EscalationOutput>,
    /// Candidate versions run in the shadow of their tiers during one scenario's replay; none
    /// by default.
    pub shadow: Option<ShadowCandidates>,
}

impl Default for EvalOptions {
    /// Every scenario, positive class `1`, [`DEFAULT_ROWS_PER_S`], no escalations written.
    fn default() -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            positive_label: "1".into(),
            rows_per_s: DEFAULT_ROWS_PER_S,
            escalations: None,
            shadow: None,
        }
    }
}

/// The review queue one scenario's escalated rows are committed to (`tierhost eval
/// --escalations FILE`): replayed rows a reviewer labels become training rows
/// (`tierhost review export`).
#[derive(Debug, Clone)]
pub struct EscalationOutput {
    /// The scenario whose escalations are written.
    pub scenario: Scenario,
    /// The `[escalation]` section they are written under; its `queue` is the file.
    pub section: EscalationConfig,
}

impl EscalationOutput {
    /// Escalations of `scenario` under `config` into the queue file `queue`: the config's own
    /// `[escalation]` section (which tiers escalate, redaction, sync) with `queue` in place of
    /// its file, or the defaults ([`EscalationConfig::new`]) when it has none. Fails when
    /// nothing in this cascade would ever escalate.
    pub fn new(config: &Config, scenario: Scenario, queue: PathBuf) -> Result<Self, EvalError> {
        let section = match &config.escalation {
            Some(section) => EscalationConfig {
                queue,
                ..section.clone()
            },
            None => EscalationConfig::new(queue),
        };
        if section.tiers.is_empty() && config.safe_default.abstain.is_none() {
            return Err(EvalError::Escalations(format!(
                "nothing in cascade `{}` ({}) would ever escalate: its [safe_default] does not \
                 abstain and no [escalation] tiers are set; add [safe_default] abstain = \"...\" \
                 (requests no tier serves then escalate) or escalation.tiers",
                config.cascade.name,
                config.source.display()
            )));
        }
        section
            .validate()
            .map_err(|(field, problem)| EvalError::Escalations(format!("{field}: {problem}")))?;
        Ok(Self { scenario, section })
    }
}

/// What an evaluation committed to its review queue ([`EvalOptions::escalations`]).
#[derive(Debug, Clone, Serialize)]
pub struct EscalationsWritten {
    /// The scenario whose escalations were written.
    pub scenario: Scenario,
    /// The queue file.
    pub queue: PathBuf,
    /// Escalations committed to it.
    pub recorded: usize,
    /// Escalations that were not (queue full, write failed or timed out).
    pub not_recorded: usize,
    /// Why the first of those was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Where an evaluation is, for a progress display: reported when a run starts and after
/// every row.
#[derive(Debug, Clone, Copy)]
pub struct EvalProgress<'a> {
    /// The run under way (a scenario, or `X alone`).
    pub run: &'a str,
    /// Rows replayed so far, over every run.
    pub done: usize,
    /// Rows to replay in all.
    pub total: usize,
}

/// A whole evaluation. Serialized, it is the JSON document of `tierhost eval --json` and
/// `runs.json` (fields in alphabetical order, as that document always had them).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The cascade config file.
    pub config: PathBuf,
    /// The labeled CSV file.
    pub data: PathBuf,
    /// The escalations written to a review queue, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalations: Option<EscalationsWritten>,
    /// The positive class, for AUC.
    pub positive_label: String,
    /// The first tier alone at each of [`CURVE_THRESHOLDS`]: `(min_confidence, coverage,
    /// accuracy)` (empty if the cascade has no tier).
    pub primary_coverage_curve: Vec<(f64, f64, Option<f64>)>,
    /// Rows in the data.
    pub rows: usize,
    /// The replay rate.
    pub rows_per_s: f64,
    /// Every run: the scenarios, then each tier alone.
    pub runs: Vec<RunReport>,
    /// The decision diffs of the shadowed scenario, when candidates were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRuns>,
    /// The answered error against α and the bootstrap (`eval --alpha`), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promise: Option<super::PromiseReport>,
    /// Rows of the data whose features equal a row of the training data (`eval --train`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_with_train: Option<SharedRows>,
    /// The cascade's tiers, in order (not in the JSON document).
    #[serde(skip)]
    pub tiers: Vec<String>,
}

/// How much of the evaluated data also occurs in the training data.
#[derive(Debug, Clone, Serialize)]
pub struct SharedRows {
    /// The training file.
    pub train: PathBuf,
    /// Evaluated rows whose features equal a training row's.
    pub shared: usize,
    /// Evaluated rows.
    pub rows: usize,
}

impl std::fmt::Display for SharedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of the {} evaluated rows ({:.1}%) have the same features as a row of {}: the \
             figures on them measure memory, not generalisation (deduplicate before splitting)",
            self.shared,
            self.rows,
            100.0 * self.shared as f64 / self.rows.max(1) as f64,
            self.train.display()
        )
    }
}

/// Replays `data` through `config` under every scenario of `options`, then through each tier
/// alone, on `engine`, calling `progress` as it goes; fails if a run's cascade does not load
/// (a tier that does not load would make every number about another cascade). Only the
/// scenario of `options.escalations`, when set, escalates (to that queue); no run writes to
/// the config's own queue.
pub async fn evaluate(
    engine: &TierEngine,
    config: &Config,
    data: &Dataset,
    options: &EvalOptions,
    mut progress: impl FnMut(EvalProgress<'_>),
) -> Result<EvalReport, EvalError> {
    let rows = &data.rows;
    if let Some(output) = &options.escalations
        && !options.scenarios.contains(&output.scenario)
    {
        return Err(EvalError::Escalations(format!(
            "scenario `{}` is not among the scenarios run",
            output.scenario.name()
        )));
    }
    // The first run of the shadowed scenario carries the candidates.
    let shadowed = match &options.shadow {
        Some(shadow) => Some(
            options
                .scenarios
                .iter()
                .position(|s| *s == shadow.scenario)
                .ok_or_else(|| {
                    EvalError::Shadow(format!(
                        "scenario `{}` is not among the scenarios run",
                        shadow.scenario.name()
                    ))
                })?,
        ),
        None => None,
    };
    let mut runs: Vec<(String, Config, Vec<LabeledRow>)> = options
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let replay = s.rows(rows, config, options.rows_per_s);
            let mut config = s.apply(config, replay.len(), options.rows_per_s);
            if let (Some(shadow), true) = (&options.shadow, shadowed == Some(i)) {
                config = shadow.apply(&config, replay.len());
            }
            (s.name().to_string(), config, replay)
        })
        .collect();
    let primary_alone = runs.len();
    runs.extend(
        single_tier_configs(config)
            .into_iter()
            .map(|(name, alone)| (name, alone, rows.clone())),
    );
    let total = runs.iter().map(|(_, _, replay)| replay.len()).sum();
    let mut done = 0;
    let mut reports = Vec::with_capacity(runs.len());
    let mut curve = Vec::new();
    let mut escalations = None;
    let mut shadow_runs = None;
    for (i, (name, run_config, replay)) in runs.iter().enumerate() {
        progress(EvalProgress {
            run: name,
            done,
            total,
        });
        let escalating = options
            .escalations
            .as_ref()
            .filter(|o| i < primary_alone && options.scenarios[i] == o.scenario);
        let cascade = match escalating {
            Some(output) => {
                load_escalating(engine, run_config, options.rows_per_s, &output.section).await?
            }
            None => load_strict(engine, run_config, options.rows_per_s).await?,
        };
        let shadow = options.shadow.as_ref().filter(|_| shadowed == Some(i));
        if let Some(shadow) = shadow {
            shadow.shadows(&cascade.cascade)?;
        }
        let (report, answers) = run(name, &cascade, replay, &options.positive_label, || {
            done += 1;
            progress(EvalProgress {
                run: name,
                done,
                total,
            });
        })
        .await;
        if let Some(output) = escalating {
            let written = escalations.get_or_insert_with(|| EscalationsWritten {
                scenario: output.scenario,
                queue: output.section.queue.clone(),
                recorded: 0,
                not_recorded: 0,
                problem: None,
            });
            for receipt in answers.iter().filter_map(|a| a.escalation.as_ref()) {
                match receipt {
                    EscalationReceipt::Recorded { .. } => written.recorded += 1,
                    EscalationReceipt::NotRecorded { problem, detail } => {
                        written.not_recorded += 1;
                        written
                            .problem
                            .get_or_insert_with(|| format!("{}: {detail}", problem.as_str()));
                    }
                }
            }
        }
        if let Some(shadow) = shadow {
            shadow_runs = Some(ShadowRuns {
                scenario: shadow.scenario,
                reports: shadow.reports(&cascade.cascade).await?,
            });
        }
        if i == primary_alone {
            let answers = scored(rows, &answers, &run_config.tiers[0].name);
            curve = coverage_curve(&answers, rows.len(), &CURVE_THRESHOLDS);
        }
        reports.push(report);
    }
    Ok(EvalReport {
        config: config.source.clone(),
        data: data.path.clone(),
        escalations,
        positive_label: options.positive_label.clone(),
        primary_coverage_curve: curve,
        rows: rows.len(),
        rows_per_s: options.rows_per_s,
        runs: reports,
        shadow: shadow_runs,
        promise: None,
        shared_with_train: None,
        tiers: config.tiers.iter().map(|t| t.name.clone()).collect(),
    })
}

impl EvalReport {
    /// The Markdown summary: [`markdown`] of the runs, then the first tier's accuracy vs
    /// coverage as its `min_confidence` varies, then the shadow runs' decision diffs.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        match &self.shared_with_train {
            Some(shared) if shared.shared > 0 => {
                let _ = writeln!(out, "WARNING: {shared}\n");
            }
            Some(shared) => {
                let _ = writeln!(
                    out,
                    "None of the {} evaluated rows has the same features as a row of {}.\n",
                    shared.rows,
                    shared.train.display()
                );
            }
            None => {}
        }
        out.push_str(&markdown(&self.runs, &self.tiers));
        if let (Some(primary), false) = (self.tiers.first(), self.primary_coverage_curve.is_empty())
        {
            let _ = write!(
                out,
                "\nAccuracy vs coverage of `{primary}` as its min_confidence varies:\n\n\
                 | min_confidence | coverage | accuracy |\n|---:|---:|---:|\n"
            );
            for (t, coverage, accuracy) in &self.primary_coverage_curve {
                let _ = writeln!(
                    out,
                    "| {t:.2} | {} | {} |",
                    pct(*coverage),
                    opt_pct(*accuracy)
                );
            }
        }
        if let Some(shadow) = &self.shadow {
            let _ = write!(
                out,
                "\nShadow runs during scenario `{}` (every call of the tier shadowed, none \
                 dropped; the scenario's numbers above are the live versions'):\n\n```\n",
                shadow.scenario.name()
            );
            for report in &shadow.reports {
                let _ = write!(out, "{report}");
            }
            out.push_str("```\n");
        }
        if let Some(promise) = &self.promise {
            let _ = write!(out, "\n```\n{promise}```\n");
        }
        out
    }

    /// Writes the report directory (created if missing): `summary.md` (a heading, then
    /// [`Self::summary`]), `runs.json` (this report), `tier_mix.svg` and
    /// `accuracy_vs_coverage.svg`.
    pub fn write(&self, dir: &Path) -> Result<(), EvalError> {
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|error| EvalError::Write { path, error })
        };
        std::fs::create_dir_all(dir).map_err(|error| EvalError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
        let heading = format!(
            "# tierhost eval: {} on {} ({} rows, replayed as {} requests/s)\n\n\
             Accuracy is on answered requests; coverage is the share not abstained; fallback \
             rate is the share not served by the first tier. \"X alone\" runs the tier by \
             itself, without a confidence threshold, breaker or hedging. `repeat` replays every \
             row twice.\n\n",
            self.config.display(),
            self.data.display(),
            self.rows,
            self.rows_per_s
        );
        write(dir.join("summary.md"), heading + &self.summary())?;
        let json =
            serde_json::to_string_pretty(self).map_err(|e| EvalError::Json(e.to_string()))?;
        write(dir.join("runs.json"), json)?;
        plots::tier_mix(&dir.join("tier_mix.svg"), &self.runs, &self.tiers)?;
        if let Some(primary) = self.tiers.first() {
            plots::accuracy_vs_coverage(
                &dir.join("accuracy_vs_coverage.svg"),
                primary,
                &self.primary_coverage_curve,
            )?;
        }
        Ok(())
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

/// The Markdown summary of every run: who served the requests and how well, the shifted rows
/// (shift scenarios), request latency and tier calls, the hedging comparison, and tier call
/// latency. `tiers` are the cascade's, in order.
pub fn markdown(runs: &[RunReport], tiers: &[String]) -> String {
    let served: Vec<&str> = tiers
        .iter()
        .map(String::as_str)
        .chain([SAFE_DEFAULT])
        .collect();
    let mut header = texts(&[
        "run",
        "accuracy (answered)",
        "coverage",
        "fallback rate",
        "abstained",
    ]);
    header.extend(served.iter().map(|tier| format!("{tier}: share / acc")));
    let mut out = table(
        header,
        runs.iter().map(|run| {
            let mut row = vec![
                run.name.clone(),
                opt_pct(run.accuracy_answered),
                pct(run.coverage),
                pct(run.fallback_rate),
                run.abstentions.to_string(),
            ];
            row.extend(served.iter().map(|tier| match run.served_by.get(*tier) {
                Some(q) => format!("{} / {}", pct(q.share), opt_pct(q.accuracy)),
                None => "-".into(),
            }));
            row
        }),
    );
    let shifted: Vec<Vec<String>> = runs
        .iter()
        .filter_map(|run| {
            let q = run.shifted.as_ref()?;
            Some(vec![
                run.name.clone(),
                q.rows.to_string(),
                q.served_by_primary.to_string(),
                pct(q.coverage),
                opt_pct(q.accuracy_answered),
                q.errors.to_string(),
            ])
        })
        .collect();
    if !shifted.is_empty() {
        out.push_str("\nOn the shifted rows:\n\n");
        let header = texts(&[
            "run",
            "rows",
            "served by primary",
            "answered",
            "accuracy (answered)",
            "wrong answers",
        ]);
        out.push_str(&table(header, shifted));
    }

    out.push_str(
        "\nRequest latency (µs) and tier calls (hedges and cancelled calls included):\n\n",
    );
    let mut header = texts(&["run", "p50", "p99", "p99.9", "max", "tier calls"]);
    header.extend(tiers.iter().map(|tier| format!("{tier} calls")));
    header.extend(texts(&["hedges", "cache hits"]));
    out.push_str(&table(
        header,
        runs.iter().map(|run| {
            let l = &run.request_latency;
            let mut row = vec![run.name.clone()];
            row.extend([l.p50_us, l.p99_us, l.p999_us, l.max_us].map(|us| us.to_string()));
            let calls = tiers
                .iter()
                .map(|t| run.latency.get(t).map_or(0, |l| l.calls));
            row.extend(
                std::iter::once(run.tier_calls)
                    .chain(calls)
                    .chain([run.hedges, run.cache_hits])
                    .map(|n| n.to_string()),
            );
            row
        }),
    ));
    if let Some(line) = hedging_comparison(runs) {
        let _ = write!(out, "\n{line}\n");
    }

    out.push_str("\nTier call latency (p50 / p99, µs):\n\n");
    let mut header = texts(&["run"]);
    header.extend(tiers.iter().cloned());
    out.push_str(&table(
        header,
        runs.iter().map(|run| {
            let mut row = vec![run.name.clone()];
            row.extend(tiers.iter().map(|tier| match run.latency.get(tier) {
                Some(l) => format!("{} / {}", l.p50_us, l.p99_us),
                None => "-".into(),
            }));
            row
        }),
    ));
    out
}

fn texts(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// A Markdown table: the first column left-aligned, the others right-aligned.
fn table(header: Vec<String>, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = format!(
        "| {} |\n|---|{}\n",
        header.join(" | "),
        "---:|".repeat(header.len().saturating_sub(1))
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The heavy-tail runs side by side: request p99.9 without and with hedging, and the extra
/// tier calls hedging cost.
pub fn hedging_comparison(runs: &[RunReport]) -> Option<String> {
    let find = |s: Scenario| runs.iter().find(|r| r.name == s.name());
    let plain = find(Scenario::PrimaryHeavyTail)?;
    let hedged = find(Scenario::PrimaryHeavyTailHedged)?;
    let (a, b) = (
        plain.request_latency.p999_us,
        hedged.request_latency.p999_us,
    );
    let extra = hedged.tier_calls as f64 / plain.tier_calls.max(1) as f64 - 1.0;
    Some(format!(
        "Hedging on the heavy tail: request p99.9 {a} µs without, {b} µs with ({:.1}x lower); \
         tier calls {} vs {} ({:+.1}%), {} hedges.",
        a as f64 / b.max(1) as f64,
        plain.tier_calls,
        hedged.tier_calls,
        extra * 100.0,
        hedged.hedges
    ))
}
