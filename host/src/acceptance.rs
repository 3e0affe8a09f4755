//! Acceptance checks: whether a tier's answer may be served. First the contract (finite
//! numbers, confidence in [0, 1], bounded size), then the tier's configured constraints
//! (allowed labels, score range), then its confidence threshold.
use crate::config::TierConfig;
use crate::reason::FallbackReason;
use crate::sandbox::bindings::tierhost::tier::types::Prediction;

/// Checks one answer against the contract and the tier's config.
pub fn check(prediction: &Prediction, tier: &TierConfig) -> Result<(), FallbackReason> {
    let invalid = |detail: String| Err(FallbackReason::InvalidOutput { detail });
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
    if size as u64 > tier.limits.max_output_bytes {
        return invalid(format!(
            "output is {size} bytes (label + reasons), limit max_output_bytes = {}",
            tier.limits.max_output_bytes
        ));
    }
    if prediction.label.is_empty() {
        return invalid("label is empty".into());
    }
    let accept = &tier.accept;
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
    if prediction.confidence < tier.min_confidence {
        return Err(FallbackReason::LowConfidence {
            confidence: prediction.confidence,
            min_confidence: tier.min_confidence,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AcceptConfig, TierConfig};

    fn tier() -> TierConfig {
        TierConfig {
            name: "t".into(),
            plugin: "builtin:rules".into(),
            min_confidence: 0.5,
            instances: Default::default(),
            warm_instances: 1,
            max_concurrent: 1,
            limits: Default::default(),
            accept: AcceptConfig {
                labels: vec!["allow".into(), "block".into()],
                score_min: Some(0.0),
                score_max: Some(1.0),
            },
            params: Default::default(),
            model: None,
            chaos: None,
            ood: None,
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
        let t = tier();
        assert_eq!(check(&p("allow", 0.2, 0.9), &t), Ok(()));
        let kind = |r: Result<(), FallbackReason>| r.unwrap_err().kind();
        assert_eq!(
            kind(check(&p("allow", f64::NAN, 0.9), &t)),
            "invalid-output"
        );
        assert_eq!(kind(check(&p("allow", 0.2, 1.5), &t)), "invalid-output");
        assert_eq!(
            kind(check(&p("allow", 0.2, f64::INFINITY), &t)),
            "invalid-output"
        );
        assert_eq!(kind(check(&p("maybe", 0.2, 0.9), &t)), "invalid-output");
        assert_eq!(kind(check(&p("allow", 1.2, 0.9), &t)), "invalid-output");
        assert_eq!(kind(check(&p("allow", 0.2, 0.4), &t)), "low-confidence");
        let mut big = p("allow", 0.2, 0.9);
        big.reasons.push("x".repeat(20_000));
        assert_eq!(kind(check(&big, &t)), "invalid-output");
    }
}
