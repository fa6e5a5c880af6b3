"""Multi-label F1 (micro, macro, example-based), precision, recall and subset accuracy, with per-label scores
(tl_hf's packaged evaluate module; scikit-learn semantics, zero_division=0)."""

import datasets
import evaluate

from tl_hf.run.metrics import base
from tl_hf.run.metrics import multilabel

_INPUTS = """
Args:
    predictions (list of list of int): multi-hot predicted label rows (0/1, one column per label).
    references (list of list of int): multi-hot true label rows, the same shape.
Returns:
    f1_micro, f1_macro, f1_samples, precision_micro, recall_micro, precision_macro, recall_macro, subset_accuracy:
        floats in [0, 1];
    precision, recall, f1 (lists of floats) and support (list of int): per label, in label order.
"""

_FEATURES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                               "references": datasets.Sequence(datasets.Value("int64"))})


class MultilabelF1(evaluate.Metric):
    def _info(self):
        return base.metric_info("Multi-label classification scores (tl_hf, numpy).", _INPUTS, features=_FEATURES)

    def _compute(self, predictions, references):
        return multilabel.multilabel_scores(predictions, references)
