//! The cascade: walks the tiers of a config in order for each request and serves the first
//! answer that passes its acceptance checks; otherwise the host's safe default answers.
//!
//! Routing is plain Rust over the config, deterministic and auditable: a tier only answers or
//! abstains, it never chooses where the request goes next. Every tier gets
//! `min(its deadline, what is left of the request budget)`.
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use crate::acceptance;
use crate::answer::{Answer, Decision, ServedBy, Step, TrailEntry};
use crate::config::{
    CascadeConfig, ChaosConfig, InstanceMode, MAX_MODEL_BYTES, SafeDefaultConfig, TierConfig,
    flatten_params,
};
use crate::engine::TierEngine;
use crate::error::{ConfigError, LoadError};
use crate::events::{self, AuditLog};
use crate::plugin::Plugin;
use crate::reason::FallbackReason;
use crate::request::Request;
use crate::sandbox::{Sandbox, TierAnswer};

/// One tier of a running cascade: its config and its sandbox, or why it failed to load. A tier
/// that failed to load stays in the cascade and is stepped over with `load-failed`, so a bad
/// plugin degrades the service instead of stopping it (`tierhost check` refuses it).
pub struct CascadeTier {
    /// The tier's config entry.
    pub config: TierConfig,
    /// The ready sandbox, or the load error.
    pub sandbox: Result<Sandbox, LoadError>,
    /// Bulkhead: one permit per call in flight (`max_concurrent`).
    slots: Arc<Semaphore>,
    /// Injected faults: the chaos sandbox that replaces a share of this tier's calls.
    chaos: Option<(ChaosConfig, Sandbox)>,
    /// Out-of-distribution guard.
    ood: Option<crate::ood::OodGuard>,
}

/// Loads a tier's plugin and model grant, and its chaos sandbox when `[tier.chaos]` is set.
async fn load_tier(
    engine: &TierEngine,
    config: &CascadeConfig,
    tier: &TierConfig,
    params: &[(String, crate::config::ParamValue)],
) -> Result<(Sandbox, Option<(ChaosConfig, Sandbox)>), LoadError> {
    let model: Arc<[u8]> = match &tier.model {
        Some(path) => {
            let path = config.resolve(path);
            let read_error = |message: String| LoadError::Model {
                path: path.clone(),
                message,
            };
            let size = std::fs::metadata(&path)
                .map_err(|e| read_error(e.to_string()))?
                .len();
            if size > MAX_MODEL_BYTES {
                return Err(read_error(format!(
                    "{size} bytes, the limit is {MAX_MODEL_BYTES}"
                )));
            }
            Arc::from(std::fs::read(&path).map_err(|e| read_error(e.to_string()))?)
        }
        None => Arc::from(Vec::new()),
    };
    let plugin = Plugin::load(engine, &tier.plugin, &config.base_dir).await?;
    let sandbox = Sandbox::new(
        Arc::new(plugin),
        &tier.name,
        tier.limits.clone(),
        params,
        model,
        tier.instances,
        tier.warm_instances,
    );
    let chaos = match &tier.chaos {
        Some(chaos) => {
            let plugin = Plugin::load(engine, "builtin:chaos", &config.base_dir).await?;
            let params = [(
                "mode".to_string(),
                crate::config::ParamValue::Text(chaos.mode.clone()),
            )];
            let mut limits = tier.limits.clone();
            // Injected hangs must meet the deadline, not the fuel limit.
            if chaos.mode == "spin" {
                limits.fuel = u64::MAX / 2;
            }
            let sandbox = Sandbox::new(
                Arc::new(plugin),
                &tier.name,
                limits,
                &params,
                Arc::from(Vec::new()),
                InstanceMode::Fresh,
                0,
            );
            Some((chaos.clone(), sandbox))
        }
        None => None,
    };
    Ok((sandbox, chaos))
}

/// Whether injected chaos hits this request: FNV-1a of seed and request id, below `rate`.
fn chaos_hits(chaos: &ChaosConfig, request_id: &str) -> bool {
    let hash = chaos
        .seed
        .to_le_bytes()
        .iter()
        .chain(request_id.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    ((hash % 10_000) as f64) < chaos.rate * 10_000.0
}

impl CascadeTier {
    /// Calls of this tier in flight right now.
    pub fn in_flight(&self) -> usize {
        self.config.max_concurrent - self.slots.available_permits()
    }
}

/// A loaded cascade, ready to answer requests.
pub struct Cascade {
    name: String,
    budget: Duration,
    tiers: Vec<CascadeTier>,
    safe_default: SafeDefaultConfig,
    audit: Option<Arc<AuditLog>>,
    engine: TierEngine,
}

impl Cascade {
    /// Creates the engine from `[engine]` and loads every tier.
    pub async fn load(config: &CascadeConfig) -> Result<Self, ConfigError> {
        let engine = TierEngine::new(&config.engine, &config.base_dir).map_err(|e| {
            ConfigError::Invalid {
                path: config.source.clone(),
                field: "engine".into(),
                problem: e.to_string(),
            }
        })?;
        Self::with_engine(engine, config).await
    }

    /// Loads every tier of `config` on an existing engine.
    pub async fn with_engine(
        engine: TierEngine,
        config: &CascadeConfig,
    ) -> Result<Self, ConfigError> {
        let mut tiers = Vec::with_capacity(config.tiers.len());
        for tier in &config.tiers {
            let params = flatten_params(&tier.params).map_err(|problem| ConfigError::Invalid {
                path: config.source.clone(),
                field: format!("tier \"{}\".params", tier.name),
                problem,
            })?;
            let loaded = load_tier(&engine, config, tier, &params).await;
            if let Err(error) = &loaded {
                tracing::error!(tier = %tier.name, plugin = %tier.plugin, %error, "tier failed to load");
            }
            let ood = tier
                .ood
                .as_ref()
                .map(|ood| crate::ood::OodGuard::load(ood, &config.resolve(&ood.stats)));
            let (sandbox, chaos, ood) = match (loaded, ood.transpose()) {
                (Ok((sandbox, chaos)), Ok(ood)) => (Ok(sandbox), chaos, ood),
                (Err(error), _) => (Err(error), None, None),
                (_, Err(problem)) => (Err(LoadError::Ood(problem)), None, None),
            };
            tiers.push(CascadeTier {
                slots: Arc::new(Semaphore::new(tier.max_concurrent)),
                config: tier.clone(),
                sandbox,
                chaos,
                ood,
            });
        }
        let audit = match &config.cascade.audit_log {
            Some(path) => {
                let path = config.resolve(path);
                Some(Arc::new(
                    AuditLog::open(
                        &path,
                        config.cascade.audit_max_bytes,
                        config.cascade.audit_keep,
                    )
                    .map_err(|e| ConfigError::Invalid {
                        path: config.source.clone(),
                        field: "cascade.audit_log".into(),
                        problem: format!("cannot open {}: {e}", path.display()),
                    })?,
                ))
            }
            None => None,
        };
        Ok(Self {
            name: config.cascade.name.clone(),
            budget: Duration::from_millis(config.cascade.budget_ms),
            tiers,
            safe_default: config.safe_default.clone(),
            audit,
            engine,
        })
    }

    /// Cascade name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tiers, in order.
    pub fn tiers(&self) -> &[CascadeTier] {
        &self.tiers
    }

    /// The engine the tiers run on.
    pub fn engine(&self) -> &TierEngine {
        &self.engine
    }

    /// Tiers that loaded, with their plugin's identity.
    pub fn loaded_plugins(&self) -> impl Iterator<Item = (&str, &crate::plugin::PluginInfo)> {
        self.tiers.iter().filter_map(|t| {
            Some((
                t.config.name.as_str(),
                t.sandbox.as_ref().ok()?.plugin().info(),
            ))
        })
    }

    /// Tiers that failed to load, with their errors.
    pub fn load_errors(&self) -> Vec<(&str, &LoadError)> {
        self.tiers
            .iter()
            .filter_map(|t| {
                t.sandbox
                    .as_ref()
                    .err()
                    .map(|e| (t.config.name.as_str(), e))
            })
            .collect()
    }

    /// Total request budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The audit log, when configured.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_deref()
    }

    /// Writes to `other`'s audit log when both name the same file, so a reloaded cascade
    /// shares one writer (and one rotation) with the one it replaces.
    pub fn share_audit_from(&mut self, other: &Cascade) {
        if let (Some(mine), Some(theirs)) = (&self.audit, &other.audit)
            && mine.path() == theirs.path()
        {
            self.audit = Some(theirs.clone());
        }
    }

    /// The safe default's answer without calling any tier, for a request the host cannot take
    /// on (saturated, or past its budget): every tier is recorded as skipped with `reason`.
    pub fn answer_without_tiers(
        &self,
        request: &Request,
        reason: FallbackReason,
        started: Instant,
    ) -> Answer {
        let trail = self
            .tiers
            .iter()
            .map(|t| TrailEntry {
                tier: t.config.name.clone(),
                version: t
                    .sandbox
                    .as_ref()
                    .ok()
                    .map(|s| s.plugin().info().version.clone()),
                step: Step::Skipped,
                message: Some(reason.to_string()),
                reason: Some(reason.clone()),
                elapsed_us: 0,
                fuel_used: 0,
                logs_dropped: 0,
            })
            .collect();
        let answer = Answer {
            request_id: request.id.clone(),
            decision: self.safe_decision(),
            served_by: ServedBy {
                tier: "safe-default".into(),
                plugin: None,
                version: None,
                sha256: None,
            },
            degraded: true,
            elapsed_us: started.elapsed().as_micros() as u64,
            trail,
        };
        events::emit_fallbacks(&self.name, &answer, self.audit.as_deref());
        answer
    }

    /// Calls every loaded tier directly on `samples` and reports the first that faults: a
    /// tier must answer or abstain within its limits and the contract (low confidence or a
    /// disallowed label is fine, a trap, deadline, NaN or tier error is not).
    pub async fn check_samples(&self, samples: &[Request]) -> Result<(), String> {
        for tier in &self.tiers {
            let Ok(sandbox) = &tier.sandbox else { continue };
            for sample in samples {
                let deadline = Duration::from_millis(tier.config.limits.deadline_ms);
                let report = sandbox
                    .predict(&crate::sandbox::lower(sample), deadline)
                    .await;
                let fault = match report.result {
                    Ok(TierAnswer::Answer(p)) => match acceptance::check(&p, &tier.config) {
                        Err(FallbackReason::InvalidOutput { detail })
                            if !detail.contains("is not one of") =>
                        {
                            Some(FallbackReason::InvalidOutput { detail })
                        }
                        _ => None,
                    },
                    Ok(TierAnswer::Abstain(_)) => None,
                    Err(reason) => Some(reason),
                };
                if let Some(reason) = fault {
                    return Err(format!(
                        "tier \"{}\" failed sample request `{}`: {reason}",
                        tier.config.name, sample.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Answers one request. Never fails: when no tier serves, the safe default does.
    pub async fn predict(&self, request: &Request) -> Answer {
        let started = Instant::now();
        let mut trail = Vec::with_capacity(self.tiers.len());
        let mut served = None;
        let lowered = crate::sandbox::lower(request);
        for tier in &self.tiers {
            let remaining = self.budget.saturating_sub(started.elapsed());
            let (entry, answer) = self.try_tier(tier, request, &lowered, remaining).await;
            trail.push(entry);
            if let Some(answer) = answer {
                served = Some((tier, answer));
                break;
            }
        }
        let (decision, served_by) = match served {
            Some((tier, p)) => {
                let info = tier.sandbox.as_ref().ok().map(|s| s.plugin().info());
                (
                    Decision::Answer {
                        label: p.label,
                        score: p.score,
                        confidence: p.confidence,
                        reasons: p.reasons,
                    },
                    ServedBy {
                        tier: tier.config.name.clone(),
                        plugin: info.map(|i| i.name.clone()),
                        version: info.map(|i| i.version.clone()),
                        sha256: info.map(|i| i.sha256.clone()),
                    },
                )
            }
            None => (
                self.safe_decision(),
                ServedBy {
                    tier: "safe-default".into(),
                    plugin: None,
                    version: None,
                    sha256: None,
                },
            ),
        };
        let answer = Answer {
            request_id: request.id.clone(),
            degraded: served_by.tier != self.tiers.first().map_or("", |t| t.config.name.as_str()),
            decision,
            served_by,
            elapsed_us: started.elapsed().as_micros() as u64,
            trail,
        };
        events::emit_fallbacks(&self.name, &answer, self.audit.as_deref());
        answer
    }

    fn safe_decision(&self) -> Decision {
        let sd = &self.safe_default;
        match &sd.abstain {
            Some(reason) => Decision::Abstain {
                reason: reason.clone(),
            },
            None => Decision::Answer {
                label: sd.label.clone(),
                score: sd.score,
                confidence: sd.confidence,
                reasons: sd.reasons.clone(),
            },
        }
    }

    async fn try_tier(
        &self,
        tier: &CascadeTier,
        request: &Request,
        lowered: &crate::sandbox::TierRequest,
        remaining: Duration,
    ) -> (
        TrailEntry,
        Option<crate::sandbox::bindings::tierhost::tier::types::Prediction>,
    ) {
        let mut entry = TrailEntry {
            tier: tier.config.name.clone(),
            version: None,
            step: Step::Skipped,
            reason: None,
            message: None,
            elapsed_us: 0,
            fuel_used: 0,
            logs_dropped: 0,
        };
        let skip = |mut entry: TrailEntry, reason: FallbackReason| {
            entry.message = Some(reason.to_string());
            entry.reason = Some(reason);
            (entry, None)
        };
        let sandbox = match &tier.sandbox {
            Ok(s) => s,
            Err(e) => {
                return skip(
                    entry,
                    FallbackReason::LoadFailed {
                        detail: e.to_string(),
                    },
                );
            }
        };
        entry.version = Some(sandbox.plugin().info().version.clone());
        if remaining.is_zero() {
            return skip(entry, FallbackReason::BudgetExhausted);
        }
        if let Some(guard) = &tier.ood
            && let Err(detail) = guard.check(request)
        {
            return skip(entry, FallbackReason::OutOfDistribution { detail });
        }
        let Ok(_permit) = tier.slots.try_acquire() else {
            return skip(
                entry,
                FallbackReason::Shed {
                    detail: format!(
                        "tier has {} calls in flight (max_concurrent)",
                        tier.config.max_concurrent
                    ),
                },
            );
        };
        let deadline = Duration::from_millis(tier.config.limits.deadline_ms).min(remaining);
        let sandbox = match &tier.chaos {
            Some((chaos, chaos_sandbox)) if chaos_hits(chaos, &request.id) => chaos_sandbox,
            _ => sandbox,
        };
        let report = sandbox.predict(lowered, deadline).await;
        entry.step = Step::FellThrough;
        entry.elapsed_us = report.elapsed.as_micros() as u64;
        entry.fuel_used = report.fuel_used;
        entry.logs_dropped = report.logs_dropped;
        let verdict = match report.result {
            Ok(TierAnswer::Answer(p)) => acceptance::check(&p, &tier.config).map(|()| p),
            Ok(TierAnswer::Abstain(reason)) => Err(FallbackReason::Abstained { reason }),
            Err(reason) => Err(reason),
        };
        match verdict {
            Ok(p) => {
                entry.step = Step::Served;
                (entry, Some(p))
            }
            Err(reason) => {
                entry.message = Some(reason.to_string());
                entry.reason = Some(reason);
                (entry, None)
            }
        }
    }
}
