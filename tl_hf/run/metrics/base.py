"""What the packaged evaluate modules share: their ``MetricInfo``, the precision / recall / F1 base class and the
regression-score base class (Pearson, Spearman, MSE).

A module script imports this module (``from tl_hf.run.metrics import base``), never a class from it: evaluate takes
the first ``EvaluationModule`` subclass in a script's namespace as the metric.
"""

from __future__ import annotations

import datasets
import evaluate

from tl_hf.run.metrics import classification, regression

__all__ = ["CLASS_ID_FEATURES", "RegressionMetric", "ScoreMetric", "metric_info"]

#: predictions and references as class ids (the classification modules' inputs)
CLASS_ID_FEATURES = datasets.Features({"predictions": datasets.Value("int64"),
                                       "references": datasets.Value("int64")})

_CITATION = "tl_hf (https://github.com/tl-hf/tl_hf); scikit-learn semantics (Pedregosa et al., JMLR 12, 2011)"


def metric_info(description: str, inputs: str, features=CLASS_ID_FEATURES, **kwargs) -> evaluate.MetricInfo:
    """The ``MetricInfo`` of a packaged module (shared citation and reference)."""
    return evaluate.MetricInfo(description=description, citation=_CITATION, inputs_description=inputs,
                               features=features, reference_urls=["https://scikit-learn.org/stable/modules/"
                                                                  "model_evaluation.html"], **kwargs)


_SCORE_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    average (str or None): 'binary' (default: the pos_label class, at most 2 classes), 'micro', 'macro', 'weighted'
        (by support) or None (a list, one score per class present, in class-id order).
    pos_label (int): the positive class for average='binary' (default 1).
Returns:
    {NAME}: a float, or a list of floats for average=None.
"""


class ScoreMetric(evaluate.Metric):
    """Precision, recall or F1 (``NAME``) with scikit-learn's ``average`` semantics (evaluate's defaults)."""

    NAME = ""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(f"{self.NAME} of single-label classification (tl_hf, numpy).",
                           _SCORE_INPUTS.replace("{NAME}", self.NAME))

    def _compute(self, predictions, references, average: str | None = "binary", pos_label: int = 1):
        scores = classification.class_scores(predictions, references, average=average, pos_label=pos_label)
        return {self.NAME: scores[self.NAME]}


_REGRESSION_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores.
Returns:
    {NAME}: {RANGE}
"""


class RegressionMetric(evaluate.Metric):
    """One regression score (``NAME``) of float predictions: :mod:`tl_hf.run.metrics.regression` computes it."""

    NAME = ""
    #: what the score is, for the description
    WHAT = ""
    #: the range line of the inputs description
    RANGE = ""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(f"{self.WHAT} (tl_hf, numpy).",
                           _REGRESSION_INPUTS.replace("{NAME}", self.NAME).replace("{RANGE}", self.RANGE),
                           features=regression.score_features())

    def _compute(self, predictions, references):
        return {self.NAME: getattr(regression, self.NAME)(predictions, references)}
