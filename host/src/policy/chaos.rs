//! Chaos injection (`[tier.chaos]`): a share of a tier's calls run the `builtin:chaos` tier in
//! a fault mode instead, inside the same sandbox limits, so a rehearsal exercises the very
//! machinery a real fault would (classification, breaker, hedging, events).
//!
//! Which calls: a seeded FNV-1a hash of the request id below `rate` (a replay faults on the
//! same requests), and only while the cascade's clock is within `[from_s, until_s)` when a
//! window is set (an outage that starts and ends: "flapping").
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CallContext, TierPolicy};
use crate::sandbox::Sandbox;

/// `[tier.chaos]`: injected faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {
    /// A `builtin:chaos` mode: `trap`, `panic`, `nan`, `sleep`, `spin`, `infinite-loop`, ...
    pub mode: String,
    /// Share of calls (by a seeded hash of the request id) that get the fault.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Seed of the hash, so a replay faults on the same requests.
    #[serde(default)]
    pub seed: u64,
    /// Start of the fault window, in seconds on the cascade's clock (since it loaded).
    #[serde(default)]
    pub from_s: Option<f64>,
    /// End of the fault window (exclusive), in seconds on the cascade's clock.
    #[serde(default)]
    pub until_s: Option<f64>,
    /// With `mode = "latency"`: milliseconds the host waits before calling the tier's own
    /// plugin (a slow network hop, a noisy neighbour); the wait counts against the deadline.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Extra parameters of the chaos tier (e.g. `seconds` for `sleep`).
    #[serde(default)]
    pub params: toml::Table,
}

/// The mode that delays the tier's own call instead of replacing it.
pub const LATENCY_MODE: &str = "latency";

fn default_rate() -> f64 {
    1.0
}

impl ChaosConfig {
    /// Checks the values; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(("rate", "must be within [0, 1]".into()));
        }
        for (field, v) in [("from_s", self.from_s), ("until_s", self.until_s)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err((field, "must be a finite number of seconds >= 0".into()));
            }
        }
        if let (Some(a), Some(b)) = (self.from_s, self.until_s)
            && a >= b
        {
            return Err(("until_s", format!("must be greater than from_s ({a})")));
        }
        match (self.mode.as_str(), self.latency_ms) {
            (LATENCY_MODE, Some(ms)) if ms.is_finite() && ms > 0.0 => {}
            (LATENCY_MODE, _) => {
                return Err((
                    "latency_ms",
                    "mode = \"latency\" needs latency_ms > 0".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(("latency_ms", "only used with mode = \"latency\"".into()));
            }
            _ => {}
        }
        if self.params.contains_key("mode") {
            return Err(("params", "`mode` is set by chaos.mode".into()));
        }
        Ok(())
    }

    /// Whether the fault hits a call of `request_id` at `now` on the cascade's clock.
    pub fn hits(&self, request_id: &str, now: Duration) -> bool {
        let now = now.as_secs_f64();
        if self.from_s.is_some_and(|from| now < from) || self.until_s.is_some_and(|u| now >= u) {
            return false;
        }
        let hash = self
            .seed
            .to_le_bytes()
            .iter()
            .chain(request_id.as_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        ((hash % 10_000) as f64) < self.rate * 10_000.0
    }
}

/// The chaos wrapper: the config and the chaos sandbox it substitutes.
pub struct Chaos {
    /// When and how.
    pub config: ChaosConfig,
    /// The `builtin:chaos` sandbox in `config.mode` (none for `latency`).
    pub sandbox: Option<Sandbox>,
}

impl TierPolicy for Chaos {
    fn name(&self) -> &'static str {
        "chaos"
    }

    fn substitute(&self, ctx: &CallContext<'_>) -> Option<&Sandbox> {
        let sandbox = self.sandbox.as_ref()?;
        self.config
            .hits(&ctx.request.id, ctx.now)
            .then_some(sandbox)
    }

    fn delay(&self, ctx: &CallContext<'_>) -> Duration {
        match self.config.latency_ms {
            Some(ms) if self.config.hits(&ctx.request.id, ctx.now) => {
                Duration::from_secs_f64(ms / 1e3)
            }
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos(rate: f64, from_s: Option<f64>, until_s: Option<f64>) -> ChaosConfig {
        ChaosConfig {
            mode: "trap".into(),
            rate,
            seed: 7,
            from_s,
            until_s,
            latency_ms: None,
            params: Default::default(),
        }
    }

    #[test]
    fn rate_and_window_select_calls() {
        let all = chaos(1.0, None, None);
        assert!(all.hits("a", Duration::ZERO));
        let none = chaos(0.0, None, None);
        assert!(!none.hits("a", Duration::ZERO));
        let fifth = chaos(0.2, None, None);
        let hit = (0..10_000)
            .filter(|i| fifth.hits(&format!("r{i}"), Duration::ZERO))
            .count();
        assert!((1_700..2_300).contains(&hit), "{hit} of 10000");
        let window = chaos(1.0, Some(1.0), Some(2.0));
        assert!(!window.hits("a", Duration::from_millis(999)));
        assert!(window.hits("a", Duration::from_millis(1000)));
        assert!(window.hits("a", Duration::from_millis(1999)));
        assert!(!window.hits("a", Duration::from_millis(2000)));
        assert!(chaos(1.0, Some(2.0), Some(1.0)).validate().is_err());
        assert!(chaos(1.5, None, None).validate().is_err());
    }
}
