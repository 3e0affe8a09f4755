//! Logistic-regression tier whose weights come from the cascade config, so retraining the
//! model means editing params, not rebuilding the plugin.
//!
//! `p = sigmoid(bias + sum(weight_f * x_f))`, where for each entry of the `weights` table:
//! - `weights.<feature> = w`: a numeric or boolean feature, optionally divided by
//!   `scales.<feature>` (default 1) first;
//! - `weights.<feature>.<category> = w`: a one-hot term for a text feature (1 when the feature
//!   equals `<category>`).
//!
//! A feature that has a weight but is absent or null makes the tier fail with
//! `missing-feature`, so the host falls back instead of guessing.
//!
//! Label: `positive_label` (default `block`) when `p >= threshold` (default 0.5), else
//! `negative_label` (default `allow`); confidence is the probability of the chosen label.
//! Reasons name the three terms that pushed the score the most.
use tierhost_sdk::{Features, Outcome, Params, Request, Tier, TierError, Value, binary_prediction};

struct Linear;

impl Tier for Linear {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let features = Features::new(&req);
        let mut z = params.number_or("bias", 0.0)?;
        let mut terms: Vec<(String, f64)> = Vec::new();
        for (key, weight) in params.with_prefix("weights") {
            let weight = match weight {
                Value::Float(w) => *w,
                Value::Integer(w) => *w as f64,
                _ => {
                    return Err(TierError::BadParams(format!(
                        "weights.{key} must be a number"
                    )));
                }
            };
            let contribution = match key.split_once('.') {
                Some((feature, category)) => {
                    let value = features
                        .text(feature)?
                        .ok_or_else(|| TierError::MissingFeature(feature.to_string()))?;
                    if value == category { weight } else { 0.0 }
                }
                None => {
                    let scale = params.number_or(&format!("scales.{key}"), 1.0)?;
                    if scale == 0.0 {
                        return Err(TierError::BadParams(format!("scales.{key} must not be 0")));
                    }
                    weight * features.require_number(key)? / scale
                }
            };
            z += contribution;
            if contribution != 0.0 {
                terms.push((key.to_string(), contribution));
            }
        }
        if terms.is_empty() && params.with_prefix("weights").next().is_none() {
            return Err(TierError::BadParams("no `weights` configured".into()));
        }
        terms.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let reasons = terms
            .iter()
            .take(3)
            .map(|(name, c)| format!("{name}:{c:+.3}"))
            .collect();
        let p = 1.0 / (1.0 + (-z).exp());
        Ok(Outcome::Answer(binary_prediction(
            p,
            params.number_or("threshold", 0.5)?,
            params.text_or("positive_label", "block")?,
            params.text_or("negative_label", "allow")?,
            reasons,
        )))
    }
}

tierhost_sdk::export_tier!(Linear, kind = Model, name = "logistic");
