//! What a caller gets back: the decision and its provenance (serving tier, version, digest,
//! degraded flag) and the trail of every tier tried.
use serde::{Deserialize, Serialize};

use crate::reason::FallbackReason;

/// The cascade's answer to one request.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The request's id.
    pub request_id: String,
    /// The decision: an answer or an abstention.
    pub decision: Decision,
    /// Who served it.
    pub served_by: ServedBy,
    /// True when the first tier did not serve the request.
    pub degraded: bool,
    /// Wall time spent in the cascade, in microseconds.
    pub elapsed_us: u64,
    /// Whether the prediction cache answered (absent when no cache is configured). A hit keeps
    /// the original `served_by` and has an empty trail: no tier was called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::policy::cache::CacheStatus>,
    /// Every tier tried, in order, with its outcome.
    pub trail: Vec<TrailEntry>,
    /// Whether the escalation of this request was recorded in the review queue (present only
    /// when the answer escalated, see `[escalation]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationReceipt>,
}

/// What became of an escalated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum EscalationReceipt {
    /// Committed to the durable queue under `id` before the answer was returned.
    Recorded {
        /// The escalation id (`tierhost review show ID`).
        id: String,
    },
    /// Not in the queue: nobody will review this request unless the caller acts.
    NotRecorded {
        /// Why.
        problem: EscalationProblem,
        /// Details for the operator.
        detail: String,
    },
}

/// Why an escalation was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EscalationProblem {
    /// The queue holds `escalation.max_pending` pending items.
    Full,
    /// The write failed (disk full, I/O error, ...).
    Failed,
    /// The write was not confirmed within `escalation.write_timeout_ms`.
    Timeout,
}

impl EscalationProblem {
    /// Every problem, for metrics.
    pub const ALL: [EscalationProblem; 3] = [Self::Full, Self::Failed, Self::Timeout];

    /// Stable kebab-case name (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

/// The served decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Decision {
    /// A prediction.
    Answer {
        /// Label.
        label: String,
        /// Score.
        score: f64,
        /// Confidence in [0, 1].
        confidence: f64,
        /// Explanations.
        reasons: Vec<String>,
    },
    /// The cascade abstains (e.g. escalated to a human).
    Abstain {
        /// Why.
        reason: String,
    },
}

/// Provenance of the served decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedBy {
    /// Tier name from the config, or `safe-default`.
    pub tier: String,
    /// Plugin implementation name (absent for the safe default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Plugin version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// sha256 of the plugin's `.wasm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The config the answer was served under: [`crate::Config::answer_digest`] of the
    /// cascade that answered (its budget, every tier entry and the safe default; the plugin
    /// bytes are `sha256`'s). Present on every answer, the safe default's and cache hits'
    /// included; the review queue records the same digest with each escalation.
    #[serde(default)]
    pub config_digest: String,
}

/// How a tier's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// It served the request.
    Served,
    /// It was called and its answer was not accepted (or it faulted).
    FellThrough,
    /// It was not called (budget, shed, breaker open, not loaded).
    Skipped,
    /// It was called and then cancelled because another call of a hedge race answered first.
    Cancelled,
}

/// One tier's turn.
#[derive(Debug, Clone, Serialize)]
pub struct TrailEntry {
    /// Tier name.
    pub tier: String,
    /// Plugin version, when loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Outcome of the turn.
    pub step: Step,
    /// Why it did not serve (absent when it served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FallbackReason>,
    /// Human-readable form of `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall time of the call, in microseconds.
    pub elapsed_us: u64,
    /// Fuel consumed by the call.
    pub fuel_used: u64,
    /// Log lines dropped for exceeding the tier's log budget.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
    /// True when this call was started as a hedge (in parallel with a slow earlier tier).
    #[serde(skip_serializing_if = "is_false")]
    pub hedged: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TrailEntry {
    /// A turn of `tier` (plugin `version`) that has not happened yet.
    pub fn new(tier: &str, version: Option<String>) -> Self {
        Self {
            tier: tier.to_string(),
            version,
            step: Step::Skipped,
            reason: None,
            message: None,
            elapsed_us: 0,
            fuel_used: 0,
            logs_dropped: 0,
            hedged: false,
        }
    }

    /// Records why the tier did not serve.
    pub fn fell_back(mut self, reason: FallbackReason) -> Self {
        self.message = Some(reason.to_string());
        self.reason = Some(reason);
        self
    }
}

impl Answer {
    /// The reason kinds of every tier that did not serve, in order.
    pub fn fallback_kinds(&self) -> Vec<&'static str> {
        self.trail
            .iter()
            .filter_map(|e| e.reason.as_ref().map(FallbackReason::kind))
            .collect()
    }
}
