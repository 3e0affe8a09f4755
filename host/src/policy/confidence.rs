//! The confidence verdict: an answer whose confidence is below the tier's `min_confidence`
//! falls through with `low-confidence` (runs after the acceptance checks, so the confidence is
//! known to be a number in [0, 1]).
use super::TierPolicy;
use crate::guest::Prediction;
use crate::reason::FallbackReason;

/// Refuses answers below a confidence threshold.
#[derive(Debug, Clone, Copy)]
pub struct MinConfidence(pub f64);

impl TierPolicy for MinConfidence {
    fn name(&self) -> &'static str {
        "min-confidence"
    }

    fn judge(&self, prediction: &Prediction) -> Result<(), FallbackReason> {
        if prediction.confidence < self.0 {
            Err(FallbackReason::LowConfidence {
                confidence: prediction.confidence,
                min_confidence: self.0,
            })
        } else {
            Ok(())
        }
    }
}
