"""Offline classification metrics in numpy (no ``evaluate.load``, no Hub access).

:class:`OfflineMetric` / :func:`load` / :class:`combine` follow the ``evaluate`` interface.
``compute_metrics`` has the ``transformers.Trainer`` signature: it takes an ``EvalPrediction`` (or a
``(predictions, label_ids)`` tuple) whose predictions are logits ``[n, num_labels]`` (or already class ids ``[n]``)
and returns ``accuracy``, ``f1_macro``, ``precision_macro``, ``recall_macro`` (and ``f1`` = the positive-class F1 for
binary tasks). Macro averages run over the classes that occur in the labels or the predictions, as scikit-learn's
``average="macro"`` does; a class with no predicted (or no true) examples contributes a precision (recall) of 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OfflineMetric", "accuracy", "combine", "compute_metrics", "confusion_matrix", "f1_scores", "load",
           "per_class_scores", "predictions_from_logits"]


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


def per_class_scores(preds, labels, num_classes: int | None = None) -> dict[str, list[float]]:
    """Per-class precision, recall and F1 (index = class id) and the micro F1 (= accuracy for single-label)."""
    m = confusion_matrix(preds, labels, num_classes)
    tp = np.diag(m).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(m.sum(0) > 0, tp / m.sum(0), 0.0)
        recall = np.where(m.sum(1) > 0, tp / m.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


class OfflineMetric:
    """A metric with the ``evaluate`` interface (``add_batch``, ``add``, ``compute``) that needs no Hub:
    ``evaluate.load("accuracy")`` fails offline, ``tl_hf.run.metrics.load("accuracy")`` does not.

    Names: ``accuracy``, ``f1`` / ``precision`` / ``recall`` (``average="macro" | "micro" | None`` for per-class),
    ``confusion_matrix``.
    """

    NAMES = ("accuracy", "f1", "precision", "recall", "confusion_matrix")

    def __init__(self, name: str) -> None:
        if name not in self.NAMES:
            raise ValueError(f"unknown offline metric {name!r}; available: {', '.join(self.NAMES)}")
        self.name = name
        self._preds: list[np.ndarray] = []
        self._refs: list[np.ndarray] = []

    def add_batch(self, *, predictions, references) -> None:
        self._preds.append(np.asarray(predictions, dtype=np.int64).reshape(-1))
        self._refs.append(np.asarray(references, dtype=np.int64).reshape(-1))

    def add(self, *, prediction, reference) -> None:
        self.add_batch(predictions=[prediction], references=[reference])

    def compute(self, *, predictions=None, references=None, average: str | None = "macro",
                num_classes: int | None = None) -> dict:
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references)
        preds = np.concatenate(self._preds) if self._preds else np.zeros(0, np.int64)
        refs = np.concatenate(self._refs) if self._refs else np.zeros(0, np.int64)
        self._preds, self._refs = [], []
        if self.name == "accuracy":
            return {"accuracy": accuracy(preds, refs)}
        if self.name == "confusion_matrix":
            return {"confusion_matrix": confusion_matrix(preds, refs, num_classes).tolist()}
        if average == "micro":  # single-label: micro P = micro R = micro F1 = accuracy
            return {self.name: accuracy(preds, refs)}
        if average is None:
            return {self.name: per_class_scores(preds, refs, num_classes)[self.name]}
        if average != "macro":
            raise ValueError(f"average must be 'macro', 'micro' or None, got {average!r}")
        return {self.name: f1_scores(preds, refs)[f"{self.name}_macro"]}


def load(name: str) -> OfflineMetric:
    """Offline stand-in for ``evaluate.load(name)``."""
    return OfflineMetric(name)


class combine:  # noqa: N801 - mirrors evaluate.combine
    """Several offline metrics computed together, like ``evaluate.combine([...])``."""

    def __init__(self, metrics) -> None:
        self.metrics = [load(m) if isinstance(m, str) else m for m in metrics]

    def add_batch(self, *, predictions, references) -> None:
        for m in self.metrics:
            m.add_batch(predictions=predictions, references=references)

    def compute(self, *, predictions=None, references=None, **kwargs) -> dict:
        out: dict = {}
        for m in self.metrics:
            out.update(m.compute(predictions=predictions, references=references, **kwargs))
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
    out = {"accuracy": accuracy(preds, labels), "f1_micro": accuracy(preds, labels), **f1_scores(preds, labels)}
    per = per_class_scores(preds, labels)
    for c in range(len(per["f1"])):
        out[f"precision_class{c}"] = per["precision"][c]
        out[f"recall_class{c}"] = per["recall"][c]
    return out
