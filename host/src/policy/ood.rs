//! Out-of-distribution guard: a host-side, deterministic input check per tier, configured from
//! the training set's feature statistics (`feature_stats.json` written by `train.py`). A request
//! that fails it skips that tier with reason `out-of-distribution`, so a model never answers on
//! inputs unlike anything it was trained on.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{CallContext, Ticket, TierPolicy};
use crate::reason::FallbackReason;
use crate::request::{FeatureValue, Request};

/// `[tier.ood]`: how a tier's inputs are checked.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OodConfig {
    /// Feature statistics file (relative to the config).
    pub stats: std::path::PathBuf,
    /// How a value is judged against the training statistics.
    #[serde(default)]
    pub method: OodMethod,
    /// Widening of the range / quantile bounds, as a share of the training range.
    #[serde(default)]
    pub margin: f64,
    /// Largest |z| accepted with `method = "zscore"`.
    #[serde(default = "default_max_z")]
    pub max_z: f64,
    /// Reject values never seen in training for features with few distinct values.
    #[serde(default = "default_true")]
    pub unknown_values: bool,
    /// Reject requests missing a feature that has statistics.
    #[serde(default = "default_true")]
    pub missing: bool,
}

/// `[tier.ood] method`: the bounds a feature value must fall within.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OodMethod {
    /// The training min/max, widened by `margin` (the default).
    #[default]
    Range,
    /// The training p01/p99, widened by `margin`.
    Quantile,
    /// At most `max_z` standard deviations from the training mean.
    Zscore,
}
fn default_max_z() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
struct FeatureStats {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    p01: f64,
    p99: f64,
    #[serde(default)]
    distinct: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct StatsFile {
    features: BTreeMap<String, FeatureStats>,
}

/// A loaded guard.
#[derive(Debug, Clone)]
pub struct OodGuard {
    config: OodConfig,
    features: BTreeMap<String, FeatureStats>,
}

impl OodGuard {
    /// Loads the statistics file named by `config` (resolved by the caller).
    pub fn load(config: &OodConfig, stats_path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(stats_path)
            .map_err(|e| format!("{}: {e}", stats_path.display()))?;
        let file: StatsFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not feature statistics: {e}", stats_path.display()))?;
        Ok(Self {
            config: config.clone(),
            features: file.features,
        })
    }

    /// `Ok` when the request looks like the training data, else what is out of distribution.
    pub fn check(&self, request: &Request) -> Result<(), String> {
        for (name, stats) in &self.features {
            let x = match request.feature(name) {
                None | Some(FeatureValue::Null) if self.config.missing => {
                    return Err(format!("feature `{name}` is missing"));
                }
                None | Some(FeatureValue::Null) => continue,
                Some(FeatureValue::Integer(i)) => *i as f64,
                Some(FeatureValue::Float(x)) => *x,
                Some(FeatureValue::Bool(b)) => f64::from(u8::from(*b)),
                Some(FeatureValue::Text(_)) => {
                    return Err(format!(
                        "feature `{name}` is text, training data was numeric"
                    ));
                }
            };
            let spread = (stats.max - stats.min) * self.config.margin;
            let (lo, hi) = match self.config.method {
                OodMethod::Quantile => (stats.p01 - spread, stats.p99 + spread),
                OodMethod::Zscore => {
                    let z = if stats.std > 0.0 {
                        (x - stats.mean).abs() / stats.std
                    } else {
                        0.0
                    };
                    if z > self.config.max_z || (stats.std == 0.0 && x != stats.mean) {
                        return Err(format!(
                            "feature `{name}` = {x} is {z:.1} standard deviations from the training mean"
                        ));
                    }
                    (f64::NEG_INFINITY, f64::INFINITY)
                }
                OodMethod::Range => (stats.min - spread, stats.max + spread),
            };
            if x < lo || x > hi {
                return Err(format!(
                    "feature `{name}` = {x} outside the training range [{lo}, {hi}]"
                ));
            }
            if self.config.unknown_values
                && let Some(values) = &stats.distinct
                && !values.iter().any(|v| (v - x).abs() < 1e-9)
            {
                return Err(format!(
                    "feature `{name}` = {x} was never seen in training (values: {values:?})"
                ));
            }
        }
        Ok(())
    }
}

impl TierPolicy for OodGuard {
    fn name(&self) -> &'static str {
        "ood"
    }

    fn admit(&self, ctx: &CallContext<'_>) -> Result<Ticket, FallbackReason> {
        self.check(ctx.request)
            .map(|()| Ticket::none())
            .map_err(|detail| FallbackReason::OutOfDistribution { detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(method: OodMethod) -> OodGuard {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        std::fs::write(
            &path,
            r#"{"features": {"a": {"min": 0, "max": 1, "mean": 0.5, "std": 0.25, "p01": 0.1, "p99": 0.9, "distinct": [0, 0.5, 1]},
                             "b": {"min": 10, "max": 20, "mean": 15, "std": 2, "p01": 11, "p99": 19, "distinct": null}}}"#,
        )
        .unwrap();
        let config = OodConfig {
            stats: path.clone(),
            method,
            margin: 0.0,
            max_z: 2.0,
            unknown_values: true,
            missing: true,
        };
        OodGuard::load(&config, &path).unwrap()
    }

    fn req(a: f64, b: Option<f64>) -> Request {
        let mut features = vec![("a".to_string(), FeatureValue::Float(a))];
        if let Some(b) = b {
            features.push(("b".into(), FeatureValue::Float(b)));
        }
        Request::new("r", features)
    }

    #[test]
    fn keeps_in_range_rows_and_routes_away_the_rest() {
        let g = guard(OodMethod::Range);
        assert_eq!(g.check(&req(0.5, Some(12.0))), Ok(()));
        assert!(
            g.check(&req(1.5, Some(12.0)))
                .unwrap_err()
                .contains("outside the training range")
        );
        assert!(g.check(&req(0.5, Some(25.0))).unwrap_err().contains("`b`"));
        assert!(
            g.check(&req(0.25, Some(12.0)))
                .unwrap_err()
                .contains("never seen")
        );
        assert!(g.check(&req(0.5, None)).unwrap_err().contains("missing"));
        let q = guard(OodMethod::Quantile);
        assert!(q.check(&req(0.5, Some(10.5))).is_err(), "below p01");
        let z = guard(OodMethod::Zscore);
        assert!(
            z.check(&req(0.5, Some(19.5)))
                .unwrap_err()
                .contains("standard deviations")
        );
        assert_eq!(z.check(&req(0.5, Some(18.0))), Ok(()));
    }
}
