"""Metrics of a run. The numpy implementations (:mod:`~tl_hf.run.metrics.classification`) back both the recipes'
default ``compute_metrics`` and tl_hf's evaluate modules (:mod:`~tl_hf.run.metrics.modules`: accuracy, precision,
recall, f1, confusion_matrix, forgetting), which load fully offline through ``evaluate.load(<path>)``;
:mod:`~tl_hf.run.metrics.loading` loads those by name and any other evaluate metric from the Hub. Importing this
package does not import evaluate."""

from tl_hf.run.metrics.classification import (AVERAGES, accuracy, class_scores, compute_metrics, confusion_matrix,
                                              f1_scores, per_class_scores, predictions_from_logits,
                                              split_eval_prediction)
from tl_hf.run.metrics.loading import LOCAL_METRICS, RunMetrics, load_metric, local_metric_path

__all__ = ["AVERAGES", "LOCAL_METRICS", "RunMetrics", "accuracy", "class_scores", "compute_metrics",
           "confusion_matrix", "f1_scores", "load_metric", "local_metric_path", "per_class_scores",
           "predictions_from_logits", "split_eval_prediction"]
