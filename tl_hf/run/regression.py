"""What a text run reports when its labels are scores (``data.problem_type: regression``, e.g. STS-B): the
``compute_metrics`` that serves both problem types (:class:`TextMetrics`), the early-stopping check, and the
evaluate step (:func:`evaluate_regression`): Pearson / Spearman / MSE over the whole gathered eval set, the eval
predictions unclipped with the training labels' range and how many predictions fall outside it, a scatter plot of
predicted vs true scores. No confusion matrix."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tl_hf._errors import ConfigError
from tl_hf.run.sections import RunConfig

__all__ = ["REGRESSION", "TextMetrics", "check_regression_early_stopping", "evaluate_regression", "label_range"]

REGRESSION = "regression"
#: early_stopping.metric values that score classes (refused in a regression run)
_CLASS_METRIC_PREFIXES = ("accuracy", "f1", "precision", "recall", "matthews", "mcc")


class TextMetrics:
    """The text task's ``compute_metrics``: classification's :class:`~tl_hf.run.metrics.RunMetrics`, or
    :class:`~tl_hf.run.metrics.regression.RegressionMetrics` once the head is known to have one output
    (``check(1)``; ``data.problem_type: regression`` decides it up front, ``auto`` when the labels are read).
    Configured metrics are loaded here, before any output is touched."""

    def __init__(self, cfg: RunConfig) -> None:
        from tl_hf.run.metrics import RunMetrics
        from tl_hf.run.metrics.regression import RegressionMetrics

        from tl_hf.run.validate import check_metrics

        self.specs = cfg.evaluation.metric_specs()
        self.impl = RegressionMetrics(self.specs) if is_regression_config(cfg) else RunMetrics(self.specs)
        if self.regression:  # the dry run of every configured metric, before the data is read
            self.impl.check(1)
        else:
            check_metrics(cfg, self.impl)

    @property
    def regression(self) -> bool:
        from tl_hf.run.metrics.regression import RegressionMetrics

        return isinstance(self.impl, RegressionMetrics)

    def check(self, num_labels: int) -> None:
        from tl_hf.run.metrics.regression import RegressionMetrics

        if num_labels == 1 and not self.regression:
            self.impl = RegressionMetrics(self.specs)
        self.impl.check(num_labels)

    def __call__(self, eval_pred) -> dict[str, Any]:
        return self.impl(eval_pred)


def is_regression_config(cfg: RunConfig) -> bool:
    """The config itself says regression (``data.problem_type`` or a regression built-in dataset)."""
    from tl_hf.run.data.text import REGRESSION_DATASETS

    data = cfg.data
    return getattr(data, "problem_type", None) == REGRESSION or getattr(data, "dataset", None) in REGRESSION_DATASETS


def check_regression_early_stopping(cfg: RunConfig) -> None:
    """Early stopping in a regression run watches a regression metric (pearsonr / spearmanr up, mse down)."""
    es = cfg.early_stopping
    if es.patience == 0:
        return
    if es.metric.startswith(_CLASS_METRIC_PREFIXES):
        raise ConfigError(f"early_stopping.metric={es.metric} scores classes, but this is a regression run (it reports "
                          "eval_pearsonr, eval_spearmanr, eval_mse); set early_stopping.metric=pearsonr (or mse with "
                          "early_stopping.greater_is_better=false)")
    if es.metric in ("mse", "loss") and es.greater_is_better:
        raise ConfigError(f"early_stopping.metric={es.metric} is better when smaller; set "
                          "early_stopping.greater_is_better=false (or watch pearsonr)")
    if es.metric in ("pearsonr", "spearmanr") and not es.greater_is_better:
        raise ConfigError(f"early_stopping.metric={es.metric} is better when larger; set "
                          "early_stopping.greater_is_better=true")


def label_range(dataset) -> tuple[float, float]:
    """``(min, max)`` of a dataset's float ``label`` column."""
    y = np.asarray(dataset["label"], dtype=np.float64)
    return round(float(y.min()), 6), round(float(y.max()), 6)


def evaluate_regression(trainer, built, cfg: RunConfig) -> dict[str, Any]:
    """After training: predict the eval set (gathered over all processes; ``compute_metrics`` gives pearsonr,
    spearmanr, mse) and, in the main process, write ``eval_predictions.jsonl`` (unclipped), the scatter plot, the
    learning curve and LR plots. The results state the training labels' range and the predictions outside it."""
    from tl_hf.run.metrics.regression import predictions_1d
    from tl_hf.run.outputs import evaluate_step

    results: dict[str, Any] = dict(built.results)
    results["train_samples"] = len(built.train_dataset)
    lo, hi = label_range(built.train_dataset)
    results["train_label_range"] = [lo, hi]

    def score(pred):
        metrics = dict(pred.metrics)
        metrics["eval_samples"] = len(built.eval_dataset)
        p, y = predictions_1d(pred.predictions), np.asarray(pred.label_ids, dtype=np.float64).reshape(-1)
        metrics["eval_prediction_range"] = [float(p.min()), float(p.max())]
        metrics["eval_predictions_below_train_range"] = int((p < lo).sum())
        metrics["eval_predictions_above_train_range"] = int((p > hi).sum())
        return metrics, (p, y)

    def write(out: str, value) -> dict[str, str]:
        from tl_hf.run import plots

        p, y = value
        path = os.path.join(out, "eval_predictions.jsonl")
        with open(path, "w") as fh:
            for i, (pi, yi) in enumerate(zip(p.tolist(), y.tolist())):
                fh.write(json.dumps({"index": i, "label": round(yi, 6), "prediction": pi,
                                     "outside_train_range": not lo <= pi <= hi}) + "\n")
        title = f"eval: Pearson {results.get('eval_pearsonr', float('nan')):.3f}, " \
                f"Spearman {results.get('eval_spearmanr', float('nan')):.3f}"
        return {"predictions": path,
                "scatter": plots.plot_regression_scatter(p, y, os.path.join(out, "eval_scatter.png"),
                                                         train_range=(lo, hi), title=title)}

    return evaluate_step(trainer, results, built.eval_dataset, score=score, write=write)
