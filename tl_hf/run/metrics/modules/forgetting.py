"""ACC, BWT and forgetting of a continual run from its accuracy matrix (tl_hf's packaged evaluate module, the rules of
:func:`tl_hf.continual.metrics.accuracy_matrix_metrics`)."""

import datasets
import evaluate

from tl_hf.continual import metrics as continual_metrics
from tl_hf.run.metrics import base

_INPUTS = """
Args:
    accuracy_matrix (list of rows of float): row i holds the accuracies on tasks 0..n-1 after training task i
        (R[i][j]); only j <= i is used, so a row may stop after its diagonal entry or hold null above it. Add one
        row per task with add(accuracy_matrix=row), or pass the whole matrix to compute(accuracy_matrix=R).
Returns:
    ACC, BWT (null for 1 task), forgetting (one value per task but the last), avg_forgetting (null for 1 task), n_tasks.
"""

_FEATURES = datasets.Features({"accuracy_matrix": datasets.Sequence(datasets.Value("float64"))})


class Forgetting(evaluate.Metric):
    def _info(self):
        return base.metric_info("ACC / BWT (Lopez-Paz & Ranzato 2017) and forgetting (Chaudhry et al. 2018) of an "
                                "accuracy matrix.", _INPUTS, features=_FEATURES)

    def _compute(self, accuracy_matrix):
        rows = [list(r) for r in accuracy_matrix]
        n = len(rows)
        padded = [r + [None] * (n - len(r)) for r in rows]  # a row may stop at its diagonal entry
        return continual_metrics.accuracy_matrix_metrics(padded)
