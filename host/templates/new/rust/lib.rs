//! {{name}}: a {{kind_doc}} tier. `amount` above the `limit` param goes to review.
use tierhost_sdk::{Features, Outcome, Params, Prediction, Request, Tier, TierError};

struct {{type_name}};

impl Tier for {{type_name}} {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let amount = Features::new(&req).require_number("amount")?; // absent: missing-feature
        let limit = Params::load().number_or("limit", 1000.0)?; // [tier.params] limit
        let label = if amount > limit { "review" } else { "allow" };
        Ok(Outcome::answer(Prediction::new(label, 0.9).reason("amount-vs-limit")))
    }
}

tierhost_sdk::export_tier!({{type_name}}, kind = {{kind_variant}});
