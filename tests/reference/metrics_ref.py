"""Reference values for src/metrics.rs from scikit-learn, written to tests/fixtures/metrics_ref.json.

Run: python3 tests/reference/metrics_ref.py   (needs numpy and scikit-learn; see requirements.txt)

Cases are fixed inputs with many ties (scores rounded to few distinct values), perfect and inverted rankings,
a single distinct score, and unbalanced classes. For each: ROC-AUC (`roc_auc_score`), pAUC with max_fpr=0.1
(`roc_auc_score(max_fpr=0.1)`, the McClish-standardised partial AUC that the DCASE Task 2 evaluator uses),
and F1-max (largest F1 over the thresholds of `precision_recall_curve`, predicting anomalous at score >= t).
Scores are stored as float32-representable values so that the Rust side sees the same numbers.
"""
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import precision_recall_curve, roc_auc_score


def f1_max(y, s):
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(np.max(f1))


def main():
    rng = np.random.default_rng(20261129)
    cases = []

    def add(name, y, s):
        y = np.asarray(y, dtype=int)
        s = np.asarray(s, dtype=np.float32).astype(np.float64)
        cases.append({
            "name": name,
            "labels": [bool(v) for v in y],
            "scores": [float(v) for v in s],
            "roc_auc": float(roc_auc_score(y, s)),
            "pauc_0.1": float(roc_auc_score(y, s, max_fpr=0.1)),
            "f1_max": f1_max(y, s),
        })

    add("small with ties", [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    add("perfect", [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5])
    add("inverted", [1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5])
    add("all tied", [0, 1, 0, 1, 1], [0.5] * 5)
    for i, (n, levels, p) in enumerate([(30, 4, 0.5), (100, 7, 0.3), (200, 12, 0.1), (500, 1000, 0.4), (40, 3, 0.8)]):
        y = (rng.random(n) < p).astype(int)
        y[0], y[1] = 0, 1
        s = np.round(rng.normal(size=n) + 0.8 * y, 0) if levels < 10 else rng.normal(size=n) + 0.8 * y
        if levels < 10:
            s = np.clip(s, -levels // 2, levels // 2) / 2.0
        else:
            s = np.round(s * levels / 4) / (levels / 4)
        add(f"random {i} (n={n}, ties)", y, s)
    out = {"sklearn": sklearn.__version__, "cases": cases}
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "metrics_ref.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
