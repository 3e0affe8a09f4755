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
use crate::error::{ConfigError, LoadError, SampleFailure};
use crate::escalation::{Escalator, Redaction};
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

mod allowlist;
mod load;
mod summary;
mod turn;

pub use allowlist::HiddenFeatureRead;

pub(crate) use load::read_model;

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
    /// The candidate version running in this tier's shadow (`[tier.shadow]`).
    pub shadow: Option<crate::shadow::Shadow>,
    /// The tier's `features` allowlist, when it has one: its plugin (and its chaos substitute
    /// and shadow candidate, which stand in for it) sees only these features. Host-side
    /// policies (the OOD guard, the cache, escalation) read the request as the host got it.
    pub features: Option<guest::FeatureAllowlist>,
}

impl CascadeTier {
    /// Calls of this tier in flight right now.
    pub fn in_flight(&self) -> usize {
        self.policies.bulkhead.in_flight()
    }

    /// The request as this tier sees it: `shared`, the walk's one lowering, unless the tier
    /// has a `features` allowlist; then its own filtered copy, made in `own`. Tiers without an
    /// allowlist cost nothing more.
    fn view<'a>(
        &self,
        request: &Request,
        shared: &'a TierRequest,
        own: &'a mut Option<TierRequest>,
    ) -> &'a TierRequest {
        match &self.features {
            None => shared,
            Some(allowlist) => own.insert(guest::lower_allowed(request, allowlist)),
        }
    }

    /// `request` lowered as this tier sees it (see [`Self::view`]).
    fn lower(&self, request: &Request) -> TierRequest {
        match &self.features {
            None => guest::lower(request),
            Some(allowlist) => guest::lower_allowed(request, allowlist),
        }
    }

    fn version(&self) -> Option<String> {
        self.sandbox
            .as_ref()
            .ok()
            .map(|s| s.plugin().info().version.clone())
    }
}

/// A loaded cascade, ready to answer requests.
pub struct Cascade {
    name: Arc<str>,
    budget: Duration,
    tiers: Vec<CascadeTier>,
    safe_default: SafeDefaultConfig,
    audit: Option<Arc<AuditLog>>,
    redaction: Arc<Redaction>,
    escalation: Option<Escalator>,
    engine: TierEngine,
    cache: Option<PredictionCache>,
    clock: Arc<dyn Clock>,
    memory_keys: HashSet<String>,
    /// [`Config::answer_digest`] of the config this cascade was loaded from, named by every
    /// answer (`served_by.config_digest`); computed once per load.
    config_digest: String,
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

    /// The digest every answer of this cascade names as `served_by.config_digest`:
    /// [`Config::answer_digest`] of the config it was loaded from.
    pub fn config_digest(&self) -> &str {
        &self.config_digest
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

    /// The escalation path, when `[escalation]` is configured.
    pub fn escalation(&self) -> Option<&Escalator> {
        self.escalation.as_ref()
    }

    /// Commits `answer`'s request to the review queue when it escalates (see
    /// `[escalation]`) and returns the answer with its receipt. [`Self::predict`] does this;
    /// a caller that answers by other means (a shed request) calls it itself.
    pub async fn escalate(&self, request: &Request, mut answer: Answer) -> Answer {
        if let Some(escalation) = &self.escalation {
            answer.escalation = escalation.submit(request, &answer).await;
        }
        answer
    }

    /// [`Self::escalate`] for many answers at once (`requests[i]` answered by `answers[i]`):
    /// every escalation is queued before any is waited for, so they share commits.
    pub async fn escalate_all(
        &self,
        requests: &[Request],
        mut answers: Vec<Answer>,
    ) -> Vec<Answer> {
        if let Some(escalation) = &self.escalation {
            let receipts = escalation.submit_all(requests.iter().zip(&answers)).await;
            for (answer, receipt) in answers.iter_mut().zip(receipts) {
                answer.escalation = receipt;
            }
        }
        answers
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
            served_by: self.safe_default_provenance(),
            degraded: true,
            elapsed_us: started.elapsed().as_micros() as u64,
            cache: None,
            trail,
            escalation: None,
        };
        self.emit_fallbacks(request, &answer);
        answer
    }

    fn emit_fallbacks(&self, request: &Request, answer: &Answer) {
        let features = self.redaction.view(&request.features);
        events::emit_fallbacks(&self.name, answer, features, self.audit.as_deref());
    }

    /// Calls every loaded tier directly on `samples` and reports the first that faults: a
    /// tier must answer or abstain within its limits and the contract (low confidence or a
    /// disallowed label is fine, a trap, deadline, NaN or tier error is not).
    pub async fn check_samples(&self, samples: &[Request]) -> Result<(), SampleFailure> {
        for tier in &self.tiers {
            let Ok(sandbox) = &tier.sandbox else { continue };
            for sample in samples {
                let deadline = Duration::from_millis(tier.config.limits.deadline_ms);
                let report = sandbox.predict(&tier.lower(sample), deadline).await;
                let fault = match report.result {
                    Ok(TierOutcome::Answer(p)) => {
                        acceptance::contract(&p, &tier.config.limits).err()
                    }
                    Ok(TierOutcome::Abstain(_)) => None,
                    Err(reason) => Some(reason),
                };
                if let Some(reason) = fault {
                    return Err(SampleFailure {
                        tier: tier.config.name.clone(),
                        request_id: sample.id.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Answers one request. Never fails: when no tier serves, the safe default does. An
    /// answer that escalates is committed to the review queue first (`[escalation]`).
    pub async fn predict(&self, request: &Request) -> Answer {
        let answer = self.decide(request).await;
        self.escalate(request, answer).await
    }

    /// Walks the cascade (or answers from the cache) without escalating.
    pub(crate) async fn decide(&self, request: &Request) -> Answer {
        // A healthy walk often completes without ever returning `Pending` (a short guest call
        // finishes between epoch ticks), so a caller looping over predictions would hold its
        // tokio worker forever and starve every other task on it (a hot swap, a probe). Each
        // decision spends one unit of tokio's cooperative budget: the task yields once the
        // budget is spent, as it would on a socket.
        tokio::task::coop::consume_budget().await;
        let started = Instant::now();
        let (cache_key, cache_status) = match &self.cache {
            None => (None, None),
            Some(cache) => {
                let key = cache.key(request);
                match cache.get(&key).await {
                    Lookup::Hit(cached) => {
                        // Named by the config serving now (the cache key holds the same
                        // digest, so only entries written before the field existed differ).
                        let served_by = ServedBy {
                            config_digest: self.config_digest.clone(),
                            ..cached.served_by
                        };
                        return Answer {
                            request_id: request.id.clone(),
                            decision: cached.decision,
                            served_by,
                            degraded: cached.degraded,
                            elapsed_us: started.elapsed().as_micros() as u64,
                            cache: Some(CacheStatus::Hit),
                            trail: Vec::new(),
                            escalation: None,
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
                        config_digest: self.config_digest.clone(),
                    },
                )
            }
            None => (self.safe_decision(), self.safe_default_provenance()),
        };
        let answer = Answer {
            request_id: request.id.clone(),
            degraded: served_by.tier != self.tiers.first().map_or("", |t| t.config.name.as_str()),
            decision,
            served_by,
            elapsed_us: started.elapsed().as_micros() as u64,
            cache: cache_status,
            trail,
            escalation: None,
        };
        if let (Some(cache), Some(key)) = (&self.cache, cache_key)
            && cache.admits(&answer)
        {
            cache.put(key, &answer);
        }
        self.emit_fallbacks(request, &answer);
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
}

impl Cascade {
    fn safe_default_provenance(&self) -> ServedBy {
        ServedBy {
            tier: SAFE_DEFAULT.into(),
            plugin: None,
            version: None,
            sha256: None,
            config_digest: self.config_digest.clone(),
        }
    }
}
