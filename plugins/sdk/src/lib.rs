//! Guest SDK for tierhost tiers.
//!
//! A tier is a Rust `cdylib` compiled for `wasm32-wasip2`. It implements [`Tier`] and exports
//! itself with [`export_tier!`], which writes `describe` from Cargo (package name and version;
//! `name = "..."` overrides the name) and the kind given:
//!
//! ```ignore
//! use tierhost_sdk::{Features, Outcome, Prediction, Request, Tier, TierError};
//! struct BigAmounts;
//! impl Tier for BigAmounts {
//!     fn predict(req: Request) -> Result<Outcome, TierError> {
//!         let big = Features::new(&req).require_number("amount")? > 1000.0;
//!         Ok(Outcome::answer(Prediction::new(if big { "review" } else { "allow" }, 0.9)))
//!     }
//! }
//! tierhost_sdk::export_tier!(BigAmounts, kind = Rules);
//! ```
//!
//! The helpers here ([`Features`], [`Params`], [`log`], [`model`], the [`Prediction`] and
//! [`Outcome`] constructors) keep a tier's source down to its logic. A tier that must write its
//! own `describe` implements [`Guest`] and uses [`export_guest!`].
#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tier",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_guest",
        default_bindings_module: "tierhost_sdk::bindings",
    });
}

pub use bindings::tierhost::tier::host::{LogLevel, Param};
pub use bindings::tierhost::tier::types::{
    Description, Feature, Outcome, Prediction, Request, TierError, TierKind, Value,
};
pub use bindings::{Guest, export_guest};

/// What a tier implements: one prediction per request. [`export_tier!`] supplies the rest of
/// the contract (`describe`).
pub trait Tier {
    /// Answers (or abstains on) one request; an `Err` makes the host fall back with the
    /// error's kind as the reason.
    fn predict(req: Request) -> Result<Outcome, TierError>;
}

/// Exports a [`Tier`] as the component's `tier` world: `export_tier!(MyTier, kind = Rules)`,
/// or `export_tier!(MyTier, kind = Model, name = "fraud-model")`. The kind is a [`TierKind`]
/// variant (`Model`, `Rules`, `SafeDefault`, `Other`); the name defaults to the package name
/// and the version is always the package version (`CARGO_PKG_*` of the crate that calls it).
#[macro_export]
macro_rules! export_tier {
    ($ty:ident, kind = $kind:ident $(, name = $name:expr)? $(,)?) => {
        impl $crate::Guest for $ty {
            fn describe() -> $crate::Description {
                $crate::Description {
                    name: $crate::export_tier!(@name $($name)?),
                    version: ::core::env!("CARGO_PKG_VERSION").into(),
                    kind: $crate::TierKind::$kind,
                }
            }

            fn predict(
                req: $crate::Request,
            ) -> ::core::result::Result<$crate::Outcome, $crate::TierError> {
                <$ty as $crate::Tier>::predict(req)
            }
        }
        $crate::export_guest!($ty);
    };
    (@name) => {
        ::core::env!("CARGO_PKG_NAME").into()
    };
    (@name $name:expr) => {
        ($name).into()
    };
}

impl Prediction {
    /// A prediction of `label` with `confidence` (in [0, 1]); the score starts equal to the
    /// confidence and there are no reasons: set them with [`Prediction::score`] and
    /// [`Prediction::reason`].
    pub fn new(label: impl Into<String>, confidence: f64) -> Self {
        Self {
            label: label.into(),
            score: confidence,
            confidence,
            reasons: Vec::new(),
        }
    }

    /// Sets the raw score behind the label (e.g. a probability); must be finite.
    pub fn score(mut self, score: f64) -> Self {
        self.score = score;
        self
    }

    /// Adds one reason (a rule or feature name, short and human-readable).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    /// Adds reasons.
    pub fn reasons<S: Into<String>>(mut self, reasons: impl IntoIterator<Item = S>) -> Self {
        self.reasons.extend(reasons.into_iter().map(Into::into));
        self
    }
}

impl Outcome {
    /// An answer the host may serve.
    pub fn answer(prediction: Prediction) -> Self {
        Outcome::Answer(prediction)
    }

    /// Declines to answer, saying why: the host goes down one tier.
    pub fn abstain(why: impl Into<String>) -> Self {
        Outcome::Abstain(why.into())
    }
}

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
    Prediction::new(label, confidence).score(p).reasons(reasons)
}
