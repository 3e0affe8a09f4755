//! Data-driven rule list tier: rules written by analysts as a JSON document granted to the tier
//! as its read-only `model`, tried in order, first match wins, no match abstains (so the host
//! goes down one tier). Swapping rules means editing a file, not rebuilding a plugin.
//!
//! Format: `{"rules": [{"id": "...", "when": [[feature, op, value], ...], "label": "...",
//! "precision": 0.97}, ...]}`; conditions are ANDed; `op` is one of `==`, `!=`, `<`, `<=`, `>`,
//! `>=`; `value` is a number. The answer's confidence is the rule's measured `precision`
//! (param `confidence` overrides it when set); its score is the probability of
//! `positive_label` (param); its reason is the rule id.
//! The rules are parsed once per instance: run this tier with `instances = "reuse"`.
use std::sync::OnceLock;

use serde::Deserialize;
use tierhost_sdk::{Features, Outcome, Params, Prediction, Request, Tier, TierError, model};

#[derive(Deserialize)]
struct RuleSet {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    id: String,
    when: Vec<(String, String, f64)>,
    label: String,
    #[serde(default)]
    precision: Option<f64>,
}

static RULES: OnceLock<Result<RuleSet, String>> = OnceLock::new();

fn load() -> Result<RuleSet, String> {
    let set: RuleSet =
        serde_json::from_slice(&model()).map_err(|e| format!("rules are not valid JSON: {e}"))?;
    for rule in &set.rules {
        for (_, op, _) in &rule.when {
            if !["==", "!=", "<", "<=", ">", ">="].contains(&op.as_str()) {
                return Err(format!("rule `{}`: unknown operator `{op}`", rule.id));
            }
        }
    }
    Ok(set)
}

struct RuleList;

impl Tier for RuleList {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let set = RULES
            .get_or_init(load)
            .as_ref()
            .map_err(|e| TierError::BadParams(e.clone()))?;
        let features = Features::new(&req);
        'rules: for rule in &set.rules {
            for (feature, op, value) in &rule.when {
                let x = features.require_number(feature)?;
                let holds = match op.as_str() {
                    "==" => x == *value,
                    "!=" => x != *value,
                    "<" => x < *value,
                    "<=" => x <= *value,
                    ">" => x > *value,
                    _ => x >= *value,
                };
                if !holds {
                    continue 'rules;
                }
            }
            let params = Params::load();
            let confidence = match params.get("confidence") {
                Some(_) => params.number_or("confidence", 0.5)?,
                None => rule.precision.unwrap_or(0.5),
            };
            // The score is the probability of `positive_label`, so it ranks like a model's.
            let positive = params.text_or("positive_label", "positive")?;
            let score = if rule.label == positive {
                confidence
            } else {
                1.0 - confidence
            };
            return Ok(Outcome::Answer(Prediction {
                label: rule.label.clone(),
                score,
                confidence,
                reasons: vec![rule.id.clone()],
            }));
        }
        Ok(Outcome::Abstain("no rule matched".into()))
    }
}

tierhost_sdk::export_tier!(RuleList, kind = Rules, name = "rule-list");
