//! A constant tier: always gives the answer written in its params (or abstains when
//! `abstain` is set). Useful as a sandboxed last tier before the host's own safe default, or to
//! pin a cascade to a known answer during an incident.
//!
//! Params: `label` (default `review`), `score` (0.0), `confidence` (1.0), `reason`
//! (`constant`), `abstain` (text: abstain with this reason instead of answering).
use tierhost_sdk::{Outcome, Params, Prediction, Request, Tier, TierError};

struct Constant;

impl Tier for Constant {
    fn predict(_req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        if params.get("abstain").is_some() {
            return Ok(Outcome::abstain(params.text_or("abstain", "abstain")?));
        }
        let label = params.text_or("label", "review")?;
        Ok(Outcome::answer(
            Prediction::new(label, params.number_or("confidence", 1.0)?)
                .score(params.number_or("score", 0.0)?)
                .reason(params.text_or("reason", "constant")?),
        ))
    }
}

tierhost_sdk::export_tier!(Constant, kind = SafeDefault, name = "constant");
