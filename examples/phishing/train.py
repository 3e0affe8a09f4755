"""Data + training pipeline of tierhost's phishing example.

Regenerate every artifact of this directory (deterministic, seed 0, no network access):

    ./setup.sh                                  # venv with the pinned requirements.txt
    "$(./setup.sh | tail -n1)" train.py         # or: <venv>/bin/python train.py

What it does, in order:

1. Loads ``river.datasets.Phishing``: the UCI "Website Phishing" data set (Abdelhamid, Ayesh
   and Thabtah, 2014; CC BY 4.0) as shipped inside the ``river`` wheel (``phishing.csv.gz``,
   BSD-3 package): 1,250 websites x 9 features, nothing is downloaded. Feature names and order
   are river's. Values follow the UCI coding shifted to [0, 1]: 0 = the value the authors
   call "phishy", 0.5 = "suspicious", 1 = "legitimate" (``age_of_domain`` and ``ip_in_url``
   are 0/1). Label: 1 = phishing (river's ``is_phishing``), 0 = legitimate.
2. Deduplication, then a split by distinct feature vector. The 1,250 rows hold only 663
   distinct (features, label) rows: the 587 exact repeats are dropped (kept ones: the first
   occurrence). 38 feature vectors remain with both labels; each such pair stays in one split.
   The distinct feature vectors are split stratified 60 / 20 / 20 (seed 0; strata: phishing,
   legitimate, both) into ``data/train.csv``, ``data/validation.csv``, ``data/test.csv``
   (header = the 9 feature columns then ``label``), so no row of validation or test has its
   feature vector in train: the figures measured on them are not flattered by memorised
   duplicates (before this, 149 of the 250 test rows also occurred in train).
3. Primary tier: ``GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)``
   fitted on the training split, exported twice:
   - ``models/primary_trees.json`` ("tierhost-trees/1", see ``TREES_DOC`` below), checked by
     re-evaluating the *file* in pure Python against ``predict_proba`` (max |dp| <= 1e-9);
   - ``models/primary.onnx`` via skl2onnx (zipmap off, target opsets "" 17 / ai.onnx.ml 3,
     which are also what the file declares: skl2onnx would declare 16 / 1) with the tract
     fix: the single ``base_values`` entry is folded into the leaves of tree 0 and the
     attribute dropped; checked with onnxruntime (max |dp| <= 1e-5).
4. Small-model tier: ``LogisticRegression`` (defaults: L2, C=1, lbfgs) on a subset of the
   features: features are ranked by mutual information with the label on the training split
   (discrete estimator: the features are categorical), and the top 4 or top 5 is kept, which
   ever scores the higher validation accuracy (ties -> fewer features). Exported as
   ``models/small_model_params.toml`` (the ``params`` table of a ``builtin:linear`` tier) and
   ``models/small_model.onnx`` (one ai.onnx.ml LinearClassifier node), both checked.
5. ``models/feature_stats.json``: per-feature statistics of the training split for an
   out-of-distribution guard.
6. Analyst rules (``RULES`` below): precision / coverage measured on the training split,
   printed, sorted by training precision (the intended first-match order of a rules tier),
   written to ``models/rules.json`` and ``rules.md``.
7. ``models/metrics.json``: accuracy / AUC (and phishing precision / recall) on validation and
   test of the primary, the small model, the one-line analyst rule, the ordered rule list and
   the majority class. Everything is printed too.

Reviewed escalations: ``train.py --reviewed reviewed.csv`` (repeatable) appends rows that
analysts labeled in tierhost's review queue to the training split before fitting (the CSV that
``tierhost review export --format csv --labels 1=phishing,0=legitimate`` writes: the 9 feature
columns, in any order, then ``label``). The data/*.csv files stay the river split; the models
and metrics then include the reviewed rows. Without ``--reviewed`` the run is the
deterministic one above.

Exit status is non-zero if any verification fails.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
from pathlib import Path

# Keep CPU use modest (and results thread-count independent) on a shared 2-core machine.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import river  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
from river.datasets import Phishing  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.feature_selection import mutual_info_classif  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split  # noqa: E402

SEED = 0
HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
MODELS = HERE / "models"
POSITIVE_LABEL = "phishing"  # label 1
NEGATIVE_LABEL = "legitimate"  # label 0
OPSETS = {"": 17, "ai.onnx.ml": 3}
TREES_TOLERANCE = 1e-9
ONNX_TOLERANCE = 1e-5

TREES_DOC = (
    "Gradient-boosted trees for binary classification (label 1 = phishing). "
    "Features: x[i] is the value of features[i]. "
    "Each tree is a list of nodes; node 0 is the root. An internal node "
    "{feature, threshold, left, right} goes to nodes[left] when x[feature] <= threshold, "
    "else to nodes[right]; a node {leaf} ends the walk with that value. "
    "raw = base_score + learning_rate * (sum of the leaf reached in every tree), "
    "p(phishing) = 1 / (1 + exp(-raw)); label phishing when p >= 0.5. "
    "scikit-learn compares float32(x) with the float64 threshold and accumulates "
    "raw += learning_rate * leaf tree by tree: do the same to match it bit for bit "
    "(other orders differ by ~1e-16)."
)

# Analyst rules written from the feature meanings (UCI coding: 0 = phishy, 0.5 = suspicious,
# 1 = legitimate), not mined from the data. Conditions of one rule are ANDed. As a rules tier
# they are meant to be tried in descending training precision (ties: larger coverage first),
# first match wins, no match = abstain: main() sorts them so before writing rules.md / .json.
RULES = [
    {
        "id": "form_handler_not_legitimate",
        "when": [["empty_server_form_handler", "<", 1]],
        "label": POSITIVE_LABEL,
        "why": "The page's form handler (SFH) is empty / about:blank (0) or posts to another "
        "domain (0.5): credentials typed in the page leave the site. The one-line rule of "
        "ml-facts.md; alone (no match => legitimate) it is the 'analyst_rule' of metrics.json.",
    },
    {
        "id": "popup_without_input",
        "when": [["popup_window", "==", 1]],
        "label": NEGATIVE_LABEL,
        "why": "No pop-up window asking for input (popUpWindow legitimate): the classic "
        "credential-harvesting pop-up is absent.",
    },
    {
        "id": "no_trusted_https_young_domain",
        "when": [["https", "<", 1], ["age_of_domain", "==", 0]],
        "label": POSITIVE_LABEL,
        "why": "No HTTPS with a trusted, old-enough certificate (SSLfinal_State not legitimate) "
        "on a domain younger than about 6 months: throw-away infrastructure.",
    },
    {
        "id": "no_https_foreign_resources",
        "when": [["https", "==", 0], ["request_from_other_domain", "<", 1]],
        "label": POSITIVE_LABEL,
        "why": "No usable HTTPS and many images / scripts loaded from other domains "
        "(Request_URL not legitimate): a cloned page pulling the real site's assets.",
    },
    {
        "id": "trusted_https_local_form",
        "when": [["https", "==", 1], ["empty_server_form_handler", "==", 1]],
        "label": NEGATIVE_LABEL,
        "why": "Trusted HTTPS certificate and a form that posts to the site's own domain.",
    },
    {
        "id": "local_resources_and_anchors",
        "when": [["request_from_other_domain", "==", 1], ["anchor_from_other_domain", "==", 1]],
        "label": NEGATIVE_LABEL,
        "why": "Both embedded resources (Request_URL) and anchors (URL_of_Anchor) mostly point "
        "to the site's own domain, as on a real site's pages.",
    },
    {
        "id": "foreign_anchors_no_https",
        "when": [["anchor_from_other_domain", "==", 0], ["https", "<", 1]],
        "label": POSITIVE_LABEL,
        "why": "Most anchors are empty ('#') or lead to other domains and there is no trusted "
        "HTTPS: a facade page whose links go to the imitated site.",
    },
]

OPS = {
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    ">=": np.greater_equal,
    ">": np.greater,
}


# ---------------------------------------------------------------------------------------
# data


def load_dataset() -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = list(Phishing())
    names = list(rows[0][0])
    for x, _ in rows:
        if list(x) != names:
            raise SystemExit("river.datasets.Phishing: inconsistent feature order")
    X = np.array([[float(x[n]) for n in names] for x, _ in rows], dtype=np.float64)
    y = np.array([1 if is_phishing else 0 for _, is_phishing in rows], dtype=np.int64)
    return names, X, y


def deduplicate(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drops exact repeats of a (features, label) row, keeping each first occurrence in order."""
    _, first = np.unique(np.column_stack([X, y]), axis=0, return_index=True)
    keep = np.sort(first)
    return X[keep], y[keep], len(y) - len(keep)


def split(X: np.ndarray, y: np.ndarray):
    """Stratified 60 / 20 / 20 over distinct feature vectors (first 20 % test, then 25 % of the
    rest as validation): rows sharing a feature vector always land in the same split."""
    vectors, group = np.unique(X, axis=0, return_inverse=True)
    group = group.reshape(-1)
    # stratum of a feature vector: 0 / 1 = its label, 2 = seen with both labels
    stratum = np.full(len(vectors), -1)
    for g, label in zip(group, y):
        stratum[g] = label if stratum[g] in (-1, label) else 2
    idx = np.arange(len(vectors))
    rest, test = train_test_split(idx, test_size=0.2, stratify=stratum, random_state=SEED)
    train, val = train_test_split(
        rest, test_size=0.25, stratify=stratum[rest], random_state=SEED
    )
    rows = lambda groups: np.flatnonzero(np.isin(group, groups))  # noqa: E731
    return {"train": rows(train), "validation": rows(val), "test": rows(test)}


def read_reviewed(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labeled rows exported from tierhost's review queue (see the module docstring)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if sorted(header) != sorted([*names, "label"]):
            raise SystemExit(
                f"{path}: columns {header} are not the 9 features + label "
                f"({', '.join(names)}, label)"
            )
        X, y = [], []
        for line, row in enumerate(reader, start=2):
            try:
                X.append([float(row[n]) for n in names])
                label = int(row["label"])
            except ValueError as e:
                raise SystemExit(f"{path}:{line}: {e}") from None
            if label not in (0, 1):
                raise SystemExit(f"{path}:{line}: label {label} is not 0 or 1")
            y.append(label)
    return (
        np.array(X, dtype=np.float64).reshape(-1, len(names)),
        np.array(y, dtype=np.int64),
    )


def fmt(v: float) -> str:
    return format(float(v), "g")


def write_csv(path: Path, names: list[str], X: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*names, "label"])
        for row, label in zip(X, y):
            w.writerow([*(fmt(v) for v in row), int(label)])


# ---------------------------------------------------------------------------------------
# primary: gradient-boosted trees


def base_score_of(gbt: GradientBoostingClassifier) -> float:
    """Log-odds of the training prior: what sklearn's default init (DummyClassifier prior)
    contributes to every raw prediction of a binary GradientBoostingClassifier."""
    p = float(gbt.init_.class_prior_[1])
    return math.log(p / (1.0 - p))


def dump_trees(gbt: GradientBoostingClassifier, names: list[str]) -> dict:
    trees = []
    for est in gbt.estimators_[:, 0]:
        t = est.tree_
        nodes = []
        for i in range(t.node_count):
            left, right = int(t.children_left[i]), int(t.children_right[i])
            if left == -1:  # sklearn's TREE_LEAF
                nodes.append({"leaf": float(t.value[i, 0, 0])})
            else:
                nodes.append(
                    {
                        "feature": int(t.feature[i]),
                        "threshold": float(t.threshold[i]),
                        "left": left,
                        "right": right,
                    }
                )
        trees.append({"nodes": nodes})
    return {
        "format": "tierhost-trees/1",
        "doc": TREES_DOC,
        "features": names,
        "base_score": base_score_of(gbt),
        "learning_rate": float(gbt.learning_rate),
        "trees": trees,
    }


def write_trees_json(path: Path, dump: dict) -> None:
    """Readable and diff-friendly: one line per tree."""
    head = {k: v for k, v in dump.items() if k != "trees"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "trees": [')
    for i, tree in enumerate(dump["trees"]):
        comma = "," if i + 1 < len(dump["trees"]) else ""
        lines.append("    " + json.dumps(tree, separators=(",", ":")) + comma)
    lines.append("  ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def eval_trees(dump: dict, X: np.ndarray, order: str = "sklearn") -> tuple[np.ndarray, np.ndarray]:
    """Reference evaluator of "tierhost-trees/1" (what the Rust evaluator must do).

    order="sklearn": raw += lr * leaf per tree (bit-exact); "sum": base + lr * sum(leaves).
    Returns (raw, p_phishing)."""
    lr = dump["learning_rate"]
    raws, ps = [], []
    for row in X:
        x = [float(np.float32(v)) for v in row]  # sklearn's trees see float32 inputs
        raw = dump["base_score"]
        total = 0.0
        for tree in dump["trees"]:
            nodes = tree["nodes"]
            n = nodes[0]
            while "leaf" not in n:
                n = nodes[n["left"] if x[n["feature"]] <= n["threshold"] else n["right"]]
            if order == "sklearn":
                raw += lr * n["leaf"]
            else:
                total += n["leaf"]
        if order != "sklearn":
            raw = dump["base_score"] + lr * total
        raws.append(raw)
        ps.append(1.0 / (1.0 + math.exp(-raw)))
    return np.array(raws), np.array(ps)


def tract_fix(model: onnx.ModelProto) -> float:
    """Fold the binary TreeEnsembleClassifier's single base value into tree 0's leaves and
    drop ``base_values`` (tract wants one base value per class). Returns the folded value."""
    nodes = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(nodes) != 1:
        raise SystemExit(f"expected one TreeEnsembleClassifier, found {len(nodes)}")
    node = nodes[0]
    attrs = {a.name: a for a in node.attribute}
    if "base_values" not in attrs:
        return 0.0
    base = list(attrs["base_values"].floats)
    if len(base) != 1:
        raise SystemExit(f"expected one base value, found {base}")
    tree_ids = list(attrs["class_treeids"].ints)
    weights = attrs["class_weights"].floats
    folded = 0
    for i, tid in enumerate(tree_ids):
        if tid == 0:
            weights[i] = float(np.float32(weights[i]) + np.float32(base[0]))
            folded += 1
    if folded == 0:
        raise SystemExit("tree 0 has no leaves in class_treeids")
    node.attribute.remove(attrs["base_values"])
    return base[0]


def export_onnx(est, n_features: int, names: list[str], name: str, doc: str) -> onnx.ModelProto:
    model = convert_sklearn(
        est,
        name=name,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(est): {"zipmap": False}},
        target_opset=OPSETS,
    )
    model.graph.name = name
    model.doc_string = doc
    # skl2onnx declares the lowest opsets its nodes need (here "" 16 / ai.onnx.ml 1), in set
    # order (varies with PYTHONHASHSEED). Declare exactly OPSETS, sorted, instead: the ops used
    # (TreeEnsembleClassifier, LinearClassifier, Identity) have the same definition there, which
    # check_model and the onnxruntime comparison in main() confirm; the file is then also
    # byte-for-byte reproducible.
    declared = {o.domain: o.version for o in model.opset_import}
    if set(declared) - set(OPSETS) or any(v > OPSETS[d] for d, v in declared.items()):
        raise SystemExit(f"unexpected opsets from skl2onnx: {declared}")
    del model.opset_import[:]
    for domain in sorted(declared):
        model.opset_import.add(domain=domain, version=OPSETS[domain])
    onnx.helper.set_model_props(
        model,
        {
            "features": ",".join(names),
            "label_1": POSITIVE_LABEL,
            "label_0": NEGATIVE_LABEL,
            "outputs": "label: int64 [N]; probabilities: float32 [N, 2] = [p(legitimate), "
            "p(phishing)]",
            "generator": "examples/phishing/train.py",
        },
    )
    return model


def ort_proba(model: onnx.ModelProto, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    label, proba = sess.run(["label", "probabilities"], {"input": X.astype(np.float32)})
    return np.asarray(label), np.asarray(proba)


# ---------------------------------------------------------------------------------------
# small model


def rank_features(X: np.ndarray, y: np.ndarray, names: list[str]) -> list[tuple[str, float]]:
    codes = np.rint(X * 2).astype(np.int64)  # 0 / 0.5 / 1 -> 0 / 1 / 2: discrete codes
    mi = mutual_info_classif(codes, y, discrete_features=True, random_state=SEED)
    order = sorted(range(len(names)), key=lambda i: (-mi[i], i))
    return [(names[i], float(mi[i])) for i in order]


def write_small_toml(path: Path, lr: LogisticRegression, feats: list[str], ranking) -> None:
    mi = dict(ranking)
    lines = [
        "# params of a tierhost `builtin:linear` (logistic) tier: p = sigmoid(bias + sum(w_f * x_f)).",
        "# Generated by examples/phishing/train.py (LogisticRegression, seed 0, training split).",
        "# Embed as [tier.params] / [tier.params.weights] of a cascade. Features were chosen by",
        "# mutual information with the label on the training split: "
        + ", ".join(f"{f} {mi[f]:.3f}" for f in feats)
        + ".",
        "# No `scales` table: every feature is already in [0, 1].",
        f"bias = {float(lr.intercept_[0])!r}",
        "threshold = 0.5",
        f'positive_label = "{POSITIVE_LABEL}"',
        f'negative_label = "{NEGATIVE_LABEL}"',
        "",
        "[weights]",
    ]
    for f, w in zip(feats, lr.coef_[0]):
        lines.append(f"{f} = {float(w)!r}")
    path.write_text("\n".join(lines) + "\n")


def parse_small_toml(path: Path) -> tuple[float, dict[str, float]]:
    """Tiny reader for the fragment above (tomllib is stdlib from 3.11)."""
    import tomllib

    doc = tomllib.loads(path.read_text())
    return float(doc["bias"]), {k: float(v) for k, v in doc["weights"].items()}


# ---------------------------------------------------------------------------------------
# rules


def rule_mask(rule: dict, X: np.ndarray, names: list[str]) -> np.ndarray:
    mask = np.ones(len(X), dtype=bool)
    for feat, op, value in rule["when"]:
        mask &= OPS[op](X[:, names.index(feat)], value)
    return mask


def rule_stats(rule: dict, X, y, names) -> dict:
    m = rule_mask(rule, X, names)
    want = 1 if rule["label"] == POSITIVE_LABEL else 0
    hits = int(m.sum())
    correct = int((y[m] == want).sum())
    return {
        "matched": hits,
        "coverage": hits / len(y),
        "precision": correct / hits if hits else None,
    }


def ordered_rules(X, names) -> tuple[np.ndarray, np.ndarray]:
    """First matching rule wins. Returns (label or -1 for abstain, matched rule index)."""
    pred = np.full(len(X), -1, dtype=np.int64)
    which = np.full(len(X), -1, dtype=np.int64)
    for i, rule in enumerate(RULES):
        m = rule_mask(rule, X, names) & (pred == -1)
        pred[m] = 1 if rule["label"] == POSITIVE_LABEL else 0
        which[m] = i
    return pred, which


def cond_text(when) -> str:
    return " and ".join(f"{f} {op} {fmt(v)}" for f, op, v in when)


def write_rules_md(path: Path, stats: list[dict], ordered: dict, X, y, names) -> None:
    n_train = len(y)
    rates = {}
    for f in ("is_popular", "ip_in_url"):
        col = X[:, names.index(f)]
        rates[f] = ", ".join(
            f"{fmt(v)} -> {y[col == v].mean():.0%} of {int((col == v).sum())}" for v in np.unique(col)
        )
    out = [
        "# Analyst rules for the phishing example",
        "",
        "<!-- Generated by train.py from its RULES table: edit RULES there, then rerun. -->",
        "",
        "Hand rules a security analyst would write from the meaning of the UCI Website Phishing",
        "features (coding: 0 = the value the data set's authors call *phishy*, 0.5 = *suspicious*,",
        "1 = *legitimate*; `age_of_domain` 0 = young). They were written from the feature",
        "definitions, not mined; the numbers below only measure them, on the **training split**",
        f"({n_train} rows). *Coverage* = share of training rows the rule matches; *precision* =",
        "share of the matched rows whose true label is the rule's label. They are meant to become",
        "a rules tier, tried in this order (descending training precision), first match wins, no",
        "match = abstain (the tier then declines and the cascade falls through to its safe default).",
        "",
        "| # | rule | => label | coverage | precision | rationale |",
        "|---|---|---|---|---|---|",
    ]
    for i, (rule, st) in enumerate(zip(RULES, stats), 1):
        prec = "n/a" if st["precision"] is None else f"{st['precision']:.3f}"
        out.append(
            f"| {i} | `{rule['id']}`: `{cond_text(rule['when'])}` | {rule['label']} | "
            f"{st['coverage']:.3f} ({st['matched']}) | {prec} | {rule['why']} |"
        )
    out += [
        "",
        "As an ordered list (first match wins), measured on each split:",
        "",
        "| split | coverage | accuracy on covered rows |",
        "|---|---|---|",
    ]
    for split_name, st in ordered.items():
        out.append(f"| {split_name} | {st['coverage']:.3f} | {st['accuracy_on_covered']:.3f} |")
    out += [
        "",
        "Machine-readable copy: `models/rules.json` (conditions are `[feature, op, value]`,",
        "ANDed within a rule; ops are `<`, `<=`, `==`, `>=`, `>`).",
        "",
        "Notes from the measurements (training split, share of phishing rows per value):",
        f"- `is_popular` (UCI *web_traffic*): {rates['is_popular']}. Its \"legitimate\" value",
        "  (1 = popular site) goes with *more* phishing, the opposite of what an analyst would",
        "  expect, so no rule uses it.",
        f"- `ip_in_url`: {rates['ip_in_url']}. 0/1 with no documented direction and only weakly",
        "  associated with the label; no rule uses it.",
        "",
    ]
    path.write_text("\n".join(out))


# ---------------------------------------------------------------------------------------
# metrics


def scores(y: np.ndarray, label: np.ndarray, score: np.ndarray) -> dict:
    return {
        "accuracy": float(accuracy_score(y, label)),
        "auc": float(roc_auc_score(y, score)),
        "precision_phishing": float(precision_score(y, label, zero_division=0)),
        "recall_phishing": float(recall_score(y, label, zero_division=0)),
    }


def feature_stats(X: np.ndarray, names: list[str]) -> dict:
    out = {}
    for i, n in enumerate(names):
        col = X[:, i]
        distinct = np.unique(col)
        out[n] = {
            "min": float(col.min()),
            "max": float(col.max()),
            "mean": float(col.mean()),
            "std": float(col.std()),
            "p01": float(np.percentile(col, 1)),
            "p99": float(np.percentile(col, 99)),
            "distinct": [float(v) for v in distinct] if len(distinct) <= 10 else None,
        }
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reviewed",
        type=Path,
        action="append",
        default=[],
        help="CSV of reviewed escalations (tierhost review export) to add to the training split",
    )
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    MODELS.mkdir(exist_ok=True)
    failures: list[str] = []

    print(
        f"python {sys.version.split()[0]}, river {river.__version__}, scikit-learn "
        f"{sklearn.__version__}, numpy {np.__version__}, skl2onnx {skl2onnx.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {ort.__version__}"
    )

    # 1-2. data ----------------------------------------------------------------------------
    names, X_raw, y_raw = load_dataset()
    X, y, dropped = deduplicate(X_raw, y_raw)
    distinct = len(np.unique(X, axis=0))
    print(
        f"dataset: {len(y_raw)} rows x {len(names)} features, {y_raw.mean():.1%} phishing; "
        f"{dropped} exact duplicate rows dropped -> {len(y)} rows, {distinct} distinct feature "
        f"vectors ({len(y) - distinct} seen with both labels)"
    )
    parts = split(X, y)
    sets = {k: (X[v], y[v]) for k, v in parts.items()}
    for k, (Xs, ys) in sets.items():
        write_csv(DATA / f"{k}.csv", names, Xs, ys)
        print(f"  {k:<10} {len(ys):>4} rows, {ys.mean():.1%} phishing -> data/{k}.csv")
    Xtr, ytr = sets["train"]
    for path in args.reviewed:
        Xr, yr = read_reviewed(path, names)
        Xtr, ytr = np.vstack([Xtr, Xr]), np.concatenate([ytr, yr])
        print(f"  + {len(yr)} reviewed rows from {path} ({yr.mean():.1%} phishing) in training")
    seen = {tuple(r) for r in Xtr}
    overlap = {
        k: int(sum(tuple(r) in seen for r in sets[k][0])) for k in ("validation", "test")
    }
    print(
        f"  feature vectors also present in train: validation {overlap['validation']}, "
        f"test {overlap['test']}"
    )
    if not args.reviewed and any(overlap.values()):
        failures.append(f"the split shares feature vectors with train: {overlap}")
    Xva, yva = sets["validation"]
    Xte, yte = sets["test"]
    X_all = np.vstack([Xtr, Xva, Xte])

    # 3. primary ------------------------------------------------------------------------------
    gbt = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED)
    gbt.fit(Xtr, ytr)

    dump = dump_trees(gbt, names)
    # sanity: the base score is what sklearn adds before the first tree
    sk_init = float(gbt._raw_predict_init(Xtr[:1])[0, 0])
    if abs(sk_init - dump["base_score"]) > 1e-15:
        failures.append(f"base_score {dump['base_score']} != sklearn init {sk_init}")
    trees_path = MODELS / "primary_trees.json"
    write_trees_json(trees_path, dump)
    reread = json.loads(trees_path.read_text())
    sk_raw = gbt.decision_function(X_all)
    sk_p = gbt.predict_proba(X_all)[:, 1]
    raw_exact, p_exact = eval_trees(reread, X_all, "sklearn")
    raw_sum, p_sum = eval_trees(reread, X_all, "sum")
    verify = {
        "trees_json_max_abs_dp_sklearn_order": float(np.abs(p_exact - sk_p).max()),
        "trees_json_max_abs_draw_sklearn_order": float(np.abs(raw_exact - sk_raw).max()),
        "trees_json_max_abs_dp_base_plus_lr_times_sum": float(np.abs(p_sum - sk_p).max()),
        "trees_json_rows_checked": int(len(X_all)),
    }
    n_nodes = sum(len(t["nodes"]) for t in dump["trees"])
    print(
        f"primary: GBT 100 x depth 3, {n_nodes} nodes; base_score {dump['base_score']:.17g}, "
        f"learning_rate {dump['learning_rate']}"
    )
    print(
        "  trees JSON vs predict_proba over all {} rows: max |dp| {:.3g} (sklearn order), "
        "{:.3g} (base + lr * sum)".format(
            len(X_all),
            verify["trees_json_max_abs_dp_sklearn_order"],
            verify["trees_json_max_abs_dp_base_plus_lr_times_sum"],
        )
    )
    if max(
        verify["trees_json_max_abs_dp_sklearn_order"],
        verify["trees_json_max_abs_dp_base_plus_lr_times_sum"],
    ) > TREES_TOLERANCE:
        failures.append("trees JSON does not reproduce predict_proba within 1e-9")

    primary_onnx = export_onnx(
        gbt,
        len(names),
        names,
        "phishing_primary_gbt",
        "GradientBoostingClassifier(100 x depth 3) for tierhost's phishing example; "
        "base value folded into tree 0 for tract.",
    )
    plain_label, plain_proba = ort_proba(primary_onnx, X_all)
    folded = tract_fix(primary_onnx)
    onnx.checker.check_model(primary_onnx)
    onnx.save(primary_onnx, MODELS / "primary.onnx")
    o_label, o_proba = ort_proba(onnx.load(MODELS / "primary.onnx"), X_all)
    verify["primary_onnx_folded_base_value"] = folded
    verify["primary_onnx_unfixed_max_abs_dp"] = float(np.abs(plain_proba[:, 1] - sk_p).max())
    verify["primary_onnx_max_abs_dp"] = float(np.abs(o_proba[:, 1] - sk_p).max())
    verify["primary_onnx_max_abs_dp_class0"] = float(np.abs(o_proba[:, 0] - (1 - sk_p)).max())
    verify["primary_onnx_label_mismatches"] = int((o_label != gbt.predict(X_all)).sum())
    print(
        f"  primary.onnx (base value {folded:.9g} folded into tree 0): onnxruntime max |dp| "
        f"{verify['primary_onnx_max_abs_dp']:.3g} (before the fix "
        f"{verify['primary_onnx_unfixed_max_abs_dp']:.3g}), label mismatches "
        f"{verify['primary_onnx_label_mismatches']}"
    )
    if (
        verify["primary_onnx_max_abs_dp"] > ONNX_TOLERANCE
        or verify["primary_onnx_max_abs_dp_class0"] > ONNX_TOLERANCE
    ):
        failures.append("primary.onnx does not reproduce predict_proba within 1e-5")

    # 4. small model ----------------------------------------------------------------------------
    ranking = rank_features(Xtr, ytr, names)
    print("feature ranking by mutual information with the label (training split, nats):")
    for f, v in ranking:
        print(f"  {f:<28} {v:.4f}")
    candidates = {}
    for k in (4, 5):
        feats = [f for f, _ in ranking[:k]]
        cols = [names.index(f) for f in feats]
        m = LogisticRegression().fit(Xtr[:, cols], ytr)
        acc = accuracy_score(yva, m.predict(Xva[:, cols]))
        auc = roc_auc_score(yva, m.predict_proba(Xva[:, cols])[:, 1])
        candidates[k] = (acc, auc, feats, cols, m)
        print(f"  logistic on top {k}: validation accuracy {acc:.4f}, AUC {auc:.4f}")
    best_k = max(candidates, key=lambda k: (candidates[k][0], -k))
    _, _, small_feats, small_cols, small = candidates[best_k]
    print(f"small model: top {best_k} features {small_feats}")

    toml_path = MODELS / "small_model_params.toml"
    write_small_toml(toml_path, small, small_feats, ranking)
    bias, weights = parse_small_toml(toml_path)
    if list(weights) != small_feats:
        failures.append("small_model_params.toml: feature order/name mismatch")
    z = bias + sum(w * X_all[:, names.index(f)] for f, w in weights.items())
    p_toml = 1.0 / (1.0 + np.exp(-z))
    sk_small = small.predict_proba(X_all[:, small_cols])[:, 1]
    verify["small_toml_max_abs_dp"] = float(np.abs(p_toml - sk_small).max())

    small_onnx = export_onnx(
        small,
        len(small_feats),
        small_feats,
        "phishing_small_logistic",
        "LogisticRegression on {} for tierhost's phishing example.".format(", ".join(small_feats)),
    )
    onnx.checker.check_model(small_onnx)
    onnx.save(small_onnx, MODELS / "small_model.onnx")
    s_label, s_proba = ort_proba(onnx.load(MODELS / "small_model.onnx"), X_all[:, small_cols])
    verify["small_onnx_max_abs_dp"] = float(np.abs(s_proba[:, 1] - sk_small).max())
    verify["small_onnx_label_mismatches"] = int(
        (s_label != small.predict(X_all[:, small_cols])).sum()
    )
    verify["small_onnx_ops"] = [f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in small_onnx.graph.node]
    verify["primary_onnx_ops"] = [
        f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in primary_onnx.graph.node
    ]
    print(
        f"  TOML params vs predict_proba: max |dp| {verify['small_toml_max_abs_dp']:.3g}; "
        f"small_model.onnx ({', '.join(verify['small_onnx_ops'])}) onnxruntime max |dp| "
        f"{verify['small_onnx_max_abs_dp']:.3g}, label mismatches "
        f"{verify['small_onnx_label_mismatches']}"
    )
    if verify["small_toml_max_abs_dp"] > 1e-12:
        failures.append("small_model_params.toml does not reproduce predict_proba")
    if verify["small_onnx_max_abs_dp"] > ONNX_TOLERANCE:
        failures.append("small_model.onnx does not reproduce predict_proba within 1e-5")

    # 5. feature stats ------------------------------------------------------------------------
    stats = {
        "doc": "Per-feature statistics of the TRAINING split (for an out-of-distribution "
        "guard): std is the population std (ddof 0); p01 / p99 are numpy's linear-interpolated "
        "1st / 99th percentiles; distinct lists every value seen when there are at most 10, "
        "else null.",
        "rows": int(len(ytr)),
        "features": feature_stats(Xtr, names),
    }
    (MODELS / "feature_stats.json").write_text(json.dumps(stats, indent=2) + "\n")

    # 6. rules --------------------------------------------------------------------------------
    for rule in RULES:
        for f, op, _ in rule["when"]:
            if f not in names or op not in OPS:
                raise SystemExit(f"bad rule {rule['id']}: {f} {op}")
    rstats = [rule_stats(r, Xtr, ytr, names) for r in RULES]
    order = sorted(
        range(len(RULES)), key=lambda i: (-(rstats[i]["precision"] or 0), -rstats[i]["matched"])
    )
    RULES[:] = [RULES[i] for i in order]
    rstats = [rstats[i] for i in order]
    print(f"analyst rules on the training split ({len(ytr)} rows):")
    for r, st in zip(RULES, rstats):
        print(
            f"  {r['id']:<30} {cond_text(r['when']):<55} => {r['label']:<10} "
            f"coverage {st['coverage']:.3f} ({st['matched']:>3}), precision {st['precision']:.3f}"
        )
    ordered = {}
    for k, (Xs, ys) in sets.items():
        pred, _ = ordered_rules(Xs, names)
        cov = pred != -1
        ordered[k] = {
            "coverage": float(cov.mean()),
            "accuracy_on_covered": float((pred[cov] == ys[cov]).mean()),
        }
        print(
            f"  ordered list on {k:<10}: coverage {ordered[k]['coverage']:.3f}, accuracy on "
            f"covered {ordered[k]['accuracy_on_covered']:.3f}"
        )
    (MODELS / "rules.json").write_text(
        json.dumps(
            {
                "doc": "Analyst rules, tried in order, first match wins, no match = abstain. "
                "Conditions [feature, op, value] are ANDed. precision / coverage measured on "
                "the training split.",
                "rules": [
                    {**{k: r[k] for k in ("id", "when", "label", "why")}, **st}
                    for r, st in zip(RULES, rstats)
                ],
                "ordered": ordered,
            },
            indent=2,
        )
        + "\n"
    )
    write_rules_md(HERE / "rules.md", rstats, ordered, Xtr, ytr, names)

    # 7. metrics -----------------------------------------------------------------------------
    # the one-line analyst rule: match => phishing, no match => legitimate
    one_rule = next(r for r in RULES if r["id"] == "form_handler_not_legitimate")
    assert one_rule["label"] == POSITIVE_LABEL
    majority = int(np.bincount(ytr).argmax())
    metrics = {
        "doc": "Accuracy / ROC AUC / precision and recall of the phishing class (label 1). "
        "Models fitted on the training split only. The rule and majority predictions are "
        "hard 0/1 labels, so their AUC is that of a single threshold (majority: 0.5). "
        "'rules_ordered' covers only the rows where a rule fires (coverage); abstentions "
        "are excluded from its scores.",
        "rows": {k: int(len(v[1])) for k, v in sets.items()},
        "source_rows": int(len(y_raw)),
        "exact_duplicate_rows_dropped": int(dropped),
        "distinct_feature_vectors": int(len(np.unique(X, axis=0))),
        "rows_whose_feature_vector_is_in_train": overlap,
        "majority_class": NEGATIVE_LABEL if majority == 0 else POSITIVE_LABEL,
        "small_model_features": small_feats,
        "analyst_rule": f"{cond_text(one_rule['when'])} => {one_rule['label']}",
        "verification": verify,
    }
    for k in ("validation", "test"):
        Xs, ys = sets[k]
        p_gbt = gbt.predict_proba(Xs)[:, 1]
        p_small = small.predict_proba(Xs[:, small_cols])[:, 1]
        rule_pred = rule_mask(one_rule, Xs, names).astype(np.int64)
        maj = np.full(len(ys), majority)
        rp, _ = ordered_rules(Xs, names)
        cov = rp != -1
        metrics[k] = {
            "primary_gbt": scores(ys, (p_gbt >= 0.5).astype(int), p_gbt),
            "small_logistic": scores(ys, (p_small >= 0.5).astype(int), p_small),
            "analyst_rule": scores(ys, rule_pred, rule_pred.astype(float)),
            "majority_class": scores(ys, maj, maj.astype(float)),
            "rules_ordered": {
                "coverage": float(cov.mean()),
                **scores(ys[cov], rp[cov], rp[cov].astype(float)),
            },
        }
    (MODELS / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print("metrics (accuracy / AUC):")
    print(f"  {'model':<16} {'validation':>17} {'test':>17}")
    for m in ("primary_gbt", "small_logistic", "analyst_rule", "majority_class", "rules_ordered"):
        v, t = metrics["validation"][m], metrics["test"][m]
        extra = (
            f"   (coverage {v['coverage']:.3f} / {t['coverage']:.3f})"
            if m == "rules_ordered"
            else ""
        )
        print(
            f"  {m:<16} {v['accuracy']:.4f} / {v['auc']:.4f}  {t['accuracy']:.4f} / "
            f"{t['auc']:.4f}{extra}"
        )

    print("artifacts:")
    for p in sorted([*DATA.glob("*.csv"), *MODELS.iterdir()]):
        print(f"  {p.relative_to(HERE)}  {p.stat().st_size:>7} B  sha256 {sha256(p)[:16]}")

    if failures:
        for f in failures:
            print(f"VERIFICATION FAILED: {f}", file=sys.stderr)
        return 1
    print("all verifications passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
