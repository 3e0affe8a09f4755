//! What crosses the boundary, in host form: a request lowered into its WIT form, and a tier's
//! answer, kind and description lifted out of theirs.
use super::*;

/// What a tier returned, lifted into host types (before the host's acceptance checks).
#[derive(Debug, Clone)]
pub enum TierOutcome {
    /// An answer.
    Answer(Prediction),
    /// An abstention with the tier's reason.
    Abstain(String),
}

/// A tier's answer in host form.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    /// The decided class or action.
    pub label: String,
    /// The raw score behind the label.
    pub score: f64,
    /// How sure the tier is, in [0, 1] (checked by the host).
    pub confidence: f64,
    /// Short explanations.
    pub reasons: Vec<String>,
}

impl From<wit::Prediction> for Prediction {
    fn from(p: wit::Prediction) -> Self {
        Self {
            label: printable(p.label),
            score: p.score,
            confidence: p.confidence,
            reasons: p.reasons.into_iter().map(printable).collect(),
        }
    }
}

/// What a tier says about itself (`describe`), in host form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierKind {
    /// A trained model or a wrapper around one.
    Model,
    /// Hand-written rules.
    Rules,
    /// A constant or near-constant safe answer.
    SafeDefault,
    /// Anything else.
    Other,
}

impl std::fmt::Display for TierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Model => "model",
            Self::Rules => "rules",
            Self::SafeDefault => "safe-default",
            Self::Other => "other",
        })
    }
}

/// Name, version and kind reported by a tier's `describe`.
#[derive(Debug, Clone)]
pub struct Description {
    /// Implementation name.
    pub name: String,
    /// Implementation version.
    pub version: String,
    /// What the tier does.
    pub kind: TierKind,
}

/// A request in the form tiers receive it.
pub type TierRequest = wit::Request;

/// Converts a request to the form tiers receive.
pub fn lower(request: &Request) -> TierRequest {
    lower_where(request, |_| true)
}

/// Converts a request to the form a tier with a `features` allowlist receives: only the
/// features the list names, in the caller's order. The rest never cross the boundary.
pub fn lower_allowed(request: &Request, allowlist: &FeatureAllowlist) -> TierRequest {
    lower_where(request, |name| allowlist.allows(name))
}

fn lower_where(request: &Request, keep: impl Fn(&str) -> bool) -> TierRequest {
    wit::Request {
        id: request.id.clone(),
        features: request
            .features
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, value)| wit::Feature {
                name: name.clone(),
                value: match value {
                    FeatureValue::Null => wit::Value::Null,
                    FeatureValue::Bool(b) => wit::Value::Boolean(*b),
                    FeatureValue::Integer(i) => wit::Value::Integer(*i),
                    FeatureValue::Float(x) => wit::Value::Float(*x),
                    FeatureValue::Text(s) => wit::Value::Text(s.clone()),
                },
            })
            .collect(),
    }
}

/// A tier's `features` allowlist (least privilege), as the host applies it. Names match byte
/// for byte: `Amount`, `amount ` or a Cyrillic `а` in `аmount` are other features, because
/// any folding or normalisation would let a caller smuggle a feature past the list under a
/// look-alike name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureAllowlist(std::collections::HashSet<String>);

impl FeatureAllowlist {
    /// The allowlist of `names`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        Self(names.into_iter().cloned().collect())
    }

    /// Whether the tier may see the feature `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}
