"""Confusion matrix ``m[true][pred]`` of single-label classification (tl_hf's packaged evaluate module)."""

import evaluate
import numpy as np

from tl_hf.run.metrics import base
from tl_hf.run.metrics import classification

_INPUTS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): the classes of the rows and columns, in this order. Default: the classes present
        in references or predictions, sorted (scikit-learn's default).
Returns:
    confusion_matrix: a list of rows; row i counts the examples of class labels[i] by predicted class.
"""


class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return base.metric_info("Confusion matrix of single-label classification (tl_hf, numpy).", _INPUTS)

    def _compute(self, predictions, references, labels=None):
        preds, refs = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        classes = np.union1d(refs, preds) if labels is None else np.asarray(labels, dtype=np.int64)
        if classes.size == 0:
            return {"confusion_matrix": []}
        if classes.min() < 0:
            raise ValueError(f"labels must be class ids >= 0, got {classes.tolist()}")
        size = int(max(classes.max(), preds.max(initial=-1), refs.max(initial=-1))) + 1
        m = classification.confusion_matrix(preds, refs, size)
        return {"confusion_matrix": m[np.ix_(classes, classes)].tolist()}
