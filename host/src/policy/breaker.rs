//! The circuit breaker (`[tier.breaker]`): stops calling a tier that keeps failing, so an
//! outage costs a few requests instead of every request's latency budget.
//!
//! States: **closed** (calls go through and are counted in a sliding window, by count or by
//! time); **open** (the tier is skipped with `breaker-open`, at no cost: no instance is made)
//! for `open_ms`, growing by `open_backoff` on each reopen up to `open_max_ms`; **half-open**
//! (`half_open_calls` probe calls go through; their failure rate decides open or closed).
//! Operators can force it open or closed (`POST /admin/tiers/{name}/breaker`).
//!
//! Outcome-aware: `failure_on` lists the fallback reason kinds that count as failures, so a
//! tier that answers but is useless (low confidence, abstentions) can trip it too; a call
//! slower than `slow_call_ms` counts as a failure even if it was served.
//!
//! A result is counted only in the state it was admitted in (an epoch number changes on every
//! transition), so a slow call admitted before the breaker opened cannot close it again.
//! Transitions are logged at WARN, written to the audit file and sent to the metrics.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::memory::PolicyObserver;
use super::{CallContext, CallRecord, Ticket, TierPolicy};
use crate::events::AuditLog;
use crate::reason::FallbackReason;

/// Reason kinds a breaker may count as failures.
pub const COUNTABLE_KINDS: &[&str] = &[
    "deadline",
    "trap",
    "out-of-fuel",
    "memory-limit",
    "stack-overflow",
    "invalid-output",
    "tier-error",
    "low-confidence",
    "abstained",
    "out-of-distribution",
    "hedged",
];

/// Default `failure_on`: the faults (the tier broke or was too slow to be useful: `hedged` is
/// a call cancelled because a hedge answered first), not its judgement (low confidence,
/// abstained) nor its inputs (out of distribution).
pub const DEFAULT_FAILURE_ON: &[&str] = &[
    "hedged",
    "deadline",
    "trap",
    "out-of-fuel",
    "memory-limit",
    "stack-overflow",
    "invalid-output",
    "tier-error",
];

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

/// A breaker's state, as shown in `/v1/tiers`, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Probe calls go through.
    HalfOpen,
    /// The tier is skipped.
    Open,
    /// Held open by an operator.
    ForcedOpen,
    /// Held closed by an operator (calls go through, nothing is counted).
    ForcedClosed,
}

impl BreakerState {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
            Self::ForcedOpen => "forced-open",
            Self::ForcedClosed => "forced-closed",
        }
    }

    /// Value of `tierhost_breaker_state`: 0 closed, 1 half-open, 2 open (forced states count
    /// as what they hold).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed | Self::ForcedClosed => 0,
            Self::HalfOpen => 1,
            Self::Open | Self::ForcedOpen => 2,
        }
    }
}

/// What an operator asks of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerMode {
    /// Hold it open (drills, a known-bad tier).
    Open,
    /// Hold it closed (override a breaker that trips wrongly).
    Closed,
    /// Back to automatic, starting closed with an empty window.
    Automatic,
}

/// Calls and failures in the sliding window.
#[derive(Debug)]
enum Window {
    Count {
        outcomes: VecDeque<bool>,
        failures: usize,
        capacity: usize,
    },
    Time {
        /// (second, calls, failures), oldest first.
        buckets: VecDeque<(u64, usize, usize)>,
        span_s: u64,
    },
}

impl Window {
    fn new(config: &BreakerConfig) -> Self {
        match config.window {
            WindowKind::Count => Self::Count {
                outcomes: VecDeque::with_capacity(config.window_calls),
                failures: 0,
                capacity: config.window_calls,
            },
            WindowKind::Time => Self::Time {
                buckets: VecDeque::new(),
                span_s: config.window_s,
            },
        }
    }

    fn push(&mut self, now: Duration, failed: bool) {
        match self {
            Self::Count {
                outcomes,
                failures,
                capacity,
            } => {
                if outcomes.len() == *capacity && outcomes.pop_front() == Some(true) {
                    *failures -= 1;
                }
                outcomes.push_back(failed);
                *failures += usize::from(failed);
            }
            Self::Time { buckets, .. } => {
                let second = now.as_secs();
                match buckets.back_mut() {
                    Some((s, calls, failures)) if *s == second => {
                        *calls += 1;
                        *failures += usize::from(failed);
                    }
                    _ => buckets.push_back((second, 1, usize::from(failed))),
                }
                self.expire(now);
            }
        }
    }

    fn expire(&mut self, now: Duration) {
        if let Self::Time { buckets, span_s } = self {
            let oldest = now.as_secs().saturating_sub(*span_s - 1);
            while buckets.front().is_some_and(|(s, _, _)| *s < oldest) {
                buckets.pop_front();
            }
        }
    }

    /// (calls, failures) in the window at `now`.
    fn counts(&mut self, now: Duration) -> (usize, usize) {
        self.expire(now);
        match self {
            Self::Count {
                outcomes, failures, ..
            } => (outcomes.len(), *failures),
            Self::Time { buckets, .. } => buckets
                .iter()
                .fold((0, 0), |(c, f), (_, calls, fails)| (c + calls, f + fails)),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Duration,
    },
    HalfOpen {
        admitted: usize,
        done: usize,
        failures: usize,
    },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    forced: Option<BreakerMode>,
    window: Window,
    /// Opens since the last close (drives the backoff).
    opens_in_a_row: u32,
    /// Changes on every transition; results from an older epoch are not counted.
    epoch: u64,
    transitions: u64,
}

impl Inner {
    fn state(&self) -> BreakerState {
        match (self.forced, &self.phase) {
            (Some(BreakerMode::Open), _) => BreakerState::ForcedOpen,
            (Some(BreakerMode::Closed), _) => BreakerState::ForcedClosed,
            (_, Phase::Closed) => BreakerState::Closed,
            (_, Phase::Open { .. }) => BreakerState::Open,
            (_, Phase::HalfOpen { .. }) => BreakerState::HalfOpen,
        }
    }
}

/// One state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// A breaker's state and counts, for `/v1/tiers`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// Current state.
    pub state: BreakerState,
    /// Calls in the window.
    pub window_calls: usize,
    /// Failures in the window.
    pub window_failures: usize,
    /// Failures / calls in the window.
    pub failure_rate: f64,
    /// Time until an open breaker lets probes through, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_remaining_ms: Option<u64>,
    /// Opens since the last close.
    pub opens_in_a_row: u32,
    /// Transitions since this tier version loaded.
    pub transitions: u64,
}

/// The state that outlives a request (kept in [`super::memory::PolicyMemory`]).
pub struct BreakerCore {
    inner: Mutex<Inner>,
}

impl BreakerCore {
    /// A closed breaker.
    pub fn new(config: &BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                forced: None,
                window: Window::new(config),
                opens_in_a_row: 0,
                epoch: 0,
                transitions: 0,
            }),
        }
    }
}

/// Where transitions are reported.
pub struct BreakerEvents {
    /// Cascade name.
    pub cascade: Arc<str>,
    /// Tier name.
    pub tier: Arc<str>,
    /// The audit file, when configured.
    pub audit: Option<Arc<AuditLog>>,
    /// Metrics.
    pub observer: Option<Arc<dyn PolicyObserver>>,
}

/// A tier's breaker: its config, its state and where transitions go.
pub struct Breaker {
    config: BreakerConfig,
    core: Arc<BreakerCore>,
    clock: Arc<dyn Clock>,
    events: BreakerEvents,
}

/// What an admitted call holds: the epoch it was admitted in, and whether it is a probe (a
/// probe slot is given back if the turn ends without a result).
struct BreakerTicket {
    core: Arc<BreakerCore>,
    epoch: u64,
    probe: bool,
    counted: bool,
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if !self.probe || self.counted {
            return;
        }
        if let Ok(mut inner) = self.core.inner.lock()
            && inner.epoch == self.epoch
            && let Phase::HalfOpen { admitted, .. } = &mut inner.phase
        {
            *admitted = admitted.saturating_sub(1);
        }
    }
}

impl Breaker {
    /// A breaker on `core` (shared across reloads of the same tier version).
    pub fn new(
        config: BreakerConfig,
        core: Arc<BreakerCore>,
        clock: Arc<dyn Clock>,
        events: BreakerEvents,
    ) -> Self {
        Self {
            config,
            core,
            clock,
            events,
        }
    }

    /// Its config.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.core
            .inner
            .lock()
            .map_or(BreakerState::Closed, |i| i.state())
    }

    /// State and counts.
    pub fn view(&self) -> BreakerView {
        let now = self.clock.now();
        let Ok(mut inner) = self.core.inner.lock() else {
            return BreakerView {
                state: BreakerState::Closed,
                window_calls: 0,
                window_failures: 0,
                failure_rate: 0.0,
                open_remaining_ms: None,
                opens_in_a_row: 0,
                transitions: 0,
            };
        };
        let (calls, failures) = inner.window.counts(now);
        BreakerView {
            state: inner.state(),
            window_calls: calls,
            window_failures: failures,
            failure_rate: if calls == 0 {
                0.0
            } else {
                failures as f64 / calls as f64
            },
            open_remaining_ms: match inner.phase {
                Phase::Open { until } if inner.forced.is_none() => {
                    Some(until.saturating_sub(now).as_millis() as u64)
                }
                _ => None,
            },
            opens_in_a_row: inner.opens_in_a_row,
            transitions: inner.transitions,
        }
    }

    /// Forces the breaker open or closed, or gives it back to the automatic rules.
    pub fn force(&self, mode: BreakerMode) -> BreakerState {
        let transition = {
            let Ok(mut inner) = self.core.inner.lock() else {
                return BreakerState::Closed;
            };
            let from = inner.state();
            match mode {
                BreakerMode::Open | BreakerMode::Closed => inner.forced = Some(mode),
                BreakerMode::Automatic => {
                    inner.forced = None;
                    inner.phase = Phase::Closed;
                    inner.opens_in_a_row = 0;
                    inner.window = Window::new(&self.config);
                }
            }
            self.changed(&mut inner, from)
        };
        self.report(transition, "forced by an operator");
        self.state()
    }

    /// Bumps the epoch and returns the transition when the state changed.
    fn changed(&self, inner: &mut Inner, from: BreakerState) -> Option<Transition> {
        let to = inner.state();
        inner.epoch += 1;
        (from != to).then(|| {
            inner.transitions += 1;
            Transition { from, to }
        })
    }

    fn open(&self, inner: &mut Inner, now: Duration) -> Option<Transition> {
        let from = inner.state();
        let factor = self
            .config
            .open_backoff
            .powi(i32::try_from(inner.opens_in_a_row).unwrap_or(i32::MAX));
        let open_ms = (self.config.open_ms as f64 * factor).min(self.config.open_max() as f64);
        inner.opens_in_a_row = inner.opens_in_a_row.saturating_add(1);
        inner.phase = Phase::Open {
            until: now + Duration::from_millis(open_ms as u64),
        };
        inner.window = Window::new(&self.config);
        self.changed(inner, from)
    }

    fn close(&self, inner: &mut Inner) -> Option<Transition> {
        let from = inner.state();
        inner.phase = Phase::Closed;
        inner.opens_in_a_row = 0;
        inner.window = Window::new(&self.config);
        self.changed(inner, from)
    }

    fn report(&self, transition: Option<Transition>, why: &str) {
        let Some(t) = transition else { return };
        tracing::warn!(
            target: "tierhost::breaker",
            cascade = %self.events.cascade,
            tier = %self.events.tier,
            from = t.from.name(),
            to = t.to.name(),
            "circuit breaker {} -> {}: {why}",
            t.from.name(),
            t.to.name()
        );
        if let Some(audit) = &self.events.audit {
            audit.write_record(&serde_json::json!({
                "time": crate::events::now_rfc3339(),
                "event": "breaker-transition",
                "cascade": &*self.events.cascade,
                "tier": &*self.events.tier,
                "from": t.from,
                "to": t.to,
                "why": why,
            }));
        }
        if let Some(observer) = &self.events.observer {
            observer.breaker_transition(&self.events.tier, t.from, t.to);
        }
    }

    fn is_failure(&self, record: &CallRecord<'_>) -> bool {
        let by_kind = record
            .verdict
            .err()
            .is_some_and(|r| self.config.failure_on.iter().any(|k| k == r.kind()));
        let slow = record.called
            && self
                .config
                .slow_call_ms
                .is_some_and(|ms| record.elapsed > Duration::from_millis(ms));
        by_kind || slow
    }
}

impl TierPolicy for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn admit(&self, ctx: &CallContext<'_>) -> Result<Ticket, FallbackReason> {
        let (result, transition) = {
            let Ok(mut inner) = self.core.inner.lock() else {
                return Ok(Ticket::none());
            };
            let mut transition = None;
            if inner.forced.is_none()
                && let Phase::Open { until } = inner.phase
                && ctx.now >= until
            {
                let from = inner.state();
                inner.phase = Phase::HalfOpen {
                    admitted: 0,
                    done: 0,
                    failures: 0,
                };
                transition = self.changed(&mut inner, from);
            }
            let epoch = inner.epoch;
            let ticket = |probe| {
                Ticket::holding(BreakerTicket {
                    core: self.core.clone(),
                    epoch,
                    probe,
                    counted: false,
                })
            };
            let result = match (inner.forced, &mut inner.phase) {
                (Some(BreakerMode::Open), _) => Err(FallbackReason::BreakerOpen {
                    detail: "forced open by an operator".into(),
                }),
                (Some(_), _) | (None, Phase::Closed) => Ok(ticket(false)),
                (None, Phase::Open { until }) => Err(FallbackReason::BreakerOpen {
                    detail: format!(
                        "open for another {} ms",
                        until.saturating_sub(ctx.now).as_millis()
                    ),
                }),
                (None, Phase::HalfOpen { admitted, .. }) => {
                    if *admitted < self.config.half_open_calls {
                        *admitted += 1;
                        Ok(ticket(true))
                    } else {
                        Err(FallbackReason::BreakerOpen {
                            detail: format!(
                                "half-open: {} probe calls already admitted",
                                self.config.half_open_calls
                            ),
                        })
                    }
                }
            };
            (result, transition)
        };
        self.report(transition, "open time elapsed, letting probe calls through");
        result
    }

    fn observe(&self, ticket: Ticket, record: &CallRecord<'_>) {
        let Some(mut ticket) = ticket.take::<BreakerTicket>() else {
            return;
        };
        let failed = self.is_failure(record);
        if !record.called && !failed {
            // Skipped by a later gate for a reason this breaker does not count: the probe slot
            // (if any) goes back when the ticket drops.
            return;
        }
        let now = self.clock.now();
        let (transition, why) = {
            let Ok(mut inner) = self.core.inner.lock() else {
                return;
            };
            if inner.epoch != ticket.epoch || inner.forced.is_some() {
                return;
            }
            ticket.counted = true;
            match &mut inner.phase {
                Phase::Closed => {
                    inner.window.push(now, failed);
                    let (calls, failures) = inner.window.counts(now);
                    let rate = failures as f64 / calls.max(1) as f64;
                    if calls >= self.config.minimum_calls && rate >= self.config.failure_rate {
                        let why = format!(
                            "{failures} of the last {calls} calls failed ({:.0}% >= {:.0}%)",
                            rate * 100.0,
                            self.config.failure_rate * 100.0
                        );
                        (self.open(&mut inner, now), why)
                    } else {
                        (None, String::new())
                    }
                }
                Phase::HalfOpen { done, failures, .. } => {
                    *done += 1;
                    *failures += usize::from(failed);
                    if *done < self.config.half_open_calls {
                        (None, String::new())
                    } else {
                        let (done, failures) = (*done, *failures);
                        let rate = failures as f64 / done as f64;
                        let why = format!("{failures} of {done} probe calls failed");
                        if rate >= self.config.failure_rate {
                            (self.open(&mut inner, now), why)
                        } else {
                            (self.close(&mut inner), why)
                        }
                    }
                }
                Phase::Open { .. } => (None, String::new()),
            }
        };
        self.report(transition, &why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::clock::ManualClock;
    use crate::request::Request;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<(BreakerState, BreakerState)>>);
    impl PolicyObserver for Recorder {
        fn breaker_transition(&self, _tier: &str, from: BreakerState, to: BreakerState) {
            self.0.lock().unwrap().push((from, to));
        }
    }

    fn breaker(config: BreakerConfig) -> (Breaker, Arc<ManualClock>, Arc<Recorder>) {
        let clock = Arc::new(ManualClock::new());
        let recorder = Arc::new(Recorder::default());
        let core = Arc::new(BreakerCore::new(&config));
        let b = Breaker::new(
            config,
            core,
            clock.clone(),
            BreakerEvents {
                cascade: Arc::from("c"),
                tier: Arc::from("t"),
                audit: None,
                observer: Some(recorder.clone()),
            },
        );
        (b, clock, recorder)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_calls: 10,
            minimum_calls: 4,
            failure_rate: 0.5,
            open_ms: 1_000,
            open_backoff: 2.0,
            open_max_ms: Some(3_000),
            half_open_calls: 2,
            ..BreakerConfig::default()
        }
    }

    /// Admits one call at the clock's time and records `reason` (None: served).
    fn call(
        b: &Breaker,
        clock: &ManualClock,
        reason: Option<FallbackReason>,
    ) -> Result<(), String> {
        let request = Request::new("r", vec![]);
        let ctx = CallContext {
            request: &request,
            remaining: Duration::from_millis(100),
            now: clock.now(),
        };
        let ticket = b.admit(&ctx).map_err(|r| r.kind().to_string())?;
        let record = CallRecord {
            called: true,
            elapsed: Duration::from_micros(10),
            verdict: match &reason {
                Some(r) => Err(r),
                None => Ok(()),
            },
        };
        b.observe(ticket, &record);
        Ok(())
    }

    fn trap() -> Option<FallbackReason> {
        Some(FallbackReason::Trap {
            message: "x".into(),
        })
    }

    #[test]
    fn every_transition_trips_deterministically() {
        let (b, clock, rec) = breaker(config());
        // Closed: 3 failures are below minimum_calls; the 4th call (a success) makes 3/4.
        for _ in 0..3 {
            call(&b, &clock, trap()).unwrap();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        call(&b, &clock, None).unwrap();
        // closed -> open
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
        clock.advance(Duration::from_millis(999));
        assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
        // open -> half-open after open_ms; a failed probe round reopens (half-open -> open).
        clock.advance(Duration::from_millis(1));
        call(&b, &clock, trap()).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        call(&b, &clock, None).unwrap();
        assert_eq!(b.state(), BreakerState::Open, "1 of 2 probes failed = 50%");
        // Backoff: the second open lasts 2 s.
        clock.advance(Duration::from_millis(1_999));
        assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
        clock.advance(Duration::from_millis(1));
        call(&b, &clock, None).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        call(&b, &clock, None).unwrap();
        // half-open -> closed
        assert_eq!(b.state(), BreakerState::Closed);
        use BreakerState::*;
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
    }

    #[test]
    fn half_open_admits_only_its_probes_and_gives_back_unused_slots() {
        let (b, clock, _) = breaker(BreakerConfig {
            minimum_calls: 1,
            ..config()
        });
        call(&b, &clock, trap()).unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(1_000));
        let request = Request::new("r", vec![]);
        let ctx = CallContext {
            request: &request,
            remaining: Duration::from_millis(100),
            now: clock.now(),
        };
        let first = b.admit(&ctx).unwrap();
        let second = b.admit(&ctx).unwrap();
        assert_eq!(b.admit(&ctx).unwrap_err().kind(), "breaker-open");
        // A probe skipped by a later gate (not counted) frees its slot.
        drop(second);
        let third = b.admit(&ctx).unwrap();
        drop((first, third));
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn counts_only_the_configured_kinds_and_slow_calls() {
        let (b, clock, _) = breaker(config());
        let low = || {
            Some(FallbackReason::LowConfidence {
                confidence: 0.1,
                min_confidence: 0.5,
            })
        };
        for _ in 0..10 {
            call(&b, &clock, low()).unwrap();
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "low confidence is not a fault by default"
        );
        let (b, clock, _) = breaker(BreakerConfig {
            failure_on: vec!["low-confidence".into()],
            ..config()
        });
        for _ in 0..4 {
            call(&b, &clock, low()).unwrap();
        }
        assert_eq!(b.state(), BreakerState::Open, "outcome-aware");
        let (b, clock, _) = breaker(BreakerConfig {
            slow_call_ms: Some(1),
            ..config()
        });
        let request = Request::new("r", vec![]);
        for _ in 0..4 {
            let ctx = CallContext {
                request: &request,
                remaining: Duration::from_millis(100),
                now: clock.now(),
            };
            let ticket = b.admit(&ctx).unwrap();
            b.observe(
                ticket,
                &CallRecord {
                    called: true,
                    elapsed: Duration::from_millis(5),
                    verdict: Ok(()),
                },
            );
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "slow answers count as failures"
        );
    }

    #[test]
    fn results_from_an_older_state_are_not_counted() {
        let (b, clock, _) = breaker(BreakerConfig {
            minimum_calls: 1,
            half_open_calls: 1,
            ..config()
        });
        let request = Request::new("r", vec![]);
        let ctx = CallContext {
            request: &request,
            remaining: Duration::from_millis(100),
            now: clock.now(),
        };
        let slow = b.admit(&ctx).unwrap();
        call(&b, &clock, trap()).unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        // The call admitted while closed answers after the breaker opened: ignored.
        b.observe(
            slow,
            &CallRecord {
                called: true,
                elapsed: Duration::ZERO,
                verdict: Ok(()),
            },
        );
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn time_window_forgets_old_calls() {
        let (b, clock, _) = breaker(BreakerConfig {
            window: WindowKind::Time,
            window_s: 10,
            ..config()
        });
        for _ in 0..3 {
            call(&b, &clock, trap()).unwrap();
        }
        clock.advance(Duration::from_secs(10));
        call(&b, &clock, trap()).unwrap();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the first 3 fell out of the window"
        );
        for _ in 0..3 {
            call(&b, &clock, trap()).unwrap();
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn operators_can_force_and_release() {
        let (b, clock, rec) = breaker(config());
        assert_eq!(b.force(BreakerMode::Open), BreakerState::ForcedOpen);
        assert_eq!(call(&b, &clock, None), Err("breaker-open".into()));
        assert_eq!(b.force(BreakerMode::Closed), BreakerState::ForcedClosed);
        for _ in 0..10 {
            call(&b, &clock, trap()).unwrap();
        }
        assert_eq!(
            b.state(),
            BreakerState::ForcedClosed,
            "nothing counted while forced"
        );
        assert_eq!(b.force(BreakerMode::Automatic), BreakerState::Closed);
        assert_eq!(rec.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = |c: BreakerConfig| c.validate().unwrap_err().0;
        assert_eq!(
            bad(BreakerConfig {
                failure_rate: 0.0,
                ..config()
            }),
            "failure_rate"
        );
        assert_eq!(
            bad(BreakerConfig {
                minimum_calls: 11,
                ..config()
            }),
            "minimum_calls"
        );
        assert_eq!(
            bad(BreakerConfig {
                open_backoff: 0.5,
                ..config()
            }),
            "open_backoff"
        );
        assert_eq!(
            bad(BreakerConfig {
                open_max_ms: Some(10),
                ..config()
            }),
            "open_max_ms"
        );
        assert_eq!(
            bad(BreakerConfig {
                failure_on: vec!["bogus".into()],
                ..config()
            }),
            "failure_on"
        );
        assert!(BreakerConfig::default().validate().is_ok());
    }
}
