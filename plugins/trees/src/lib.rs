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

use serde::Deserialize;
use tierhost_sdk::{
    Description, Features, Guest, Outcome, Params, Request, TierError, TierKind, binary_prediction,
    model,
};

#[derive(Deserialize)]
struct Model {
    format: String,
    features: Vec<String>,
    base_score: f64,
    learning_rate: f64,
    trees: Vec<Tree>,
}

#[derive(Deserialize)]
struct Tree {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf {
        leaf: f64,
    },
}

static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();

fn load() -> Result<Model, String> {
    let bytes = model();
    if bytes.is_empty() {
        return Err("no model granted: set `model = \"path/to/trees.json\"` on the tier".into());
    }
    let m: Model = serde_json::from_slice(&bytes)
        .map_err(|e| format!("model is not tierhost-trees/1 JSON: {e}"))?;
    if m.format != "tierhost-trees/1" {
        return Err(format!("unsupported model format `{}`", m.format));
    }
    for (t, tree) in m.trees.iter().enumerate() {
        for node in &tree.nodes {
            if let Node::Split {
                feature,
                left,
                right,
                ..
            } = node
            {
                // Children must point forward: this bounds every walk and rules out cycles.
                if *feature >= m.features.len()
                    || *left >= tree.nodes.len()
                    || *right >= tree.nodes.len()
                {
                    return Err(format!("tree {t}: node points out of range"));
                }
            }
        }
        if tree.nodes.is_empty() {
            return Err(format!("tree {t} has no nodes"));
        }
    }
    Ok(m)
}

fn eval(tree: &Tree, x: &[f64]) -> Result<f64, TierError> {
    let mut i = 0;
    for _ in 0..=tree.nodes.len() {
        match &tree.nodes[i] {
            Node::Leaf { leaf } => return Ok(*leaf),
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                i = if (x[*feature] as f32) as f64 <= *threshold {
                    *left
                } else {
                    *right
                };
            }
        }
    }
    Err(TierError::BadParams("tree has a cycle".into()))
}

struct Trees;

impl Guest for Trees {
    fn describe() -> Description {
        Description {
            name: "tree-ensemble".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: TierKind::Model,
        }
    }

    fn predict(req: Request) -> Result<Outcome, TierError> {
        let m = MODEL
            .get_or_init(load)
            .as_ref()
            .map_err(|e| TierError::BadParams(e.clone()))?;
        let features = Features::new(&req);
        let x = m
            .features
            .iter()
            .map(|f| features.require_number(f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut raw = m.base_score;
        for tree in &m.trees {
            raw += m.learning_rate * eval(tree, &x)?;
        }
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

tierhost_sdk::export_tier!(Trees);
