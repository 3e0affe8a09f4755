//! `[tier.breaker]`: the breaker's config, its defaults and their reasons.
use serde::{Deserialize, Serialize};

/// Reason kinds a breaker may count as failures: first the faults, then the rest.
pub const COUNTABLE_KINDS: &[&str] = &[
    "hedged",
    "deadline",
    "trap",
    "out-of-fuel",
    "memory-limit",
    "stack-overflow",
    "invalid-output",
    "tier-error",
    "capability-denied",
    "low-confidence",
    "abstained",
    "out-of-distribution",
];

/// Default `failure_on`: the faults (the tier broke, was too slow to be useful, or reached for
/// what it was not granted: `hedged` is a call cancelled because a hedge answered first), not
/// its judgement (low confidence, abstained) nor its inputs (out of distribution).
pub const DEFAULT_FAILURE_ON: &[&str] = COUNTABLE_KINDS.split_at(9).0;

/// Kind of sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    /// The last `window_calls` calls.
    Count,
    /// The calls of the last `window_s` seconds.
    Time,
}

/// `[tier.breaker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// `count` (default) or `time`.
    pub window: WindowKind,
    /// Calls in a count window.
    pub window_calls: usize,
    /// Seconds in a time window.
    pub window_s: u64,
    /// Share of failures in the window at or above which the breaker opens.
    pub failure_rate: f64,
    /// Calls the window must hold before the breaker can open.
    pub minimum_calls: usize,
    /// A call slower than this (ms) counts as a failure even if it answered. Off when unset.
    pub slow_call_ms: Option<u64>,
    /// How long the breaker stays open before it lets probes through, in ms.
    pub open_ms: u64,
    /// Factor applied to the open time on each reopen without a close in between (1 = fixed).
    pub open_backoff: f64,
    /// Longest open time with backoff, in ms (unset: 5 minutes, or `open_ms` if longer).
    pub open_max_ms: Option<u64>,
    /// Probe calls let through when half-open.
    pub half_open_calls: usize,
    /// Reason kinds that count as failures.
    pub failure_on: Vec<String>,
}

/// Default window: the last 100 calls (resilience4j's default).
pub const DEFAULT_WINDOW_CALLS: usize = 100;
/// Default failure rate: 50% (resilience4j's default; Polly v8 uses 10%, which trips on the
/// background fault rate of a healthy model tier).
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// Default minimum calls: 20. Lower than resilience4j's 100 because every failing call of a
/// tier costs a request its deadline; 20 still keeps one unlucky burst from opening it.
pub const DEFAULT_MINIMUM_CALLS: usize = 20;
/// Default open time: 30 s (Polly v8's break duration; resilience4j waits 60 s).
pub const DEFAULT_OPEN_MS: u64 = 30_000;
/// Default longest open time with backoff: 5 minutes (or `open_ms` if that is longer).
pub const DEFAULT_OPEN_MAX_MS: u64 = 300_000;
/// Default probes when half-open: 5 (enough for a rate, few enough to risk little).
pub const DEFAULT_HALF_OPEN_CALLS: usize = 5;

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: WindowKind::Count,
            window_calls: DEFAULT_WINDOW_CALLS,
            window_s: 60,
            failure_rate: DEFAULT_FAILURE_RATE,
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            slow_call_ms: None,
            open_ms: DEFAULT_OPEN_MS,
            open_backoff: 1.0,
            open_max_ms: None,
            half_open_calls: DEFAULT_HALF_OPEN_CALLS,
            failure_on: DEFAULT_FAILURE_ON.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl BreakerConfig {
    /// The longest open time in effect, in ms.
    pub fn open_max(&self) -> u64 {
        self.open_max_ms
            .unwrap_or(DEFAULT_OPEN_MAX_MS.max(self.open_ms))
    }

    /// Checks the values; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(("failure_rate", "must be within (0, 1]".into()));
        }
        if self.window_calls == 0 {
            return Err(("window_calls", "must be at least 1".into()));
        }
        if self.window_s == 0 {
            return Err(("window_s", "must be at least 1".into()));
        }
        if self.minimum_calls == 0 {
            return Err(("minimum_calls", "must be at least 1".into()));
        }
        if self.window == WindowKind::Count && self.minimum_calls > self.window_calls {
            return Err((
                "minimum_calls",
                format!(
                    "{} is more than window_calls ({}): the breaker could never open",
                    self.minimum_calls, self.window_calls
                ),
            ));
        }
        if self.open_ms == 0 {
            return Err(("open_ms", "must be at least 1".into()));
        }
        if !(self.open_backoff.is_finite() && self.open_backoff >= 1.0) {
            return Err(("open_backoff", "must be a number >= 1".into()));
        }
        if self.open_max_ms.is_some_and(|max| max < self.open_ms) {
            return Err(("open_max_ms", "must be at least open_ms".into()));
        }
        if self.half_open_calls == 0 {
            return Err(("half_open_calls", "must be at least 1".into()));
        }
        if self.slow_call_ms == Some(0) {
            return Err(("slow_call_ms", "must be at least 1 (or unset)".into()));
        }
        if self.failure_on.is_empty() {
            return Err(("failure_on", "must name at least one reason kind".into()));
        }
        for kind in &self.failure_on {
            if !COUNTABLE_KINDS.contains(&kind.as_str()) {
                return Err((
                    "failure_on",
                    format!(
                        "unknown reason kind `{kind}` (known: {})",
                        COUNTABLE_KINDS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
