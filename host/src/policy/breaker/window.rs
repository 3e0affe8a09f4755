//! The sliding window of call outcomes (by count or by time) and the breaker's phase.
use std::collections::VecDeque;
use std::time::Duration;

use super::*;

/// Calls and failures in the sliding window.
#[derive(Debug)]
pub(super) enum Window {
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
    pub(super) fn new(config: &BreakerConfig) -> Self {
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

    pub(super) fn push(&mut self, now: Duration, failed: bool) {
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

    pub(super) fn expire(&mut self, now: Duration) {
        if let Self::Time { buckets, span_s } = self {
            let oldest = now.as_secs().saturating_sub(*span_s - 1);
            while buckets.front().is_some_and(|(s, _, _)| *s < oldest) {
                buckets.pop_front();
            }
        }
    }

    /// (calls, failures) in the window at `now`.
    pub(super) fn counts(&mut self, now: Duration) -> (usize, usize) {
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
pub(super) enum Phase {
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
pub(super) struct Inner {
    pub(super) phase: Phase,
    pub(super) forced: Option<BreakerMode>,
    pub(super) window: Window,
    /// Opens since the last close (drives the backoff).
    pub(super) opens_in_a_row: u32,
    /// Changes on every transition; results from an older epoch are not counted.
    pub(super) epoch: u64,
    pub(super) transitions: u64,
}

impl Inner {
    pub(super) fn state(&self) -> BreakerState {
        match (self.forced, &self.phase) {
            (Some(BreakerMode::Open), _) => BreakerState::ForcedOpen,
            (Some(BreakerMode::Closed), _) => BreakerState::ForcedClosed,
            (_, Phase::Closed) => BreakerState::Closed,
            (_, Phase::Open { .. }) => BreakerState::Open,
            (_, Phase::HalfOpen { .. }) => BreakerState::HalfOpen,
        }
    }
}
