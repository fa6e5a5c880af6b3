"""Accuracy-matrix metrics of a continual run (ACC, BWT, forgetting) and its heatmap.

The same rules ship as an evaluate module, ``forgetting`` (tl_hf/run/metrics/modules/forgetting.py, which calls
:func:`accuracy_matrix_metrics`): ``evaluate.load(tl_hf.run.metrics.local_metric_path("forgetting"))`` offline.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["ACCURACY_MATRIX_DEFINITIONS", "accuracy_matrix_metrics", "plot_accuracy_matrix"]

#: the exact definitions, also written into ``accuracy_matrix.json`` (0-based task indices, n tasks)
ACCURACY_MATRIX_DEFINITIONS = {
    "R": "R[i][j] = accuracy on the eval set of task j after training on tasks 0..i (only j <= i is measured)",
    "ACC": "ACC = 1/n * sum_{j=0}^{n-1} R[n-1][j]  (Lopez-Paz & Ranzato 2017, https://arxiv.org/abs/1706.08840)",
    "BWT": "BWT = 1/(n-1) * sum_{j=0}^{n-2} (R[n-1][j] - R[j][j])  (Lopez-Paz & Ranzato 2017; negative = "
           "forgetting; undefined (null) for n = 1)",
    "forgetting": "f_j = max_{j <= i <= n-2} R[i][j] - R[n-1][j] for j < n-1 (Chaudhry et al. 2018, "
                  "https://arxiv.org/abs/1801.10112; entries with i < j are not used, the task was not trained yet; "
                  "negative when the final accuracy beats every earlier one)",
    "avg_forgetting": "1/(n-1) * sum_{j=0}^{n-2} f_j (null for n = 1)",
}


def _as_matrix(R) -> np.ndarray:
    """``R`` as a float n x n array, upper triangle set to NaN; checks shape and the lower triangle."""
    rows = [list(r) for r in R]
    n = len(rows)
    if n == 0:
        raise ValueError("accuracy matrix is empty")
    if any(len(r) != n for r in rows):
        raise ValueError(f"accuracy matrix must be n x n (R[i][j] = accuracy on task j after task i); got row "
                         f"lengths {[len(r) for r in rows]}")
    a = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1):
            v = rows[i][j]
            if v is None or not math.isfinite(float(v)):
                raise ValueError(f"accuracy matrix entry R[{i}][{j}] (task {j} after task {i}) must be a finite "
                                 f"number, got {v!r}")
            a[i, j] = float(v)
    return a


def accuracy_matrix_metrics(R) -> dict[str, Any]:
    """Average accuracy, backward transfer and forgetting of an accuracy matrix.

    ``R[i][j]`` is the accuracy on task ``j`` after training task ``i`` (0-based, ``n`` tasks, ``n x n``; only the
    lower triangle ``j <= i`` is used, the upper triangle may hold anything, e.g. ``None``):

    * ``ACC = 1/n Σ_{j=0}^{n-1} R[n-1][j]``: mean accuracy over all tasks after the last one
      (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning", https://arxiv.org/abs/1706.08840).
    * ``BWT = 1/(n-1) Σ_{j=0}^{n-2} (R[n-1][j] − R[j][j])``: backward transfer (Lopez-Paz & Ranzato 2017); negative
      values mean forgetting. ``None`` when ``n = 1``.
    * ``f_j = max_{j ≤ i ≤ n-2} R[i][j] − R[n-1][j]`` for ``j < n-1``: forgetting of task ``j``, the drop from its best
      accuracy before the last task to its final accuracy (Chaudhry et al. 2018, "Riemannian Walk for Incremental
      Learning", https://arxiv.org/abs/1801.10112; rows ``i < j``, before task ``j`` was trained, are not used).
      The final row is not part of the max, so ``f_j < 0`` when task ``j`` ended above its best earlier accuracy.
      ``avg_forgetting = 1/(n-1) Σ_{j<n-1} f_j`` (``None`` when ``n = 1``).

    Returns ``{"ACC", "BWT", "forgetting": [f_0 .. f_{n-2}], "avg_forgetting", "n_tasks"}``.
    """
    a = _as_matrix(R)
    n = a.shape[0]
    acc = float(a[n - 1].mean())
    if n == 1:
        return {"ACC": acc, "BWT": None, "forgetting": [], "avg_forgetting": None, "n_tasks": 1}
    bwt = float(np.mean([a[n - 1, j] - a[j, j] for j in range(n - 1)]))
    forgetting = [float(a[j:n - 1, j].max() - a[n - 1, j]) for j in range(n - 1)]
    return {"ACC": acc, "BWT": bwt, "forgetting": forgetting, "avg_forgetting": float(np.mean(forgetting)),
            "n_tasks": n}


def plot_accuracy_matrix(R, task_names: Sequence[str], path: str | os.PathLike, *, title: str | None = None) -> str:
    """Write a heatmap of the accuracy matrix (rows: after training task i; columns: evaluated on task j) to ``path``
    as a PNG, each measured cell annotated with its value; the unmeasured upper triangle is left blank.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). Returns ``path``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_accuracy_matrix needs matplotlib: pip install matplotlib") from exc
    a = _as_matrix(R)
    n = a.shape[0]
    names = [str(t) for t in task_names]
    if len(names) != n:
        raise ValueError(f"{len(names)} task names for a {n} x {n} accuracy matrix")
    size = max(3.5, 0.9 * n + 2.0)
    fig = Figure(figsize=(size, size * 0.85))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(a), vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    for i in range(n):
        for j in range(i + 1):
            v = a[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="black" if v > 0.6 else "white")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    m = accuracy_matrix_metrics(a.tolist())
    sub = f"ACC={m['ACC']:.3f}" + (f"  BWT={m['BWT']:+.3f}" if m["BWT"] is not None else "")
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=10)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
