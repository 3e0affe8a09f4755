//! The acceptance verdict: whether a tier's answer may be served. First the contract (finite
//! numbers, confidence in [0, 1], bounded size, a label), then the tier's configured
//! constraints (`[tier.accept]`: allowed labels, score range). The confidence threshold is its
//! own verdict ([`super::confidence`]).
use super::TierPolicy;
use crate::config::AcceptConfig;
use crate::guest::Prediction;
use crate::limits::TierLimits;
use crate::reason::FallbackReason;

/// The contract and the `[tier.accept]` constraints of one tier.
#[derive(Debug, Clone)]
pub struct Acceptance {
    /// Allowed labels and score range.
    pub accept: AcceptConfig,
    /// The tier's limits (`max_output_bytes`, `max_reasons`).
    pub limits: TierLimits,
}

impl TierPolicy for Acceptance {
    fn name(&self) -> &'static str {
        "acceptance"
    }

    fn judge(&self, prediction: &Prediction) -> Result<(), FallbackReason> {
        contract(prediction, &self.limits)?;
        constraints(prediction, &self.accept)
    }
}

fn invalid(detail: String) -> Result<(), FallbackReason> {
    Err(FallbackReason::InvalidOutput { detail })
}

/// The contract every answer must keep, whatever the config: a tier that breaks it is faulty
/// (`tierhost check` and the reload sample check refuse it).
pub fn contract(prediction: &Prediction, limits: &TierLimits) -> Result<(), FallbackReason> {
    let max_output_bytes = limits.max_output_bytes;
    if prediction.reasons.len() as u64 > limits.max_reasons {
        return invalid(format!(
            "{} reasons, limit max_reasons = {}",
            prediction.reasons.len(),
            limits.max_reasons
        ));
    }
    if !prediction.score.is_finite() {
        return invalid(format!("score is {} (must be finite)", prediction.score));
    }
    if !prediction.confidence.is_finite() || !(0.0..=1.0).contains(&prediction.confidence) {
        return invalid(format!(
            "confidence is {} (must be within [0, 1])",
            prediction.confidence
        ));
    }
    let size = prediction.label.len() + prediction.reasons.iter().map(String::len).sum::<usize>();
    if size as u64 > max_output_bytes {
        return invalid(format!(
            "output is {size} bytes (label + reasons), limit max_output_bytes = {max_output_bytes}"
        ));
    }
    if prediction.label.is_empty() {
        return invalid("label is empty".into());
    }
    Ok(())
}

/// The tier's configured constraints: an answer outside them is valid but not servable here.
pub fn constraints(prediction: &Prediction, accept: &AcceptConfig) -> Result<(), FallbackReason> {
    if !accept.labels.is_empty() && !accept.labels.contains(&prediction.label) {
        let shown: String = prediction.label.chars().take(64).collect();
        return invalid(format!("label `{shown}` is not one of {:?}", accept.labels));
    }
    if accept.score_min.is_some_and(|lo| prediction.score < lo)
        || accept.score_max.is_some_and(|hi| prediction.score > hi)
    {
        return invalid(format!(
            "score {} outside [{}, {}]",
            prediction.score,
            accept.score_min.map_or("-inf".into(), |v| v.to_string()),
            accept.score_max.map_or("inf".into(), |v| v.to_string()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::confidence::MinConfidence;

    fn acceptance() -> Acceptance {
        Acceptance {
            accept: AcceptConfig {
                labels: vec!["allow".into(), "block".into()],
                score_min: Some(0.0),
                score_max: Some(1.0),
            },
            limits: TierLimits::default(),
        }
    }

    fn p(label: &str, score: f64, confidence: f64) -> Prediction {
        Prediction {
            label: label.into(),
            score,
            confidence,
            reasons: vec![],
        }
    }

    #[test]
    fn each_check_trips_with_its_reason() {
        let t = acceptance();
        let check = |p: &Prediction| t.judge(p).and_then(|()| MinConfidence(0.5).judge(p));
        assert_eq!(check(&p("allow", 0.2, 0.9)), Ok(()));
        let kind = |r: Result<(), FallbackReason>| r.unwrap_err().kind();
        assert_eq!(kind(check(&p("allow", f64::NAN, 0.9))), "invalid-output");
        assert_eq!(kind(check(&p("allow", 0.2, 1.5))), "invalid-output");
        assert_eq!(
            kind(check(&p("allow", 0.2, f64::INFINITY))),
            "invalid-output"
        );
        assert_eq!(kind(check(&p("maybe", 0.2, 0.9))), "invalid-output");
        assert_eq!(kind(check(&p("allow", 1.2, 0.9))), "invalid-output");
        assert_eq!(kind(check(&p("allow", 0.2, 0.4))), "low-confidence");
        let mut big = p("allow", 0.2, 0.9);
        big.reasons.push("x".repeat(20_000));
        assert_eq!(kind(check(&big)), "invalid-output");
        let limits = TierLimits::default();
        assert_eq!(kind(contract(&big, &limits)), "invalid-output");
        assert_eq!(contract(&p("maybe", 0.2, 0.9), &limits), Ok(()));
        let mut many = p("allow", 0.2, 0.9);
        many.reasons = vec![String::new(); 33];
        assert!(
            contract(&many, &limits)
                .unwrap_err()
                .to_string()
                .contains("max_reasons")
        );
        many.reasons.pop();
        assert_eq!(contract(&many, &limits), Ok(()));
    }
}
