//! Gradient-boosted tree ensemble tier: evaluates a `tierhost-trees/1` JSON dump (written by
//! `examples/phishing/train.py` from scikit-learn) granted to the tier as its read-only
//! `model` document. Plain Rust, exact, no ONNX runtime in the component.
//!
//! Format: `{"format": "tierhost-trees/1", "features": [names], "base_score": b,
//! "learning_rate": lr, "trees": [{"nodes": [{"feature": i, "threshold": t, "left": l,
//! "right": r} | {"leaf": v}, ...]}]}`. Node 0 is the root; go left when `x <= t` (compared
//! in f32, as scikit-learn does); `raw = b + sum(lr * leaf)`, `p = sigmoid(raw)`.
//!
//! The model is parsed once per instance: run this tier with `instances = "reuse"`.
//! Params: `threshold` (0.5), `positive_label` (`positive`), `negative_label` (`negative`).
use std::sync::OnceLock;

mod logic;

use logic::Model;
use tierhost_sdk::{Features, Outcome, Params, Request, Tier, TierError, binary_prediction, model};

static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();

struct Trees;

impl Tier for Trees {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let m = MODEL
            .get_or_init(|| logic::parse(&model()))
            .as_ref()
            .map_err(|e| TierError::BadParams(e.clone()))?;
        let features = Features::new(&req);
        let x = m
            .features
            .iter()
            .map(|f| features.require_number(f))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = logic::raw_score(m, &x).map_err(TierError::BadParams)?;
        let p = 1.0 / (1.0 + (-raw).exp());
        let params = Params::load();
        Ok(Outcome::Answer(binary_prediction(
            p,
            params.number_or("threshold", 0.5)?,
            params.text_or("positive_label", "positive")?,
            params.text_or("negative_label", "negative")?,
            vec![format!("trees={} raw={raw:+.3}", m.trees.len())],
        )))
    }
}

tierhost_sdk::export_tier!(Trees, kind = Model, name = "tree-ensemble");
