"""Multi-label classification metrics in numpy (the one implementation behind the packaged evaluate module
``multilabel_f1`` and the ``text_multilabel`` task), and the decision thresholds tuned on a validation split.

Predictions and references are multi-hot ``[n, num_labels]`` (0/1). scikit-learn semantics, ``zero_division=0``:

* per label: precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1 ``2 tp / (2 tp + fp + fn)``; a label with
  no predicted (no true, neither) examples scores 0;
* ``micro``: the same over the pooled counts of every label; ``macro``: the unweighted mean over *every* label of
  the set (absent ones count 0, as ``f1_score(average="macro")`` on an indicator matrix);
* ``samples`` (example-based): F1 of each example's predicted vs true label set, averaged over the examples (an
  example with no true and no predicted label scores 0, scikit-learn's default);
* ``subset_accuracy``: the fraction of examples whose predicted set equals the true set exactly.

A label is predicted when its sigmoid score is ``>=`` its threshold.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["MultiLabelMetrics", "OBJECTIVES", "SCALAR_KEYS", "THRESHOLD_GRID", "apply_thresholds",
           "multilabel_scores", "sigmoid", "tune_thresholds"]

#: the thresholds tried when tuning (0.05, 0.06, ..., 0.95)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.9501, 0.01), 2)
#: what a global threshold may be tuned for
OBJECTIVES = ("f1_macro", "f1_micro", "f1_samples")
#: the scalar results of :func:`multilabel_scores` (what a run logs per evaluation)
SCALAR_KEYS = ("f1_micro", "f1_macro", "f1_samples", "precision_micro", "recall_micro", "precision_macro",
               "recall_macro", "subset_accuracy")


def _indicator(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{what} must be multi-hot rows [n, num_labels], got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{what} must hold 0/1 (multi-hot), got values such as {a[~np.isin(a, (0, 1))][0]!r}")
    return a.astype(bool)


def _ratio(num, den) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def multilabel_scores(predictions, references) -> dict[str, Any]:
    """Micro / macro / samples F1 (and precision, recall), subset accuracy and per-label precision, recall, F1 and
    support (lists in label order) of multi-hot ``predictions`` against ``references``."""
    p, y = _indicator(predictions, "predictions"), _indicator(references, "references")
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and references {y.shape} differ in shape")
    tp, fp, fn = (p & y).sum(0), (p & ~y).sum(0), (~p & y).sum(0)
    precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
    row_tp = (p & y).sum(1)
    n = p.shape[0]
    out: dict[str, Any] = {
        "f1_micro": float(_ratio(2 * TP, 2 * TP + FP + FN)),
        "f1_macro": float(f1.mean()) if f1.size else 0.0,
        "f1_samples": float(_ratio(2 * row_tp, p.sum(1) + y.sum(1)).mean()) if n else 0.0,
        "precision_micro": float(_ratio(TP, TP + FP)), "recall_micro": float(_ratio(TP, TP + FN)),
        "precision_macro": float(precision.mean()) if precision.size else 0.0,
        "recall_macro": float(recall.mean()) if recall.size else 0.0,
        "subset_accuracy": float((p == y).all(1).mean()) if n else 0.0,
        "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
        "support": y.sum(0).astype(int).tolist(),
    }
    return out


def sigmoid(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def apply_thresholds(probs, thresholds) -> np.ndarray:
    """Multi-hot predictions: ``probs >= threshold`` (one float, or one per label)."""
    probs = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 1 and t.shape[0] != probs.shape[1]:
        raise ValueError(f"{t.shape[0]} thresholds for {probs.shape[1]} labels")
    return (probs >= t).astype(np.int64)


def _best(scores: np.ndarray, grid: np.ndarray) -> float:
    """The grid value with the highest score; ties go to the value closest to 0.5."""
    top = np.flatnonzero(np.isclose(scores, scores.max()))
    return float(grid[top[np.argmin(np.abs(grid[top] - 0.5))]])


def tune_thresholds(probs, references, *, per_label: bool = False, objective: str = "f1_macro",
                    grid: Sequence[float] = THRESHOLD_GRID) -> float | list[float]:
    """The decision threshold(s) that maximise the F1 on ``(probs, references)`` (a validation split, never the
    test split): one global threshold maximising ``objective`` (:data:`OBJECTIVES`), or with ``per_label`` each
    label's own threshold maximising that label's F1 (which maximises the macro F1). Grid search over ``grid``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    probs = np.asarray(probs, dtype=np.float64)
    y = _indicator(references, "references")
    grid = np.asarray(grid, dtype=np.float64)
    if not per_label:
        scores = np.array([multilabel_scores(probs >= t, y)[objective] for t in grid])
        return _best(scores, grid)
    out = []
    for j in range(probs.shape[1]):
        pred = probs[:, j][:, None] >= grid[None, :]  # [n, grid]
        yj = y[:, j][:, None]
        tp, fp, fn = (pred & yj).sum(0), (pred & ~yj).sum(0), (~pred & yj).sum(0)
        out.append(_best(_ratio(2 * tp, 2 * tp + fp + fn), grid))
    return out


class MultiLabelMetrics:
    """The ``compute_metrics`` of a multi-label run: the packaged evaluate module ``multilabel_f1`` on the whole
    gathered eval set (the Trainer gathers the logits of all processes before it calls this), at ``threshold``
    (the configured float, or 0.5 while the tuned one is not known yet). Returns :data:`SCALAR_KEYS`."""

    def __init__(self, threshold: float = 0.5) -> None:
        from tl_hf.run.metrics.loading import load_metric

        self.threshold = threshold
        self.metric = load_metric("multilabel_f1", where="text_multilabel metrics: ")

    def check(self, num_labels: int) -> None:
        """Score ``num_labels`` one-hot rows against themselves once (a broken module fails before training)."""
        eye = np.eye(num_labels, dtype=np.int64)
        if self.compute(eye, eye)["f1_micro"] != 1.0:
            raise ValueError("the multilabel_f1 module does not score identical predictions as F1 1.0")

    def compute(self, predictions, references) -> dict[str, Any]:
        """Every score (per-label lists included) of multi-hot ``predictions`` vs ``references``."""
        out = self.metric.compute(predictions=np.asarray(predictions, dtype=np.int64).tolist(),
                                  references=np.asarray(references, dtype=np.int64).tolist())
        return {k: (float(v) if k in SCALAR_KEYS else list(v)) for k, v in out.items()}

    def __call__(self, eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
        labels = eval_pred.label_ids if hasattr(eval_pred, "label_ids") else eval_pred[1]
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        refs = (np.asarray(labels) >= 0.5).astype(np.int64)
        scores = self.compute(apply_thresholds(sigmoid(logits), self.threshold), refs)
        return {k: scores[k] for k in SCALAR_KEYS}
