//! Fallback-rate alerts: per tier, the share of its calls that fell back over a sliding window
//! (default: more than 10% over 5 minutes, as reference article 004 suggests). Like a
//! Prometheus rule with `for:`, an alert fires only once the rate has stayed above the
//! threshold for `for_s` seconds, and resolves once it has stayed below for as long. When an
//! alert fires or clears: a WARN log event, the `tierhost_fallback_alert_firing` metric, and
//! an optional webhook POST.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::answer::Answer;
use crate::config::AlertConfig;

#[cfg(feature = "webhooks")]
mod webhook;
#[cfg(feature = "webhooks")]
pub use webhook::deliver;

/// Built without webhooks: a config with `[alerts] webhook` is refused when validated, so
/// there is never an event to deliver.
#[cfg(not(feature = "webhooks"))]
pub fn deliver(_url: String, _event: AlertEvent) {}

/// Where an alert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertState {
    /// The rate stayed above the threshold for `for_s`.
    Firing,
    /// The rate stayed below the threshold for `for_s`.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// The tier.
    pub tier: String,
    /// Whether it started or stopped firing.
    pub state: AlertState,
    /// Fallback share over the window.
    pub rate: f64,
    /// Calls in the window.
    pub calls: u64,
    /// Threshold.
    pub threshold: f64,
    /// Window, in seconds.
    pub window_s: u64,
}

#[derive(Default)]
struct Window {
    /// (second, calls, fallbacks), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    firing: bool,
    /// Second since which the condition has disagreed with `firing` (pending transition).
    pending_since: Option<u64>,
}

impl Window {
    fn add(&mut self, second: u64, fell_back: bool) {
        match self.buckets.back_mut() {
            Some((s, calls, falls)) if *s == second => {
                *calls += 1;
                *falls += u64::from(fell_back);
            }
            _ => self.buckets.push_back((second, 1, u64::from(fell_back))),
        }
    }

    fn totals(&mut self, now: u64, window_s: u64) -> (u64, u64) {
        while self
            .buckets
            .front()
            .is_some_and(|(s, _, _)| s + window_s <= now)
        {
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .fold((0, 0), |(c, f), (_, calls, falls)| (c + calls, f + falls))
    }
}

/// The alert state of every tier.
pub struct FallbackAlerts {
    config: AlertConfig,
    windows: Mutex<HashMap<String, Window>>,
}

impl FallbackAlerts {
    /// Alerts with `config`.
    pub fn new(config: AlertConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AlertConfig {
        &self.config
    }

    /// Counts one answer at `second` (seconds on any monotonic scale).
    pub fn observe(&self, answer: &Answer, second: u64) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        for entry in &answer.trail {
            let window = match windows.get_mut(entry.tier.as_str()) {
                Some(w) => w,
                None => windows.entry(entry.tier.clone()).or_default(),
            };
            window.add(second, entry.reason.is_some());
        }
    }

    /// Re-evaluates every tier at `second`; returns the transitions and the current
    /// `(tier, firing, rate)` of every tier.
    pub fn evaluate(&self, second: u64) -> (Vec<AlertEvent>, Vec<(String, bool, f64)>) {
        let Ok(mut windows) = self.windows.lock() else {
            return (Vec::new(), Vec::new());
        };
        let mut events = Vec::new();
        let mut states = Vec::new();
        for (tier, window) in windows.iter_mut() {
            let (calls, falls) = window.totals(second, self.config.window_s);
            let rate = if calls == 0 {
                0.0
            } else {
                falls as f64 / calls as f64
            };
            let should_fire = calls >= self.config.min_requests && rate > self.config.fallback_rate;
            if should_fire == window.firing {
                window.pending_since = None;
            } else if second.saturating_sub(*window.pending_since.get_or_insert(second))
                >= self.config.for_s
            {
                window.pending_since = None;
                window.firing = should_fire;
                events.push(AlertEvent {
                    tier: tier.clone(),
                    state: if should_fire {
                        AlertState::Firing
                    } else {
                        AlertState::Resolved
                    },
                    rate,
                    calls,
                    threshold: self.config.fallback_rate,
                    window_s: self.config.window_s,
                });
            }
            states.push((tier.clone(), window.firing, rate));
        }
        (events, states)
    }

    /// Tiers whose alert fires now.
    pub fn firing(&self) -> Vec<String> {
        self.windows
            .lock()
            .map(|w| {
                w.iter()
                    .filter(|(_, w)| w.firing)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::{Decision, ServedBy, Step, TrailEntry};
    use crate::reason::FallbackReason;

    fn answer(primary_fell_back: bool) -> Answer {
        let entry = |tier: &str, reason: Option<FallbackReason>| TrailEntry {
            tier: tier.into(),
            version: None,
            step: if reason.is_some() {
                Step::FellThrough
            } else {
                Step::Served
            },
            message: None,
            reason,
            elapsed_us: 1,
            fuel_used: 1,
            logs_dropped: 0,
            hedged: false,
        };
        let mut trail = vec![entry(
            "primary",
            primary_fell_back.then_some(FallbackReason::StackOverflow),
        )];
        if primary_fell_back {
            trail.push(entry("rules", None));
        }
        Answer {
            request_id: "r".into(),
            decision: Decision::Abstain { reason: "x".into() },
            served_by: ServedBy {
                tier: "rules".into(),
                plugin: None,
                version: None,
                sha256: None,
                config_digest: String::new(),
            },
            degraded: primary_fell_back,
            elapsed_us: 1,
            cache: None,
            escalation: None,
            trail,
        }
    }

    #[test]
    fn fires_above_the_rate_and_clears_when_the_window_moves_on() {
        let alerts = FallbackAlerts::new(AlertConfig {
            fallback_rate: 0.10,
            window_s: 60,
            min_requests: 20,
            for_s: 0,
            webhook: None,
        });
        // 10% exactly does not fire (the rule is "more than").
        for i in 0..100 {
            alerts.observe(&answer(i % 10 == 0), 0);
        }
        assert!(alerts.evaluate(1).0.is_empty());
        for _ in 0..10 {
            alerts.observe(&answer(true), 2);
        }
        let (events, _) = alerts.evaluate(3);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].tier.as_str(), events[0].state),
            ("primary", AlertState::Firing)
        );
        assert_eq!(alerts.firing(), vec!["primary".to_string()]);
        // A minute later the bad seconds have left the window: healthy traffic resolves it.
        for _ in 0..50 {
            alerts.observe(&answer(false), 70);
        }
        let (events, _) = alerts.evaluate(70);
        assert_eq!(events[0].state, AlertState::Resolved);
        assert!(alerts.firing().is_empty());
    }

    #[test]
    fn fires_only_after_the_rate_stayed_high_for_for_s() {
        let alerts = FallbackAlerts::new(AlertConfig {
            window_s: 60,
            min_requests: 20,
            for_s: 300,
            ..AlertConfig::default()
        });
        for _ in 0..40 {
            alerts.observe(&answer(true), 0);
        }
        assert!(
            alerts.evaluate(2).0.is_empty(),
            "high, but not for 300 s yet"
        );
        // Still high at 301 s (traffic keeps the window full of fallbacks).
        for second in [60, 120, 180, 240, 300] {
            for _ in 0..40 {
                alerts.observe(&answer(true), second);
            }
            assert!(alerts.evaluate(second).0.is_empty(), "{second}");
        }
        let (events, _) = alerts.evaluate(302);
        assert_eq!(events[0].state, AlertState::Firing);
        // A dip shorter than for_s does not resolve it.
        for _ in 0..100 {
            alerts.observe(&answer(false), 400);
        }
        assert!(alerts.evaluate(400).0.is_empty());
        for second in [460, 520, 580, 640] {
            for _ in 0..100 {
                alerts.observe(&answer(false), second);
            }
            let (events, _) = alerts.evaluate(second);
            assert!(events.is_empty(), "{second}");
        }
        // Low since 400 s: resolved 300 s later.
        let (events, _) = alerts.evaluate(700);
        assert_eq!(events[0].state, AlertState::Resolved);
    }

    #[test]
    fn needs_min_requests_before_firing() {
        let alerts = FallbackAlerts::new(AlertConfig::default());
        for _ in 0..5 {
            alerts.observe(&answer(true), 0);
        }
        assert!(
            alerts.evaluate(0).0.is_empty(),
            "5 calls is below min_requests"
        );
    }
}
