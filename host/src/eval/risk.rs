//! Thresholds with a stated risk: `tierhost calibrate --method conformal --alpha A --delta D`.
//!
//! For each model tier, in cascade order and on the rows that reach it, the lowest
//! `min_confidence` such that, with probability at least 1 - δ over the calibration data, the
//! error rate among the requests the tier answers (keeps) is at most α. The procedure is
//! Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei, "Learn then Test: Calibrating
//! Predictive Algorithms to Achieve Risk Control", 2021) with fixed-sequence testing:
//!
//! - candidate thresholds are the distinct confidences the tier gave, strictest first, from
//!   the first that keeps at least ln δ / ln(1 - α) answers (fewer can never pass);
//! - for each, the null hypothesis "the error among kept answers exceeds α" is tested with the
//!   exact binomial p-value P(Binomial(n, α) <= e), where n answers are kept and e are wrong
//!   (given n, the kept rows are an i.i.d. sample of the kept population);
//! - thresholds are accepted in order while the p-value is at most δ, and testing stops at the
//!   first that is not. Fixed-sequence testing controls the family-wise error at δ without a
//!   multiplicity correction, so every accepted threshold, the lowest included, keeps its
//!   promise with probability >= 1 - δ.
//!
//! The guarantee assumes the calibration rows are exchangeable with the requests served later
//! (no drift, no duplicates shared with the training data). When no threshold passes, the
//! report says why: too few answered rows to reject at δ even with zero errors
//! (n >= ln δ / ln(1 - α)), or an α below what the data supports (the lowest error bound of any
//! threshold is printed).
use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::engine::TierEngine;
use crate::eval::promise::{Scope, conformal_thresholds, tier_scores};
use crate::eval::{EvalError, LabeledRow};
use crate::guest::TierKind;
use crate::{Answer, Decision};

/// The risk a threshold must control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RiskTarget {
    /// Largest acceptable error rate among answered requests, in (0, 1).
    pub alpha: f64,
    /// Largest acceptable probability that the calibration itself is wrong, in (0, 1).
    pub delta: f64,
}

impl RiskTarget {
    /// Checks both are within (0, 1).
    pub fn new(alpha: f64, delta: f64) -> Result<Self, EvalError> {
        let unit = |x: f64| x > 0.0 && x < 1.0;
        if !unit(alpha) || !unit(delta) {
            return Err(EvalError::RiskTarget { alpha, delta });
        }
        Ok(Self { alpha, delta })
    }

    /// Answered rows needed to certify α at δ even when all of them are right.
    pub fn min_answered(&self) -> usize {
        (self.delta.ln() / (1.0 - self.alpha).ln()).ceil() as usize
    }
}

/// A threshold that passed the test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RiskThreshold {
    /// The lowest accepted `min_confidence`.
    pub min_confidence: f64,
    /// Rows that reached the tier (all rows for the first tier).
    pub reaching: usize,
    /// Answers kept at this threshold.
    pub kept: usize,
    /// Wrong answers among them.
    pub errors: usize,
    /// Upper (1 - δ) confidence bound of the error among kept answers (Clopper-Pearson).
    pub error_bound: f64,
    /// The test's p-value at this threshold.
    pub p_value: f64,
}

/// What risk calibration decided for one tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum RiskOutcome {
    /// Not a model: its configured `min_confidence` is kept, and its kept answers leave the
    /// rows that reach the next tier.
    NotAModel {
        /// Rows that reached it.
        reaching: usize,
        /// Rows it kept at its configured threshold.
        kept: usize,
    },
    /// A threshold with the guarantee.
    Guaranteed(RiskThreshold),
    /// Even with no wrong answer, the tier answered too few of the rows that reach it.
    TooFewRows {
        /// Rows that reached it.
        reaching: usize,
        /// Rows it answered.
        answered: usize,
        /// Answered rows needed (`ln δ / ln(1 - α)`).
        needed: usize,
    },
    /// The data has enough rows, but every threshold's errors are too many for α.
    Infeasible {
        /// Rows that reached it.
        reaching: usize,
        /// The lowest (1 - δ) upper bound of the kept error of any threshold: no α below it
        /// can be certified on this data (None: the tier answered nothing).
        lowest_alpha: Option<f64>,
    },
}

/// The risk calibration of one tier of a cascade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierRisk {
    /// The tier.
    pub tier: String,
    /// What the tier says it is.
    pub kind: TierKind,
    /// The target.
    pub target: RiskTarget,
    /// The decision.
    pub outcome: RiskOutcome,
}

impl TierRisk {
    /// False when a model tier got no threshold (`tierhost calibrate` exits 3).
    pub fn reached(&self) -> bool {
        matches!(
            self.outcome,
            RiskOutcome::NotAModel { .. } | RiskOutcome::Guaranteed(_)
        )
    }

    /// The threshold to write into the config, if any.
    pub fn min_confidence(&self) -> Option<f64> {
        match &self.outcome {
            RiskOutcome::Guaranteed(t) => Some(t.min_confidence),
            _ => None,
        }
    }
}

impl fmt::Display for TierRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tier, RiskTarget { alpha, delta }) = (&self.tier, self.target);
        match &self.outcome {
            RiskOutcome::NotAModel { reaching, kept } => write!(
                f,
                "# tier \"{tier}\" ({}): not a model, left as is; keeps {kept} of the {reaching} rows that reach it",
                self.kind
            ),
            RiskOutcome::Guaranteed(t) => write!(
                f,
                "[[tier]] name = \"{tier}\": min_confidence = {:.4}  # error among kept answers <= {alpha} with probability >= {} (Learn-then-Test): {} of {} kept wrong on the {} rows reaching it, {:.0}% kept; {:.1}% upper bound",
                t.min_confidence,
                1.0 - delta,
                t.errors,
                t.kept,
                t.reaching,
                100.0 * t.kept as f64 / t.reaching.max(1) as f64,
                100.0 * t.error_bound,
            ),
            RiskOutcome::TooFewRows {
                reaching,
                answered,
                needed,
            } => write!(
                f,
                "# tier \"{tier}\": too few rows for alpha {alpha} at delta {delta}: it answered {answered} of the {reaching} rows reaching it; certifying needs >= {needed} answered rows even with no error (need >= {} more answered rows)",
                needed - answered
            ),
            RiskOutcome::Infeasible {
                reaching,
                lowest_alpha,
            } => match lowest_alpha {
                Some(lowest) => write!(
                    f,
                    "# tier \"{tier}\": infeasible at alpha {alpha} (delta {delta}) on the {reaching} rows reaching it: no threshold's error bound is below {lowest:.4}, so no alpha under that can be certified here"
                ),
                None => write!(
                    f,
                    "# tier \"{tier}\": infeasible at alpha {alpha} (delta {delta}): no threshold is certifiable on the {reaching} rows reaching it"
                ),
            },
        }
    }
}

/// ln C(n, k) for every k in 0..=last, built incrementally (O(last), not O(n): the tails
/// this module needs have few events).
fn ln_binomials(n: usize, last: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(last + 1);
    let mut acc = 0.0f64;
    out.push(acc);
    for k in 1..=last.min(n) {
        acc += ((n - k + 1) as f64).ln() - (k as f64).ln();
        out.push(acc);
    }
    out
}

/// P(Binomial(n, p) <= e): the exact lower tail.
pub fn binomial_cdf(e: usize, n: usize, p: f64) -> f64 {
    if e >= n {
        return 1.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let ln_c = ln_binomials(n, e);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let terms: Vec<f64> = (0..=e)
        .map(|k| ln_c[k] + k as f64 * lp + (n - k) as f64 * lq)
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// Clopper-Pearson upper (1 - δ) bound of a rate with `e` events in `n` trials: the p at which
/// P(Binomial(n, p) <= e) = δ (bisection).
pub fn upper_bound(e: usize, n: usize, delta: f64) -> f64 {
    if n == 0 || e >= n {
        return 1.0;
    }
    let (mut lo, mut hi) = (e as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(e, n, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Learn-then-Test over one tier's answers: `answers` holds (confidence, correct) of every row
/// that reached the tier and got an answer; `reaching` counts every row that reached it.
pub fn risk_threshold(answers: &[(f64, bool)], reaching: usize, target: RiskTarget) -> RiskOutcome {
    let mut sorted = answers.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let needed = target.min_answered();
    if sorted.len() < needed {
        return RiskOutcome::TooFewRows {
            reaching,
            answered: sorted.len(),
            needed,
        };
    }
    let mut accepted = None;
    let mut lowest_alpha: Option<f64> = None;
    let (mut kept, mut errors) = (0usize, 0usize);
    let mut testing = true;
    let mut i = 0;
    while i < sorted.len() {
        // A threshold cannot split ties: take every answer with this confidence at once.
        let threshold = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == threshold {
            kept += 1;
            errors += usize::from(!sorted[i].1);
            i += 1;
        }
        // Thresholds keeping fewer answers than `needed` cannot be rejected even with no
        // error: the sequence starts at the first that keeps enough. Where it starts depends on
        // the confidences only, never on which answers are wrong, so the order stays fixed.
        if testing && kept >= needed {
            let p_value = binomial_cdf(errors, kept, target.alpha);
            if p_value <= target.delta {
                accepted = Some(RiskThreshold {
                    min_confidence: threshold,
                    reaching,
                    kept,
                    errors,
                    error_bound: upper_bound(errors, kept, target.delta),
                    p_value,
                });
            } else {
                testing = false;
            }
        }
        if accepted.is_none() {
            let bound = upper_bound(errors, kept, target.delta);
            lowest_alpha = Some(lowest_alpha.map_or(bound, |l| l.min(bound)));
        }
    }
    match accepted {
        Some(t) => RiskOutcome::Guaranteed(t),
        None => RiskOutcome::Infeasible {
            reaching,
            lowest_alpha,
        },
    }
}

/// (confidence, correct) of `answer` if `tier` answered the row.
pub(super) fn scored_one(row: &LabeledRow, answer: &Answer, tier: &str) -> Option<(f64, bool)> {
    match &answer.decision {
        Decision::Answer {
            label, confidence, ..
        } if answer.served_by.tier == tier => Some((*confidence, *label == row.label)),
        _ => None,
    }
}

/// Calibrates the model tiers of `config` in cascade order: each tier runs alone over every
/// row (no threshold, breaker, hedging or chaos), then the tiers are walked in order, each on
/// the rows that no earlier tier kept (on every row with [`Scope::Alone`]); a model tier gets the Learn-then-Test threshold for
/// `target`, any other tier keeps its configured `min_confidence`. A model tier without a
/// threshold keeps nothing in the walk (every row it sees goes on), which is what raising its
/// threshold to 1 would do.
pub async fn calibrate_risk(
    engine: &TierEngine,
    config: &Config,
    rows: &[LabeledRow],
    target: RiskTarget,
    scope: Scope,
) -> Result<Vec<TierRisk>, EvalError> {
    let tiers = tier_scores(engine, config, rows).await?;
    let all: Vec<usize> = (0..rows.len()).collect();
    Ok(tiers
        .iter()
        .zip(conformal_thresholds(&tiers, &all, target, scope))
        .map(|(tier, (_, outcome))| TierRisk {
            tier: tier.tier.clone(),
            kind: tier.kind,
            target,
            outcome,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_hand_values() {
        // P(Bin(10, 0.5) <= 2) = (1 + 10 + 45) / 1024.
        assert!((binomial_cdf(2, 10, 0.5) - 56.0 / 1024.0).abs() < 1e-12);
        // P(Bin(45, 0.05) <= 0) = 0.95^45.
        assert!((binomial_cdf(0, 45, 0.05) - 0.95f64.powi(45)).abs() < 1e-12);
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
        // Clopper-Pearson: 0 of n at 1 - delta is 1 - delta^(1/n).
        let b = upper_bound(0, 45, 0.1);
        assert!((b - (1.0 - 0.1f64.powf(1.0 / 45.0))).abs() < 1e-9, "{b}");
    }

    #[test]
    fn too_few_rows_and_the_count_needed() {
        let t = RiskTarget::new(0.05, 0.1).unwrap();
        assert_eq!(t.min_answered(), 45); // 0.95^45 = 0.0994 <= 0.1 < 0.95^44
        let answers = vec![(0.9, true); 44];
        assert_eq!(
            risk_threshold(&answers, 50, t),
            RiskOutcome::TooFewRows {
                reaching: 50,
                answered: 44,
                needed: 45
            }
        );
        let answers = vec![(0.9, true); 45];
        let RiskOutcome::Guaranteed(g) = risk_threshold(&answers, 50, t) else {
            panic!()
        };
        assert_eq!((g.kept, g.errors), (45, 0));
        assert!(g.p_value <= 0.1 && g.error_bound <= 0.05 + 1e-9);
    }

    #[test]
    fn fixed_sequence_stops_at_the_first_failure() {
        let t = RiskTarget::new(0.1, 0.1).unwrap();
        // 100 right answers at 0.99..0.90, then 30 wrong ones at 0.5, then 100 right at 0.4:
        // the test stops at 0.5, so 0.4 is never accepted even though the error there
        // (30 / 530) would pass on its own: a valid guarantee cannot pick thresholds freely.
        let mut answers: Vec<(f64, bool)> =
            (0..100).map(|i| (0.99 - i as f64 * 0.0009, true)).collect();
        answers.extend((0..30).map(|_| (0.5, false)));
        answers.extend((0..400).map(|_| (0.4, true)));
        assert!(binomial_cdf(30, 530, 0.1) <= 0.1, "0.4 alone would pass");
        let RiskOutcome::Guaranteed(g) = risk_threshold(&answers, 530, t) else {
            panic!()
        };
        assert!(g.min_confidence > 0.5, "{g:?}");
        assert_eq!(g.errors, 0);
    }

    #[test]
    fn an_alpha_below_what_the_data_supports_is_infeasible_and_names_the_lowest() {
        let t = RiskTarget::new(0.01, 0.1).unwrap();
        // 10% wrong everywhere, interleaved: nothing certifies 1%.
        let answers: Vec<(f64, bool)> = (0..1000)
            .map(|i| (1.0 - i as f64 / 1000.0, i % 10 != 0))
            .collect();
        match risk_threshold(&answers, 1000, t) {
            RiskOutcome::Infeasible {
                lowest_alpha: Some(l),
                ..
            } => assert!(l > 0.1 && l < 0.2, "{l}"),
            other => panic!("{other:?}"),
        }
        assert!(RiskTarget::new(0.0, 0.1).is_err());
        assert!(RiskTarget::new(0.1, 1.0).is_err());
        assert!(RiskTarget::new(f64::NAN, 0.1).is_err());
    }

    /// The guarantee, checked by simulation: on many calibration sets drawn from a known
    /// population, the chosen threshold's true error exceeds alpha in at most delta of them.
    #[test]
    fn the_guarantee_holds_in_simulation() {
        let t = RiskTarget::new(0.1, 0.1).unwrap();
        // Population: confidence c uniform in (0, 1); P(wrong | c) = 0.3 * (1 - c). The true
        // error among answers with c >= s is 0.3 * (1 - s) / 2 = 0.15 * (1 - s).
        let true_error = |s: f64| 0.15 * (1.0 - s);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut violations, trials) = (0, 300);
        for _ in 0..trials {
            let answers: Vec<(f64, bool)> = (0..400)
                .map(|_| {
                    let c = uniform();
                    (c, uniform() >= 0.3 * (1.0 - c))
                })
                .collect();
            if let RiskOutcome::Guaranteed(g) = risk_threshold(&answers, 400, t)
                && true_error(g.min_confidence) > t.alpha
            {
                violations += 1;
            }
        }
        assert!(
            violations as f64 / trials as f64 <= t.delta,
            "{violations} of {trials}"
        );
    }
}
