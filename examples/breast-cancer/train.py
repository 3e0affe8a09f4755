"""Data + training pipeline of tierhost's breast-cancer example (a second real data set).

Regenerate every artifact of this directory (deterministic, seed 0, no network access), with
the phishing example's virtualenv (same pinned requirements):

    "$(../phishing/setup.sh | tail -n1)" train.py

What it does, in order:

1. Loads scikit-learn's bundled copy of the Breast Cancer Wisconsin (Diagnostic) data set
   (``sklearn/datasets/data/breast_cancer.csv`` inside the wheel, via
   ``sklearn.datasets.load_breast_cancer``; nothing is downloaded): 569 fine-needle aspirates x
   30 real-valued features computed from a digitized image of the cell nuclei. Feature names
   are scikit-learn's with spaces as underscores (``mean radius`` -> ``mean_radius``).
   Label: 1 = malignant, 0 = benign (scikit-learn's target is the other way round).
2. Deduplication and split exactly as the phishing example (``deduplicate`` and ``split`` of
   ``../phishing/train.py``): exact repeats dropped (this data set has none), distinct feature
   vectors split stratified 60 / 20 / 20 (seed 0) into ``data/train.csv``,
   ``data/validation.csv``, ``data/test.csv`` (30 feature columns then ``label``).
3. Primary tier: ``GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)``
   on the training split, exported as ``models/primary_trees.json`` ("tierhost-trees/1") by the
   phishing pipeline's exporter and checked against ``predict_proba`` with its reference
   evaluator (max |dp| <= 1e-9).
4. Small-model tier: ``LogisticRegression`` (defaults) on standardized copies of 3 features,
   chosen greedily by mutual information with the label on the training split, skipping any
   feature correlated (|r| > 0.9) with one already chosen. Exported as the
   ``params`` of a ``builtin:linear`` tier (``models/small_model_params.toml``): the tier divides
   each feature by ``scales.<f>`` (the training standard deviation) and the training means are
   folded into ``bias``, so p = sigmoid(bias + sum(w_f * x_f / s_f)) equals the fitted pipeline
   (checked, max |dp| <= 1e-12). cascade.toml carries the same params (a test compares them).
5. ``models/rules.json`` / ``rules.md``: two rules on the "worst" (largest) nucleus measures,
   with thresholds at round values read off the training split, each rule's training precision
   and coverage measured and recorded (the ruleset tier's confidence is that precision).
6. ``models/metrics.json``: accuracy / AUC of each model on validation and test.

Exit status is non-zero if any verification fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "phishing"))

# The phishing pipeline's exporters (tierhost-trees JSON writer and reference evaluator, CSV
# writer, deduplication and split, rule evaluation): one implementation for both examples.
import train as phishing  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.feature_selection import mutual_info_classif  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402

SEED = 0
DATA = HERE / "data"
MODELS = HERE / "models"
POSITIVE_LABEL = "malignant"  # label 1
NEGATIVE_LABEL = "benign"  # label 0
SMALL_FEATURES = 3

TREES_DOC = (
    "Gradient-boosted trees for binary classification (label 1 = malignant). "
    "Features: x[i] is the value of features[i]. "
    "Each tree is a list of nodes; node 0 is the root. An internal node "
    "{feature, threshold, left, right} goes to nodes[left] when x[feature] <= threshold, "
    "else to nodes[right]; a node {leaf} ends the walk with that value. "
    "raw = base_score + learning_rate * (sum of the leaf reached in every tree), "
    "p(malignant) = 1 / (1 + exp(-raw)); label malignant when p >= 0.5. "
    "scikit-learn compares float32(x) with the float64 threshold and accumulates "
    "raw += learning_rate * leaf tree by tree."
)

# Rules on the largest ("worst") nucleus of a sample: a large, irregular nucleus is the
# textbook sign of malignancy. Thresholds are round values chosen by looking at the training
# split; their precision / coverage are measured below (and are all the rules tier claims).
RULES = [
    {
        "id": "large_concave_nuclei",
        "when": [["worst_concave_points", ">=", 0.16], ["worst_area", ">=", 900]],
        "label": POSITIVE_LABEL,
        "why": "The worst nucleus is both large (area >= 900 px^2) and markedly concave.",
    },
    {
        "id": "small_smooth_nuclei",
        "when": [["worst_concave_points", "<", 0.1], ["worst_area", "<", 600]],
        "label": NEGATIVE_LABEL,
        "why": "Even the worst nucleus is small (area < 600 px^2) and barely concave.",
    },
]
def load_dataset() -> tuple[list[str], np.ndarray, np.ndarray]:
    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    X = np.asarray(bunch.data, dtype=np.float64)
    # scikit-learn: 0 = malignant, 1 = benign; here 1 = malignant (the positive class)
    y = (np.asarray(bunch.target) == 0).astype(np.int64)
    return names, X, y


def ordered_rules(X: np.ndarray, names: list[str]) -> np.ndarray:
    """First match wins; -1 = no rule matched (the tier abstains)."""
    pred = np.full(len(X), -1)
    for rule in RULES:
        free = (pred == -1) & phishing.rule_mask(rule, X, names)
        pred[free] = 1 if rule["label"] == POSITIVE_LABEL else 0
    return pred


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {
        "accuracy": float(accuracy_score(y, (p >= 0.5).astype(int))),
        "auc": float(roc_auc_score(y, p)),
    }


def main() -> int:
    DATA.mkdir(exist_ok=True)
    MODELS.mkdir(exist_ok=True)
    failures: list[str] = []
    print(f"python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, numpy {np.__version__}")

    # 1-2. data ------------------------------------------------------------------------------
    names, X_raw, y_raw = load_dataset()
    X, y, dropped = phishing.deduplicate(X_raw, y_raw)
    print(
        f"dataset: {len(y_raw)} rows x {len(names)} features, {y_raw.mean():.1%} malignant; "
        f"{dropped} exact duplicate rows dropped"
    )
    parts = phishing.split(X, y)
    sets = {k: (X[v], y[v]) for k, v in parts.items()}
    for k, (Xs, ys) in sets.items():
        phishing.write_csv(DATA / f"{k}.csv", names, Xs, ys)
        print(f"  {k:<10} {len(ys):>4} rows, {ys.mean():.1%} malignant -> data/{k}.csv")
    Xtr, ytr = sets["train"]
    seen = {tuple(r) for r in Xtr}
    overlap = {k: int(sum(tuple(r) in seen for r in sets[k][0])) for k in ("validation", "test")}
    if any(overlap.values()):
        failures.append(f"the split shares feature vectors with train: {overlap}")
    # The CSVs hold each value in %g (6 significant digits, which is every digit the source
    # file has): models are fitted on the values as written, so the tiers see what they saw.
    reread = {
        k: np.array([[float(phishing.fmt(v)) for v in row] for row in Xs]) for k, (Xs, _) in sets.items()
    }
    if any(not np.array_equal(reread[k], sets[k][0]) for k in sets):
        failures.append("a feature value does not survive the CSV round trip")
    X_all = np.vstack([sets[k][0] for k in ("train", "validation", "test")])

    # 3. primary -----------------------------------------------------------------------------
    gbt = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=SEED)
    gbt.fit(Xtr, ytr)
    dump = phishing.dump_trees(gbt, names)
    dump["doc"] = TREES_DOC
    trees_path = MODELS / "primary_trees.json"
    phishing.write_trees_json(trees_path, dump)
    _, p_file = phishing.eval_trees(json.loads(trees_path.read_text()), X_all, "sklearn")
    dp = float(np.abs(p_file - gbt.predict_proba(X_all)[:, 1]).max())
    print(f"primary: GBT 100 x depth 3; trees JSON vs predict_proba: max |dp| {dp:.3g}")
    if dp > phishing.TREES_TOLERANCE:
        failures.append("trees JSON does not reproduce predict_proba within 1e-9")

    # 4. small model -------------------------------------------------------------------------
    mi = mutual_info_classif(Xtr, ytr, random_state=SEED)
    ranking = sorted(range(len(names)), key=lambda i: (-mi[i], i))
    # Greedy: the next feature by mutual information that is not a near copy (|r| > 0.9 on the
    # training split) of one already chosen: radius, perimeter and area are one measure thrice.
    corr = np.corrcoef(Xtr, rowvar=False)
    cols: list[int] = []
    for i in ranking:
        if len(cols) < SMALL_FEATURES and all(abs(corr[i, c]) <= 0.9 for c in cols):
            cols.append(i)
    feats = [names[i] for i in cols]
    mean, std = Xtr[:, cols].mean(axis=0), Xtr[:, cols].std(axis=0)
    small = LogisticRegression().fit((Xtr[:, cols] - mean) / std, ytr)
    w = small.coef_[0]
    bias = float(small.intercept_[0] - np.sum(w * mean / std))
    print(f"small model: logistic on {feats} (mutual information {', '.join(f'{mi[i]:.3f}' for i in cols)})")
    lines = [
        "# params of a tierhost `builtin:linear` (logistic) tier: p = sigmoid(bias + sum(w_f * x_f / s_f)).",
        "# Generated by examples/breast-cancer/train.py (LogisticRegression on standardized features,",
        "# seed 0, training split): scales = training standard deviations, the training means are",
        "# folded into bias. Features: greedy by mutual information, no two with |r| > 0.9.",
        f"bias = {bias!r}",
        "threshold = 0.5",
        f'positive_label = "{POSITIVE_LABEL}"',
        f'negative_label = "{NEGATIVE_LABEL}"',
        "",
        "[weights]",
        *(f"{f} = {float(v)!r}" for f, v in zip(feats, w)),
        "",
        "[scales]",
        *(f"{f} = {float(s)!r}" for f, s in zip(feats, std)),
    ]
    (MODELS / "small_model_params.toml").write_text("\n".join(lines) + "\n")
    z = bias + sum(wi * X_all[:, c] / si for wi, c, si in zip(w, cols, std))
    p_params = 1.0 / (1.0 + np.exp(-z))
    dp_small = float(np.abs(p_params - small.predict_proba((X_all[:, cols] - mean) / std)[:, 1]).max())
    print(f"  params vs predict_proba: max |dp| {dp_small:.3g}")
    if dp_small > 1e-12:
        failures.append("small_model_params.toml does not reproduce predict_proba")

    # 5. rules -------------------------------------------------------------------------------
    for rule in RULES:
        m = phishing.rule_mask(rule, Xtr, names)
        want = 1 if rule["label"] == POSITIVE_LABEL else 0
        rule["matched"] = int(m.sum())
        rule["coverage"] = float(m.mean())
        rule["precision"] = float((ytr[m] == want).mean()) if m.any() else None
        print(
            f"  rule {rule['id']:<22} => {rule['label']:<9} coverage {rule['coverage']:.3f} "
            f"({rule['matched']}), precision {rule['precision']:.3f}"
        )
    ordered = {}
    for k, (Xs, ys) in sets.items():
        pred = ordered_rules(Xs, names)
        cov = pred != -1
        ordered[k] = {
            "coverage": float(cov.mean()),
            "accuracy_on_covered": float((pred[cov] == ys[cov]).mean()),
        }
    (MODELS / "rules.json").write_text(
        json.dumps(
            {
                "doc": "Rules on the worst nucleus, tried in order, first match wins, no match = "
                "abstain. Conditions [feature, op, value] are ANDed. precision / coverage "
                "measured on the training split.",
                "rules": RULES,
                "ordered": ordered,
            },
            indent=2,
        )
        + "\n"
    )
    md = [
        "# Rules of the breast-cancer example",
        "",
        "Generated by `train.py`; measured on the training split (first match wins).",
        "",
        "| rule | when | label | training coverage | training precision |",
        "|---|---|---|---|---|",
        *(
            f"| `{r['id']}` | {' and '.join(f'`{f} {o} {v}`' for f, o, v in r['when'])} | "
            f"{r['label']} | {r['coverage']:.3f} ({r['matched']}) | {r['precision']:.3f} |"
            for r in RULES
        ),
        "",
        "| split | coverage | accuracy on covered |",
        "|---|---|---|",
        *(f"| {k} | {v['coverage']:.3f} | {v['accuracy_on_covered']:.3f} |" for k, v in ordered.items()),
        "",
    ]
    (HERE / "rules.md").write_text("\n".join(md))

    # 6. metrics -----------------------------------------------------------------------------
    metrics = {
        "doc": "Accuracy / ROC AUC (malignant = label 1) of models fitted on the training split.",
        "rows": {k: int(len(v[1])) for k, v in sets.items()},
        "source_rows": int(len(y_raw)),
        "exact_duplicate_rows_dropped": int(dropped),
        "rows_whose_feature_vector_is_in_train": overlap,
        "small_model_features": feats,
        "verification": {"trees_json_max_abs_dp": dp, "small_params_max_abs_dp": dp_small},
    }
    for k in ("validation", "test"):
        Xs, ys = sets[k]
        metrics[k] = {
            "primary_gbt": scores(ys, gbt.predict_proba(Xs)[:, 1]),
            "small_logistic": scores(ys, small.predict_proba((Xs[:, cols] - mean) / std)[:, 1]),
            "rules_ordered": ordered[k],
        }
        print(
            f"  {k:<10}: primary {metrics[k]['primary_gbt']['accuracy']:.4f} / "
            f"{metrics[k]['primary_gbt']['auc']:.4f}, small {metrics[k]['small_logistic']['accuracy']:.4f}"
            f" / {metrics[k]['small_logistic']['auc']:.4f}, rules coverage "
            f"{ordered[k]['coverage']:.3f} accuracy {ordered[k]['accuracy_on_covered']:.3f}"
        )
    (MODELS / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    if failures:
        for f in failures:
            print(f"VERIFICATION FAILED: {f}", file=sys.stderr)
        return 1
    print("all verifications passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
