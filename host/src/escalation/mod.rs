//! Human escalation: requests the cascade gives up on (an abstention, or an answer from a tier
//! configured as an escalation point) are committed to a durable review queue before they are
//! answered, and what reviewers decide can be exported as labeled training rows.
//!
//! [`Redaction`] decides which features are stored, in the queue and in the audit log alike.
//! The queue itself ([`EscalationQueue`], SQLite in WAL mode with group commit) needs the
//! `escalation` cargo feature; without it a config with `[escalation]` is refused.
use std::collections::HashSet;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::answer::{Answer, Decision};
use crate::config::EscalationConfig;
use crate::request::FeatureValue;

#[cfg(feature = "escalation")]
mod queue;
#[cfg(feature = "escalation")]
pub use queue::{
    Escalation, EscalationQueue, EscalationStore, Escalator, ExportFormat, Features, QueueError,
    QueueStats, Resolution, ResolveError, Status, export,
};

/// Which features may be stored outside the request path (the review queue, the audit log).
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    keep: Option<HashSet<String>>,
    drop: HashSet<String>,
}

impl Redaction {
    /// The rule of `[escalation]` (`features` allowlist or `redact` list); none keeps all.
    pub fn from_config(config: Option<&EscalationConfig>) -> Self {
        match config {
            None => Self::default(),
            Some(c) => Self {
                keep: c.features.as_ref().map(|f| f.iter().cloned().collect()),
                drop: c.redact.iter().cloned().collect(),
            },
        }
    }

    /// Whether feature `name` may be stored.
    pub fn keeps(&self, name: &str) -> bool {
        self.keep.as_ref().is_none_or(|k| k.contains(name)) && !self.drop.contains(name)
    }

    /// `features` as a JSON object (in the caller's order) holding only what may be stored.
    pub fn view<'a>(&'a self, features: &'a [(String, FeatureValue)]) -> RedactedFeatures<'a> {
        RedactedFeatures {
            rule: self,
            features,
        }
    }
}

/// A request's features as stored: serializes as a JSON object without the redacted ones.
#[derive(Clone, Copy)]
pub struct RedactedFeatures<'a> {
    rule: &'a Redaction,
    features: &'a [(String, FeatureValue)],
}

impl Serialize for RedactedFeatures<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.features.iter().filter(|(n, _)| self.rule.keeps(n)) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Whether an answer escalates under `config`: abstentions always do, and so do answers
/// served by one of `config.tiers`.
pub fn escalates(config: &EscalationConfig, answer: &Answer) -> bool {
    matches!(answer.decision, Decision::Abstain { .. })
        || config.tiers.contains(&answer.served_by.tier)
}

/// Without the `escalation` feature there is no queue; a config asking for one is refused at
/// validation, so this type is never made.
#[cfg(not(feature = "escalation"))]
pub enum Escalator {}

#[cfg(not(feature = "escalation"))]
impl Escalator {
    pub(crate) async fn submit(
        &self,
        _request: &crate::request::Request,
        _answer: &Answer,
    ) -> Option<crate::answer::EscalationReceipt> {
        match *self {}
    }

    pub(crate) async fn submit_all<'a>(
        &self,
        _answered: impl Iterator<Item = (&'a crate::request::Request, &'a Answer)>,
    ) -> Vec<Option<crate::answer::EscalationReceipt>> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> Vec<(String, FeatureValue)> {
        vec![
            ("email".into(), FeatureValue::Text("a@b.c".into())),
            ("amount".into(), FeatureValue::Float(12.5)),
            ("country".into(), FeatureValue::Text("NL".into())),
        ]
    }

    #[test]
    fn redaction_keeps_only_what_the_rule_allows_in_the_callers_order() {
        let f = features();
        let all = Redaction::default();
        assert_eq!(
            serde_json::to_string(&all.view(&f)).unwrap(),
            r#"{"email":"a@b.c","amount":12.5,"country":"NL"}"#
        );
        let mut config = EscalationConfig::new("q.db");
        config.redact = vec!["email".into()];
        let drop = Redaction::from_config(Some(&config));
        assert_eq!(
            serde_json::to_string(&drop.view(&f)).unwrap(),
            r#"{"amount":12.5,"country":"NL"}"#
        );
        config.redact.clear();
        config.features = Some(vec!["country".into(), "amount".into()]);
        let keep = Redaction::from_config(Some(&config));
        assert_eq!(
            serde_json::to_string(&keep.view(&f)).unwrap(),
            r#"{"amount":12.5,"country":"NL"}"#
        );
    }
}
