//! Scoring a run: what served each request and how well (accuracy, coverage, AUC, fallbacks by
//! reason), how fast (tier call and request latency quantiles), and the confidence trade-off
//! of one tier (the accuracy-vs-coverage curve and the threshold that reaches a target).
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::answer::{Answer, Decision, Step};
use crate::eval::{LabeledRow, SHIFTED};
use crate::policy::cache::CacheStatus;

/// Accuracy and volume of one group of answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quality {
    /// Requests in the group.
    pub requests: usize,
    /// Share of all requests of the run.
    pub share: f64,
    /// Accuracy on the group (answers whose label is the truth).
    pub accuracy: Option<f64>,
    /// ROC AUC of the scores on the group, when both classes are present.
    pub auc: Option<f64>,
}

/// Latency of one tier's calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Calls made (skipped turns excluded; hedged and cancelled calls included).
    pub calls: usize,
    /// Median call time, in microseconds.
    pub p50_us: u64,
    /// 99th percentile call time, in microseconds.
    pub p99_us: u64,
}

/// Latency of whole requests (cache lookups, every tier, hedges).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestLatency {
    /// Median, in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// 99.9th percentile, in microseconds.
    pub p999_us: u64,
    /// Slowest request, in microseconds.
    pub max_us: u64,
}

/// The value at quantile `q` of sorted `values` (the lower of the two neighbours: with n
/// values, p99 is the value at index floor((n - 1) * 0.99)).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Scenario or baseline name.
    pub name: String,
    /// Requests replayed.
    pub requests: usize,
    /// Accuracy on answered (not abstained) requests.
    pub accuracy_answered: Option<f64>,
    /// Share of requests answered (not abstained).
    pub coverage: f64,
    /// Share of requests not served by the first tier.
    pub fallback_rate: f64,
    /// Requests that ended in an abstention.
    pub abstentions: usize,
    /// Per serving tier (safe-default included): share and quality on its share.
    pub served_by: BTreeMap<String, Quality>,
    /// Per tier: latency of its calls.
    pub latency: BTreeMap<String, Latency>,
    /// Latency of whole requests.
    pub request_latency: RequestLatency,
    /// Tier calls made in all (hedges and cancelled calls included).
    pub tier_calls: usize,
    /// Hedges started.
    pub hedges: usize,
    /// Requests answered from the prediction cache.
    pub cache_hits: usize,
    /// Fallbacks by `tier:reason`.
    pub fallbacks: BTreeMap<String, usize>,
    /// On shifted rows only (shift scenarios): accuracy on the answered ones, share answered,
    /// and how many the primary served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shifted: Option<ShiftedQuality>,
}

/// Quality on the shifted rows of a shift scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ShiftedQuality {
    /// Shifted rows.
    pub rows: usize,
    /// Accuracy on the shifted rows that were answered.
    pub accuracy_answered: Option<f64>,
    /// Share of shifted rows answered.
    pub coverage: f64,
    /// Shifted rows the primary served.
    pub served_by_primary: usize,
    /// Wrong answers on shifted rows.
    pub errors: usize,
}

/// Summarizes answers against the truth.
pub fn summarize(
    name: &str,
    rows: &[LabeledRow],
    answers: &[Answer],
    positive_label: &str,
) -> RunReport {
    let n = rows.len().max(1);
    let mut groups: BTreeMap<String, Vec<(bool, f64, bool)>> = BTreeMap::new();
    let mut answered = (0usize, 0usize);
    let mut abstentions = 0;
    let mut degraded = 0;
    let mut calls: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut fallbacks = BTreeMap::new();
    let first_tier = answers
        .first()
        .and_then(|a| a.trail.first())
        .map(|e| e.tier.clone());
    let mut shifted = (0usize, 0usize, 0usize, 0usize); // rows, answered, correct, by primary
    let mut request_us: Vec<u64> = answers.iter().map(|a| a.elapsed_us).collect();
    request_us.sort_unstable();
    let (mut tier_calls, mut hedges) = (0usize, 0usize);
    let cache_hits = answers
        .iter()
        .filter(|a| a.cache == Some(CacheStatus::Hit))
        .count();
    for (row, answer) in rows.iter().zip(answers) {
        if row.request.id.ends_with(SHIFTED) {
            shifted.0 += 1;
            shifted.3 += usize::from(Some(&answer.served_by.tier) == first_tier.as_ref());
            if let Decision::Answer { label, .. } = &answer.decision {
                shifted.1 += 1;
                shifted.2 += usize::from(*label == row.label);
            }
        }
        degraded += usize::from(answer.degraded);
        for entry in &answer.trail {
            hedges += usize::from(entry.hedged);
            if entry.step != Step::Skipped {
                tier_calls += 1;
                calls
                    .entry(entry.tier.clone())
                    .or_default()
                    .push(Duration::from_micros(entry.elapsed_us));
            }
            if let Some(reason) = &entry.reason {
                *fallbacks
                    .entry(format!("{}:{}", entry.tier, reason.kind()))
                    .or_insert(0) += 1;
            }
        }
        let group = groups.entry(answer.served_by.tier.clone()).or_default();
        match &answer.decision {
            Decision::Answer { label, score, .. } => {
                let correct = *label == row.label;
                answered.0 += 1;
                answered.1 += usize::from(correct);
                group.push((correct, *score, row.label == positive_label));
            }
            Decision::Abstain { .. } => abstentions += 1,
        }
    }
    let served_by = groups
        .into_iter()
        .map(|(tier, items)| {
            let correct = items.iter().filter(|(c, _, _)| *c).count();
            let quality = Quality {
                requests: items.len(),
                share: items.len() as f64 / n as f64,
                accuracy: (!items.is_empty()).then(|| correct as f64 / items.len() as f64),
                auc: auc(&items.iter().map(|(_, s, p)| (*s, *p)).collect::<Vec<_>>()),
            };
            (tier, quality)
        })
        .collect();
    let latency = calls
        .into_iter()
        .map(|(tier, d)| {
            let mut us: Vec<u64> = d.iter().map(|d| d.as_micros() as u64).collect();
            us.sort_unstable();
            (
                tier,
                Latency {
                    calls: us.len(),
                    p50_us: quantile(&us, 0.5),
                    p99_us: quantile(&us, 0.99),
                },
            )
        })
        .collect();
    RunReport {
        name: name.to_string(),
        requests: rows.len(),
        accuracy_answered: (answered.0 > 0).then(|| answered.1 as f64 / answered.0 as f64),
        coverage: answered.0 as f64 / n as f64,
        fallback_rate: degraded as f64 / n as f64,
        abstentions,
        served_by,
        latency,
        request_latency: RequestLatency {
            p50_us: quantile(&request_us, 0.5),
            p99_us: quantile(&request_us, 0.99),
            p999_us: quantile(&request_us, 0.999),
            max_us: request_us.last().copied().unwrap_or(0),
        },
        tier_calls,
        hedges,
        cache_hits,
        fallbacks,
        shifted: (shifted.0 > 0).then(|| ShiftedQuality {
            rows: shifted.0,
            accuracy_answered: (shifted.1 > 0).then(|| shifted.2 as f64 / shifted.1 as f64),
            coverage: shifted.1 as f64 / shifted.0 as f64,
            served_by_primary: shifted.3,
            errors: shifted.1 - shifted.2,
        }),
    }
}

/// ROC AUC by the rank-sum (Mann-Whitney) statistic, ties averaged; `None` with one class.
pub fn auc(scored: &[(f64, bool)]) -> Option<f64> {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * sorted[i..=j].iter().filter(|(_, p)| *p).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64)
}

/// Accuracy and coverage of the answers kept at each confidence threshold in `thresholds`
/// (the accuracy-vs-coverage trade-off of one tier): `(threshold, coverage, accuracy)`.
pub fn coverage_curve(
    answers: &[(f64, bool)],
    rows: usize,
    thresholds: &[f64],
) -> Vec<(f64, f64, Option<f64>)> {
    thresholds
        .iter()
        .map(|&t| {
            let kept: Vec<bool> = answers
                .iter()
                .filter(|(c, _)| *c >= t)
                .map(|(_, ok)| *ok)
                .collect();
            let correct = kept.iter().filter(|ok| **ok).count();
            let accuracy = (!kept.is_empty()).then(|| correct as f64 / kept.len() as f64);
            (t, kept.len() as f64 / rows.max(1) as f64, accuracy)
        })
        .collect()
}

/// (confidence, correct) of every answer `tier` served, for [`calibrate`](crate::eval::calibrate) and
/// [`coverage_curve`]; `answers[i]` answers `rows[i]`.
pub fn scored(rows: &[LabeledRow], answers: &[Answer], tier: &str) -> Vec<(f64, bool)> {
    rows.iter()
        .zip(answers)
        .filter_map(|(row, a)| match &a.decision {
            Decision::Answer {
                label, confidence, ..
            } if a.served_by.tier == tier => Some((*confidence, *label == row.label)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_curve_trades_coverage_for_accuracy() {
        let answers = [(0.9, true), (0.8, true), (0.7, false), (0.6, true)];
        let curve = coverage_curve(&answers, 5, &[0.5, 0.75, 0.95]);
        assert_eq!(curve[0], (0.5, 0.8, Some(0.75)));
        assert_eq!(curve[1], (0.75, 0.4, Some(1.0)));
        assert_eq!(curve[2], (0.95, 0.0, None));
    }

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(auc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auc(&[(0.5, false), (0.5, true)]), Some(0.5));
        // 2 positives, 2 negatives, one misordered pair of four: 0.75.
        assert_eq!(
            auc(&[(0.1, false), (0.4, true), (0.5, false), (0.8, true)]),
            Some(0.75)
        );
        assert_eq!(auc(&[(0.1, true)]), None);
    }
}
