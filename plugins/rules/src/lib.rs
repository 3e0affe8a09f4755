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
mod logic;

use logic::{RULES, RuleParams, Transaction};
use tierhost_sdk::{Features, Outcome, Params, Prediction, Request, Tier, TierError};

struct Rules;

fn params() -> Result<(RuleParams, f64), TierError> {
    let p = Params::load();
    let d = RuleParams::default();
    let mut weights = d.weights;
    for (w, name) in weights.iter_mut().zip(RULES) {
        *w = p.number_or(&format!("weights.{name}"), *w)?;
    }
    Ok((
        RuleParams {
            high_amount: p.number_or("high_amount", d.high_amount)?,
            new_account_days: p.number_or("new_account_days", d.new_account_days)?,
            high_risk_categories: p
                .text_or("high_risk_categories", &d.high_risk_categories)?
                .to_string(),
            weights,
            review_at: p.number_or("review_at", d.review_at)?,
            block_at: p.number_or("block_at", d.block_at)?,
        },
        p.number_or("confidence", 0.4)?,
    ))
}

impl Tier for Rules {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let (params, confidence) = params()?;
        let features = Features::new(&req);
        let tx = Transaction {
            amount: features.require_number("amount")?,
            account_age_days: features.number("account_age_days")?,
            merchant_category: features.text("merchant_category")?,
            is_international: features.flag("is_international")?.unwrap_or(false),
            has_international_history: features.flag("has_international_history")?.unwrap_or(false),
        };
        let verdict = logic::evaluate(&tx, &params);
        Ok(Outcome::Answer(Prediction {
            label: verdict.label.into(),
            score: verdict.score,
            confidence,
            reasons: verdict.reasons,
        }))
    }
}

tierhost_sdk::export_tier!(Rules, kind = Rules, name = "fraud-rules");
