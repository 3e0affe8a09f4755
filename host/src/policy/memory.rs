//! What the cascade remembers between requests and across reloads: policy state (breaker
//! windows, hedging latency) keyed by tier name and plugin digest, the audit writer, the clock,
//! and who hears about policy events (metrics).
//!
//! A service keeps one [`PolicyMemory`] for its lifetime and loads every cascade generation
//! with it: a reloaded tier whose plugin is unchanged finds its state again; a tier whose
//! plugin changed gets a new key, so it starts clean (it is a different tier now).
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::breaker::BreakerState;
use super::clock::{Clock, SystemClock};
use crate::events::AuditLog;

/// Who hears about policy events that are not part of any one answer.
pub trait PolicyObserver: Send + Sync {
    /// A tier's circuit breaker changed state.
    fn breaker_transition(&self, tier: &str, from: BreakerState, to: BreakerState);
    /// A shadowed request was compared (or dropped); `agreement` is the tier's agreement so far.
    fn shadow_call(
        &self,
        _tier: &str,
        _outcome: crate::shadow::ShadowOutcome,
        _agreement: Option<f64>,
    ) {
    }
}

/// State that outlives a request and a reload.
pub struct PolicyMemory {
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn PolicyObserver>>,
    states: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
    audit: Mutex<Option<Arc<AuditLog>>>,
    #[cfg(feature = "escalation")]
    escalation: Mutex<
        Option<(
            crate::config::EscalationConfig,
            Arc<crate::escalation::EscalationQueue>,
        )>,
    >,
}

impl Default for PolicyMemory {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock::new()))
    }
}

impl PolicyMemory {
    /// Empty memory on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            observer: None,
            states: Mutex::new(HashMap::new()),
            audit: Mutex::new(None),
            #[cfg(feature = "escalation")]
            escalation: Mutex::new(None),
        }
    }

    /// Sends policy events to `observer` too.
    pub fn with_observer(mut self, observer: Arc<dyn PolicyObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The clock policies read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The observer, if any.
    pub fn observer(&self) -> Option<&Arc<dyn PolicyObserver>> {
        self.observer.as_ref()
    }

    /// The state stored under `key`, made by `make` the first time. A key names the policy,
    /// the tier, its plugin digest and the policy's config, so state is never shared by two
    /// different things.
    pub fn state<T: Any + Send + Sync>(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let Ok(mut states) = self.states.lock() else {
            // A panic while holding this lock is a bug elsewhere; fresh state is still correct.
            return Arc::new(make());
        };
        if let Some(existing) = states.get(key).and_then(|s| s.clone().downcast::<T>().ok()) {
            return existing;
        }
        let state = Arc::new(make());
        states.insert(key.to_string(), state.clone());
        state
    }

    /// Forgets every state whose key is not in `keep` (called after a reload is applied, so
    /// replaced tiers' state does not pile up).
    pub fn retain(&self, keep: &HashSet<String>) {
        if let Ok(mut states) = self.states.lock() {
            states.retain(|k, _| keep.contains(k));
        }
    }

    /// The audit writer for `path`: the one already open when the path is the same (a reload
    /// keeps one writer and one rotation), else a new one.
    pub fn audit_log(
        &self,
        path: &Path,
        max_bytes: u64,
        keep: u32,
    ) -> std::io::Result<Arc<AuditLog>> {
        let mut current = self
            .audit
            .lock()
            .map_err(|_| std::io::Error::other("audit writer lock poisoned"))?;
        if let Some(log) = current.as_ref().filter(|l| l.path() == path) {
            return Ok(log.clone());
        }
        let log = Arc::new(AuditLog::open(path, max_bytes, keep)?);
        *current = Some(log.clone());
        Ok(log)
    }

    /// The escalation queue at `path`: the one already open when the path and the writer's
    /// settings are the same (a reload keeps one writer), else a new one.
    #[cfg(feature = "escalation")]
    pub fn escalation_queue(
        &self,
        path: &Path,
        config: &crate::config::EscalationConfig,
    ) -> Result<Arc<crate::escalation::EscalationQueue>, crate::escalation::QueueError> {
        let same = |open: &crate::config::EscalationConfig| {
            (open.sync, open.max_pending, open.max_batch)
                == (config.sync, config.max_pending, config.max_batch)
        };
        let mut current = self.escalation.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((open, queue)) = current.as_ref()
            && queue.path() == path
            && same(open)
        {
            return Ok(queue.clone());
        }
        let queue = Arc::new(crate::escalation::EscalationQueue::open(path, config)?);
        *current = Some((config.clone(), queue.clone()));
        Ok(queue)
    }
}
