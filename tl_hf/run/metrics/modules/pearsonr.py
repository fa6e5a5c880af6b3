"""Pearson's correlation r of predicted and true scores: tl_hf's packaged evaluate module for
regression (scipy.stats.pearsonr semantics)."""

import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import regression

_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores.
Returns:
    pearsonr: a float in [-1, 1]; NaN when either side is constant.
"""


class Pearsonr(evaluate.Metric):
    def _info(self):
        return base.metric_info(f"{__doc__.split(':')[0]} (tl_hf, numpy).",
                                _INPUTS, features=regression.score_features())

    def _compute(self, predictions, references):
        return {"pearsonr": regression.pearsonr(predictions, references)}
