//! Does the calibration keep its promise? `tierhost eval --alpha A [--delta D] [--bootstrap N]
//! [--train FILE]`.
//!
//! - **Answered error with an interval**: each tier runs alone over every row once; the tiers
//!   are then walked in cascade order at their configured `min_confidence`, each on the rows no
//!   earlier tier kept (as the cascade serves them when every tier is healthy). Per tier: the
//!   answers kept, the wrong ones, and the two-sided Clopper-Pearson interval of the error at
//!   confidence 1 - δ, judged against α: `certified` when the upper bound is at most α,
//!   `within (not certified)` when only the point estimate is, `exceeds` otherwise.
//! - **Bootstrap**: N random halvings of the rows; on each, the conformal calibration
//!   (Learn-then-Test, [`crate::eval::calibrate_risk`]'s walk) picks thresholds on one half and
//!   the other half measures each model tier's answered error at them. Reported: in how many
//!   splits the measured error was at most α, counting a split that certified no threshold as
//!   held (the tier then answers nothing). Learn-then-Test promises the true error is within α
//!   in at least 1 - δ of calibrations; a measured error on a finite half is noisier than the
//!   true one, and with a small pool a lucky calibration half leaves an unlucky test half, so
//!   this is a conservative check of the promise.
//! - **Shared rows**: rows of the evaluated data whose features equal a row of the training
//!   data (`--train`), counted, since accuracy on them is memory, not generalisation.
use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::engine::TierEngine;
use crate::eval::calibrate::load_alone;
use crate::eval::risk::{RiskOutcome, RiskTarget, binomial_cdf, risk_threshold, scored_one};
use crate::eval::{EvalError, LabeledRow, run, single_tier_configs};
use crate::guest::TierKind;
use crate::request::FeatureValue;

/// Which rows each tier is calibrated and measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// In cascade order, each tier on the rows that no earlier tier kept: what a tier sees
    /// while every tier before it is healthy.
    #[default]
    Cascade,
    /// Each tier on every row: what a fallback tier sees while the tiers before it are down
    /// (breaker open, deadline, trap), when it serves all the traffic.
    Alone,
}

impl Scope {
    /// The rows tier `i` sees next: with `Cascade`, what is left of `reaching`; with `Alone`,
    /// all of `rows` again.
    fn next<'a>(self, reaching: &'a mut Vec<usize>, rows: &[usize]) -> &'a mut Vec<usize> {
        if self == Scope::Alone {
            reaching.clear();
            reaching.extend_from_slice(rows);
        }
        reaching
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Cascade => "cascade",
            Scope::Alone => "alone",
        })
    }
}

/// One tier's answers when it runs alone over every row: `(confidence, correct)` per row it
/// answered, `None` where it did not.
#[derive(Debug, Clone)]
pub struct TierScores {
    /// The tier.
    pub tier: String,
    /// What it says it is.
    pub kind: TierKind,
    /// Its configured `min_confidence`.
    pub configured: f64,
    /// Per row.
    pub scores: Vec<Option<(f64, bool)>>,
}

/// Runs every tier of `config` alone over `rows` (no threshold, breaker, hedging or chaos).
pub async fn tier_scores(
    engine: &TierEngine,
    config: &Config,
    rows: &[LabeledRow],
) -> Result<Vec<TierScores>, EvalError> {
    let mut out = Vec::with_capacity(config.tiers.len());
    for ((name, alone), configured) in single_tier_configs(config).into_iter().zip(&config.tiers) {
        let tier = alone.tiers[0].name.clone();
        let (replay, kind) = load_alone(engine, &alone).await?;
        let (_, answers) = run(&name, &replay, rows, "", || {}).await;
        let scores = rows
            .iter()
            .zip(&answers)
            .map(|(row, answer)| scored_one(row, answer, &tier))
            .collect();
        out.push(TierScores {
            tier,
            kind,
            configured: configured.min_confidence,
            scores,
        });
    }
    Ok(out)
}

/// The cascade walk over the rows `rows` (indices): tier `i` keeps the rows that reach it and
/// that it answered with confidence at least `thresholds[i]` (`None`: it keeps nothing); with
/// [`Scope::Alone`] every tier sees all of `rows`. Per tier: (rows reaching it, kept, wrong
/// among kept).
pub fn walk(
    tiers: &[TierScores],
    rows: &[usize],
    thresholds: &[Option<f64>],
    scope: Scope,
) -> Vec<(usize, usize, usize)> {
    let mut reaching: Vec<usize> = rows.to_vec();
    let mut out = Vec::with_capacity(tiers.len());
    for (tier, threshold) in tiers.iter().zip(thresholds) {
        let reaching = scope.next(&mut reaching, rows);
        let (mut kept, mut errors) = (0, 0);
        let before = reaching.len();
        reaching.retain(|&r| match (tier.scores[r], threshold) {
            (Some((confidence, correct)), Some(t)) if confidence >= *t => {
                kept += 1;
                errors += usize::from(!correct);
                false
            }
            _ => true,
        });
        out.push((before, kept, errors));
    }
    out
}

/// Learn-then-Test thresholds in cascade order on the rows `rows` (each tier on all of them
/// with [`Scope::Alone`]): a model tier gets its certified threshold (or keeps nothing without
/// one), any other tier its configured one.
pub fn conformal_thresholds(
    tiers: &[TierScores],
    rows: &[usize],
    target: RiskTarget,
    scope: Scope,
) -> Vec<(Option<f64>, RiskOutcome)> {
    let mut reaching: Vec<usize> = rows.to_vec();
    let mut out = Vec::with_capacity(tiers.len());
    for tier in tiers {
        let reaching = scope.next(&mut reaching, rows);
        let answers: Vec<(f64, bool)> = reaching.iter().filter_map(|&r| tier.scores[r]).collect();
        let (threshold, outcome) = if tier.kind == TierKind::Model {
            let outcome = risk_threshold(&answers, reaching.len(), target);
            let threshold = match &outcome {
                RiskOutcome::Guaranteed(t) => Some(t.min_confidence),
                _ => None,
            };
            (threshold, outcome)
        } else {
            let kept = answers
                .iter()
                .filter(|(c, _)| *c >= tier.configured)
                .count();
            (
                Some(tier.configured),
                RiskOutcome::NotAModel {
                    reaching: reaching.len(),
                    kept,
                },
            )
        };
        if let Some(t) = threshold {
            reaching.retain(|&r| !tier.scores[r].is_some_and(|(c, _)| c >= t));
        }
        out.push((threshold, outcome));
    }
    out
}

/// Two-sided Clopper-Pearson interval of a rate with `e` events in `n` trials at confidence
/// `1 - delta` (each side `delta / 2`).
pub fn clopper_pearson(e: usize, n: usize, delta: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let side = delta / 2.0;
    let upper = crate::eval::upper_bound(e, n, side);
    // Lower: the p at which P(Binomial(n, p) >= e) = side, i.e. 1 - P(<= e - 1) = side.
    let lower = if e == 0 {
        0.0
    } else {
        let (mut lo, mut hi) = (0.0, e as f64 / n as f64);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if 1.0 - binomial_cdf(e - 1, n, mid) < side {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    (lower, upper)
}

/// How a tier's answered error compares with α.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The interval's upper end is at most α.
    Certified,
    /// The point estimate is at most α, the upper end is not.
    WithinNotCertified,
    /// The point estimate is above α.
    Exceeds,
    /// The tier kept no answer.
    NoAnswers,
}

/// One tier's answered error at its configured threshold.
#[derive(Debug, Clone, Serialize)]
pub struct AnsweredError {
    /// The tier.
    pub tier: String,
    /// What it says it is.
    pub kind: TierKind,
    /// Its configured `min_confidence`.
    pub min_confidence: f64,
    /// Rows that reached it.
    pub reaching: usize,
    /// Answers it kept.
    pub kept: usize,
    /// Wrong ones among them.
    pub errors: usize,
    /// Clopper-Pearson interval of the error (1 - δ).
    pub interval: (f64, f64),
    /// Against α.
    pub verdict: Verdict,
}

/// In how many bootstrap splits a model tier's measured error stayed within α.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapTier {
    /// The tier.
    pub tier: String,
    /// Splits whose calibration half certified a threshold for it.
    pub calibrated: usize,
    /// Of those, splits where the error it kept on the test half was at most α. The promise
    /// counts `held + (splits - calibrated)`: a split that certifies no threshold leaves the
    /// tier answering nothing, which is within α.
    pub held: usize,
    /// Mean share of the test rows reaching it that it kept (calibrated splits).
    pub mean_kept_share: f64,
    /// Mean number of test rows it kept (calibrated splits): the measured error's sample size.
    pub mean_kept: f64,
    /// Mean error among what it kept on the test half (calibrated splits).
    pub mean_error: f64,
    /// Largest such error.
    pub worst_error: f64,
}

/// What `eval --alpha` reports.
#[derive(Debug, Clone, Serialize)]
pub struct PromiseReport {
    /// α and δ.
    pub target: RiskTarget,
    /// The rows each tier was measured on.
    pub scope: Scope,
    /// Rows evaluated.
    pub rows: usize,
    /// Per tier, at the configured thresholds.
    pub answered: Vec<AnsweredError>,
    /// Bootstrap splits run (0: none).
    pub splits: usize,
    /// Per model tier, over the splits.
    pub bootstrap: Vec<BootstrapTier>,
}

/// The answered error of every tier at its configured threshold, and `splits` bootstrap
/// halvings (seeded) checking the conformal calibration on held-out rows.
pub fn check_promise(
    tiers: &[TierScores],
    target: RiskTarget,
    scope: Scope,
    splits: usize,
    seed: u64,
) -> PromiseReport {
    let n = tiers.first().map_or(0, |t| t.scores.len());
    let all: Vec<usize> = (0..n).collect();
    let configured: Vec<Option<f64>> = tiers.iter().map(|t| Some(t.configured)).collect();
    let answered = tiers
        .iter()
        .zip(walk(tiers, &all, &configured, scope))
        .map(|(tier, (reaching, kept, errors))| {
            let interval = clopper_pearson(errors, kept, target.delta);
            let verdict = if kept == 0 {
                Verdict::NoAnswers
            } else if interval.1 <= target.alpha {
                Verdict::Certified
            } else if errors as f64 / kept as f64 <= target.alpha {
                Verdict::WithinNotCertified
            } else {
                Verdict::Exceeds
            };
            AnsweredError {
                tier: tier.tier.clone(),
                kind: tier.kind,
                min_confidence: tier.configured,
                reaching,
                kept,
                errors,
                interval,
                verdict,
            }
        })
        .collect();

    let mut rng = SplitMix(seed);
    let models: Vec<usize> = (0..tiers.len())
        .filter(|&i| tiers[i].kind == TierKind::Model)
        .collect();
    let mut sums = vec![(0usize, 0usize, 0.0f64, 0.0f64, 0.0f64, 0.0f64); tiers.len()];
    for _ in 0..splits {
        let mut order = all.clone();
        // Fisher-Yates.
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (calibration, test) = order.split_at(order.len() / 2);
        let thresholds: Vec<Option<f64>> = conformal_thresholds(tiers, calibration, target, scope)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        for (i, (reaching, kept, errors)) in walk(tiers, test, &thresholds, scope)
            .into_iter()
            .enumerate()
        {
            if !models.contains(&i) || thresholds[i].is_none() {
                continue;
            }
            let error = if kept == 0 {
                0.0
            } else {
                errors as f64 / kept as f64
            };
            let s = &mut sums[i];
            s.0 += 1;
            s.1 += usize::from(error <= target.alpha);
            s.2 += kept as f64 / reaching.max(1) as f64;
            s.3 += error;
            s.4 = s.4.max(error);
            s.5 += kept as f64;
        }
    }
    let bootstrap = if splits == 0 {
        Vec::new()
    } else {
        models
            .iter()
            .map(|&i| {
                let (calibrated, held, share, error, worst, kept) = sums[i];
                let mean = |x: f64| {
                    if calibrated == 0 {
                        0.0
                    } else {
                        x / calibrated as f64
                    }
                };
                BootstrapTier {
                    tier: tiers[i].tier.clone(),
                    calibrated,
                    held,
                    mean_kept_share: mean(share),
                    mean_kept: mean(kept),
                    mean_error: mean(error),
                    worst_error: worst,
                }
            })
            .collect()
    };
    PromiseReport {
        target,
        scope,
        rows: n,
        answered,
        splits,
        bootstrap,
    }
}

impl fmt::Display for PromiseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RiskTarget { alpha, delta } = self.target;
        writeln!(
            f,
            "answered error at the configured thresholds (each tier alone over the {} rows, {}; \
             {:.0}% Clopper-Pearson interval, alpha {alpha}):",
            self.rows,
            match self.scope {
                Scope::Cascade => "walked in cascade order",
                Scope::Alone => "each on every row: --scope alone",
            },
            100.0 * (1.0 - delta)
        )?;
        writeln!(
            f,
            "  {:<14} {:>8} {:>14} {:>7} {:>8} {:>17}  vs alpha",
            "tier", "min_conf", "kept/reaching", "wrong", "error", "interval"
        )?;
        for a in &self.answered {
            let error = if a.kept == 0 {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * a.errors as f64 / a.kept as f64)
            };
            let verdict = match a.verdict {
                Verdict::Certified => "certified (upper end <= alpha)",
                Verdict::WithinNotCertified => "within, not certified (upper end > alpha)",
                Verdict::Exceeds => "EXCEEDS alpha",
                Verdict::NoAnswers => "no answers kept",
            };
            writeln!(
                f,
                "  {:<14} {:>8.4} {:>14} {:>7} {:>8} {:>17}  {verdict}",
                a.tier,
                a.min_confidence,
                format!("{}/{}", a.kept, a.reaching),
                a.errors,
                error,
                format!(
                    "[{:.2}%, {:.2}%]",
                    100.0 * a.interval.0,
                    100.0 * a.interval.1
                ),
            )?;
        }
        if self.splits > 0 {
            writeln!(
                f,
                "bootstrap: {} random halvings; calibrate --method conformal (alpha {alpha}, \
                 delta {delta}, scope {}) on one half, measure on the other (the promise: error \
                 <= alpha in >= {:.0}% of calibrations):",
                self.splits,
                self.scope,
                100.0 * (1.0 - delta)
            )?;
            for b in &self.bootstrap {
                // Learn-then-Test's promise is over every calibration: a split that certifies
                // no threshold leaves the tier answering nothing (error 0 <= alpha).
                let uncertified = self.splits - b.calibrated;
                let promise = (b.held + uncertified) as f64 / self.splits as f64;
                let verdict = if promise >= 1.0 - delta {
                    "as promised".to_string()
                } else if b.calibrated > 0 && b.mean_error <= alpha {
                    // One standard error of an error rate near alpha on this many rows.
                    let noise = (alpha * (1.0 - alpha) / b.mean_kept.max(1.0)).sqrt();
                    format!(
                        "below {:.0}%, but the mean error is within alpha: a half's measured \
                         error varies by +-{:.1} points (one standard error on ~{:.0} kept rows), \
                         so misses are expected when the certified error sits close to alpha",
                        100.0 * (1.0 - delta),
                        100.0 * noise,
                        b.mean_kept
                    )
                } else {
                    "BELOW the promise: the mean error exceeds alpha".to_string()
                };
                writeln!(
                    f,
                    "  {:<14} held in {}/{} splits ({:.1}%, {verdict}): {} certified a threshold \
                     and measured <= alpha, {uncertified} certified none (the tier answers nothing)",
                    b.tier,
                    b.held + uncertified,
                    self.splits,
                    100.0 * promise,
                    b.held,
                )?;
                if b.calibrated > 0 {
                    writeln!(
                        f,
                        "  {:<14} in the {} certified splits: held {:.1}%, kept {:.1}% of the rows \
                         reaching it, error mean {:.2}%, worst {:.2}%",
                        "",
                        b.calibrated,
                        100.0 * b.held as f64 / b.calibrated as f64,
                        100.0 * b.mean_kept_share,
                        100.0 * b.mean_error,
                        100.0 * b.worst_error,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Rows of `data` whose features (names and values, in order) equal a row of `train`.
pub fn shared_rows(data: &[LabeledRow], train: &[LabeledRow]) -> usize {
    fn key(row: &LabeledRow) -> String {
        let mut key = String::new();
        for (name, value) in &row.request.features {
            key.push_str(name);
            key.push('\u{1f}');
            match value {
                FeatureValue::Float(x) => key.push_str(&x.to_bits().to_string()),
                other => key.push_str(&format!("{other:?}")),
            }
            key.push('\u{1e}');
        }
        key
    }
    let train: HashSet<String> = train.iter().map(key).collect();
    data.iter().filter(|r| train.contains(&key(r))).count()
}

/// SplitMix64: a small seeded generator for reproducible splits.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_known_intervals() {
        // 0 of 10 at 95%: [0, 1 - 0.025^(1/10)] = [0, 0.3085].
        let (lo, hi) = clopper_pearson(0, 10, 0.05);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.308_5).abs() < 1e-3, "{hi}");
        // 5 of 10 at 95%: [0.1871, 0.8129] (symmetric).
        let (lo, hi) = clopper_pearson(5, 10, 0.05);
        assert!(
            (lo - 0.187_1).abs() < 1e-3 && (hi - 0.812_9).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    /// `Scope::Cascade` hands the second tier only what the first did not keep; `Scope::Alone`
    /// hands it every row, in the walk and in the calibration.
    #[test]
    fn the_scope_decides_which_rows_a_later_tier_sees() {
        let tier = |name: &str, scores: Vec<Option<(f64, bool)>>| TierScores {
            tier: name.into(),
            kind: TierKind::Model,
            configured: 0.5,
            scores,
        };
        // 100 rows: the first tier is sure and right on rows 0..60, unsure on the rest; the
        // second is sure and right everywhere.
        let first = tier(
            "first",
            (0..100)
                .map(|i| Some(if i < 60 { (0.99, true) } else { (0.1, false) }))
                .collect(),
        );
        let second = tier("second", vec![Some((0.95, true)); 100]);
        let tiers = [first, second];
        let all: Vec<usize> = (0..100).collect();
        let thresholds = [Some(0.5), Some(0.5)];
        assert_eq!(
            walk(&tiers, &all, &thresholds, Scope::Cascade),
            vec![(100, 60, 0), (40, 40, 0)]
        );
        assert_eq!(
            walk(&tiers, &all, &thresholds, Scope::Alone),
            vec![(100, 60, 0), (100, 100, 0)]
        );
        let target = RiskTarget::new(0.05, 0.1).unwrap();
        // 40 rows reach the second tier in the cascade: fewer than the 45 a certificate needs.
        let cascade = conformal_thresholds(&tiers, &all, target, Scope::Cascade);
        assert!(
            matches!(cascade[1].1, RiskOutcome::TooFewRows { reaching: 40, .. }),
            "{:?}",
            cascade[1].1
        );
        let alone = conformal_thresholds(&tiers, &all, target, Scope::Alone);
        assert_eq!(alone[1].0, Some(0.95));
    }

    /// A population where the model's error among answers with confidence >= s is
    /// 0.15 * (1 - s), and a rules tier behind it: the bootstrap holds in >= 1 - delta of
    /// splits, and the walk hands the model's rejects to the rules tier.
    #[test]
    fn the_bootstrap_holds_on_a_known_population() {
        let mut rng = SplitMix(7);
        let mut uniform = || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let n = 2000;
        let model: Vec<Option<(f64, bool)>> = (0..n)
            .map(|_| {
                let c = uniform();
                Some((c, uniform() >= 0.3 * (1.0 - c)))
            })
            .collect();
        let rules: Vec<Option<(f64, bool)>> = (0..n).map(|i| Some((0.9, i % 5 != 0))).collect();
        let tiers = vec![
            TierScores {
                tier: "model".into(),
                kind: TierKind::Model,
                configured: 0.5,
                scores: model,
            },
            TierScores {
                tier: "rules".into(),
                kind: TierKind::Rules,
                configured: 0.3,
                scores: rules,
            },
        ];
        let target = RiskTarget::new(0.1, 0.1).unwrap();
        let report = check_promise(&tiers, target, Scope::Cascade, 100, 1);
        assert_eq!(
            report.bootstrap.len(),
            1,
            "only model tiers are bootstrapped"
        );
        let b = &report.bootstrap[0];
        // Fixed-sequence testing stops at its first failing threshold, and the sequence starts
        // where barely enough answers are kept: one early error on a 1,000-row half ends it, so
        // not every split certifies a threshold.
        assert!(b.calibrated >= 30, "{b:?}");
        // The measured error on the other half is noisy around the true one (which sits close
        // to alpha here), so it exceeds alpha in some splits; on average it stays within.
        assert!(b.mean_error <= target.alpha, "{b:?}");
        assert!(b.held as f64 >= 0.7 * b.calibrated as f64, "{b:?}");
        // What Learn-then-Test promises, checked against the population's true error: the
        // certified threshold's true error is at most alpha in >= 1 - delta of calibrations.
        let true_error = |s: f64| 0.15 * (1.0 - s);
        let mut rng = SplitMix(3);
        let (mut certified, mut kept_promise) = (0, 0);
        for _ in 0..100 {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            if let (Some(t), _) =
                &conformal_thresholds(&tiers, &order[..n / 2], target, Scope::Cascade)[0]
            {
                certified += 1;
                kept_promise += usize::from(true_error(*t) <= target.alpha);
            }
        }
        assert!(certified > 0);
        assert!(
            kept_promise as f64 >= 0.9 * certified as f64,
            "{kept_promise} of {certified}"
        );
        // At min_confidence 0.5 the model keeps about half, the rules tier the rest.
        let [model, rules] = &report.answered[..] else {
            panic!()
        };
        assert_eq!(model.reaching, n);
        assert_eq!(rules.reaching, n - model.kept);
        assert_eq!(rules.kept, rules.reaching);
        assert!(
            model.interval.0 <= 0.075 && 0.075 <= model.interval.1,
            "{model:?}"
        );
        let shown = report.to_string();
        assert!(shown.contains("held in"), "{shown}");
    }
}
