//! The phishing small model (`examples/phishing/models/small_model.onnx`, a logistic regression
//! exported by skl2onnx) run natively with tract, the same version and the same steps as the
//! `builtin:onnx` tier runs inside its sandbox: a `1 x N` f32 input, an optimised plan built
//! once, features read by name from the request. Built only with
//! `cargo bench --bench sandbox --features native-onnx` (tract is a large build).
use std::path::Path;

use tierhost::{FeatureValue, Request};
use tract_onnx::prelude::*;

/// The input columns, as in the phishing cascade's `small-model` tier.
pub const FEATURES: &[&str] = &[
    "empty_server_form_handler",
    "popup_window",
    "https",
    "request_from_other_domain",
];

/// An optimised, runnable plan for the model.
pub struct NativeOnnx {
    plan: Arc<TypedRunnableModel>,
}

impl NativeOnnx {
    /// Parses and optimises the model for a `1 x FEATURES.len()` input.
    pub fn load(path: &Path) -> TractResult<Self> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)?
            .with_input_fact(0, f32::fact([1, FEATURES.len()]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(Self { plan })
    }

    /// The probability of class 1 for `request`, or `None` when a feature is missing.
    pub fn predict(&self, request: &Request) -> Option<f64> {
        let x = FEATURES
            .iter()
            .map(|name| match request.feature(name) {
                Some(FeatureValue::Float(x)) => Some(*x as f32),
                Some(FeatureValue::Integer(i)) => Some(*i as f32),
                _ => None,
            })
            .collect::<Option<Vec<f32>>>()?;
        let input = Tensor::from_shape(&[1, x.len()], &x).ok()?;
        let outputs = self.plan.run(tvec!(input.into_tvalue())).ok()?;
        outputs.iter().find_map(|out| {
            let view = out.to_plain_array_view::<f32>().ok()?;
            let values: Vec<f32> = view.iter().copied().collect();
            match values.len() {
                1 => Some(f64::from(values[0])),
                2 => Some(f64::from(values[1])),
                _ => None,
            }
        })
    }
}
