"""Accuracy: the fraction of predictions equal to their reference (tl_hf's packaged evaluate module)."""

import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import classification

_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy: a float in [0, 1] (0.0 for no examples).
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return base.metric_info("Accuracy of single-label classification (tl_hf, numpy).", _INPUTS)

    def _compute(self, predictions, references):
        return {"accuracy": classification.accuracy(predictions, references)}
