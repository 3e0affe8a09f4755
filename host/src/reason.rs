//! Why a tier did not serve a request: one kind per fault, acceptance check or skip rule.
//!
//! Every fallback step in the trail, the log and the audit file carries one of these. The
//! kebab-case `kind()` is stable: dashboards and alerts key on it.
use serde::Serialize;

/// The reason a tier was stepped over.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FallbackReason {
    /// The call used up its fuel budget (a deterministic CPU limit).
    OutOfFuel {
        /// The tier's fuel limit.
        limit: u64,
    },
    /// The tier tried to grow its linear memory (or a table) past its limit.
    MemoryLimit {
        /// What the tier asked for, in bytes.
        requested: u64,
        /// The tier's limit, in bytes.
        limit: u64,
    },
    /// The call ran past its wall-clock deadline (the tier's own or what was left of the
    /// request budget).
    Deadline {
        /// The deadline the call had, in microseconds.
        deadline_us: u64,
    },
    /// The tier overflowed its wasm stack.
    StackOverflow,
    /// The tier trapped (panic, `unreachable`, out-of-bounds access, ...).
    Trap {
        /// The trap and, when the guest wrote one, its panic message.
        message: String,
    },
    /// The tier returned a typed error.
    TierError {
        /// `invalid-input`, `missing-feature`, `bad-params` or `internal`.
        error: String,
        /// The tier's message.
        message: String,
    },
    /// The tier asked the host for something it was not granted (an HTTP request outside its
    /// `[tier.http]` allow list, or past its `max_requests`): refused, and the call failed
    /// whatever the tier returned afterwards.
    CapabilityDenied {
        /// What was asked for and why it was refused.
        detail: String,
    },
    /// The tier answered, but the answer broke the contract or the tier's constraints.
    InvalidOutput {
        /// What is wrong with it.
        detail: String,
    },
    /// The tier chose not to answer.
    Abstained {
        /// The tier's reason.
        reason: String,
    },
    /// The tier answered with less confidence than its `min_confidence`.
    LowConfidence {
        /// The tier's confidence.
        confidence: f64,
        /// The configured threshold.
        min_confidence: f64,
    },
    /// The tier's plugin could not be loaded, compiled or instantiated (corrupt file, wrong
    /// world, missing import).
    LoadFailed {
        /// What went wrong.
        detail: String,
    },
    /// No time was left in the request budget for this tier.
    BudgetExhausted,
    /// The request failed the tier's out-of-distribution guard, so the tier was skipped.
    OutOfDistribution {
        /// Which feature is out of distribution and how.
        detail: String,
    },
    /// The tier was skipped because the host had no capacity for it (instance pool full).
    Shed {
        /// Which capacity ran out.
        detail: String,
    },
    /// The tier's circuit breaker is open: it was skipped without being called.
    BreakerOpen {
        /// Why and for how long.
        detail: String,
    },
    /// The call was still running when a hedged call to the next tiers produced an answer
    /// first; it was cancelled.
    Hedged {
        /// How long it had run, and who answered.
        detail: String,
    },
}

impl FallbackReason {
    /// Every reason's [`kind`](Self::kind), in declaration order: the closed set dashboards,
    /// alerts, the OpenAPI document and the coverage test in `tests/reasons.rs` key on. Kept
    /// true by a unit test that builds every variant (its `match` has no wildcard, so a new
    /// variant does not compile until it is listed there and here).
    pub const KINDS: &'static [&'static str] = &[
        "out-of-fuel",
        "memory-limit",
        "deadline",
        "stack-overflow",
        "trap",
        "tier-error",
        "capability-denied",
        "invalid-output",
        "abstained",
        "low-confidence",
        "load-failed",
        "budget-exhausted",
        "out-of-distribution",
        "shed",
        "breaker-open",
        "hedged",
    ];

    /// Stable, kebab-case name of the reason, used in logs, metrics and the audit file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OutOfFuel { .. } => "out-of-fuel",
            Self::MemoryLimit { .. } => "memory-limit",
            Self::Deadline { .. } => "deadline",
            Self::StackOverflow => "stack-overflow",
            Self::Trap { .. } => "trap",
            Self::TierError { .. } => "tier-error",
            Self::CapabilityDenied { .. } => "capability-denied",
            Self::InvalidOutput { .. } => "invalid-output",
            Self::Abstained { .. } => "abstained",
            Self::LowConfidence { .. } => "low-confidence",
            Self::LoadFailed { .. } => "load-failed",
            Self::BudgetExhausted => "budget-exhausted",
            Self::OutOfDistribution { .. } => "out-of-distribution",
            Self::Shed { .. } => "shed",
            Self::BreakerOpen { .. } => "breaker-open",
            Self::Hedged { .. } => "hedged",
        }
    }

    /// Whether the instance that produced this reason may have been left in a bad state and
    /// must never be reused. Only clean, well-formed returns keep an instance.
    pub fn poisons_instance(&self) -> bool {
        !matches!(
            self,
            Self::TierError { .. }
                | Self::Abstained { .. }
                | Self::LowConfidence { .. }
                | Self::InvalidOutput { .. }
        )
    }
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OutOfFuel { limit } => write!(f, "out of fuel (limit {limit})"),
            Self::MemoryLimit { requested, limit } => {
                write!(
                    f,
                    "memory limit: asked for {requested} bytes, limit {limit}"
                )
            }
            Self::Deadline { deadline_us } => write!(f, "deadline of {deadline_us} us exceeded"),
            Self::StackOverflow => write!(f, "wasm stack overflow"),
            Self::Trap { message } => write!(f, "trap: {message}"),
            Self::TierError { error, message } => write!(f, "tier error ({error}): {message}"),
            Self::CapabilityDenied { detail } => write!(f, "capability denied: {detail}"),
            Self::InvalidOutput { detail } => write!(f, "invalid output: {detail}"),
            Self::Abstained { reason } => write!(f, "abstained: {reason}"),
            Self::LowConfidence {
                confidence,
                min_confidence,
            } => {
                write!(
                    f,
                    "confidence {confidence:.4} below min_confidence {min_confidence}"
                )
            }
            Self::LoadFailed { detail } => write!(f, "plugin failed to load: {detail}"),
            Self::BudgetExhausted => write!(f, "request budget exhausted"),
            Self::OutOfDistribution { detail } => write!(f, "out of distribution: {detail}"),
            Self::Shed { detail } => write!(f, "shed: {detail}"),
            Self::BreakerOpen { detail } => write!(f, "circuit breaker open: {detail}"),
            Self::Hedged { detail } => write!(f, "cancelled by a hedged call: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FallbackReason;

    /// One value of every variant. The `match` has no wildcard arm: adding a variant fails to
    /// compile until it is added here, and then the test below fails until it is in `KINDS`.
    fn one_of_each() -> Vec<FallbackReason> {
        let text = || String::from("x");
        let all = vec![
            FallbackReason::OutOfFuel { limit: 1 },
            FallbackReason::MemoryLimit {
                requested: 2,
                limit: 1,
            },
            FallbackReason::Deadline { deadline_us: 1 },
            FallbackReason::StackOverflow,
            FallbackReason::Trap { message: text() },
            FallbackReason::TierError {
                error: text(),
                message: text(),
            },
            FallbackReason::CapabilityDenied { detail: text() },
            FallbackReason::InvalidOutput { detail: text() },
            FallbackReason::Abstained { reason: text() },
            FallbackReason::LowConfidence {
                confidence: 0.1,
                min_confidence: 0.5,
            },
            FallbackReason::LoadFailed { detail: text() },
            FallbackReason::BudgetExhausted,
            FallbackReason::OutOfDistribution { detail: text() },
            FallbackReason::Shed { detail: text() },
            FallbackReason::BreakerOpen { detail: text() },
            FallbackReason::Hedged { detail: text() },
        ];
        for reason in &all {
            match reason {
                FallbackReason::OutOfFuel { .. }
                | FallbackReason::MemoryLimit { .. }
                | FallbackReason::Deadline { .. }
                | FallbackReason::StackOverflow
                | FallbackReason::Trap { .. }
                | FallbackReason::TierError { .. }
                | FallbackReason::CapabilityDenied { .. }
                | FallbackReason::InvalidOutput { .. }
                | FallbackReason::Abstained { .. }
                | FallbackReason::LowConfidence { .. }
                | FallbackReason::LoadFailed { .. }
                | FallbackReason::BudgetExhausted
                | FallbackReason::OutOfDistribution { .. }
                | FallbackReason::Shed { .. }
                | FallbackReason::BreakerOpen { .. }
                | FallbackReason::Hedged { .. } => {}
            }
        }
        all
    }

    #[test]
    fn kinds_lists_every_variant_once_in_declaration_order() {
        let kinds: Vec<&str> = one_of_each().iter().map(FallbackReason::kind).collect();
        assert_eq!(kinds, FallbackReason::KINDS);
        // The serialized tag is the kind too (the trail and the audit file show it).
        for reason in one_of_each() {
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json["kind"], reason.kind());
        }
    }
}
