//! What a caller gets back: the decision and its provenance (serving tier, version, digest,
//! degraded flag) and the trail of every tier tried.
use serde::Serialize;

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
    /// Every tier tried, in order, with its outcome.
    pub trail: Vec<TrailEntry>,
}

/// The served decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

/// How a tier's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// It served the request.
    Served,
    /// It was called and its answer was not accepted (or it faulted).
    FellThrough,
    /// It was not called (budget, shed, not loaded).
    Skipped,
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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
