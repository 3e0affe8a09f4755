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
    /// The injected fault.
    pub mode: ChaosMode,
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

/// `[tier.chaos] mode`: the fault the `builtin:chaos` tier injects (see `plugins/chaos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChaosMode {
    /// Answers normally (a control).
    Ok,
    /// Traps on a seeded share of requests (`fault_rate`), answers the rest.
    Flaky,
    /// A different fault per request, cycling through the kinds.
    Mixed,
    /// Counts calls in its own memory (shows state leaking between calls).
    Count,
    /// Loops forever (stopped by fuel or the deadline).
    InfiniteLoop,
    /// Spins on a clock (stopped by the deadline).
    Burn,
    /// Spins on a clock; the host lifts its fuel limit so the deadline, not fuel, stops it.
    Spin,
    /// Sleeps in a WASI call for `seconds` (stopped by the host's timeout).
    Sleep,
    /// Grows memory until the limit.
    MemoryBomb,
    /// Allocates `mib` MiB.
    Alloc,
    /// Panics (a trap).
    Panic,
    /// Executes `unreachable`.
    Trap,
    /// Recurses until the stack overflows.
    Recursion,
    /// Answers a NaN score.
    Nan,
    /// Answers confidence 1.5.
    Overconfident,
    /// Answers a reason of `bytes` bytes.
    HugeReason,
    /// Answers a label outside the contract.
    BadLabel,
    /// Writes logs past the log budget.
    LogFlood,
    /// Abstains.
    Abstain,
    /// Answers more reasons than `max_reasons`.
    ManyReasons,
    /// Opens host handles until the resource table is full.
    HandleFlood,
    /// Answers text with terminal control characters.
    ControlChars,
    /// Returns a tier error.
    Error,
    /// Tries to read a file.
    ReadFile,
    /// Tries to read environment variables.
    ReadEnv,
    /// Tries to open a network connection.
    Connect,
    /// Reads the clocks (frozen by the host).
    Clock,
    /// Not a chaos tier: the host waits `latency_ms` before calling the tier's own plugin.
    Latency,
}

impl ChaosMode {
    /// The mode's name, as the chaos tier's `mode` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Flaky => "flaky",
            Self::Mixed => "mixed",
            Self::Count => "count",
            Self::InfiniteLoop => "infinite-loop",
            Self::Burn => "burn",
            Self::Spin => "spin",
            Self::Sleep => "sleep",
            Self::MemoryBomb => "memory-bomb",
            Self::Alloc => "alloc",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::Recursion => "recursion",
            Self::Nan => "nan",
            Self::Overconfident => "overconfident",
            Self::HugeReason => "huge-reason",
            Self::BadLabel => "bad-label",
            Self::LogFlood => "log-flood",
            Self::Abstain => "abstain",
            Self::ManyReasons => "many-reasons",
            Self::HandleFlood => "handle-flood",
            Self::ControlChars => "control-chars",
            Self::Error => "error",
            Self::ReadFile => "read-file",
            Self::ReadEnv => "read-env",
            Self::Connect => "connect",
            Self::Clock => "clock",
            Self::Latency => "latency",
        }
    }
}

impl std::fmt::Display for ChaosMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_rate() -> f64 {
    1.0
}

impl ChaosConfig {
    /// `mode` on a `rate` share of calls, at all times, seed 0, no extra parameters.
    pub fn new(mode: ChaosMode, rate: f64) -> Self {
        Self {
            mode,
            rate,
            seed: 0,
            from_s: None,
            until_s: None,
            latency_ms: None,
            params: toml::Table::new(),
        }
    }

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
        match (self.mode, self.latency_ms) {
            (ChaosMode::Latency, Some(ms)) if ms.is_finite() && ms > 0.0 => {}
            (ChaosMode::Latency, _) => {
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
            mode: ChaosMode::Trap,
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
