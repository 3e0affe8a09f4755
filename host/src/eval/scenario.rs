//! Scenarios: config transformations that inject faults into the primary tier (with the tier's
//! own `[tier.chaos]`, so every fault really happens inside a sandbox), remove the cascade's
//! memory (breakers, hedging, OOD guards), or change the rows replayed (repeated, shifted out of
//! the training distribution); and the single-tier baselines ("X alone").
use serde::Serialize;

use crate::config::{CacheConfig, ChaosConfig, Config, HedgeConfig};
use crate::eval::{EvalError, LabeledRow};
use crate::policy::chaos::ChaosMode;
use crate::request::FeatureValue;

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
    /// The rows replayed at least three times; the primary traps on every call from 10% to 30%
    /// of the replay's time, then recovers. Passes are added until the primary breaker's
    /// open time fits in 60% of the replay, so the breaker opens, probes and closes in the run.
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
    pub fn parse(name: &str) -> Result<Self, EvalError> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| EvalError::UnknownScenario(name.to_string()))
    }

    /// Parses scenario names, in order; none at all means every scenario ([`Self::ALL`]).
    pub fn parse_all(names: &[impl AsRef<str>]) -> Result<Vec<Self>, EvalError> {
        if names.is_empty() {
            return Ok(Self::ALL.to_vec());
        }
        names
            .iter()
            .map(|name| Self::parse(name.as_ref()))
            .collect()
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

    /// How many times the scenario replays `rows` rows of `config` at `rows_per_s`.
    pub fn passes(self, config: &Config, rows: usize, rows_per_s: f64) -> usize {
        match self {
            Self::Repeat => 2,
            Self::PrimaryFlapping => {
                let open_s = config
                    .tiers
                    .first()
                    .and_then(|t| t.breaker.as_ref())
                    .map_or(0.0, |b| b.open_ms as f64 / 1e3);
                let pass_s = rows.max(1) as f64 / rows_per_s;
                // Bounded: a huge open_ms on a tiny file must not replay it millions of times.
                ((open_s / (0.6 * pass_s)).ceil() as usize).clamp(3, 1000)
            }
            _ => 1,
        }
    }

    /// The rows this scenario replays for `config` at `rows_per_s`: `rows` (shifted for the
    /// shift scenarios) [`passes`](Self::passes) times.
    pub fn rows(self, rows: &[LabeledRow], config: &Config, rows_per_s: f64) -> Vec<LabeledRow> {
        let base = if self.shifts_rows() {
            shifted(rows)
        } else {
            rows.to_vec()
        };
        let passes = self.passes(config, rows.len(), rows_per_s);
        let mut out = Vec::with_capacity(base.len() * passes);
        for _ in 0..passes {
            out.extend(base.iter().cloned());
        }
        out
    }

    /// The config this scenario runs, for a replay of `rows` rows at `rows_per_s` (the
    /// cascade's clock advances by `1 / rows_per_s` per row, see [`run`](crate::eval::run)).
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
                config.cache = Some(CacheConfig::default());
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
