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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::memory::PolicyObserver;
use super::{CallContext, CallRecord, Ticket, TierPolicy};
use crate::events::AuditLog;
use crate::reason::FallbackReason;

mod config;
mod state;
#[cfg(test)]
mod tests;
mod window;

pub use config::*;
pub use state::*;
use window::*;

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
