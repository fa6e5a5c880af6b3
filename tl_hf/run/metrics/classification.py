"""Classification metrics in numpy: the one implementation behind ``compute_metrics`` and the packaged evaluate
modules (:mod:`tl_hf.run.metrics.modules`).

``compute_metrics`` has the ``transformers.Trainer`` signature: it takes an ``EvalPrediction`` (or a
``(predictions, label_ids)`` tuple) whose predictions are logits ``[n, num_labels]`` (or already class ids ``[n]``)
and returns ``accuracy``, ``f1_micro``, ``f1_macro``, ``precision_macro``, ``recall_macro`` (and ``f1`` = the
positive-class F1 for binary tasks), ``precision_class<c>`` / ``recall_class<c>``. Macro averages run over the classes
that occur in the labels or the predictions, as scikit-learn's ``average="macro"`` does; a class with no predicted (or
no true) examples contributes a precision (recall) of 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AVERAGES", "accuracy", "class_scores", "compute_metrics", "confusion_matrix", "f1_scores",
           "per_class_scores", "predictions_from_logits", "split_eval_prediction"]

#: the ``average`` values of precision / recall / F1 (scikit-learn's and evaluate's names; ``None``: per class)
AVERAGES = ("binary", "micro", "macro", "weighted", None)


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


def split_eval_prediction(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids, labels)`` from a Trainer ``EvalPrediction`` or a ``(predictions, label_ids)`` tuple."""
    if hasattr(eval_pred, "predictions"):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        predictions, labels = eval_pred[0], eval_pred[1]
    if labels is None:
        raise ValueError("compute_metrics needs label_ids; does the eval dataset have a 'label' column?")
    if isinstance(labels, (tuple, list)):
        labels = labels[0]
    return predictions_from_logits(predictions), np.asarray(labels).reshape(-1)


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


def _scores(m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support of a confusion matrix ``m[true, pred]``."""
    tp = np.diag(m).astype(np.float64)
    pred_count = m.sum(axis=0).astype(np.float64)
    true_count = m.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": true_count}


def class_scores(preds, labels, *, average: str | None = "macro", pos_label: int = 1) -> dict[str, object]:
    """Precision, recall and F1 with scikit-learn's ``average`` semantics over the classes present in ``labels``
    or ``preds``: ``binary`` (the ``pos_label`` class; at most 2 classes), ``micro`` (= accuracy for single-label),
    ``macro``, ``weighted`` (by support), ``None`` (a list per present class, in class-id order)."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(map(str, AVERAGES))}, got {average!r}")
    preds, labels = np.asarray(preds, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    classes = np.union1d(np.unique(labels), np.unique(preds))
    if average == "micro":
        acc = accuracy(preds, labels)
        return {"precision": acc, "recall": acc, "f1": acc}
    if classes.size == 0:
        return {k: ([] if average is None else 0.0) for k in ("precision", "recall", "f1")}
    if average == "binary":
        if classes.size > 2:
            raise ValueError(f"average='binary' needs at most 2 classes, the data has {classes.size}; use "
                             "average: macro, micro, weighted or null (per class)")
        if classes.size == 2 and pos_label not in classes:
            raise ValueError(f"pos_label={pos_label} is not one of the classes {classes.tolist()}")
        classes = np.union1d(classes, [pos_label])
    m = confusion_matrix(preds, labels, int(classes.max()) + 1)[np.ix_(classes, classes)]
    s = _scores(m)
    if average == "binary":
        i = int(np.searchsorted(classes, pos_label))
        return {k: float(s[k][i]) for k in ("precision", "recall", "f1")}
    if average is None:
        return {k: s[k].tolist() for k in ("precision", "recall", "f1")}
    weights = s["support"] / s["support"].sum() if average == "weighted" and s["support"].sum() else None
    return {k: float(np.average(s[k], weights=weights)) for k in ("precision", "recall", "f1")}


def f1_scores(preds, labels) -> dict[str, float]:
    """Macro precision/recall/F1 over the classes present in ``labels`` or ``preds`` (scikit-learn semantics), and
    ``f1`` of class 1 when the classes are a subset of {0, 1} holding 1."""
    macro = class_scores(preds, labels, average="macro")
    out = {f"{k}_macro": v for k, v in macro.items()}
    classes = set(np.union1d(np.unique(np.asarray(labels)), np.unique(np.asarray(preds))).tolist())
    if classes <= {0, 1} and 1 in classes:
        out["f1"] = class_scores(preds, labels, average="binary")["f1"]
    return out


def per_class_scores(preds, labels, num_classes: int | None = None) -> dict[str, list[float]]:
    """Per-class precision, recall and F1, index = class id (``0 .. num_classes-1``, absent classes score 0)."""
    s = _scores(confusion_matrix(preds, labels, num_classes))
    return {k: s[k].tolist() for k in ("precision", "recall", "f1")}


def compute_metrics(eval_pred) -> dict[str, float]:
    """``Trainer(compute_metrics=...)``: accuracy, micro F1, macro precision/recall/F1 (and binary F1 of class 1),
    per-class precision and recall."""
    preds, labels = split_eval_prediction(eval_pred)
    out = {"accuracy": accuracy(preds, labels), "f1_micro": accuracy(preds, labels), **f1_scores(preds, labels)}
    per = per_class_scores(preds, labels)
    for c in range(len(per["f1"])):
        out[f"precision_class{c}"] = per["precision"][c]
        out[f"recall_class{c}"] = per["recall"][c]
    return out
