"""Offline classification metrics in numpy (no ``evaluate.load``, no Hub access).

``compute_metrics`` has the ``transformers.Trainer`` signature: it takes an ``EvalPrediction`` (or a
``(predictions, label_ids)`` tuple) whose predictions are logits ``[n, num_labels]`` (or already class ids ``[n]``)
and returns ``accuracy``, ``f1_macro``, ``precision_macro``, ``recall_macro`` (and ``f1`` = the positive-class F1 for
binary tasks). Macro averages run over the classes that occur in the labels or the predictions, as scikit-learn's
``average="macro"`` does; a class with no predicted (or no true) examples contributes a precision (recall) of 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "compute_metrics", "confusion_matrix", "f1_scores", "predictions_from_logits"]


def predictions_from_logits(predictions) -> np.ndarray:
    """Class ids from logits ``[n, c]`` (argmax) or from ids ``[n]``; a tuple of outputs uses its first element."""
    if isinstance(predictions, (tuple, list)) and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    p = np.asarray(predictions)
    if p.ndim == 2:
        return p.argmax(axis=-1)
    if p.ndim == 1:
        return p.astype(np.int64)
    raise ValueError(f"predictions must be logits [n, num_labels] or class ids [n], got shape {p.shape}")


def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ in shape")
    return float((preds == labels).mean()) if labels.size else 0.0


def confusion_matrix(preds, labels, num_classes: int | None = None) -> np.ndarray:
    """``m[true, pred]`` counts."""
    preds, labels = np.asarray(preds, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    n = int(num_classes if num_classes is not None else max(preds.max(initial=-1), labels.max(initial=-1)) + 1)
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def f1_scores(preds, labels) -> dict[str, float]:
    """Macro precision/recall/F1 over the classes present in ``labels`` or ``preds`` (scikit-learn semantics)."""
    preds, labels = np.asarray(preds, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    classes = np.union1d(np.unique(labels), np.unique(preds))
    if classes.size == 0:
        return {"precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0}
    m = confusion_matrix(preds, labels, int(classes.max()) + 1)[np.ix_(classes, classes)]
    tp = np.diag(m).astype(np.float64)
    pred_count = m.sum(axis=0).astype(np.float64)
    true_count = m.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    out = {"precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
           "f1_macro": float(f1.mean())}
    if set(classes.tolist()) <= {0, 1} and 1 in classes:
        out["f1"] = float(f1[list(classes).index(1)])
    return out


def compute_metrics(eval_pred) -> dict[str, float]:
    """``Trainer(compute_metrics=...)``: accuracy, macro precision/recall/F1 (and binary F1 of class 1)."""
    if hasattr(eval_pred, "predictions"):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        predictions, labels = eval_pred[0], eval_pred[1]
    if labels is None:
        raise ValueError("compute_metrics needs label_ids; does the eval dataset have a 'label' column?")
    if isinstance(labels, (tuple, list)):
        labels = labels[0]
    preds = predictions_from_logits(predictions)
    labels = np.asarray(labels).reshape(-1)
    return {"accuracy": accuracy(preds, labels), **f1_scores(preds, labels)}
