//! The cascade: walks the tiers of a config in order for each request and serves the first
//! answer that passes its policies; otherwise the host's safe default answers.
//!
//! Routing is plain Rust over the config, deterministic and auditable: a tier only answers or
//! abstains, it never chooses where the request goes next. Every tier gets
//! `min(its deadline, what is left of the request budget)`. Each turn is a short walk over the
//! tier's [`TierPolicies`]: gates, the call (possibly substituted), verdicts, bookkeeping. A
//! tier with `[tier.hedge]` that is still running after its hedge delay races the rest of
//! the cascade; the prediction cache, when configured, answers before any tier is tried.
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::answer::{Answer, Decision, ServedBy, Step, TrailEntry};
use crate::config::{
    ChaosConfig, Config, InstanceMode, MAX_MODEL_BYTES, PluginSource, SafeDefaultConfig,
    TierConfig, flatten_params,
};
use crate::engine::TierEngine;
use crate::error::{ConfigError, LoadError};
use crate::events::{self, AuditLog};
use crate::guest::{self, Prediction, TierOutcome, TierRequest};
use crate::plugin::Plugin;
use crate::policy::breaker::{Breaker, BreakerCore, BreakerEvents};
use crate::policy::cache::{CacheStatus, Lookup, PredictionCache};
use crate::policy::chaos::{Chaos, ChaosMode};
use crate::policy::clock::Clock;
use crate::policy::hedge::{Hedge, HedgeState};
use crate::policy::memory::PolicyMemory;
use crate::policy::{CallContext, CallRecord, TierPolicies, acceptance, bulkhead, confidence, ood};
use crate::reason::FallbackReason;
use crate::request::Request;
use crate::sandbox::Sandbox;

/// Name of the host's own last answer in trails, metrics and provenance.
pub const SAFE_DEFAULT: &str = "safe-default";

/// One tier of a running cascade: its config, its sandbox (or why it failed to load) and its
/// policies. A tier that failed to load stays in the cascade and is stepped over with
/// `load-failed`, so a bad plugin degrades the service instead of stopping it (`tierhost
/// check` refuses it).
pub struct CascadeTier {
    /// The tier's config entry.
    pub config: TierConfig,
    /// The ready sandbox, or the load error.
    pub sandbox: Result<Sandbox, LoadError>,
    /// Gates, wrappers and verdicts, in the order they run.
    pub policies: TierPolicies,
}

impl CascadeTier {
    /// Calls of this tier in flight right now.
    pub fn in_flight(&self) -> usize {
        self.policies.bulkhead.in_flight()
    }

    fn version(&self) -> Option<String> {
        self.sandbox
            .as_ref()
            .ok()
            .map(|s| s.plugin().info().version.clone())
    }
}

/// Loads a tier's plugin and its model grant.
async fn load_tier(
    engine: &TierEngine,
    config: &Config,
    tier: &TierConfig,
    params: &[(String, crate::config::ParamValue)],
) -> Result<Sandbox, LoadError> {
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
    let plugin = Plugin::load(engine, &tier.plugin, &config.base_dir, &tier.limits).await?;
    Ok(Sandbox::new(
        Arc::new(plugin),
        &tier.name,
        tier.limits.clone(),
        params,
        model,
        tier.instances,
        tier.warm_instances,
    ))
}

/// Loads the chaos sandbox of `[tier.chaos]`: `builtin:chaos` in the configured mode with the
/// tier's own limits.
async fn load_chaos(
    engine: &TierEngine,
    config: &Config,
    tier: &TierConfig,
    chaos: &ChaosConfig,
) -> Result<Chaos, LoadError> {
    if chaos.mode == ChaosMode::Latency {
        return Ok(Chaos {
            config: chaos.clone(),
            sandbox: None,
        });
    }
    let chaos_plugin = PluginSource::Builtin("chaos".into());
    let plugin = Plugin::load(engine, &chaos_plugin, &config.base_dir, &tier.limits).await?;
    let mut params = flatten_params(&chaos.params).map_err(LoadError::Describe)?;
    params.push((
        "mode".to_string(),
        crate::config::ParamValue::Text(chaos.mode.as_str().to_string()),
    ));
    let mut limits = tier.limits.clone();
    // Injected hangs must meet the deadline, not the fuel limit.
    if chaos.mode == ChaosMode::Spin {
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
    Ok(Chaos {
        config: chaos.clone(),
        sandbox: Some(sandbox),
    })
}

/// Where the policies of one tier find their shared state and report events.
struct PolicyWiring<'a> {
    memory: &'a PolicyMemory,
    cascade: &'a Arc<str>,
    audit: &'a Option<Arc<AuditLog>>,
    keys: &'a mut HashSet<String>,
}

/// Builds a loaded tier's policies. `sha256` is its plugin digest: state is keyed by it.
fn tier_policies(
    tier: &TierConfig,
    sha256: Option<&str>,
    ood: Option<ood::OodGuard>,
    chaos: Option<Chaos>,
    wiring: &mut PolicyWiring<'_>,
) -> TierPolicies {
    let memory = wiring.memory;
    let breaker = match (&tier.breaker, sha256) {
        (Some(config), Some(_)) => {
            let k = state_key("breaker", tier, sha256, config);
            let core = memory.state(&k, || BreakerCore::new(config));
            wiring.keys.insert(k);
            Some(Arc::new(Breaker::new(
                config.clone(),
                core,
                memory.clock().clone(),
                BreakerEvents {
                    cascade: wiring.cascade.clone(),
                    tier: Arc::from(tier.name.as_str()),
                    audit: wiring.audit.clone(),
                    observer: memory.observer().cloned(),
                },
            )))
        }
        _ => None,
    };
    let hedge = match (&tier.hedge, sha256) {
        (Some(config), Some(_)) => {
            let k = state_key("hedge", tier, sha256, config);
            let state = memory.state(&k, HedgeState::default);
            wiring.keys.insert(k);
            Some(Arc::new(Hedge::new(config.clone(), state)))
        }
        _ => None,
    };
    TierPolicies::new(
        Arc::new(bulkhead::Bulkhead::new(tier.max_concurrent)),
        breaker,
        ood.map(Arc::new),
        chaos.map(Arc::new),
        Arc::new(acceptance::Acceptance {
            accept: tier.accept.clone(),
            limits: tier.limits.clone(),
        }),
        Arc::new(confidence::MinConfidence(tier.min_confidence)),
        hedge,
    )
}

/// The key of a policy's state in [`PolicyMemory`]: the policy, the tier, its plugin digest
/// and the policy's config section, so state is never shared by two different things.
fn state_key(
    policy: &str,
    tier: &TierConfig,
    sha256: Option<&str>,
    section: &impl serde::Serialize,
) -> String {
    format!(
        "{policy}/{}/{}/{}",
        tier.name,
        sha256.unwrap_or("-"),
        serde_json::to_string(section).unwrap_or_default()
    )
}

/// A loaded cascade, ready to answer requests.
pub struct Cascade {
    name: Arc<str>,
    budget: Duration,
    tiers: Vec<CascadeTier>,
    safe_default: SafeDefaultConfig,
    audit: Option<Arc<AuditLog>>,
    engine: TierEngine,
    cache: Option<PredictionCache>,
    clock: Arc<dyn Clock>,
    memory_keys: HashSet<String>,
}

/// What one walk down the cascade shares between tiers.
struct Walk<'a> {
    request: &'a Request,
    lowered: &'a TierRequest,
    started: Instant,
}

/// The result of walking some tiers: their trail and, when one served, its index and answer.
type Walked = (Vec<TrailEntry>, Option<(usize, Prediction)>);

impl Cascade {
    /// Creates the engine from `[engine]` and loads every tier.
    pub async fn load(config: &Config) -> Result<Self, ConfigError> {
        let engine = TierEngine::new(&config.engine, &config.base_dir).map_err(|e| {
            ConfigError::Invalid {
                path: config.source.clone(),
                field: "engine".into(),
                problem: e.to_string(),
            }
        })?;
        Self::with_engine(engine, config).await
    }

    /// Creates the engine and loads every tier, failing if any tier does not load (for tools,
    /// tests and embedders that want all or nothing; a server uses [`Self::load`], which keeps
    /// serving with the tiers that did load and records the rest).
    pub async fn load_strict(config: &Config) -> Result<Self, ConfigError> {
        Self::load(config).await?.strict(config)
    }

    /// Fails with the first tier that did not load.
    pub fn strict(self, config: &Config) -> Result<Self, ConfigError> {
        match self.load_errors().first() {
            Some((tier, error)) => Err(ConfigError::TierLoad {
                path: config.source.clone(),
                tier: tier.to_string(),
                error: (*error).clone(),
            }),
            None => Ok(self),
        }
    }

    /// Loads every tier of `config` on an existing engine, with fresh policy state.
    pub async fn with_engine(engine: TierEngine, config: &Config) -> Result<Self, ConfigError> {
        Self::with_memory(engine, config, &PolicyMemory::default()).await
    }

    /// Loads every tier of `config` on an existing engine. Policy state (breakers, hedging
    /// latency, the embedded cache, the audit writer) comes from `memory`, so a service that
    /// reloads with the same memory keeps the state of every tier whose plugin did not change.
    pub async fn with_memory(
        engine: TierEngine,
        config: &Config,
        memory: &PolicyMemory,
    ) -> Result<Self, ConfigError> {
        let invalid = |field: String, problem: String| ConfigError::Invalid {
            path: config.source.clone(),
            field,
            problem,
        };
        let audit = match &config.cascade.audit_log {
            Some(path) => {
                let path = config.resolve(path);
                Some(
                    memory
                        .audit_log(
                            &path,
                            config.cascade.audit_max_bytes,
                            config.cascade.audit_keep,
                        )
                        .map_err(|e| {
                            invalid(
                                "cascade.audit_log".into(),
                                format!("cannot open {}: {e}", path.display()),
                            )
                        })?,
                )
            }
            None => None,
        };
        let name: Arc<str> = Arc::from(config.cascade.name.as_str());
        let mut keys = HashSet::new();
        let mut tiers = Vec::with_capacity(config.tiers.len());
        for tier in &config.tiers {
            let params = flatten_params(&tier.params)
                .map_err(|problem| invalid(format!("tier \"{}\".params", tier.name), problem))?;
            let loaded = load_tier(&engine, config, tier, &params).await;
            let chaos = match (&loaded, &tier.chaos) {
                (Ok(_), Some(chaos)) => Some(load_chaos(&engine, config, tier, chaos).await),
                _ => None,
            }
            .transpose();
            let ood = tier
                .ood
                .as_ref()
                .map(|ood| ood::OodGuard::load(ood, &config.resolve(&ood.stats)))
                .transpose()
                .map_err(LoadError::Ood);
            let (sandbox, chaos, ood) = match (loaded, chaos, ood) {
                (Ok(sandbox), Ok(chaos), Ok(ood)) => (Ok(sandbox), chaos, ood),
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    (Err(error), None, None)
                }
            };
            if let Err(error) = &sandbox {
                tracing::error!(tier = %tier.name, plugin = %tier.plugin, %error, "tier failed to load");
            }
            let sha256 = sandbox
                .as_ref()
                .ok()
                .map(|s| s.plugin().info().sha256.clone());
            let mut wiring = PolicyWiring {
                memory,
                cascade: &name,
                audit: &audit,
                keys: &mut keys,
            };
            let policies = tier_policies(tier, sha256.as_deref(), ood, chaos, &mut wiring);
            tiers.push(CascadeTier {
                config: tier.clone(),
                sandbox,
                policies,
            });
        }
        let cache = match &config.cache {
            Some(cache) => {
                let mut digest = config.answer_digest();
                for tier in &tiers {
                    digest.push('/');
                    match &tier.sandbox {
                        Ok(s) => digest.push_str(&s.plugin().info().sha256),
                        Err(_) => digest.push_str("load-failed"),
                    }
                }
                let store_key = format!("cache/{}/{}", cache.max_entries, cache.ttl_s);
                keys.insert(store_key.clone());
                Some(
                    PredictionCache::new(cache, digest, || {
                        memory.state(&store_key, || crate::policy::cache::embedded_store(cache))
                    })
                    .map_err(|problem| invalid("cache".into(), problem))?,
                )
            }
            None => None,
        };
        Ok(Self {
            name,
            budget: Duration::from_millis(config.cascade.budget_ms),
            tiers,
            safe_default: config.safe_default.clone(),
            audit,
            engine,
            cache,
            clock: memory.clock().clone(),
            memory_keys: keys,
        })
    }

    /// The keys of the policy state this cascade uses (a service forgets the rest after a
    /// reload, see [`PolicyMemory::retain`]).
    pub fn memory_keys(&self) -> &HashSet<String> {
        &self.memory_keys
    }

    /// The sha256 of every plugin this cascade runs (its tiers and their chaos substitutes).
    pub fn plugin_digests(&self) -> HashSet<String> {
        let mut digests = HashSet::new();
        for tier in &self.tiers {
            if let Ok(sandbox) = &tier.sandbox {
                digests.insert(sandbox.plugin().info().sha256.clone());
            }
            if let Some(chaos) = tier.policies.chaos_sandbox() {
                digests.insert(chaos.plugin().info().sha256.clone());
            }
        }
        digests
    }

    /// The prediction cache, when configured.
    pub fn cache(&self) -> Option<&PredictionCache> {
        self.cache.as_ref()
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
            .map(|t| TrailEntry::new(&t.config.name, t.version()).fell_back(reason.clone()))
            .collect();
        let answer = Answer {
            request_id: request.id.clone(),
            decision: self.safe_decision(),
            served_by: safe_default_provenance(),
            degraded: true,
            elapsed_us: started.elapsed().as_micros() as u64,
            cache: None,
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
                let report = sandbox.predict(&guest::lower(sample), deadline).await;
                let fault = match report.result {
                    Ok(TierOutcome::Answer(p)) => {
                        acceptance::contract(&p, &tier.config.limits).err()
                    }
                    Ok(TierOutcome::Abstain(_)) => None,
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
        let (cache_key, cache_status) = match &self.cache {
            None => (None, None),
            Some(cache) => {
                let key = cache.key(request);
                match cache.get(&key).await {
                    Lookup::Hit(cached) => {
                        return Answer {
                            request_id: request.id.clone(),
                            decision: cached.decision,
                            served_by: cached.served_by,
                            degraded: cached.degraded,
                            elapsed_us: started.elapsed().as_micros() as u64,
                            cache: Some(CacheStatus::Hit),
                            trail: Vec::new(),
                        };
                    }
                    Lookup::Miss => (Some(key), Some(CacheStatus::Miss)),
                    Lookup::Bypass => (None, Some(CacheStatus::Bypass)),
                }
            }
        };
        let lowered = guest::lower(request);
        let walk = Walk {
            request,
            lowered: &lowered,
            started,
        };
        let (trail, served) = self.walk_from(0, &walk).await;
        let (decision, served_by) = match served {
            Some((i, p)) => {
                let tier = &self.tiers[i];
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
            None => (self.safe_decision(), safe_default_provenance()),
        };
        let answer = Answer {
            request_id: request.id.clone(),
            degraded: served_by.tier != self.tiers.first().map_or("", |t| t.config.name.as_str()),
            decision,
            served_by,
            elapsed_us: started.elapsed().as_micros() as u64,
            cache: cache_status,
            trail,
        };
        if let (Some(cache), Some(key)) = (&self.cache, cache_key)
            && cache.admits(&answer)
        {
            cache.put(key, &answer);
        }
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

    /// Walks the tiers from index `from` until one serves.
    fn walk_from<'a>(
        &'a self,
        from: usize,
        walk: &'a Walk<'a>,
    ) -> Pin<Box<dyn Future<Output = Walked> + Send + 'a>> {
        Box::pin(async move {
            let mut trail = Vec::new();
            for i in from..self.tiers.len() {
                let hedge_after = self.tiers[i]
                    .policies
                    .hedge
                    .as_ref()
                    .filter(|_| i + 1 < self.tiers.len())
                    .and_then(|h| h.delay());
                if let Some(after) = hedge_after {
                    let (rest, served) = self.hedged_turn(i, after, walk).await;
                    trail.extend(rest);
                    return (trail, served);
                }
                let (entry, answer) = self.try_tier(&self.tiers[i], walk).await;
                trail.push(entry);
                if let Some(p) = answer {
                    return (trail, Some((i, p)));
                }
            }
            (trail, None)
        })
    }

    /// Tier `i`'s turn with hedging: wait up to `after` for it; if it is still running (and
    /// the hedge budget allows), race it against the walk of the following tiers and serve the
    /// first acceptable answer. Both attempts are in the trail; a call that loses the race is
    /// cancelled and its policies observe it as `hedged` (a breaker may count it).
    async fn hedged_turn(&self, i: usize, after: Duration, walk: &Walk<'_>) -> Walked {
        let tier = &self.tiers[i];
        let sequential = |entry: TrailEntry, answer: Option<Prediction>| async move {
            match answer {
                Some(p) => (vec![entry], Some((i, p))),
                None => {
                    let (rest, served) = self.walk_from(i + 1, walk).await;
                    (std::iter::once(entry).chain(rest).collect(), served)
                }
            }
        };
        let admitted = match self.admit(tier, walk) {
            Ok(admitted) => admitted,
            Err(skipped) => return sequential(*skipped, None).await,
        };
        let started = Instant::now();
        let mut primary = Box::pin(call(&admitted, walk.lowered));
        // tokio's timers round up to the next millisecond (a 0.5 ms hedge would start after
        // ~2 ms); async-io's timer thread wakes with sub-millisecond precision.
        let finished_first = tokio::select! {
            report = &mut primary => Some(report),
            _ = async_io::Timer::after(after) => None,
        };
        if let Some(report) = finished_first {
            drop(primary);
            let (entry, answer) = conclude(tier, admitted, report);
            return sequential(entry, answer).await;
        }
        if !tier.policies.hedge.as_ref().is_some_and(|h| h.try_start()) {
            let report = primary.await;
            let (entry, answer) = conclude(tier, admitted, report);
            return sequential(entry, answer).await;
        }
        let mark = |mut rest: Vec<TrailEntry>| {
            if let Some(first) = rest.first_mut() {
                first.hedged = true;
            }
            rest
        };
        let mut hedged = self.walk_from(i + 1, walk);
        tokio::select! {
            report = &mut primary => {
                drop(primary);
                match conclude(tier, admitted, report) {
                    (entry, Some(p)) => {
                        // The tier answered first: the hedge is cancelled.
                        drop(hedged);
                        let next = &self.tiers[i + 1];
                        let mut cancelled = TrailEntry::new(&next.config.name, next.version());
                        cancelled.step = Step::Cancelled;
                        cancelled.hedged = true;
                        cancelled.message = Some(format!(
                            "hedge cancelled: \"{}\" answered first",
                            tier.config.name
                        ));
                        (vec![entry, cancelled], Some((i, p)))
                    }
                    (entry, None) => {
                        let (rest, served) = hedged.await;
                        (std::iter::once(entry).chain(mark(rest)).collect(), served)
                    }
                }
            },
            (rest, served) = &mut hedged => match served {
                Some(served) => {
                    drop(primary);
                    let winner = &self.tiers[served.0].config.name;
                    let reason = FallbackReason::Hedged {
                        detail: format!(
                            "ran {} us; hedged after {} us, \"{winner}\" answered first",
                            started.elapsed().as_micros(),
                            after.as_micros()
                        ),
                    };
                    let cancelled = cancel(tier, admitted, started.elapsed(), reason);
                    (std::iter::once(cancelled).chain(mark(rest)).collect(), Some(served))
                }
                None => {
                    // Nothing below answered: the slow tier is the last hope.
                    let report = primary.await;
                    let (entry, answer) = conclude(tier, admitted, report);
                    (std::iter::once(entry).chain(mark(rest)).collect(), answer.map(|p| (i, p)))
                }
            },
        }
    }

    /// One tier's turn: gates, the call, verdicts, bookkeeping.
    async fn try_tier(
        &self,
        tier: &CascadeTier,
        walk: &Walk<'_>,
    ) -> (TrailEntry, Option<Prediction>) {
        match self.admit(tier, walk) {
            Ok(admitted) => {
                let report = call(&admitted, walk.lowered).await;
                conclude(tier, admitted, report)
            }
            Err(skipped) => (*skipped, None),
        }
    }

    /// Runs the tier's gates: an admitted call (with the sandbox to run, its deadline and the
    /// gates' tickets), or the trail entry of a skipped tier.
    fn admit<'t>(
        &self,
        tier: &'t CascadeTier,
        walk: &Walk<'_>,
    ) -> Result<Admitted<'t>, Box<TrailEntry>> {
        let entry = TrailEntry::new(&tier.config.name, tier.version());
        let sandbox = match &tier.sandbox {
            Ok(s) => s,
            Err(e) => {
                return Err(Box::new(entry.fell_back(FallbackReason::LoadFailed {
                    detail: e.to_string(),
                })));
            }
        };
        let remaining = self.budget.saturating_sub(walk.started.elapsed());
        let ctx = CallContext {
            request: walk.request,
            remaining,
            now: self.clock.now(),
        };
        let policies = &tier.policies;
        match policies.admit(&ctx) {
            Ok(tickets) => Ok(Admitted {
                entry,
                sandbox: policies.sandbox(&ctx, sandbox),
                deadline: Duration::from_millis(tier.config.limits.deadline_ms).min(remaining),
                delay: policies.delay(&ctx),
                tickets,
            }),
            Err(reason) => Err(Box::new(entry.fell_back(reason))),
        }
    }
}

/// A call its gates let through.
struct Admitted<'t> {
    entry: TrailEntry,
    sandbox: &'t Sandbox,
    deadline: Duration,
    delay: Duration,
    tickets: Vec<crate::policy::Ticket>,
}

/// Makes the call (after any injected delay, which counts against the deadline).
async fn call(admitted: &Admitted<'_>, request: &TierRequest) -> crate::sandbox::CallReport {
    let (sandbox, deadline, delay) = (admitted.sandbox, admitted.deadline, admitted.delay);
    if delay.is_zero() {
        return sandbox.predict(request, deadline).await;
    }
    let started = Instant::now();
    tokio::time::sleep(delay.min(deadline)).await;
    let mut report = match deadline.checked_sub(started.elapsed()) {
        Some(left) if !left.is_zero() => sandbox.predict(request, left).await,
        _ => crate::sandbox::CallReport {
            result: Err(FallbackReason::Deadline {
                deadline_us: deadline.as_micros() as u64,
            }),
            elapsed: Duration::ZERO,
            fuel_used: 0,
            logs_dropped: 0,
        },
    };
    report.elapsed = started.elapsed();
    report
}

/// Judges a finished call, hands the outcome to the tier's policies, and writes its entry.
fn conclude(
    tier: &CascadeTier,
    admitted: Admitted<'_>,
    report: crate::sandbox::CallReport,
) -> (TrailEntry, Option<Prediction>) {
    let policies = &tier.policies;
    let verdict = match report.result {
        Ok(TierOutcome::Answer(p)) => policies.judge(&p).map(|()| p),
        Ok(TierOutcome::Abstain(reason)) => Err(FallbackReason::Abstained { reason }),
        Err(reason) => Err(reason),
    };
    policies.observe(
        admitted.tickets,
        &CallRecord {
            called: true,
            elapsed: report.elapsed,
            verdict: verdict.as_ref().map(|_| ()),
        },
    );
    let entry = TrailEntry {
        step: Step::FellThrough,
        elapsed_us: report.elapsed.as_micros() as u64,
        fuel_used: report.fuel_used,
        logs_dropped: report.logs_dropped,
        ..admitted.entry
    };
    match verdict {
        Ok(p) => (
            TrailEntry {
                step: Step::Served,
                ..entry
            },
            Some(p),
        ),
        Err(reason) => (entry.fell_back(reason), None),
    }
}

/// Records a call cancelled because a hedge answered first.
fn cancel(
    tier: &CascadeTier,
    admitted: Admitted<'_>,
    elapsed: Duration,
    reason: FallbackReason,
) -> TrailEntry {
    tier.policies.observe(
        admitted.tickets,
        &CallRecord {
            called: true,
            elapsed,
            verdict: Err(&reason),
        },
    );
    let mut entry = admitted.entry.fell_back(reason);
    entry.step = Step::Cancelled;
    entry.elapsed_us = elapsed.as_micros() as u64;
    entry
}

fn safe_default_provenance() -> ServedBy {
    ServedBy {
        tier: SAFE_DEFAULT.into(),
        plugin: None,
        version: None,
        sha256: None,
    }
}
