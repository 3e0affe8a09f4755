//! Calibration: the confidence threshold at which a tier's kept answers reach a target
//! accuracy ([`calibrate`]), and the same for every model tier of a cascade, each run alone on
//! labeled validation data ([`calibrate_tiers`], what `tierhost calibrate` prints).
use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::engine::TierEngine;
use crate::eval::{
    DEFAULT_ROWS_PER_S, EvalError, LabeledRow, ReplayCascade, load_strict, run, scored,
    single_tier_configs,
};
use crate::guest::TierKind;

/// A confidence threshold chosen by [`calibrate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// The smallest `min_confidence` whose answers reach the target accuracy.
    pub min_confidence: f64,
    /// Accuracy of the answers at or above it.
    pub accuracy: f64,
    /// Share of rows answered at or above it.
    pub coverage: f64,
}

/// Chooses the lowest threshold (so the highest coverage) at which the answers with
/// `confidence >= threshold` reach `target` accuracy. `answers` holds (confidence, correct)
/// of every answered row; `rows` counts every row (unanswered ones lower the coverage).
pub fn calibrate(answers: &[(f64, bool)], rows: usize, target: f64) -> Option<Calibration> {
    let mut sorted = answers.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = None;
    let (mut taken, mut correct) = (0usize, 0usize);
    let mut i = 0;
    while i < sorted.len() {
        // Take every answer with this confidence at once: a threshold cannot split ties.
        let threshold = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == threshold {
            taken += 1;
            correct += usize::from(sorted[i].1);
            i += 1;
        }
        let accuracy = correct as f64 / taken as f64;
        if accuracy >= target {
            best = Some(Calibration {
                min_confidence: threshold,
                accuracy,
                coverage: taken as f64 / rows.max(1) as f64,
            });
        }
    }
    best
}

/// What calibration decided for one tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum CalibrationOutcome {
    /// The tier is not a model (its `describe` says rules, safe default or other): its
    /// `min_confidence` is left as it is.
    NotAModel,
    /// The lowest threshold whose kept answers reach the target.
    Threshold(Calibration),
    /// No threshold reaches the target on this data.
    Unreachable,
}

/// The calibration of one tier of a cascade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierCalibration {
    /// The tier.
    pub tier: String,
    /// What the tier says it is.
    pub kind: TierKind,
    /// The accuracy its kept answers must reach.
    pub target: f64,
    /// The decision.
    pub outcome: CalibrationOutcome,
}

impl TierCalibration {
    /// False when no threshold reaches the target (`tierhost calibrate` exits 3).
    pub fn reached(&self) -> bool {
        self.outcome != CalibrationOutcome::Unreachable
    }
}

/// The line `tierhost calibrate` prints: a TOML line to paste for a calibrated tier, a TOML
/// comment otherwise.
impl fmt::Display for TierCalibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tier = &self.tier;
        match &self.outcome {
            CalibrationOutcome::NotAModel => {
                write!(
                    f,
                    "# tier \"{tier}\" ({}): not a model, left as is",
                    self.kind
                )
            }
            CalibrationOutcome::Threshold(c) => write!(
                f,
                "[[tier]] name = \"{tier}\": min_confidence = {:.4}  # accuracy {:.4} on the {:.1}% of rows it keeps",
                c.min_confidence,
                c.accuracy,
                c.coverage * 100.0
            ),
            CalibrationOutcome::Unreachable => write!(
                f,
                "# tier \"{tier}\": no threshold reaches accuracy {} on this data",
                self.target
            ),
        }
    }
}

/// Calibrates every tier of `config` in order: each tier runs alone (no threshold, breaker,
/// hedging or chaos; [`single_tier_configs`]) over `rows`, and a model tier gets the lowest
/// `min_confidence` at which the answers it keeps reach `target` accuracy; other tiers are
/// left as they are. Fails if `target` is outside (0, 1] or a tier does not load.
pub async fn calibrate_tiers(
    engine: &TierEngine,
    config: &Config,
    rows: &[LabeledRow],
    target: f64,
) -> Result<Vec<TierCalibration>, EvalError> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(EvalError::TargetAccuracy(target));
    }
    let mut tiers = Vec::with_capacity(config.tiers.len());
    for (name, alone) in single_tier_configs(config) {
        let tier = alone.tiers[0].name.clone();
        let (replay, kind) = load_alone(engine, &alone).await?;
        let outcome = if kind == TierKind::Model {
            let (_, answers) = run(&name, &replay, rows, "", || {}).await;
            calibrate(&scored(rows, &answers, &tier), rows.len(), target).map_or(
                CalibrationOutcome::Unreachable,
                CalibrationOutcome::Threshold,
            )
        } else {
            CalibrationOutcome::NotAModel
        };
        tiers.push(TierCalibration {
            tier,
            kind,
            target,
            outcome,
        });
    }
    Ok(tiers)
}

/// Loads a one-tier config (from [`single_tier_configs`]) for replay, with what its tier says
/// it is.
pub(super) async fn load_alone(
    engine: &TierEngine,
    alone: &Config,
) -> Result<(ReplayCascade, TierKind), EvalError> {
    let replay = load_strict(engine, alone, DEFAULT_ROWS_PER_S).await?;
    let kind = replay.cascade.tiers()[0]
        .sandbox
        .as_ref()
        .map_or(TierKind::Other, |s| s.plugin().info().kind);
    Ok((replay, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_picks_the_lowest_threshold_that_reaches_the_target() {
        // By confidence: 0.9 ok, 0.8 ok, 0.7 wrong, 0.6 ok, 0.5 wrong; 6 rows (one unanswered).
        let answers = [
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.5, false),
        ];
        let c = calibrate(&answers, 6, 0.75).unwrap();
        assert_eq!(c.min_confidence, 0.6);
        assert_eq!(c.accuracy, 0.75);
        assert!((c.coverage - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(calibrate(&answers, 6, 1.0).unwrap().min_confidence, 0.8);
        assert_eq!(calibrate(&[(0.9, false)], 1, 0.5), None);
    }
}
