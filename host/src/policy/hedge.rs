//! Hedging (`[tier.hedge]`): when a tier has not answered after a delay, the cascade starts
//! the next tiers in parallel and serves the first acceptable answer ("The Tail at Scale",
//! Dean & Barroso 2013: hedged requests cut a service's p99.9 from 1,800 ms to 74 ms for 2%
//! more requests).
//!
//! The delay is fixed (`after_ms`) or a quantile of this tier's own recent call latency
//! (`after = "p95"`, from the last [`LATENCY_WINDOW`] completed calls, once `min_samples`
//! are in). Hedges are capped at `max_share` of the tier's calls, so a slow tier cannot
//! double the cascade's load. The race itself is run by the cascade walk; this module decides
//! when a hedge may start and keeps the latency it is timed from.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CallRecord, Ticket, TierPolicy};

/// Completed calls kept for the latency quantile.
pub const LATENCY_WINDOW: usize = 1_000;
/// The quantile is recomputed every this many calls (sorting 1,000 numbers is ~20 us).
const RECOMPUTE_EVERY: u64 = 32;

/// `[tier.hedge]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Fixed delay before the hedge starts, in milliseconds (fractions allowed).
    pub after_ms: Option<f64>,
    /// Or a quantile of the tier's recent latency: `p50` .. `p99.9`.
    pub after: Option<String>,
    /// Largest share of the tier's calls that may be hedged.
    pub max_share: f64,
    /// Calls needed before a quantile delay is trusted (no hedging before).
    pub min_samples: usize,
}

/// Default cap: 5% of calls (the paper hedged at p95 for +2% load).
pub const DEFAULT_MAX_SHARE: f64 = 0.05;
/// Default samples before a quantile is trusted.
pub const DEFAULT_MIN_SAMPLES: usize = 50;

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            after_ms: None,
            after: None,
            max_share: DEFAULT_MAX_SHARE,
            min_samples: DEFAULT_MIN_SAMPLES,
        }
    }
}

impl HedgeConfig {
    /// The quantile in `after` (`"p95"` -> 0.95).
    fn quantile(&self) -> Result<Option<f64>, String> {
        let Some(after) = &self.after else {
            return Ok(None);
        };
        after
            .strip_prefix('p')
            .and_then(|q| q.parse::<f64>().ok())
            .filter(|q| (50.0..100.0).contains(q))
            .map(|q| Some(q / 100.0))
            .ok_or_else(|| format!("`{after}` is not a quantile like p90, p95, p99 or p99.9"))
    }

    /// Checks the values; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.after_ms, &self.after) {
            (Some(_), Some(_)) => {
                return Err(("after", "set either after_ms or after, not both".into()));
            }
            (None, None) => {
                return Err((
                    "after_ms",
                    "set after_ms (e.g. 5) or after (e.g. \"p95\")".into(),
                ));
            }
            (Some(ms), None) if !(ms.is_finite() && *ms > 0.0) => {
                return Err(("after_ms", "must be a number of milliseconds > 0".into()));
            }
            _ => {}
        }
        self.quantile().map_err(|e| ("after", e))?;
        if !(self.max_share > 0.0 && self.max_share <= 1.0) {
            return Err(("max_share", "must be within (0, 1]".into()));
        }
        if self.min_samples == 0 {
            return Err(("min_samples", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Latency and hedge counts of one tier version (kept in [`super::memory::PolicyMemory`]).
#[derive(Default)]
pub struct HedgeState {
    calls: AtomicU64,
    hedged: AtomicU64,
    recent: Mutex<VecDeque<u64>>,
    /// The current quantile delay in microseconds (0: not enough samples yet).
    quantile_us: AtomicU64,
}

/// A tier's hedging policy.
pub struct Hedge {
    config: HedgeConfig,
    quantile: Option<f64>,
    state: std::sync::Arc<HedgeState>,
}

impl Hedge {
    /// Hedging by `config` (validated) on `state`.
    pub fn new(config: HedgeConfig, state: std::sync::Arc<HedgeState>) -> Self {
        Self {
            quantile: config.quantile().ok().flatten(),
            config,
            state,
        }
    }

    /// How long to wait for the tier before hedging; `None` while a quantile delay has too
    /// few samples.
    pub fn delay(&self) -> Option<Duration> {
        if let Some(ms) = self.config.after_ms {
            return Some(Duration::from_secs_f64(ms / 1e3));
        }
        match self.state.quantile_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Takes one hedge from the budget: allowed while hedges stay within `max_share` of the
    /// tier's calls (plus one, so a slow call early in a tier's life can be hedged).
    pub fn try_start(&self) -> bool {
        let calls = self.state.calls.load(Ordering::Relaxed) as f64;
        let allowed = 1.0 + self.config.max_share * calls;
        self.state
            .hedged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                ((h + 1) as f64 <= allowed).then_some(h + 1)
            })
            .is_ok()
    }

    /// (calls, hedged) since this tier version loaded.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.calls.load(Ordering::Relaxed),
            self.state.hedged.load(Ordering::Relaxed),
        )
    }

    fn record(&self, elapsed: Duration) {
        let n = self.state.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(q) = self.quantile else { return };
        let Ok(mut recent) = self.state.recent.lock() else {
            return;
        };
        if recent.len() == LATENCY_WINDOW {
            recent.pop_front();
        }
        recent.push_back(elapsed.as_micros() as u64);
        if recent.len() >= self.config.min_samples
            && (n.is_multiple_of(RECOMPUTE_EVERY)
                || self.state.quantile_us.load(Ordering::Relaxed) == 0)
        {
            let mut sorted: Vec<u64> = recent.iter().copied().collect();
            sorted.sort_unstable();
            let at = ((sorted.len() - 1) as f64 * q) as usize;
            self.state
                .quantile_us
                .store(sorted[at].max(1), Ordering::Relaxed);
        }
    }
}

impl TierPolicy for Hedge {
    fn name(&self) -> &'static str {
        "hedge"
    }

    fn observe(&self, _ticket: Ticket, record: &CallRecord<'_>) {
        if record.called {
            self.record(record.elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn called(h: &Hedge, us: u64) {
        h.observe(
            Ticket::none(),
            &CallRecord {
                called: true,
                elapsed: Duration::from_micros(us),
                verdict: Ok(()),
            },
        );
    }

    #[test]
    fn quantile_delay_follows_the_tiers_own_latency() {
        let h = Hedge::new(
            HedgeConfig {
                after: Some("p95".into()),
                min_samples: 100,
                ..HedgeConfig::default()
            },
            Arc::default(),
        );
        for i in 0..99 {
            called(&h, 100 + i);
        }
        assert_eq!(h.delay(), None, "not enough samples yet");
        called(&h, 199);
        let d = h.delay().unwrap();
        assert!((193..=195).contains(&(d.as_micros() as u64)), "{d:?}");
    }

    #[test]
    fn hedges_are_capped_at_max_share() {
        let h = Hedge::new(
            HedgeConfig {
                after_ms: Some(1.0),
                max_share: 0.05,
                ..HedgeConfig::default()
            },
            Arc::default(),
        );
        assert!(h.try_start(), "one hedge allowed from the start");
        assert!(!h.try_start());
        for _ in 0..100 {
            called(&h, 10);
        }
        let started = (0..100).filter(|_| h.try_start()).count();
        assert_eq!(started, 5, "1 + 5% of 100 calls in all");
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = |c: HedgeConfig| c.validate().unwrap_err().0;
        assert_eq!(bad(HedgeConfig::default()), "after_ms");
        assert_eq!(
            bad(HedgeConfig {
                after: Some("p30".into()),
                ..HedgeConfig::default()
            }),
            "after"
        );
        assert_eq!(
            bad(HedgeConfig {
                after_ms: Some(2.0),
                max_share: 0.0,
                ..HedgeConfig::default()
            }),
            "max_share"
        );
    }
}
