//! Shadow runs: a tier's candidate version (`[tier.shadow]`) runs on a share of the requests
//! the live tier was called for, off the request path, and its outcome is compared with the
//! live tier's: label agreement, score and confidence deltas, faults by reason, latency, and a
//! bounded sample of the requests where they disagree. The comparison decides whether the
//! candidate may be promoted (`POST /admin/tiers/{name}/promote`).
//!
//! The candidate never runs on the request path: the live tier's outcome and the request are
//! handed (without waiting) to a dedicated thread at the lowest CPU priority with its own
//! bounded queue and bulkhead; when either is full the request is simply not shadowed
//! (`dropped`). The candidate runs in its own sandbox with its own limits and is judged by the
//! tier's own acceptance rules and `min_confidence`, exactly as the live version is.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::PluginSource;
use crate::guest::{Prediction, TierOutcome, TierRequest};
use crate::limits::TierLimits;
use crate::policy::TierPolicy;
use crate::policy::memory::PolicyObserver;
use crate::reason::FallbackReason;
use crate::sandbox::Sandbox;

mod render;
pub use render::{LISTED_DISAGREEMENTS, render};

/// `[tier.shadow]`: a candidate version of the tier, compared with the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The candidate's component (path relative to the config, or `builtin:<name>`).
    pub plugin: PluginSource,
    /// Share of the requests the live tier is called for that the candidate also runs on.
    #[serde(default = "default_share")]
    pub share: f64,
    /// The candidate's model grant (default: the live tier's).
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// The candidate's params (default: the live tier's).
    #[serde(default)]
    pub params: Option<toml::Table>,
    /// The candidate's limits (default: the live tier's).
    #[serde(default)]
    pub limits: Option<TierLimits>,
    /// Candidate calls in flight at once (its own bulkhead and instance slots).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Requests waiting for the candidate; beyond it a request is not shadowed (`dropped`).
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Disagreeing requests kept as a sample (the most recent ones).
    #[serde(default = "default_disagreements")]
    pub disagreements: usize,
    /// Promotion gate: the agreement on labels the candidate must reach (unset: no gate).
    #[serde(default)]
    pub promote_min_agreement: Option<f64>,
    /// Promotion gate: compared calls needed before the agreement counts.
    #[serde(default = "default_promote_min_calls")]
    pub promote_min_calls: u64,
}

fn default_share() -> f64 {
    1.0
}
fn default_max_concurrent() -> usize {
    2
}
fn default_max_queued() -> usize {
    256
}
fn default_disagreements() -> usize {
    20
}
fn default_promote_min_calls() -> u64 {
    100
}

impl ShadowConfig {
    /// A shadow of `plugin` with every other field at its default.
    pub fn new(plugin: PluginSource) -> Self {
        Self {
            plugin,
            share: default_share(),
            model: None,
            params: None,
            limits: None,
            max_concurrent: default_max_concurrent(),
            max_queued: default_max_queued(),
            disagreements: default_disagreements(),
            promote_min_agreement: None,
            promote_min_calls: default_promote_min_calls(),
        }
    }

    /// Checks the `[tier.shadow]` values (the candidate's limits are checked by the tier).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(("share", "must be within (0, 1]".into()));
        }
        if self.max_concurrent == 0 {
            return Err(("max_concurrent", "must be at least 1".into()));
        }
        if self.max_queued == 0 {
            return Err(("max_queued", "must be at least 1".into()));
        }
        if self.disagreements > 10_000 {
            return Err(("disagreements", "must be at most 10000".into()));
        }
        if let Some(a) = self.promote_min_agreement
            && !(0.0..=1.0).contains(&a)
        {
            return Err(("promote_min_agreement", "must be within [0, 1]".into()));
        }
        Ok(())
    }
}

/// What one version of the tier did with one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Observed {
    /// It answered (`served`: the tier's acceptance rules and `min_confidence` let it through).
    Answer {
        /// Label.
        label: String,
        /// Score.
        score: f64,
        /// Confidence.
        confidence: f64,
        /// Whether the tier would serve it.
        served: bool,
    },
    /// It abstained or faulted.
    NoAnswer {
        /// The reason kind (`trap`, `deadline`, `abstained`, ...).
        reason: &'static str,
        /// Details.
        detail: String,
    },
}

impl Observed {
    /// Judges a tier's raw outcome with the tier's own verdict policies.
    pub(crate) fn judge(
        result: &Result<TierOutcome, FallbackReason>,
        judge: impl Fn(&Prediction) -> Result<(), FallbackReason>,
    ) -> Self {
        match result {
            Ok(TierOutcome::Answer(p)) => Self::Answer {
                label: p.label.clone(),
                score: p.score,
                confidence: p.confidence,
                served: judge(p).is_ok(),
            },
            Ok(TierOutcome::Abstain(reason)) => Self::NoAnswer {
                reason: "abstained",
                detail: reason.clone(),
            },
            Err(reason) => Self::NoAnswer {
                reason: reason.kind(),
                detail: reason.to_string(),
            },
        }
    }

    /// True for a fault (anything but an answer or an abstention).
    fn is_fault(&self) -> bool {
        matches!(self, Self::NoAnswer { reason, .. } if *reason != "abstained")
    }
}

/// One request where the two versions disagree.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    /// The request id.
    pub request_id: String,
    /// What the live version did.
    pub live: Observed,
    /// What the candidate did.
    pub candidate: Observed,
}

/// Quantiles of a bounded window of values.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Values in the window.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Most recent values kept for quantiles.
const WINDOW: usize = 4096;

#[derive(Default)]
struct Ring {
    values: Vec<f64>,
    next: usize,
}

impl Ring {
    fn push(&mut self, value: f64) {
        if self.values.len() < WINDOW {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
        }
        self.next = (self.next + 1) % WINDOW;
    }

    fn spread(&self) -> Spread {
        if self.values.is_empty() {
            return Spread::default();
        }
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Spread {
            n: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: at(0.5),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The comparison so far (kept for the life of one live version + one candidate version).
#[derive(Default)]
pub struct ShadowStats {
    dropped: AtomicU64,
    inner: Mutex<Compared>,
}

#[derive(Default)]
struct Compared {
    calls: u64,
    both_answered: u64,
    agreed: u64,
    served_differently: u64,
    live_faults: BTreeMap<&'static str, u64>,
    candidate_faults: BTreeMap<&'static str, u64>,
    score_delta: Ring,
    confidence_delta: Ring,
    live_us: Ring,
    candidate_us: Ring,
    disagreements: std::collections::VecDeque<Disagreement>,
}

/// How one shadowed request came out, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    /// Both answered the same label.
    Agree,
    /// Both answered, with different labels.
    Disagree,
    /// The candidate faulted.
    CandidateFault,
    /// The candidate answered or abstained where the live version did not answer.
    NotCompared,
    /// Not shadowed: the candidate's queue was full.
    Dropped,
}

impl ShadowOutcome {
    /// Every outcome, for metrics.
    pub const ALL: [ShadowOutcome; 5] = [
        Self::Agree,
        Self::Disagree,
        Self::CandidateFault,
        Self::NotCompared,
        Self::Dropped,
    ];

    /// Stable kebab-case name (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Disagree => "disagree",
            Self::CandidateFault => "candidate-fault",
            Self::NotCompared => "not-compared",
            Self::Dropped => "dropped",
        }
    }
}

impl ShadowStats {
    fn record(
        &self,
        request_id: &str,
        live: Observed,
        live_elapsed: Duration,
        candidate: Observed,
        candidate_elapsed: Duration,
        keep: usize,
    ) -> ShadowOutcome {
        let Ok(mut c) = self.inner.lock() else {
            return ShadowOutcome::NotCompared;
        };
        c.calls += 1;
        c.live_us.push(live_elapsed.as_micros() as f64);
        c.candidate_us.push(candidate_elapsed.as_micros() as f64);
        if let Observed::NoAnswer { reason, .. } = &live
            && live.is_fault()
        {
            *c.live_faults.entry(reason).or_default() += 1;
        }
        if let Observed::NoAnswer { reason, .. } = &candidate
            && candidate.is_fault()
        {
            *c.candidate_faults.entry(reason).or_default() += 1;
        }
        let outcome = match (&live, &candidate) {
            (
                Observed::Answer {
                    label: l1,
                    score: s1,
                    confidence: c1,
                    served: v1,
                },
                Observed::Answer {
                    label: l2,
                    score: s2,
                    confidence: c2,
                    served: v2,
                },
            ) => {
                c.both_answered += 1;
                c.score_delta.push(s2 - s1);
                c.confidence_delta.push(c2 - c1);
                if v1 != v2 {
                    c.served_differently += 1;
                }
                if l1 == l2 {
                    c.agreed += 1;
                    ShadowOutcome::Agree
                } else {
                    ShadowOutcome::Disagree
                }
            }
            _ if candidate.is_fault() => ShadowOutcome::CandidateFault,
            _ => ShadowOutcome::NotCompared,
        };
        let differs = match outcome {
            ShadowOutcome::Agree => false,
            ShadowOutcome::Disagree | ShadowOutcome::CandidateFault => true,
            _ => std::mem::discriminant(&live) != std::mem::discriminant(&candidate),
        };
        if differs && keep > 0 {
            if c.disagreements.len() == keep {
                c.disagreements.pop_front();
            }
            c.disagreements.push_back(Disagreement {
                request_id: request_id.to_string(),
                live,
                candidate,
            });
        }
        outcome
    }

    /// Share of the requests both answered on which they gave the same label.
    pub fn agreement(&self) -> Option<f64> {
        let c = self.inner.lock().ok()?;
        (c.both_answered > 0).then(|| c.agreed as f64 / c.both_answered as f64)
    }
}

/// The shadow report of a tier (`GET /v1/tiers/{name}/shadow`, `tierhost eval --shadow`).
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The tier.
    pub tier: String,
    /// The live version's plugin (name, version, sha256).
    pub live: Option<crate::plugin::PluginInfo>,
    /// The candidate's plugin, or why it did not load.
    pub candidate: Result<crate::plugin::PluginInfo, String>,
    /// `share` of `[tier.shadow]`.
    pub share: f64,
    /// Requests the candidate ran on.
    pub calls: u64,
    /// Requests not shadowed because the candidate's queue was full.
    pub dropped: u64,
    /// Requests on which both versions answered.
    pub both_answered: u64,
    /// Of those, how many got the same label.
    pub agreed: u64,
    /// `agreed / both_answered` (absent before any).
    pub agreement: Option<f64>,
    /// Requests where one version would serve its answer and the other would fall through
    /// (its acceptance rules or `min_confidence`).
    pub served_differently: u64,
    /// Candidate score minus live score, over the most recent requests both answered.
    pub score_delta: Spread,
    /// Candidate confidence minus live confidence.
    pub confidence_delta: Spread,
    /// Faults by reason (abstentions are not faults).
    pub faults: FaultCounts,
    /// Call latency of each version, in microseconds (most recent calls).
    pub latency_us: Latency,
    /// The most recent requests where the versions disagree (label, served or fault).
    pub disagreements: Vec<Disagreement>,
    /// Whether the candidate may be promoted now.
    pub gate: Gate,
}

/// Faults of each version, by reason kind.
#[derive(Debug, Clone, Serialize)]
pub struct FaultCounts {
    /// The live version's.
    pub live: BTreeMap<&'static str, u64>,
    /// The candidate's.
    pub candidate: BTreeMap<&'static str, u64>,
}

/// Latency of each version.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The live version's.
    pub live: Spread,
    /// The candidate's.
    pub candidate: Spread,
}

/// The promotion gate's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// `promote_min_agreement` (absent: no gate).
    pub min_agreement: Option<f64>,
    /// `promote_min_calls`.
    pub min_calls: u64,
    /// Whether a promotion would be accepted.
    pub passes: bool,
    /// Why not, with the numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A tier's shadow: the candidate's sandbox, the low-priority runner and the comparison.
pub struct Shadow {
    config: ShadowConfig,
    tier: Arc<str>,
    candidate: Result<Arc<Sandbox>, String>,
    stats: Arc<ShadowStats>,
    jobs: Option<mpsc::Sender<Job>>,
    judge: Arc<Judge>,
    observer: Option<Arc<dyn PolicyObserver>>,
}

/// The tier's verdict policies, applied to the candidate as to the live version.
pub(crate) struct Judge {
    pub(crate) acceptance: crate::policy::acceptance::Acceptance,
    pub(crate) confidence: crate::policy::confidence::MinConfidence,
}

impl Judge {
    fn judge(&self, p: &Prediction) -> Result<(), FallbackReason> {
        self.acceptance.judge(p)?;
        self.confidence.judge(p)
    }
}

enum Job {
    /// Run the candidate on a request and compare.
    Compare(Compare),
    /// Answer once every comparison handed over before this one has finished.
    Settle(oneshot::Sender<()>),
}

struct Compare {
    request_id: String,
    request: TierRequest,
    live: Observed,
    live_elapsed: Duration,
}

/// Nice value of the shadow thread where `SCHED_IDLE` is refused: the lowest priority, so a
/// candidate's CPU work waits for every live request.
#[cfg(target_os = "linux")]
const SHADOW_NICE: i32 = 19;

/// Puts the calling thread below every live thread. On Linux: `SCHED_IDLE`, under which the
/// scheduler runs the thread only when nothing else wants the core and preempts it as soon as
/// a live thread wakes up. Nice 19 alone is not enough: the scheduler lets a running nice-19
/// thread finish its slice before a woken live thread runs, which measurably raised the live
/// p99 at half load (`cargo bench --bench shadow`). Falls back to nice 19; failing both only
/// means normal priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is read during the call only.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        // On Linux the nice value is per thread.
        if !idle {
            let _ = rustix::process::setpriority_process(None, SHADOW_NICE);
        }
    }
}

impl Shadow {
    /// The shadow of tier `tier`: `candidate` is its loaded sandbox (or why it failed to
    /// load); its comparison accumulates in `stats`; events go to `observer`.
    pub(crate) fn start(
        tier: &str,
        config: ShadowConfig,
        candidate: Result<Sandbox, String>,
        judge: Judge,
        stats: Arc<ShadowStats>,
        observer: Option<Arc<dyn PolicyObserver>>,
        deadline: Duration,
    ) -> Self {
        let tier: Arc<str> = Arc::from(tier);
        let candidate = candidate.map(Arc::new);
        let judge = Arc::new(judge);
        let jobs = match &candidate {
            Ok(sandbox) => {
                let (tx, rx) = mpsc::channel::<Job>(config.max_queued);
                let run = Runner {
                    tier: tier.clone(),
                    sandbox: sandbox.clone(),
                    stats: stats.clone(),
                    judge: judge.clone(),
                    observer: observer.clone(),
                    max_concurrent: config.max_concurrent,
                    keep: config.disagreements,
                    deadline,
                };
                std::thread::Builder::new()
                    .name(format!("tierhost-shadow-{tier}"))
                    .spawn(move || run.run(rx))
                    .ok()
                    .map(|_| tx)
            }
            Err(_) => None,
        };
        Self {
            config,
            tier,
            candidate,
            stats,
            jobs,
            judge,
            observer,
        }
    }

    /// The `[tier.shadow]` section.
    pub fn config(&self) -> &ShadowConfig {
        &self.config
    }

    /// The candidate's sandbox, or why it did not load.
    pub fn candidate(&self) -> Result<&Sandbox, &str> {
        self.candidate.as_deref().map_err(String::as_str)
    }

    /// Hands the live version's outcome on `request` to the candidate (never waits). Called
    /// when the live tier's call ended; `share` of such calls are shadowed.
    pub(crate) fn offer(
        &self,
        request_id: &str,
        request: &TierRequest,
        live: &Result<TierOutcome, FallbackReason>,
        live_elapsed: Duration,
    ) {
        let Some(jobs) = &self.jobs else { return };
        if self.config.share < 1.0 && rand::random::<f64>() >= self.config.share {
            return;
        }
        // A slot first: when the candidate is behind, a dropped request costs the live path
        // no copy of the request.
        let Ok(slot) = jobs.try_reserve() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = &self.observer {
                o.shadow_call(&self.tier, ShadowOutcome::Dropped, None);
            }
            return;
        };
        slot.send(Job::Compare(Compare {
            request_id: request_id.to_string(),
            request: request.clone(),
            live: Observed::judge(live, |p| self.judge.judge(p)),
            live_elapsed,
        }));
    }

    /// The comparison so far.
    pub fn report(&self, live: Option<crate::plugin::PluginInfo>) -> ShadowReport {
        let c = self.stats.inner.lock().unwrap_or_else(|p| p.into_inner());
        let agreement = (c.both_answered > 0).then(|| c.agreed as f64 / c.both_answered as f64);
        let candidate_faults: u64 = c.candidate_faults.values().sum();
        let refusal = match self.config.promote_min_agreement {
            None => None,
            Some(min) => {
                if c.both_answered < self.config.promote_min_calls {
                    Some(format!(
                        "{} compared calls, the gate needs {} (promote_min_calls)",
                        c.both_answered, self.config.promote_min_calls
                    ))
                } else if candidate_faults > 0 {
                    Some(format!(
                        "the candidate faulted {candidate_faults} times ({})",
                        c.candidate_faults
                            .iter()
                            .map(|(k, n)| format!("{k}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else if agreement.unwrap_or(0.0) < min {
                    Some(format!(
                        "agreement {:.4} over {} calls is below {min} (promote_min_agreement)",
                        agreement.unwrap_or(0.0),
                        c.both_answered
                    ))
                } else {
                    None
                }
            }
        };
        let refusal = match &self.candidate {
            Err(e) => Some(format!("the candidate did not load: {e}")),
            Ok(_) => refusal,
        };
        ShadowReport {
            tier: self.tier.to_string(),
            live,
            candidate: self
                .candidate
                .as_ref()
                .map(|s| s.plugin().info().clone())
                .map_err(Clone::clone),
            share: self.config.share,
            calls: c.calls,
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            both_answered: c.both_answered,
            agreed: c.agreed,
            agreement,
            served_differently: c.served_differently,
            score_delta: c.score_delta.spread(),
            confidence_delta: c.confidence_delta.spread(),
            faults: FaultCounts {
                live: c.live_faults.clone(),
                candidate: c.candidate_faults.clone(),
            },
            latency_us: Latency {
                live: c.live_us.spread(),
                candidate: c.candidate_us.spread(),
            },
            disagreements: c.disagreements.iter().cloned().collect(),
            gate: Gate {
                min_agreement: self.config.promote_min_agreement,
                min_calls: self.config.promote_min_calls,
                passes: refusal.is_none(),
                refusal,
            },
        }
    }

    /// Waits until every request handed to the candidate so far has been compared (offline
    /// evaluation and tests; a server never waits for its shadows).
    pub async fn settle(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (done, settled) = oneshot::channel();
        if jobs.send(Job::Settle(done)).await.is_ok() {
            let _ = settled.await;
        }
    }
}

/// The shadow thread's state.
struct Runner {
    tier: Arc<str>,
    sandbox: Arc<Sandbox>,
    stats: Arc<ShadowStats>,
    judge: Arc<Judge>,
    observer: Option<Arc<dyn PolicyObserver>>,
    max_concurrent: usize,
    keep: usize,
    deadline: Duration,
}

impl Runner {
    /// Runs comparisons (at most `max_concurrent` at once) on its own single-threaded runtime
    /// at the lowest priority, until the shadow is dropped.
    fn run(self, mut jobs: mpsc::Receiver<Job>) {
        lowest_priority();
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            tracing::error!(tier = %self.tier, "cannot start the shadow runtime; no shadow runs");
            return;
        };
        let this = Arc::new(self);
        runtime.block_on(async move {
            let slots = Arc::new(Semaphore::new(this.max_concurrent));
            let mut running = JoinSet::new();
            while let Some(job) = jobs.recv().await {
                match job {
                    Job::Settle(done) => {
                        while running.join_next().await.is_some() {}
                        let _ = done.send(());
                    }
                    Job::Compare(job) => {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let this = this.clone();
                        running.spawn(async move {
                            this.compare(job).await;
                            drop(slot);
                        });
                        while running.try_join_next().is_some() {}
                    }
                }
            }
            while running.join_next().await.is_some() {}
        });
    }

    async fn compare(&self, job: Compare) {
        let report = self.sandbox.predict(&job.request, self.deadline).await;
        let candidate = Observed::judge(&report.result, |p| self.judge.judge(p));
        let outcome = self.stats.record(
            &job.request_id,
            job.live,
            job.live_elapsed,
            candidate,
            report.elapsed,
            self.keep,
        );
        if let Some(observer) = &self.observer {
            observer.shadow_call(&self.tier, outcome, self.stats.agreement());
        }
    }
}
