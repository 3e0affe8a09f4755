//! A probe tier for the tests of `features` allowlists: it answers with the names of the
//! features it received as its reasons (in the order it got them) and their count as its
//! score, so a test sees exactly what crossed the boundary. With the param `require` (names
//! separated by commas) it first asks for those features and answers `missing-feature` with
//! the first one absent, as a tier that reads a feature outside its allowlist would.
use tierhost_sdk::{Features, Outcome, Params, Prediction, Request, Tier, TierError};

struct FeatureEcho;

impl Tier for FeatureEcho {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let features = Features::new(&req);
        let required = params.text_or("require", "")?;
        for name in required.split(',').filter(|n| !n.is_empty()) {
            if features.get(name).is_none() {
                return Err(TierError::MissingFeature(name.to_string()));
            }
        }
        let seen: Vec<String> = features.iter().map(|f| f.name.clone()).collect();
        Ok(Outcome::Answer(Prediction {
            label: "echo".into(),
            score: seen.len() as f64,
            confidence: 1.0,
            reasons: seen,
        }))
    }
}

tierhost_sdk::export_tier!(FeatureEcho, kind = Other, name = "feature-echo");
