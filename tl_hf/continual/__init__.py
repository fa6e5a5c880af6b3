"""Continual learning: task sequences, the runner, resume, and the accuracy-matrix metrics."""

from tl_hf.continual.metrics import ACCURACY_MATRIX_DEFINITIONS, accuracy_matrix_metrics, plot_accuracy_matrix
from tl_hf.continual.models import MLP_LAYER_MAP, SmallMLP, TensorDictDataset
from tl_hf.continual.resume import ResumeMismatchError, check_state_fingerprint, fingerprint_differences
from tl_hf.continual.runner import ContinualRunner, run_continual
from tl_hf.continual.tasks import SCENARIOS, ContinualResult, Task, split_mnist_tasks

__all__ = [
    "ACCURACY_MATRIX_DEFINITIONS", "MLP_LAYER_MAP", "SCENARIOS", "ContinualResult", "ContinualRunner",
    "ResumeMismatchError", "SmallMLP", "Task", "TensorDictDataset", "accuracy_matrix_metrics",
    "check_state_fingerprint", "fingerprint_differences", "plot_accuracy_matrix", "run_continual", "split_mnist_tasks",
]
