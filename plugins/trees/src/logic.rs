//! The tree-ensemble format and its evaluation, free of WIT types, so the same source is
//! compiled into the sandboxed tier and, natively, into the benchmark's baseline.
use serde::Deserialize;

/// A `tierhost-trees/1` model.
#[derive(Deserialize)]
pub struct Model {
    /// Must be `tierhost-trees/1`.
    pub format: String,
    /// Input feature names, in the order the splits index them.
    pub features: Vec<String>,
    /// Initial raw score (log-odds).
    pub base_score: f64,
    /// Shrinkage applied to every leaf.
    pub learning_rate: f64,
    /// The trees.
    pub trees: Vec<Tree>,
}

/// One tree; node 0 is the root.
#[derive(Deserialize)]
pub struct Tree {
    /// Nodes.
    pub nodes: Vec<Node>,
}

/// A split or a leaf.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Node {
    /// Go to `left` when `x[feature] <= threshold` (compared in f32), else `right`.
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    /// A leaf value.
    Leaf { leaf: f64 },
}

/// Parses and validates a model document.
pub fn parse(bytes: &[u8]) -> Result<Model, String> {
    if bytes.is_empty() {
        return Err("no model granted: set `model = \"path/to/trees.json\"` on the tier".into());
    }
    let m: Model = serde_json::from_slice(bytes)
        .map_err(|e| format!("model is not tierhost-trees/1 JSON: {e}"))?;
    if m.format != "tierhost-trees/1" {
        return Err(format!("unsupported model format `{}`", m.format));
    }
    for (t, tree) in m.trees.iter().enumerate() {
        if tree.nodes.is_empty() {
            return Err(format!("tree {t} has no nodes"));
        }
        for node in &tree.nodes {
            if let Node::Split {
                feature,
                left,
                right,
                ..
            } = node
                && (*feature >= m.features.len()
                    || *left >= tree.nodes.len()
                    || *right >= tree.nodes.len())
            {
                return Err(format!("tree {t}: node points out of range"));
            }
        }
    }
    Ok(m)
}

fn leaf(tree: &Tree, x: &[f64]) -> Result<f64, String> {
    let mut i = 0;
    // A walk longer than the node count means a cycle.
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
    Err("tree has a cycle".into())
}

/// The raw score (log-odds) of `x`, features in `model.features` order.
pub fn raw_score(model: &Model, x: &[f64]) -> Result<f64, String> {
    let mut raw = model.base_score;
    for tree in &model.trees {
        raw += model.learning_rate * leaf(tree, x)?;
    }
    Ok(raw)
}
