//! Guest SDK for tierhost tiers.
//!
//! A tier is a Rust `cdylib` compiled for `wasm32-wasip2`. It implements [`Guest`] and exports
//! itself with [`export_tier!`]:
//!
//! ```ignore
//! use tierhost_sdk::{Guest, Request, Outcome, TierError, Description, TierKind};
//! struct MyTier;
//! impl Guest for MyTier {
//!     fn describe() -> Description { /* ... */ }
//!     fn predict(req: Request) -> Result<Outcome, TierError> { /* ... */ }
//! }
//! tierhost_sdk::export_tier!(MyTier);
//! ```
//!
//! The helpers here ([`Features`], [`Params`], [`log`]) keep a tier's source down to its logic.
#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tier",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_tier",
        default_bindings_module: "tierhost_sdk::bindings",
    });
}

pub use bindings::tierhost::tier::host::{LogLevel, Param};
pub use bindings::tierhost::tier::types::{
    Description, Feature, Outcome, Prediction, Request, TierError, TierKind, Value,
};
pub use bindings::{Guest, export_tier};

/// Writes one log line through the host (bounded per call by the host).
pub fn log(level: LogLevel, message: &str) {
    bindings::tierhost::tier::host::log(level, message);
}

/// The read-only model document granted to this tier (`model = "path"` in its cascade entry),
/// empty when none is configured.
pub fn model() -> Vec<u8> {
    bindings::tierhost::tier::host::model()
}

/// Typed, by-name access to a request's features.
pub struct Features<'a> {
    features: &'a [Feature],
}

impl<'a> Features<'a> {
    /// Wraps a request's features.
    pub fn new(req: &'a Request) -> Self {
        Self {
            features: &req.features,
        }
    }

    /// The raw value of a feature, `None` when absent.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.features
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// A numeric feature (integer, float or boolean as 0/1). Absent or null gives `Ok(None)`.
    pub fn number(&self, name: &str) -> Result<Option<f64>, TierError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(Value::Float(x)) => Ok(Some(*x)),
            Some(Value::Boolean(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
            Some(Value::Text(_)) => Err(TierError::InvalidInput(format!(
                "feature `{name}` must be a number, got text"
            ))),
        }
    }

    /// A numeric feature that must be present.
    pub fn require_number(&self, name: &str) -> Result<f64, TierError> {
        self.number(name)?
            .ok_or_else(|| TierError::MissingFeature(name.to_string()))
    }

    /// A boolean feature (integers 0/1 accepted). Absent or null gives `Ok(None)`.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, TierError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(Value::Integer(0)) => Ok(Some(false)),
            Some(Value::Integer(1)) => Ok(Some(true)),
            Some(_) => Err(TierError::InvalidInput(format!(
                "feature `{name}` must be a boolean"
            ))),
        }
    }

    /// A text feature. Absent or null gives `Ok(None)`.
    pub fn text(&self, name: &str) -> Result<Option<&'a str>, TierError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(TierError::InvalidInput(format!(
                "feature `{name}` must be text"
            ))),
        }
    }

    /// Iterates over every feature.
    pub fn iter(&self) -> impl Iterator<Item = &'a Feature> {
        self.features.iter()
    }
}

/// This tier's parameters from the cascade config, fetched once per call.
pub struct Params {
    params: Vec<Param>,
}

impl Params {
    /// Fetches the parameters from the host.
    pub fn load() -> Self {
        Self {
            params: bindings::tierhost::tier::host::params(),
        }
    }

    /// The raw value of a parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }

    /// A numeric parameter, or `default` when absent.
    pub fn number_or(&self, name: &str, default: f64) -> Result<f64, TierError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Integer(i)) => Ok(*i as f64),
            Some(Value::Float(x)) => Ok(*x),
            Some(_) => Err(TierError::BadParams(format!(
                "param `{name}` must be a number"
            ))),
        }
    }

    /// A numeric parameter that must be present.
    pub fn require_number(&self, name: &str) -> Result<f64, TierError> {
        match self.get(name) {
            None => Err(TierError::BadParams(format!("param `{name}` is required"))),
            Some(_) => self.number_or(name, 0.0),
        }
    }

    /// A text parameter, or `default` when absent.
    pub fn text_or<'a>(&'a self, name: &str, default: &'a str) -> Result<&'a str, TierError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Text(s)) => Ok(s.as_str()),
            Some(_) => Err(TierError::BadParams(format!("param `{name}` must be text"))),
        }
    }

    /// An integer parameter, or `default` when absent.
    pub fn integer_or(&self, name: &str, default: i64) -> Result<i64, TierError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Integer(i)) => Ok(*i),
            Some(_) => Err(TierError::BadParams(format!(
                "param `{name}` must be an integer"
            ))),
        }
    }

    /// Every parameter whose name starts with `prefix.`, with the prefix removed.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.params.iter().filter_map(move |p| {
            p.name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .map(|rest| (rest, &p.value))
        })
    }
}

/// A prediction for a binary decision from a probability: the label is `positive` when
/// `p >= threshold`, and the confidence is the probability of the chosen label.
pub fn binary_prediction(
    p: f64,
    threshold: f64,
    positive: &str,
    negative: &str,
    reasons: Vec<String>,
) -> Prediction {
    let (label, confidence) = if p >= threshold {
        (positive, p)
    } else {
        (negative, 1.0 - p)
    };
    Prediction {
        label: label.to_string(),
        score: p,
        confidence,
        reasons,
    }
}
