//! Offline evaluation: replays labeled rows through a cascade under fault scenarios and reports,
//! per scenario, what served each request and how well: the numbers a team needs before it
//! trusts a cascade in production (`tierhost eval`); and chooses each model tier's
//! `min_confidence` from labeled validation data (`tierhost calibrate`).
//!
//! - `data`: labeled CSV rows ([`LabeledRow`], [`Dataset`]) and the label mapping;
//! - `scenario`: fault scenarios as config transformations ([`Scenario`]) and the single-tier
//!   baselines;
//! - `score`: one run's numbers ([`RunReport`]: accuracy, coverage, AUC, latency, fallbacks)
//!   and the accuracy-vs-coverage curve;
//! - `report`: a whole evaluation ([`evaluate`] -> [`EvalReport`]: Markdown, JSON, SVG plots);
//! - `calibrate`: confidence thresholds ([`calibrate`], [`calibrate_tiers`]);
//! - `shadow`: candidate versions in the shadow of their tiers during one scenario's replay
//!   ([`ShadowCandidates`]) and the decision diffs they leave ([`ShadowRuns`]);
//! - this module: loading a cascade for a replay ([`load_strict`]) and replaying rows ([`run`]).
//!
//! Scenarios inject faults with the primary tier's own `[tier.chaos]` setting, so every
//! injected fault really happens inside a sandbox and is classified by the same machinery as a
//! real one.
mod calibrate;
mod data;
pub mod plots;
mod promise;
mod report;
mod risk;
mod scenario;
mod score;
mod shadow;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use calibrate::{Calibration, CalibrationOutcome, TierCalibration, calibrate, calibrate_tiers};
pub use data::{Dataset, LabeledRow, parse_labels, read_labeled_csv};
pub use promise::{
    AnsweredError, BootstrapTier, PromiseReport, Scope, TierScores, Verdict, check_promise,
    clopper_pearson, shared_rows, tier_scores,
};
pub use report::{
    CURVE_THRESHOLDS, EscalationOutput, EscalationsWritten, EvalOptions, EvalProgress, EvalReport,
    SharedRows, evaluate, hedging_comparison, markdown,
};
pub use risk::{
    RiskOutcome, RiskTarget, RiskThreshold, TierRisk, binomial_cdf, calibrate_risk, risk_threshold,
    upper_bound,
};
pub use scenario::{
    DEFAULT_SCENARIO_HEDGE_MS, HEAVY_TAIL_MS, HEAVY_TAIL_RATE, SHIFTED, Scenario, shifted,
    single_tier_configs,
};
pub use score::{
    Latency, Quality, RequestLatency, RunReport, ShiftedQuality, auc, coverage_curve, scored,
    summarize,
};
pub use shadow::{MAX_DISAGREEMENTS, ShadowCandidates, ShadowRuns};
pub use write::{calibration_notes, write_thresholds};

use crate::answer::Answer;
use crate::cascade::Cascade;
use crate::config::{Config, EscalationConfig};
use crate::engine::TierEngine;
use crate::error::ConfigError;
use crate::policy::clock::ManualClock;
use crate::policy::memory::PolicyMemory;

/// Why an evaluation or a calibration could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The CSV file cannot be read, or a row of it cannot be parsed.
    // Errors of other crates are part of the message, not chained sources, so `{:#}` prints
    // them once.
    #[error("{path}: {}{error}", row.map(|r| format!("row {r}: ")).unwrap_or_default())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The row (1-based, the header is row 1), when one row is at fault.
        row: Option<usize>,
        /// The CSV reader's error.
        error: csv::Error,
    },
    /// The CSV has no label column.
    #[error("{path}: no `{column}` column (header: {header:?})")]
    NoLabelColumn {
        /// The file.
        path: PathBuf,
        /// The label column asked for.
        column: String,
        /// The columns the file has.
        header: Vec<String>,
    },
    /// A row is shorter than the header and has no label cell.
    #[error("{path}: row {row} has no label")]
    NoLabel {
        /// The file.
        path: PathBuf,
        /// The row (1-based, the header is row 1).
        row: usize,
    },
    /// The CSV has a header and no rows.
    #[error("{0}: no rows")]
    NoRows(PathBuf),
    /// An entry of a label mapping is not `VALUE=LABEL`.
    #[error("`{0}` is not VALUE=LABEL")]
    Labels(String),
    /// No such scenario.
    #[error(
        "unknown scenario `{0}` (known: {known})",
        known = Scenario::ALL.map(|s| s.name()).join(", ")
    )]
    UnknownScenario(String),
    /// Escalations cannot be written as asked (`tierhost eval --escalations`).
    #[error("escalations: {0}")]
    Escalations(String),
    /// A shadow candidate cannot run as asked (`tierhost eval --shadow`): no such tier, a tier
    /// named twice, or a candidate that does not load.
    #[error("shadow: {0}")]
    Shadow(String),
    /// The replay rate is not a positive number of rows per second.
    #[error("the replay rate must be > 0 rows/s, got {0}")]
    Rate(f64),
    /// The target accuracy of a calibration is outside (0, 1].
    #[error("the target accuracy must be within (0, 1], got {0}")]
    TargetAccuracy(f64),
    /// The α or δ of a risk calibration is outside (0, 1).
    #[error("alpha and delta must be within (0, 1), got alpha {alpha}, delta {delta}")]
    RiskTarget {
        /// The asked error rate among answers.
        alpha: f64,
        /// The asked failure probability of the calibration.
        delta: f64,
    },
    /// `calibrate --write` cannot update the config: it is not valid TOML, or a tier is not
    /// an entry of its `[[tier]]` array.
    #[error("cannot update the config: {0}")]
    WriteConfig(String),
    /// The cascade (or a scenario's copy of it) does not load, or a tier of it does not.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A report file or directory cannot be written.
    #[error("{path}: cannot write: {error}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The JSON report cannot be serialized.
    #[error("cannot serialize the report: {0}")]
    Json(String),
    /// A plot cannot be drawn.
    #[error("{path}: plot: {message}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// The plotting library's error.
        message: String,
    },
}

/// Default replay rate: each row stands for 10 ms of traffic on the cascade's clock, so time
/// windows (breaker open periods, chaos windows) mean the same in a replay and in production
/// at 100 requests per second.
pub const DEFAULT_ROWS_PER_S: f64 = 100.0;

/// A cascade loaded for a replay: fresh policy state on a clock the replay moves.
pub struct ReplayCascade {
    /// The cascade.
    pub cascade: Cascade,
    clock: Arc<ManualClock>,
    step: Duration,
}

/// Loads a scenario's cascade on `engine` with fresh policy state, for a replay at
/// `rows_per_s`; fails if any tier does not load (a replay with a tier missing would measure
/// another cascade). No audit file and no review queue: eval must not write production logs
/// nor put replayed rows in front of reviewers (see [`load_escalating`] for a queue of its own).
pub async fn load_strict(
    engine: &TierEngine,
    config: &Config,
    rows_per_s: f64,
) -> Result<ReplayCascade, EvalError> {
    load_replay(engine, config, rows_per_s, None).await
}

/// [`load_strict`], with the replay's escalations committed to the queue of `escalation`
/// (`tierhost eval --escalations`) instead of none.
pub async fn load_escalating(
    engine: &TierEngine,
    config: &Config,
    rows_per_s: f64,
    escalation: &EscalationConfig,
) -> Result<ReplayCascade, EvalError> {
    load_replay(engine, config, rows_per_s, Some(escalation)).await
}

async fn load_replay(
    engine: &TierEngine,
    config: &Config,
    rows_per_s: f64,
    escalation: Option<&EscalationConfig>,
) -> Result<ReplayCascade, EvalError> {
    if !(rows_per_s.is_finite() && rows_per_s > 0.0) {
        return Err(EvalError::Rate(rows_per_s));
    }
    let mut config = config.clone();
    config.cascade.audit_log = None;
    config.escalation = escalation.cloned();
    let clock = Arc::new(ManualClock::new());
    let memory = PolicyMemory::new(clock.clone());
    let cascade = Cascade::with_memory(engine.clone(), &config, &memory)
        .await?
        .strict(&config)?;
    Ok(ReplayCascade {
        cascade,
        clock,
        step: Duration::from_secs_f64(1.0 / rows_per_s),
    })
}

/// Replays `rows` through a cascade one at a time and summarizes; `progress` is called after
/// each row. The cascade's clock advances by `1 / rows_per_s` per row (see [`load_strict`]),
/// so time-based policies (breaker windows and open periods, chaos windows) see the replay as
/// traffic at that rate whatever the machine's speed.
pub async fn run(
    name: &str,
    replay: &ReplayCascade,
    rows: &[LabeledRow],
    positive_label: &str,
    mut progress: impl FnMut(),
) -> (RunReport, Vec<Answer>) {
    let mut answers = Vec::with_capacity(rows.len());
    for row in rows {
        answers.push(replay.cascade.predict(&row.request).await);
        replay.clock.advance(replay.step);
        progress();
    }
    (summarize(name, rows, &answers, positive_label), answers)
}
