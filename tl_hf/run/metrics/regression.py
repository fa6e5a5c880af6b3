"""Regression metrics in numpy (STS-B style scores): Pearson and Spearman correlation and the mean squared error, the
one implementation behind the packaged evaluate modules ``pearsonr``, ``spearmanr`` and ``mse``
(:mod:`tl_hf.run.metrics.modules`) and :class:`RegressionMetrics`, the ``compute_metrics`` of a regression run.

Semantics are scipy's and scikit-learn's: ``pearsonr`` = ``scipy.stats.pearsonr(...)[0]``, ``spearmanr`` = Pearson
of the average ranks (ties share their mean rank, ``scipy.stats.spearmanr``), ``mse`` =
``sklearn.metrics.mean_squared_error``. A correlation with a constant input is undefined: NaN, as scipy gives.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from tl_hf._errors import ConfigError, one_line

__all__ = ["REGRESSION_KEYS", "RegressionMetrics", "mse", "pearsonr", "predictions_1d", "rank_average",
           "score_features", "spearmanr"]

#: the keys a regression run always reports (after the ``eval_`` prefix)
REGRESSION_KEYS = ("pearsonr", "spearmanr", "mse")
#: packaged classification modules, which score class ids (refused in a regression run)
_CLASS_ID_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix")


def score_features():
    """The packaged regression modules' inputs: float predictions and references."""
    import datasets

    return datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")})


def _pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    r = np.asarray(references, dtype=np.float64).reshape(-1)
    if p.shape != r.shape:
        raise ValueError(f"predictions ({p.size}) and references ({r.size}) differ in length")
    return p, r


def pearsonr(predictions, references) -> float:
    """Pearson's r; NaN when either side is constant or there are fewer than 2 values."""
    p, r = _pair(predictions, references)
    if p.size < 2:
        return float("nan")
    dp, dr = p - p.mean(), r - r.mean()
    denom = np.sqrt((dp * dp).sum() * (dr * dr).sum())
    return float(np.clip((dp * dr).sum() / denom, -1.0, 1.0)) if denom > 0 else float("nan")


def rank_average(x) -> np.ndarray:
    """1-based ranks, ties given their average rank (``scipy.stats.rankdata(method="average")``)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], x.size] - 1
    ranks = np.empty(x.size)
    ranks[order] = ((first + last) / 2.0 + 1.0)[group]
    return ranks


def spearmanr(predictions, references) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    p, r = _pair(predictions, references)
    return pearsonr(rank_average(p), rank_average(r))


def mse(predictions, references) -> float:
    """Mean squared error (0.0 for no examples)."""
    p, r = _pair(predictions, references)
    return float(np.mean((p - r) ** 2)) if p.size else 0.0


def predictions_1d(predictions) -> np.ndarray:
    """The scores of a one-output head: ``[n, 1]`` (or ``[n]``) -> ``[n]``; a tuple of outputs uses its first."""
    if isinstance(predictions, (tuple, list)) and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        return p[:, 0]
    if p.ndim == 1:
        return p
    raise ValueError(f"a regression head gives one number per example ([n, 1]), got predictions of shape {p.shape}")


class RegressionMetrics:
    """A regression run's ``compute_metrics``: ``pearsonr``, ``spearmanr`` and ``mse`` on the whole gathered eval
    set, then each configured evaluate metric (``(name, compute kwargs)``; e.g. ``mae`` from the Hub) on the
    float predictions. Classification modules (accuracy, f1, ...) are refused: they score class ids."""

    def __init__(self, specs: Iterable[tuple[str, dict]] = (), *, where: str = "evaluation.metrics: ") -> None:
        from tl_hf.run.metrics.loading import load_metric

        self.where = where
        self.metrics = []
        for name, kwargs in specs:
            if name in _CLASS_ID_METRICS:
                raise ConfigError(f"{where}{name!r} scores class ids, but this is a regression run (data.problem_type:"
                                  f" regression); it reports {', '.join(REGRESSION_KEYS)} always: drop {name!r} or "
                                  "name a regression metric (e.g. mae)")
            if name in REGRESSION_KEYS and not kwargs:
                continue  # always computed
            self.metrics.append((name, load_metric(name, where=where), dict(kwargs)))

    def check(self, num_labels: int) -> None:
        """One output; each configured metric computed once on a small float sample (a bad argument fails now)."""
        if num_labels != 1:
            raise ConfigError(f"a regression head has one output, got {num_labels} labels")
        x = [0.0, 0.5, 1.0]
        for name, metric, kwargs in self.metrics:
            try:
                metric.compute(predictions=x, references=x, **kwargs)
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{self.where}{name} on float scores: {one_line(exc)}") from None

    def __call__(self, eval_pred) -> dict[str, Any]:
        from tl_hf.run.metrics.loading import _plain

        preds = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
        labels = eval_pred.label_ids if hasattr(eval_pred, "label_ids") else eval_pred[1]
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        p, y = predictions_1d(preds), np.asarray(labels, dtype=np.float64).reshape(-1)
        out: dict[str, Any] = {"pearsonr": pearsonr(p, y), "spearmanr": spearmanr(p, y), "mse": mse(p, y)}
        for _, metric, kwargs in self.metrics:
            out.update(_plain(metric.compute(predictions=p.tolist(), references=y.tolist(), **kwargs)))
        return out
