//! What `tierhost check` learns about `features` allowlists from the sample requests: which
//! tier asked for a feature its list hides. It only observes; the reload gate
//! ([`Cascade::check_samples`]) decides.

use super::*;

/// A tier with a `features` allowlist that asked for a feature its list hides: on a sample
/// request that has the feature, the tier answered `missing-feature` naming it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HiddenFeatureRead {
    /// The tier.
    pub tier: String,
    /// The feature the tier asked for (present in the sample, absent from the allowlist).
    pub feature: String,
    /// The first sample request that showed it.
    pub request_id: String,
}

impl Cascade {
    /// Calls every loaded tier that has a `features` allowlist on `samples` (as it sees them:
    /// filtered) and reports each feature it asked for that the sample has but the list hides,
    /// once per tier and feature. Only what a tier says is seen: a `missing-feature` error
    /// whose message is the feature's name (as the guest SDK writes it) or names it in quotes
    /// or backticks. A tier that reads an optional feature and carries on without it leaves
    /// no trace.
    pub async fn hidden_feature_reads(&self, samples: &[Request]) -> Vec<HiddenFeatureRead> {
        let mut found: Vec<HiddenFeatureRead> = Vec::new();
        for tier in &self.tiers {
            let (Ok(sandbox), Some(allowlist)) = (&tier.sandbox, &tier.features) else {
                continue;
            };
            let deadline = Duration::from_millis(tier.config.limits.deadline_ms);
            for sample in samples {
                let report = sandbox.predict(&tier.lower(sample), deadline).await;
                let Err(FallbackReason::TierError { error, message }) = report.result else {
                    continue;
                };
                if error != "missing-feature" {
                    continue;
                }
                let hidden = sample
                    .features
                    .iter()
                    .map(|(name, _)| name)
                    .filter(|name| !allowlist.allows(name));
                for feature in hidden.filter(|name| names(&message, name)) {
                    let known = found
                        .iter()
                        .any(|r| r.tier == tier.config.name && &r.feature == feature);
                    if !known {
                        found.push(HiddenFeatureRead {
                            tier: tier.config.name.clone(),
                            feature: feature.clone(),
                            request_id: sample.id.clone(),
                        });
                    }
                }
            }
        }
        found
    }
}

/// Whether a `missing-feature` message names `feature`: it is the name, or holds it in
/// backticks or quotes (`feature \`amount\` is required`).
fn names(message: &str, feature: &str) -> bool {
    message == feature
        || ["`", "\"", "'"]
            .iter()
            .any(|q| message.contains(&format!("{q}{feature}{q}")))
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn a_message_names_a_feature_exactly_or_quoted() {
        assert!(names("country", "country"));
        assert!(names("feature `country` is required", "country"));
        assert!(names("need \"country\"", "country"));
        assert!(!names("country_code", "country"));
        assert!(!names("Country", "country"));
    }
}
