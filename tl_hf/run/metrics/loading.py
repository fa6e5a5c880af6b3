"""Evaluate metrics by name: tl_hf's packaged modules from their scripts (offline), any other name through
``evaluate.load`` (the Hub, or the HF cache of an earlier download); and :class:`RunMetrics`, the Trainer's
``compute_metrics`` of a run: the default keys plus the configured metrics, on the gathered eval set."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

from tl_hf._errors import ConfigError, did_you_mean, one_line
from tl_hf.run.metrics.classification import compute_metrics, split_eval_prediction

__all__ = ["LOCAL_METRICS", "RunMetrics", "load_metric", "local_metric_path"]

#: the evaluate modules shipped in tl_hf/run/metrics/modules (each loads offline)
LOCAL_METRICS = ("accuracy", "precision", "recall", "f1", "confusion_matrix", "forgetting", "squad",
                 "multilabel_f1", "pearsonr", "spearmanr", "mse", "entity_f1")
_MODULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules")


def local_metric_path(name: str) -> str | None:
    """The script of the packaged module ``name``, or ``None`` when tl_hf does not ship it."""
    return os.path.join(_MODULES, f"{name}.py") if name in LOCAL_METRICS else None


def load_metric(name: str, *, where: str = "", **kwargs):
    """``evaluate.load`` of ``name``: a packaged name loads its local script (no network); a path to a metric
    script, or a Hub name (``matthews_correlation``, ``user/metric``) goes to ``evaluate.load`` as given.
    ``keep_in_memory`` defaults to True (no cache files, so every process of a distributed run computes alone).
    A metric that cannot be loaded raises a one-line :class:`ConfigError` (prefixed with ``where``) naming the
    packaged alternatives."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    try:
        return evaluate.load(local_metric_path(name) or name, **kwargs)
    except (FileNotFoundError, ConnectionError) as exc:
        raise ConfigError(f"{where}{_unavailable(name, exc)}") from None
    except ImportError as exc:
        raise ConfigError(f"{where}metric {name!r} needs a package that is not installed: {one_line(exc)}") from None


def _unavailable(name: str, exc: BaseException) -> str:
    from tl_hf import _hub_access

    if _hub_access.offline():
        why = "offline mode is on (HF_HUB_OFFLINE) and the HF cache has no copy"
    else:
        reason = _hub_access.unreachable_reason(timeout=3.0)
        why = (f"the Hub is not reachable ({reason}) and the HF cache has no copy" if reason
               else f"evaluate could not load it ({one_line(exc)})")
    return (f"metric {name!r} is not packaged with tl_hf, {why}; packaged metrics (offline): "
            f"{', '.join(LOCAL_METRICS)}{did_you_mean(name, LOCAL_METRICS)}")


def _plain(value: Any) -> Any:
    """numpy values of a metric's result as Python numbers and lists (JSON, Trainer logs)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _feature_names(metric) -> set[str]:
    features = metric.features if isinstance(metric.features, list) else [metric.features]
    return {name for f in features for name in f}


class RunMetrics:
    """A run's ``compute_metrics``: :func:`~tl_hf.run.metrics.compute_metrics`'s keys, then each configured evaluate
    metric's result on the class ids (a key it shares with the defaults takes its value). ``specs`` are
    ``(name, compute kwargs)``; every metric is loaded here, so a metric that is not available fails before
    training. The Trainer gathers predictions from all processes before it calls this."""

    def __init__(self, specs: Iterable[tuple[str, dict]] = (), *, where: str = "evaluation.metrics: ") -> None:
        self.where = where
        self.metrics = []
        for name, kwargs in specs:
            metric = load_metric(name, where=where)
            if not {"predictions", "references"} <= _feature_names(metric):
                raise ConfigError(f"{where}metric {name!r} takes {', '.join(sorted(_feature_names(metric)))}, not "
                                  "predictions and references (class ids), so it cannot score a classification "
                                  "eval set")
            self.metrics.append((name, metric, dict(kwargs)))

    def check(self, num_labels: int) -> None:
        """Compute every configured metric once on ``0 .. num_labels-1`` as predictions and references, so that a bad
        argument (``average: binary`` on 3 classes, an unknown keyword) fails before training, naming the metric."""
        ids = list(range(num_labels))
        for name, metric, kwargs in self.metrics:
            try:
                metric.compute(predictions=ids, references=ids, **kwargs)
            except (ValueError, TypeError, KeyError) as exc:
                args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
                raise ConfigError(f"{self.where}{name}({args}) on {num_labels} classes: {one_line(exc)}") from None

    def __call__(self, eval_pred) -> dict[str, Any]:
        out: dict[str, Any] = compute_metrics(eval_pred)
        if self.metrics:
            preds, labels = split_eval_prediction(eval_pred)
            for _, metric, kwargs in self.metrics:
                out.update(_plain(metric.compute(predictions=preds.tolist(), references=labels.tolist(), **kwargs)))
        return out
