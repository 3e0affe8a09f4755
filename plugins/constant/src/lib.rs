//! A constant tier: always gives the answer written in its params (or abstains when
//! `abstain` is set). Useful as a sandboxed last tier before the host's own safe default, or to
//! pin a cascade to a known answer during an incident.
//!
//! Params: `label` (default `review`), `score` (0.0), `confidence` (1.0), `reason`
//! (`constant`), `abstain` (text: abstain with this reason instead of answering).
use tierhost_sdk::{Description, Guest, Outcome, Params, Prediction, Request, TierError, TierKind};

struct Constant;

impl Guest for Constant {
    fn describe() -> Description {
        Description {
            name: "constant".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: TierKind::SafeDefault,
        }
    }

    fn predict(_req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        if params.get("abstain").is_some() {
            return Ok(Outcome::Abstain(
                params.text_or("abstain", "abstain")?.to_string(),
            ));
        }
        Ok(Outcome::Answer(Prediction {
            label: params.text_or("label", "review")?.to_string(),
            score: params.number_or("score", 0.0)?,
            confidence: params.number_or("confidence", 1.0)?,
            reasons: vec![params.text_or("reason", "constant")?.to_string()],
        }))
    }
}

tierhost_sdk::export_tier!(Constant);
