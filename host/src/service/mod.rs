//! A cascade run as a long-lived service: the current cascade behind an atomic pointer (hot
//! swap), the host-wide bulkhead, metrics and alerts, and reloads that compile off the request
//! path and never replace a working cascade with a broken one. What triggers reloads and
//! evaluates alerts in the background (SIGHUP, file changes, the alert clock) is in
//! [`lifecycle`]; no transport is needed (the HTTP server is one user of it).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;

mod lifecycle;
mod reload;
mod rollout;

pub use lifecycle::{Background, shutdown_signal};
use reload::load_off_request_path;
pub use reload::{ReloadOutcome, ReloadReport};
pub use rollout::{RolloutAction, RolloutError, RolloutReport};

use crate::alerts::FallbackAlerts;
use crate::answer::Answer;
use crate::cascade::Cascade;
use crate::config::Config;
use crate::engine::TierEngine;
use crate::error::{ServiceError, TierActionError};
use crate::metrics::Metrics;
use crate::policy::breaker::{BreakerMode, BreakerState};
use crate::policy::memory::PolicyMemory;
use crate::reason::FallbackReason;
use crate::request::Request;

/// Extra time past the request budget before the host gives up on a request and answers with
/// the safe default (scheduling delays; tiers themselves are cut off at the budget). `tierhost
/// drill` holds every drilled request to the budget plus this grace.
pub const BUDGET_GRACE: Duration = Duration::from_millis(50);

/// A loaded cascade with the config it came from.
pub struct Live {
    /// The cascade (shared with the generation a rollback returns to).
    pub cascade: Arc<Cascade>,
    /// Its config.
    pub config: Config,
    /// 1 for the cascade loaded at start, +1 per applied reload.
    pub generation: u64,
}

/// The service state shared by every request handler.
pub struct CascadeService {
    engine: TierEngine,
    config_path: PathBuf,
    current: ArcSwap<Live>,
    reload_lock: tokio::sync::Mutex<()>,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
    /// Policy state kept across reloads (breakers, hedging latency, embedded cache, audit).
    memory: Arc<PolicyMemory>,
    alerts: FallbackAlerts,
    started: Instant,
    /// What a rollback returns to, after a promote.
    rollback: std::sync::Mutex<Option<rollout::Rollback>>,
}

impl CascadeService {
    /// Loads the config file and its cascade. Tiers that fail to load are reported by
    /// `/readyz` and stepped over; a config that cannot be parsed is an error. [`Self::reload`]
    /// re-reads this file.
    pub async fn start(config_path: &Path) -> Result<Arc<Self>, ServiceError> {
        Self::new(Config::load(config_path)?).await
    }

    /// Runs `config` (from a file or made in code; [`Self::reload`] re-reads `config.source`,
    /// [`Self::reload_with`] takes a new config).
    pub async fn new(config: Config) -> Result<Arc<Self>, ServiceError> {
        let config_path = config.source.clone();
        let engine = TierEngine::new(&config.engine, &config.base_dir)?;
        let metrics = Arc::new(Metrics::new().map_err(|e| ServiceError::Metrics(e.to_string()))?);
        let memory = Arc::new(PolicyMemory::default().with_observer(metrics.clone()));
        let cascade = load_off_request_path(engine.clone(), config.clone(), memory.clone()).await?;
        for (tier, error) in cascade.load_errors() {
            tracing::error!(tier, %error, "tier failed to load; it will be stepped over (load-failed)");
        }
        let service = Arc::new(Self {
            in_flight: Semaphore::new(config.server.max_in_flight),
            alerts: FallbackAlerts::new(config.alerts.clone()),
            metrics,
            memory,
            engine,
            config_path,
            current: ArcSwap::from_pointee(Live {
                cascade: Arc::new(cascade),
                config,
                generation: 1,
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            rollback: std::sync::Mutex::new(None),
        });
        service.publish_tiers();
        Ok(service)
    }

    /// The cascade serving now.
    pub fn current(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Alerts.
    pub fn alerts(&self) -> &FallbackAlerts {
        &self.alerts
    }

    /// The config file the service reloads.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Seconds since start (the alert windows' clock).
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Answers one request. Never fails and never waits for capacity: when the host is
    /// saturated the safe default answers at once (`shed`), and the cascade never holds a
    /// request past its budget. An answer that escalates is then committed to the review queue
    /// (at most `escalation.write_timeout_ms` more) before it is returned.
    pub async fn predict(&self, request: &Request) -> Answer {
        // In-flight requests keep the cascade they started with across a hot swap.
        let loaded = self.current.load_full();
        let answer = self.decide(&loaded.cascade, request).await;
        let answer = loaded.cascade.escalate(request, answer).await;
        self.record(&loaded.cascade, &answer);
        answer
    }

    /// Answers `requests` one after the other, like [`Self::predict`] each, except that their
    /// escalations are committed together at the end (one group commit, not one per request).
    pub async fn predict_batch(&self, requests: &[Request]) -> Vec<Answer> {
        let loaded = self.current.load_full();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(self.decide(&loaded.cascade, request).await);
        }
        let answers = loaded.cascade.escalate_all(requests, answers).await;
        for answer in &answers {
            self.record(&loaded.cascade, answer);
        }
        answers
    }

    /// The cascade's answer under the host-wide bulkhead and the budget, not yet escalated.
    async fn decide(&self, cascade: &Cascade, request: &Request) -> Answer {
        let started = Instant::now();
        match self.in_flight.try_acquire() {
            Err(_) => {
                self.metrics.shed();
                cascade.answer_without_tiers(
                    request,
                    FallbackReason::Shed {
                        detail: "host saturated (server.max_in_flight)".into(),
                    },
                    started,
                )
            }
            Ok(_permit) => {
                self.metrics.in_flight().inc();
                let result =
                    tokio::time::timeout(cascade.budget() + BUDGET_GRACE, cascade.decide(request))
                        .await;
                self.metrics.in_flight().dec();
                match result {
                    Ok(answer) => answer,
                    Err(_) => cascade.answer_without_tiers(
                        request,
                        FallbackReason::BudgetExhausted,
                        started,
                    ),
                }
            }
        }
    }

    /// Metrics and alerts of one final answer.
    fn record(&self, cascade: &Cascade, answer: &Answer) {
        self.metrics.observe(answer);
        self.metrics
            .escalation(cascade.name(), answer.escalation.as_ref());
        self.alerts.observe(answer, self.uptime_s());
    }

    fn publish_tiers(&self) {
        let current = self.current.load();
        let tiers: Vec<_> = current
            .cascade
            .loaded_plugins()
            .map(|(tier, info)| {
                (
                    tier.to_string(),
                    info.name.clone(),
                    info.version.clone(),
                    info.sha256.clone(),
                )
            })
            .collect();
        self.metrics.set_tiers(&tiers);
        for tier in current.cascade.tiers() {
            if let Some(breaker) = &tier.policies.breaker {
                self.metrics
                    .breaker_state(&tier.config.name, breaker.state());
            }
        }
    }

    /// Forces tier `name`'s breaker open or closed, or back to automatic. `Err` when there is
    /// no such tier or it has no `[tier.breaker]`.
    pub fn force_breaker(
        &self,
        name: &str,
        mode: BreakerMode,
    ) -> Result<BreakerState, TierActionError> {
        let current = self.current.load();
        let tier = current
            .cascade
            .tiers()
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| TierActionError::NoSuchTier(name.to_string()))?;
        let breaker = tier
            .policies
            .breaker
            .as_ref()
            .ok_or_else(|| TierActionError::NoBreaker(name.to_string()))?;
        let state = breaker.force(mode);
        tracing::warn!(tier = name, mode = ?mode, state = state.name(), "breaker forced by an operator");
        Ok(state)
    }

    /// Re-evaluates the fallback-rate alerts (called every second by [`Background`]).
    pub fn evaluate_alerts(&self) -> Vec<crate::alerts::AlertEvent> {
        let (events, states) = self.alerts.evaluate(self.uptime_s());
        for (tier, firing, rate) in states {
            self.metrics.alert(&tier, firing, rate);
        }
        for event in &events {
            tracing::warn!(
                target: "tierhost::alert",
                tier = %event.tier,
                state = event.state.as_str(),
                rate = event.rate,
                calls = event.calls,
                threshold = event.threshold,
                window_s = event.window_s,
                "fallback-rate alert {}",
                event.state.as_str()
            );
        }
        events
    }

    /// The metrics in the Prometheus text format, with the review queue's backlog read now.
    pub fn render_metrics(&self) -> String {
        #[cfg(feature = "escalation")]
        if let Some(escalation) = self.current().cascade.escalation() {
            match escalation.queue().store().stats() {
                Ok(stats) => self.metrics.escalation_backlog(
                    self.current().cascade.name(),
                    stats.pending,
                    stats.oldest_pending_s,
                ),
                Err(error) => tracing::warn!(%error, "cannot read the escalation backlog"),
            }
        }
        self.metrics.render()
    }

    /// Flushes the audit log (on shutdown).
    pub fn flush(&self) {
        if let Some(audit) = self.current.load().cascade.audit()
            && let Err(error) = audit.flush()
        {
            tracing::error!(%error, "flushing the audit log failed");
        }
    }
}
