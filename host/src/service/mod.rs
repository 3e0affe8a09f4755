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

pub use lifecycle::{Background, shutdown_signal};

use crate::alerts::FallbackAlerts;
use crate::answer::Answer;
use crate::cascade::Cascade;
use crate::config::Config;
use crate::engine::TierEngine;
use crate::error::ServiceError;
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
    /// The cascade.
    pub cascade: Cascade,
    /// Its config.
    pub config: Config,
    /// 1 for the cascade loaded at start, +1 per applied reload.
    pub generation: u64,
}

/// Whether a reload replaced the serving cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// The new cascade serves.
    Applied,
    /// The new cascade failed to load or check; the old one keeps serving.
    Rejected,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Whether the new cascade serves.
    pub outcome: ReloadOutcome,
    /// What triggered it (`sighup`, `admin`, `file-change`).
    pub trigger: String,
    /// Generation serving after the reload.
    pub generation: u64,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tier -> (version, sha256) serving after the reload.
    pub tiers: Vec<(String, String, String)>,
    /// Time spent loading and checking, in milliseconds.
    pub elapsed_ms: u64,
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
                cascade,
                config,
                generation: 1,
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
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
    /// saturated the safe default answers at once (`shed`), and a request is never held past
    /// its budget.
    pub async fn predict(&self, request: &Request) -> Answer {
        let started = Instant::now();
        // In-flight requests keep the cascade they started with across a hot swap.
        let loaded = self.current.load_full();
        let cascade = &loaded.cascade;
        let answer = match self.in_flight.try_acquire() {
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
                    tokio::time::timeout(cascade.budget() + BUDGET_GRACE, cascade.predict(request))
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
        };
        self.metrics.observe(&answer);
        self.alerts.observe(&answer, self.uptime_s());
        answer
    }

    /// Re-reads the config file, loads every tier (compiling off the request path), checks it,
    /// and swaps it in atomically, or rejects it and keeps the working cascade.
    pub async fn reload(&self, trigger: &str) -> ReloadReport {
        let started = Instant::now();
        match Config::load(&self.config_path) {
            Ok(config) => self.reload_with(config, trigger).await,
            Err(e) => {
                let _one_at_a_time = self.reload_lock.lock().await;
                self.rejected(trigger, e.to_string(), started)
            }
        }
    }

    /// Loads `config` (every tier must load and pass `check_samples`) and swaps it in
    /// atomically, or rejects it and keeps the working cascade.
    pub async fn reload_with(&self, config: Config, trigger: &str) -> ReloadReport {
        let _one_at_a_time = self.reload_lock.lock().await;
        let started = Instant::now();
        let result = self.load_candidate(config).await;
        let previous = self.current.load_full();
        match result {
            Ok((cascade, config)) => {
                let generation = previous.generation + 1;
                // Forget the policy state of tiers that are gone or changed; state of the
                // old generation's tiers stays alive as long as its requests are in flight.
                self.memory.retain(cascade.memory_keys());
                let digests = cascade.plugin_digests();
                self.engine.retain_compiled(|sha| digests.contains(sha));
                self.current.store(Arc::new(Live {
                    cascade,
                    config,
                    generation,
                }));
                self.publish_tiers();
                self.metrics.reload(true);
                let report = self.report(ReloadOutcome::Applied, trigger, None, started);
                tracing::info!(trigger, generation, tiers = ?report.tiers, "reload applied");
                report
            }
            Err(reason) => self.rejected(trigger, reason, started),
        }
    }

    fn rejected(&self, trigger: &str, reason: String, started: Instant) -> ReloadReport {
        self.metrics.reload(false);
        tracing::error!(trigger, %reason, "reload rejected; the previous cascade keeps serving");
        self.report(ReloadOutcome::Rejected, trigger, Some(reason), started)
    }

    async fn load_candidate(&self, config: Config) -> Result<(Cascade, Config), String> {
        let cascade =
            load_off_request_path(self.engine.clone(), config.clone(), self.memory.clone())
                .await
                .map_err(|e| e.to_string())?;
        if let Some((tier, error)) = cascade.load_errors().first() {
            return Err(format!("tier \"{tier}\": {error}"));
        }
        if let Some(path) = &config.cascade.check_samples {
            let samples = read_samples(&config.resolve(path))?;
            cascade.check_samples(&samples).await?;
        }
        Ok((cascade, config))
    }

    fn report(
        &self,
        outcome: ReloadOutcome,
        trigger: &str,
        reason: Option<String>,
        started: Instant,
    ) -> ReloadReport {
        let current = self.current.load();
        ReloadReport {
            outcome,
            trigger: trigger.to_string(),
            generation: current.generation,
            reason,
            tiers: current
                .cascade
                .loaded_plugins()
                .map(|(tier, info)| (tier.to_string(), info.version.clone(), info.sha256.clone()))
                .collect(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
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
    pub fn force_breaker(&self, name: &str, mode: BreakerMode) -> Result<BreakerState, String> {
        let current = self.current.load();
        let tier = current
            .cascade
            .tiers()
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| format!("no tier named \"{name}\""))?;
        let breaker = tier
            .policies
            .breaker
            .as_ref()
            .ok_or_else(|| format!("tier \"{name}\" has no [tier.breaker] section"))?;
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

    /// Flushes the audit log (on shutdown).
    pub fn flush(&self) {
        if let Some(audit) = self.current.load().cascade.audit()
            && let Err(error) = audit.flush()
        {
            tracing::error!(%error, "flushing the audit log failed");
        }
    }
}

/// Nice value of the thread that loads (compiles) cascades: on a busy host the request
/// workers get ~10x its CPU share, so a hot swap barely moves request latency.
const LOADER_NICE: i32 = 10;

/// Loads a cascade on a dedicated low-priority thread: compiling components is CPU work that
/// must not stall the runtime's workers, which keep answering requests meanwhile.
async fn load_off_request_path(
    engine: TierEngine,
    config: Config,
    memory: Arc<PolicyMemory>,
) -> Result<Cascade, ServiceError> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tierhost-loader".into())
        .spawn(move || {
            // On Linux the nice value is per thread; failure only means normal priority.
            #[cfg(target_os = "linux")]
            let _ = rustix::process::setpriority_process(None, LOADER_NICE);
            let _ = tx.send(handle.block_on(Cascade::with_memory(engine, &config, &memory)));
        })
        .map_err(|e| ServiceError::Loader(e.to_string()))?;
    Ok(rx
        .await
        .map_err(|_| ServiceError::Loader("the loader thread died".into()))??)
}

fn read_samples(path: &Path) -> Result<Vec<Request>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Request::from_json(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
