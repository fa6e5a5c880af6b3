"""Plots written by every run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["lr_per_group_lines", "plot_confusion_matrix", "plot_learning_curve", "plot_lr_per_group",
           "plot_per_label_f1", "plot_regression_scatter"]


def _figure(width=6.0, height=4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curve(log_history: Sequence[dict], path: str) -> str:
    """Training loss per step and every ``eval_*`` metric per evaluation."""
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if train:
        ax.plot(*zip(*train), label="train loss")
    ev = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if ev:
        ax.plot(*zip(*ev), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    acc = [(h["step"], h["eval_accuracy"]) for h in log_history if "eval_accuracy" in h]
    if acc:
        ax2 = ax.twinx()
        ax2.plot(*zip(*acc), "s--", color="tab:green", label="eval accuracy")
        ax2.set_ylabel("accuracy")
        ax2.legend(loc="lower right")
    if train or ev:
        ax.legend(loc="upper right")
    ax.set_title("learning curve")
    fig.tight_layout()
    fig.savefig(path)
    return path


def lr_per_group_lines(history: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """``{group: [(step, lr), ...]}`` from records with ``step`` and ``lr/<group>`` keys."""
    keys = [k for k in dict.fromkeys(k for h in history for k in h) if k.startswith("lr/")]
    return {k[3:]: [(h["step"], h[k]) for h in history if k in h and "step" in h] for k in keys}


def plot_lr_per_group(history: Sequence[dict], path: str) -> str:
    """Learning rate of every depth group over the steps, from ``TransferTrainer.lr_history`` (every optimizer step,
    warm-up included) or, failing that, the ``lr/<group>`` keys of ``log_history`` (the logging steps only)."""
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    lines = lr_per_group_lines(history)
    for name, pts in lines.items():
        ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate per layer group")
    if lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str) -> str:
    """``matrix[true, pred]`` as an annotated heatmap."""
    m = np.asarray(matrix)
    n = m.shape[0]
    fig = _figure(1.2 + 0.6 * n, 1.0 + 0.55 * n)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n), labels=list(labels)[:n], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(labels)[:n], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = m.max() if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if top and m[i, j] > top / 2 else "black")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_regression_scatter(predictions, references, path: str, *, train_range: tuple[float, float] | None = None,
                            title: str = "") -> str:
    """Predicted vs true score per eval example, with the diagonal and the training labels' range (dashed)."""
    p, y = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    fig = _figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(y, p, s=6, alpha=0.4)
    lo = float(min(p.min(initial=0.0), y.min(initial=0.0)))
    hi = float(max(p.max(initial=1.0), y.max(initial=1.0)))
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="prediction = true")
    if train_range is not None:
        for v in train_range:
            ax.axhline(v, color="tab:red", ls="--", lw=0.8)
        ax.plot([], [], color="tab:red", ls="--", lw=0.8, label="training label range")
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score (unclipped)")
    ax.set_title(title or "eval predictions")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_per_label_f1(labels: Sequence[str], f1: dict[str, Sequence[float]], path: str) -> str:
    """Per-label F1 of a multi-label run as horizontal bars, one bar per split (e.g. ``{"eval": [...], "test":
    [...]}``), labels in label-id order, the macro F1 of each split as a dashed line."""
    n, splits = len(labels), list(f1)
    fig = _figure(7, 1.2 + 0.28 * n)
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(len(splits), 1)
    for k, split in enumerate(splits):
        values = np.asarray(f1[split], dtype=float)
        ax.barh(np.arange(n) + k * height, values, height=height, label=f"{split} (macro {values.mean():.3f})")
        ax.axvline(values.mean(), color=f"C{k}", linestyle="--", linewidth=1)
    ax.set_yticks(np.arange(n) + height * (len(splits) - 1) / 2, labels=list(labels), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title("per-label F1 (threshold tuned on the validation split)")
    if splits:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return path
