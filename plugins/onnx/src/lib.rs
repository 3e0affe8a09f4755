//! Generic ONNX model tier: runs a binary classifier exported to ONNX (e.g. by skl2onnx with
//! `zipmap` off) through tract, inside the component. The ONNX bytes are the tier's read-only
//! `model` document (`model = "path/to/model.onnx"` in its cascade entry).
//!
//! The model is parsed and optimised once per instance, for a `1 x N` f32 input: run this tier
//! with `instances = "reuse"` (loading costs milliseconds; a call costs microseconds for small
//! models, about 12 us per tree for tree ensembles).
//!
//! Supported outputs: a classifier with outputs `(label int64 [1], probabilities f32 [1, 2])`
//! (the probabilities output is the f32 one with 2 columns; p = column 1, the probability of
//! class 1), or a graph whose f32 output has a single value (`[1, 1]` or `[1]`), taken as p.
//!
//! Params:
//! - `features` (text, required): comma-separated feature names, in the column order of the
//!   model's input. Each is read from the request as a number; an absent one is a
//!   missing-feature error.
//! - `output` (integer, optional): index of the model output to read, instead of searching for
//!   the probabilities output.
//! - `threshold` (0.5), `positive_label` (`positive`), `negative_label` (`negative`): the label
//!   is `positive_label` when `p >= threshold`.
//!
//! No model, a document that is not ONNX, an operator tract does not implement (e.g. ZipMap,
//! Scaler, TreeEnsembleRegressor) or an unexpected output shape is a `bad-params` error.
use std::sync::OnceLock;

use tierhost_sdk::{Features, Outcome, Params, Request, Tier, TierError, binary_prediction, model};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// The optimised model and the input width it was specialised for.
struct Loaded {
    width: usize,
    plan: Arc<TypedRunnableModel>,
}

static MODEL: OnceLock<Result<Loaded, String>> = OnceLock::new();

fn load(width: usize) -> Result<Loaded, String> {
    let bytes = model();
    if bytes.is_empty() {
        return Err("no model granted: set `model = \"path/to/model.onnx\"` on the tier".into());
    }
    let graph = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .map_err(|e| format!("model is not a readable ONNX graph: {e:#}"))?;
    if graph.inputs.len() != 1 {
        return Err(format!(
            "the model has {} inputs; this tier feeds exactly one (1 x N f32)",
            graph.inputs.len()
        ));
    }
    // A declared, concrete input width must match the number of features named.
    let declared = graph
        .input_fact(0)
        .ok()
        .and_then(|f| f.shape.dims().last().and_then(|d| d.concretize()))
        .and_then(|d| d.to_i64().ok());
    if let Some(n) = declared
        && n != width as i64
    {
        return Err(format!(
            "the model's input has {n} columns, but param `features` names {width}"
        ));
    }
    let plan = graph
        .with_input_fact(0, f32::fact([1, width]).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("ONNX model unsupported for a 1 x {width} f32 input: {e:#}"))?;
    Ok(Loaded { width, plan })
}

/// The probability of class 1 from one output: `[.., 2]` gives column 1, one value gives it.
fn probability(out: &Tensor) -> Option<f64> {
    if out.datum_type() != f32::datum_type() {
        return None;
    }
    let view = out.to_plain_array_view::<f32>().ok()?;
    let values: Vec<f32> = view.iter().copied().collect();
    match (values.len(), out.shape().last()) {
        (1, _) => Some(values[0] as f64),
        (2, Some(2)) => Some(values[1] as f64),
        _ => None,
    }
}

struct Onnx;

impl Tier for Onnx {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let names: Vec<&str> = params
            .text_or("features", "")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err(TierError::BadParams(
                "param `features` is required: comma-separated input feature names".into(),
            ));
        }
        let m = MODEL
            .get_or_init(|| load(names.len()))
            .as_ref()
            .map_err(|e| TierError::BadParams(e.clone()))?;
        if m.width != names.len() {
            return Err(TierError::BadParams(format!(
                "model was loaded for {} features, param `features` now names {}",
                m.width,
                names.len()
            )));
        }
        let features = Features::new(&req);
        let x = names
            .iter()
            .map(|f| features.require_number(f).map(|v| v as f32))
            .collect::<Result<Vec<_>, _>>()?;
        let input = Tensor::from_shape(&[1, x.len()], &x)
            .map_err(|e| TierError::Internal(format!("input tensor: {e}")))?;
        let outputs = m
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| TierError::Internal(format!("ONNX run failed: {e:#}")))?;
        let p = match params.get("output") {
            Some(_) => {
                let i = params.integer_or("output", 0)?;
                let out = usize::try_from(i)
                    .ok()
                    .and_then(|i| outputs.get(i))
                    .ok_or_else(|| {
                        TierError::BadParams(format!(
                            "param `output` = {i}, but the model has {} outputs",
                            outputs.len()
                        ))
                    })?;
                probability(out).ok_or_else(|| {
                    TierError::BadParams(format!(
                        "output {i} is not f32 [1, 2] / [1, 1] / [1]: {:?} {:?}",
                        out.datum_type(),
                        out.shape()
                    ))
                })?
            }
            None => outputs.iter().find_map(|o| probability(o)).ok_or_else(|| {
                TierError::BadParams(
                    "no f32 output of shape [1, 2], [1, 1] or [1] (probabilities)".into(),
                )
            })?,
        };
        if !p.is_finite() {
            return Err(TierError::Internal(format!("model returned p = {p}")));
        }
        Ok(Outcome::Answer(binary_prediction(
            p,
            params.number_or("threshold", 0.5)?,
            params.text_or("positive_label", "positive")?,
            params.text_or("negative_label", "negative")?,
            vec![format!("onnx p={p:.4}")],
        )))
    }
}

tierhost_sdk::export_tier!(Onnx, kind = Model, name = "onnx");
