//! `tierhost eval`: replays labeled rows through a cascade under fault scenarios and reports,
//! per scenario, what served each request and how well: the numbers a team needs before it
//! trusts a cascade in production.
//!
//! Scenarios are config transformations: faults are injected into the primary tier with the
//! tier's own `[tier.chaos]` setting, so every injected fault really happens inside a sandbox
//! and is classified by the same machinery as a real one.
pub mod plots;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::answer::{Answer, Decision, Step};
use crate::cascade::Cascade;
use crate::config::{ChaosConfig, Config, HedgeConfig};
use crate::engine::TierEngine;
use crate::policy::chaos::ChaosMode;
use crate::policy::clock::ManualClock;
use crate::policy::memory::PolicyMemory;
use crate::request::{FeatureValue, Request};

/// One labeled row.
#[derive(Debug, Clone)]
pub struct LabeledRow {
    /// The request built from the row's features.
    pub request: Request,
    /// The true label.
    pub label: String,
}

/// Reads a CSV file with a header; `label_column` holds the truth, mapped through `labels`
/// (e.g. `1` -> `phishing`); every other column is a feature (numbers as floats, empty cells
/// as null, anything else as text).
pub fn read_labeled_csv(
    path: &Path,
    label_column: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<LabeledRow>, String> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .clone();
    let label_at = headers
        .iter()
        .position(|h| h == label_column)
        .ok_or_else(|| {
            format!(
                "{}: no `{label_column}` column (header: {headers:?})",
                path.display()
            )
        })?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("{}: row {}: {e}", path.display(), i + 2))?;
        let mut features = Vec::with_capacity(record.len());
        let mut label = None;
        for (j, (name, cell)) in headers.iter().zip(record.iter()).enumerate() {
            if j == label_at {
                let mapped = labels
                    .get(cell)
                    .cloned()
                    .unwrap_or_else(|| cell.to_string());
                label = Some(mapped);
                continue;
            }
            let value = if cell.is_empty() {
                FeatureValue::Null
            } else if let Ok(x) = cell.parse::<f64>() {
                FeatureValue::Float(x)
            } else {
                FeatureValue::Text(cell.to_string())
            };
            features.push((name.to_string(), value));
        }
        let label =
            label.ok_or_else(|| format!("{}: row {} has no label", path.display(), i + 2))?;
        rows.push(LabeledRow {
            request: Request::new(format!("row-{}", i + 1), features),
            label,
        });
    }
    if rows.is_empty() {
        return Err(format!("{}: no rows", path.display()));
    }
    Ok(rows)
}

/// A built-in fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The cascade as configured.
    Normal,
    /// The primary traps on every call.
    PrimaryDown,
    /// The primary blocks past its deadline on every call.
    PrimarySlow,
    /// The same with every breaker and hedge removed: what the slow primary costs without the
    /// cascade's memory.
    PrimarySlowNoBreaker,
    /// The primary answers NaN on every call.
    PrimaryGarbage,
    /// 20% of primary calls trap, chosen by a seeded hash of the request id.
    FaultMix,
    /// The rows replayed three times; the primary traps on every call from 10% to 30% of the
    /// replay's time, then recovers (three passes, so a breaker's open time fits in the run).
    PrimaryFlapping,
    /// 3% of primary calls wait 15 ms before the primary runs (a heavy latency tail), with
    /// the primary's hedging removed.
    PrimaryHeavyTail,
    /// The same tail with hedging (the configured `[tier.hedge]`, or `after_ms = 2`).
    PrimaryHeavyTailHedged,
    /// Every row replayed twice with the prediction cache on (the configured `[cache]`, or an
    /// embedded one): the second pass should be hits.
    Repeat,
    /// Half the rows have two features pushed out of the training distribution (negated and
    /// offset by one); tiers keep their OOD guards.
    Shift,
    /// The same shifted rows with every OOD guard removed.
    ShiftNoGuard,
}

/// Share of calls delayed in the heavy-tail scenarios.
pub const HEAVY_TAIL_RATE: f64 = 0.03;
/// Delay of those calls, in ms.
pub const HEAVY_TAIL_MS: f64 = 15.0;
/// Hedge delay used when the config has no `[tier.hedge]` on the primary.
pub const DEFAULT_SCENARIO_HEDGE_MS: f64 = 2.0;

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 12] = [
        Self::Normal,
        Self::PrimaryDown,
        Self::PrimarySlow,
        Self::PrimarySlowNoBreaker,
        Self::PrimaryGarbage,
        Self::FaultMix,
        Self::PrimaryFlapping,
        Self::PrimaryHeavyTail,
        Self::PrimaryHeavyTailHedged,
        Self::Repeat,
        Self::Shift,
        Self::ShiftNoGuard,
    ];

    /// Parses a scenario name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown scenario `{name}` (known: {})",
                    Self::ALL.map(|s| s.name()).join(", ")
                )
            })
    }

    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::PrimaryDown => "primary-down",
            Self::PrimarySlow => "primary-slow",
            Self::PrimarySlowNoBreaker => "primary-slow-no-breaker",
            Self::PrimaryGarbage => "primary-garbage",
            Self::FaultMix => "fault-mix",
            Self::PrimaryFlapping => "primary-flapping",
            Self::PrimaryHeavyTail => "primary-heavy-tail",
            Self::PrimaryHeavyTailHedged => "primary-heavy-tail-hedged",
            Self::Repeat => "repeat",
            Self::Shift => "shift",
            Self::ShiftNoGuard => "shift-no-guard",
        }
    }

    /// Whether the scenario replays shifted rows.
    pub fn shifts_rows(self) -> bool {
        matches!(self, Self::Shift | Self::ShiftNoGuard)
    }

    /// How many times the scenario replays the rows.
    pub fn passes(self) -> usize {
        match self {
            Self::Repeat => 2,
            Self::PrimaryFlapping => 3,
            _ => 1,
        }
    }

    /// The rows this scenario replays: `rows` (shifted for the shift scenarios) `passes()`
    /// times.
    pub fn rows(self, rows: &[LabeledRow]) -> Vec<LabeledRow> {
        let base = if self.shifts_rows() {
            shifted(rows)
        } else {
            rows.to_vec()
        };
        let mut out = Vec::with_capacity(base.len() * self.passes());
        for _ in 0..self.passes() {
            out.extend(base.iter().cloned());
        }
        out
    }

    /// The config this scenario runs, for a replay of `rows` rows at `rows_per_s` (the
    /// cascade's clock advances by `1 / rows_per_s` per row, see [`run`]).
    pub fn apply(self, config: &Config, rows: usize, rows_per_s: f64) -> Config {
        let mut config = config.clone();
        let chaos = |mode, rate| {
            Some(ChaosConfig {
                seed: 7,
                ..ChaosConfig::new(mode, rate)
            })
        };
        let replay_s = rows as f64 / rows_per_s;
        if let Some(primary) = config.tiers.first_mut() {
            primary.chaos = match self {
                Self::Normal | Self::Repeat | Self::Shift | Self::ShiftNoGuard => {
                    primary.chaos.take()
                }
                Self::PrimaryDown => chaos(ChaosMode::Trap, 1.0),
                Self::PrimarySlow | Self::PrimarySlowNoBreaker => chaos(ChaosMode::Sleep, 1.0),
                Self::PrimaryGarbage => chaos(ChaosMode::Nan, 1.0),
                Self::FaultMix => chaos(ChaosMode::Trap, 0.2),
                Self::PrimaryFlapping => chaos(ChaosMode::Trap, 1.0).map(|c| ChaosConfig {
                    from_s: Some(0.1 * replay_s),
                    until_s: Some(0.3 * replay_s),
                    ..c
                }),
                Self::PrimaryHeavyTail | Self::PrimaryHeavyTailHedged => {
                    chaos(ChaosMode::Latency, HEAVY_TAIL_RATE).map(|c| ChaosConfig {
                        latency_ms: Some(HEAVY_TAIL_MS),
                        ..c
                    })
                }
            };
            match self {
                Self::PrimaryHeavyTail => primary.hedge = None,
                Self::PrimaryHeavyTailHedged if primary.hedge.is_none() => {
                    primary.hedge = Some(HedgeConfig {
                        after_ms: Some(DEFAULT_SCENARIO_HEDGE_MS),
                        ..HedgeConfig::default()
                    });
                }
                _ => {}
            }
        }
        match self {
            Self::Repeat if config.cache.is_none() => {
                config.cache = Some(crate::config::CacheConfig::default());
            }
            // Replayed rows must reach the tiers, not the cache.
            Self::PrimaryFlapping => config.cache = None,
            _ => {}
        }
        for tier in &mut config.tiers {
            match self {
                Self::ShiftNoGuard => tier.ood = None,
                Self::PrimarySlowNoBreaker => {
                    tier.breaker = None;
                    tier.hedge = None;
                }
                _ => {}
            }
        }
        config
    }
}

/// Suffix of the ids of shifted rows.
pub const SHIFTED: &str = "~shifted";

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Every other row (by a hash of its id) with two of its numeric features (also by hash) moved
/// out of the training distribution: `x -> -(x + 1)`. Shifted rows' ids end in [`SHIFTED`].
pub fn shifted(rows: &[LabeledRow]) -> Vec<LabeledRow> {
    rows.iter()
        .map(|row| {
            let h = fnv(row.request.id.bytes());
            if h % 2 == 1 {
                return row.clone();
            }
            let mut row = row.clone();
            let n = row.request.features.len().max(1) as u64;
            let picks = [(h >> 8) % n, (h >> 24) % n];
            for (i, (_, value)) in row.request.features.iter_mut().enumerate() {
                if picks.contains(&(i as u64))
                    && let FeatureValue::Float(x) = value
                {
                    *x = -(*x + 1.0);
                }
            }
            row.request.id.push_str(SHIFTED);
            row
        })
        .collect()
}

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

/// Default replay rate: each row stands for 10 ms of traffic on the cascade's clock, so time
/// windows (breaker open periods, chaos windows) mean the same in a replay and in production
/// at 100 requests per second.
pub const DEFAULT_ROWS_PER_S: f64 = 100.0;

/// A cascade loaded for a replay: fresh policy state on a clock the replay moves.
pub struct ReplayCascade {
    /// The cascade.
    pub cascade: Cascade,
    clock: std::sync::Arc<ManualClock>,
    step: Duration,
}

/// Replays `rows` through a cascade one at a time and summarizes. The cascade's clock
/// advances by `1 / rows_per_s` per row (see [`load`]), so time-based policies (breaker
/// windows and open periods, chaos windows) see the replay as traffic at that rate whatever
/// the machine's speed.
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
        .filter(|a| a.cache == Some(crate::policy::cache::CacheStatus::Hit))
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

/// Each tier alone: a config with only that tier, no confidence threshold, no chaos.
pub fn single_tier_configs(config: &Config) -> Vec<(String, Config)> {
    config
        .tiers
        .iter()
        .map(|tier| {
            let mut alone = config.clone();
            let mut tier = tier.clone();
            tier.min_confidence = 0.0;
            tier.chaos = None;
            tier.ood = None;
            tier.breaker = None;
            tier.hedge = None;
            alone.tiers = vec![tier.clone()];
            alone.cascade.audit_log = None;
            alone.cache = None;
            alone.safe_default.abstain = Some(format!("{} did not answer", tier.name));
            (format!("{} alone", tier.name), alone)
        })
        .collect()
}

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

/// (confidence, correct) of every answer a tier gave.
pub fn scored(rows: &[LabeledRow], answers: &[Answer]) -> Vec<(f64, bool)> {
    rows.iter()
        .zip(answers)
        .filter_map(|(row, a)| match &a.decision {
            Decision::Answer {
                label, confidence, ..
            } => Some((*confidence, *label == row.label)),
            Decision::Abstain { .. } => None,
        })
        .collect()
}

/// Loads a scenario's cascade on `engine` for a replay at [`DEFAULT_ROWS_PER_S`].
pub async fn load(engine: &TierEngine, config: &Config) -> Result<ReplayCascade, String> {
    load_at(engine, config, DEFAULT_ROWS_PER_S).await
}

/// Loads a scenario's cascade on `engine` with fresh policy state, for a replay at
/// `rows_per_s` (no audit file: eval must not write production logs).
pub async fn load_at(
    engine: &TierEngine,
    config: &Config,
    rows_per_s: f64,
) -> Result<ReplayCascade, String> {
    if !(rows_per_s.is_finite() && rows_per_s > 0.0) {
        return Err(format!(
            "the replay rate must be > 0 rows/s, got {rows_per_s}"
        ));
    }
    let mut config = config.clone();
    config.cascade.audit_log = None;
    let clock = std::sync::Arc::new(ManualClock::new());
    let memory = PolicyMemory::new(clock.clone());
    let cascade = Cascade::with_memory(engine.clone(), &config, &memory)
        .await
        .map_err(|e| e.to_string())?;
    if let Some((tier, error)) = cascade.load_errors().first() {
        return Err(format!("tier \"{tier}\": {error}"));
    }
    Ok(ReplayCascade {
        cascade,
        clock,
        step: Duration::from_secs_f64(1.0 / rows_per_s),
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

/// The Markdown summary of every run.
pub fn markdown(runs: &[RunReport], tiers: &[String]) -> String {
    let mut out =
        String::from("| run | accuracy (answered) | coverage | fallback rate | abstained |");
    for tier in tiers
        .iter()
        .chain(std::iter::once(&"safe-default".to_string()))
    {
        out.push_str(&format!(" {tier}: share / acc |"));
    }
    out.push_str("\n|---|---:|---:|---:|---:|");
    for _ in 0..=tiers.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for run in runs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |",
            run.name,
            opt_pct(run.accuracy_answered),
            pct(run.coverage),
            pct(run.fallback_rate),
            run.abstentions
        ));
        for tier in tiers
            .iter()
            .chain(std::iter::once(&"safe-default".to_string()))
        {
            match run.served_by.get(tier) {
                Some(q) => out.push_str(&format!(" {} / {} |", pct(q.share), opt_pct(q.accuracy))),
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    if runs.iter().any(|r| r.shifted.is_some()) {
        out.push_str("\nOn the shifted rows:\n\n| run | rows | served by primary | answered | accuracy (answered) | wrong answers |\n|---|---:|---:|---:|---:|---:|\n");
        for run in runs {
            if let Some(q) = &run.shifted {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    run.name,
                    q.rows,
                    q.served_by_primary,
                    pct(q.coverage),
                    opt_pct(q.accuracy_answered),
                    q.errors
                ));
            }
        }
    }
    out.push_str("\nRequest latency (µs) and tier calls (hedges and cancelled calls included):\n\n| run | p50 | p99 | p99.9 | max | tier calls |");
    for tier in tiers {
        out.push_str(&format!(" {tier} calls |"));
    }
    out.push_str(" hedges | cache hits |\n|---|---:|---:|---:|---:|---:|");
    for _ in tiers {
        out.push_str("---:|");
    }
    out.push_str("---:|---:|\n");
    for run in runs {
        let l = &run.request_latency;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |",
            run.name, l.p50_us, l.p99_us, l.p999_us, l.max_us, run.tier_calls
        ));
        for tier in tiers {
            let calls = run.latency.get(tier).map_or(0, |l| l.calls);
            out.push_str(&format!(" {calls} |"));
        }
        out.push_str(&format!(" {} | {} |\n", run.hedges, run.cache_hits));
    }
    if let Some(line) = hedging_comparison(runs) {
        out.push_str(&format!("\n{line}\n"));
    }
    out.push_str("\nTier call latency (p50 / p99, µs):\n\n| run |");
    for tier in tiers {
        out.push_str(&format!(" {tier} |"));
    }
    out.push_str("\n|---|");
    for _ in tiers {
        out.push_str("---:|");
    }
    out.push('\n');
    for run in runs {
        out.push_str(&format!("| {} |", run.name));
        for tier in tiers {
            match run.latency.get(tier) {
                Some(l) => out.push_str(&format!(" {} / {} |", l.p50_us, l.p99_us)),
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
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
