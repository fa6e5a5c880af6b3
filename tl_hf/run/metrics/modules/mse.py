"""Mean squared error of predicted and true scores: tl_hf's packaged evaluate module for
regression (sklearn.metrics.mean_squared_error semantics)."""

import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import regression

_INPUTS = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores.
Returns:
    mse: a float >= 0 (0.0 for no examples).
"""


class Mse(evaluate.Metric):
    def _info(self):
        return base.metric_info(f"{__doc__.split(':')[0]} (tl_hf, numpy).",
                                _INPUTS, features=regression.score_features())

    def _compute(self, predictions, references):
        return {"mse": regression.mse(predictions, references)}
