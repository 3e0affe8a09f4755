//! Fraud rules tier, in the spirit of the `RuleBasedFallback` of "Graceful Degradation in ML
//! Systems" (reference article 004): fast, predictable, explainable, and conservative.
//!
//! Features read (all optional except `amount`):
//! - `amount` (number): transaction amount.
//! - `account_age_days` (number): age of the paying account.
//! - `merchant_category` (text): merchant category code name.
//! - `is_international` (bool) and `has_international_history` (bool).
//!
//! Each rule adds its weight to the risk score and its name to the reasons. Every threshold
//! and weight is a tier param, so one binary serves several cascades:
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `high_amount` | 5000 | amount above which `high_amount` fires |
//! | `new_account_days` | 7 | account age below which `new_account` fires |
//! | `high_risk_categories` | `gambling,crypto,wire_transfer` | comma-separated categories |
//! | `weights.high_amount` etc. | 0.30 / 0.25 / 0.20 / 0.15 | score added per rule |
//! | `review_at` / `block_at` | 0.30 / 0.60 | score from which the label is `review` / `block` |
//! | `confidence` | 0.4 | reported confidence: rules are low-confidence by design |
//!
//! Missing `account_age_days` is treated as a brand-new account: when unsure, err on the side
//! that causes less damage (flag for review rather than allow).
use tierhost_sdk::{
    Description, Features, Guest, Outcome, Params, Prediction, Request, TierError, TierKind,
};

struct Rules;

impl Guest for Rules {
    fn describe() -> Description {
        Description {
            name: "fraud-rules".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: TierKind::Rules,
        }
    }

    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let features = Features::new(&req);
        let mut score = 0.0;
        let mut reasons = Vec::new();
        let mut fire = |rule: &str, default_weight: f64| -> Result<(), TierError> {
            score += params.number_or(&format!("weights.{rule}"), default_weight)?;
            reasons.push(rule.to_string());
            Ok(())
        };

        let amount = features.require_number("amount")?;
        if amount > params.number_or("high_amount", 5000.0)? {
            fire("high_amount", 0.30)?;
        }
        let age = features.number("account_age_days")?.unwrap_or(0.0);
        if age < params.number_or("new_account_days", 7.0)? {
            fire("new_account", 0.25)?;
        }
        if let Some(category) = features.text("merchant_category")? {
            let risky = params.text_or("high_risk_categories", "gambling,crypto,wire_transfer")?;
            if risky.split(',').any(|c| c.trim() == category) {
                fire("high_risk_category", 0.20)?;
            }
        }
        let international = features.flag("is_international")?.unwrap_or(false);
        let history = features.flag("has_international_history")?.unwrap_or(false);
        if international && !history {
            fire("unusual_international", 0.15)?;
        }

        let score = score.clamp(0.0, 1.0);
        let label = if score >= params.number_or("block_at", 0.60)? {
            "block"
        } else if score >= params.number_or("review_at", 0.30)? {
            "review"
        } else {
            "allow"
        };
        Ok(Outcome::Answer(Prediction {
            label: label.into(),
            score,
            confidence: params.number_or("confidence", 0.4)?,
            reasons,
        }))
    }
}

tierhost_sdk::export_tier!(Rules);
