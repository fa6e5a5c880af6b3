"""Tasks of a continual run: :class:`Task`, the scenarios, label checks, and Split-MNIST tasks."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import torch

from tl_hf.continual.models import TensorDictDataset

logger = logging.getLogger(__name__)

__all__ = ["SCENARIOS", "ContinualResult", "Task", "check_label_sets", "check_scenario", "dataset_labels",
           "split_mnist_tasks", "task_dir_name", "task_labels", "task_slug"]

SCENARIOS = ("task_incremental", "class_incremental", "domain_incremental")
Scenario = Literal["task_incremental", "class_incremental", "domain_incremental"]


def check_scenario(scenario: str) -> None:
    """A ``ValueError`` naming the valid scenarios unless ``scenario`` is one of :data:`SCENARIOS`."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown continual-learning scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")


@dataclass
class Task:
    """One task of a sequence.

    Args:
        name: unique name (used in logs, output folders and ``accuracy_matrix.json``).
        train / eval: datasets of dict examples with a ``labels`` entry (torch ``Dataset``, ``datasets.Dataset``, a
            list of dicts...).
        labels: the integer label ids this task uses in its ``labels`` column (``None``: read from the data).
            Task-incremental: ids within the task's own head (``0..k-1``); class-incremental: ids of the shared head.
        class_names: optional human-readable names, one per entry of ``labels``.
    """

    name: str
    train: Any
    eval: Any
    labels: Sequence[int] | None = None
    class_names: Sequence[str] | None = None


@dataclass
class ContinualResult:
    R: list[list[float | None]]
    task_names: list[str]
    scenario: str
    metrics: dict[str, Any]
    json_path: str
    png_path: str | None
    train_metrics: list[dict[str, float]] = field(default_factory=list)
    heads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def task_labels(tasks: Sequence[Task]) -> list[list[int]]:
    """Check ``tasks`` (types, unique names, non-empty splits, declared labels) and return each task's label ids."""
    if not tasks:
        raise ValueError("a continual run needs at least one task")
    for k, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise TypeError(f"tasks[{k}] must be a tl_hf.continual.Task, got {type(t).__name__}")
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task names must be unique, {dup} appear more than once")
    return [_labels_of(t) for t in tasks]


def _labels_of(t: Task) -> list[int]:
    for split in ("train", "eval"):
        ds = getattr(t, split)
        if ds is None or len(ds) == 0:
            raise ValueError(f"task {t.name!r} has an empty {split} dataset")
    seen = set()
    for split in ("train", "eval"):
        seen |= dataset_labels(getattr(t, split), f"task {t.name!r} {split}")
    if t.labels is None:
        labels = sorted(seen)
    else:
        labels = [int(v) for v in t.labels]
        extra = sorted(seen - set(labels))
        if extra:
            raise ValueError(f"task {t.name!r} declares labels {labels} but its data contains labels {extra}")
    if t.class_names is not None and len(t.class_names) != len(labels):
        raise ValueError(f"task {t.name!r}: {len(t.class_names)} class names for {len(labels)} labels")
    bad = [v for v in labels if v < 0]
    if bad:
        raise ValueError(f"task {t.name!r} has negative label ids {bad}")
    return labels


def check_label_sets(scenario: str, names: Sequence[str], labels_per_task: Sequence[Sequence[int]], n: int) -> None:
    """The tasks' label ids against the scenario and the head size ``n`` (``task_incremental``: per-task heads)."""
    if scenario == "task_incremental":
        for name, labels in zip(names, labels_per_task):
            if labels and max(labels) >= n:
                raise ValueError(f"task_incremental: task {name!r} uses labels {labels}, but each task's head has "
                                 f"{n} outputs (labels must be in 0..{n - 1}); relabel the task's classes as "
                                 f"0..k-1 within the task or build the model with num_labels >= {max(labels) + 1}")
        return
    union = sorted(set().union(*map(set, labels_per_task)))
    if scenario == "domain_incremental":
        first = labels_per_task[0]
        for name, labels in zip(names[1:], labels_per_task[1:]):
            if set(labels) != set(first):
                raise ValueError(f"domain_incremental: every task must share one label set, but task "
                                 f"{names[0]!r} has labels {first} and task {name!r} has {labels}")
    for name, labels in zip(names, labels_per_task):
        over = [v for v in labels if v >= n]
        if over:
            raise ValueError(f"{scenario}: task {name!r} uses labels {labels}, but the shared head has num_labels={n} "
                             f"(labels must be in 0..{n - 1}); the union of all tasks' labels is {union} "
                             f"({len(union)} classes): build the model with num_labels >= {max(union) + 1}")
    if scenario == "class_incremental":
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                common = sorted(set(labels_per_task[a]) & set(labels_per_task[b]))
                if common:
                    logger.warning("class_incremental: tasks %r and %r share labels %s (class-incremental tasks "
                                   "usually have disjoint classes)", names[a], names[b], common)


def task_slug(name: str) -> str:
    """``name`` as a file-name part (heads, task folders)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def task_dir_name(k: int, name: str) -> str:
    """``task<k>_<name>`` (just ``task<k>`` when the name is already that)."""
    slug = task_slug(name)
    return slug if slug == f"task{k + 1}" else f"task{k + 1}_{slug}"


def dataset_labels(ds, what: str) -> set[int]:
    """The set of label ids in a dataset's ``labels`` column (fast paths for our tensor datasets and HF datasets)."""
    if isinstance(ds, TensorDictDataset) and "labels" in ds.columns:
        vals = ds.columns["labels"]
    elif hasattr(ds, "column_names") and not callable(ds.column_names):
        if "labels" not in ds.column_names:
            raise ValueError(f"{what} has no 'labels' column (columns: {ds.column_names})")
        vals = ds["labels"]
    else:
        vals = []
        for i in range(len(ds)):
            ex = ds[i]
            if "labels" not in ex:
                raise ValueError(f"{what}: example {i} has no 'labels' entry (keys: {sorted(ex)})")
            vals.append(ex["labels"])
    out = set()
    for v in (vals.reshape(-1).tolist() if isinstance(vals, torch.Tensor) else vals):
        v = v.item() if isinstance(v, (torch.Tensor, np.generic)) else v
        integral = isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, bool) or not integral:
            raise ValueError(f"{what}: labels must be integer class ids, got {v!r}")
        out.add(int(v))
    return out


def split_mnist_tasks(images: np.ndarray, labels: np.ndarray,
                      pairs: Sequence[tuple[int, int]] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)),
                      train_fraction: float = 0.8, seed: int = 0, max_per_task: int | None = None,
                      scenario: Scenario = "task_incremental") -> list[Task]:
    """Split-MNIST: one binary task per digit pair.

    **Non-standard split.** Only the MNIST *test* set (t10k, 10,000 images) is available locally, so each task's
    train and eval sets are both carved out of it: the examples of the pair's two digits are shuffled with ``seed``,
    cut to ``max_per_task`` (train + eval) if given, and the first ``train_fraction`` become the training set, the
    rest the eval set. Numbers are therefore not comparable with results on the standard 60k/10k split.

    Examples are ``{"pixel_values": float32 [1, 28, 28] in [0, 1], "labels": int64}``. Labels: ``0`` / ``1`` for the
    first / second digit of the pair in the ``task_incremental`` and ``domain_incremental`` scenarios, the digit itself
    in ``class_incremental``. Tasks are named ``task1`` .. ``taskN``; ``class_names`` holds the digits.
    """
    check_scenario(scenario)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}")
    rng = np.random.default_rng(seed)
    tasks = []
    for k, pair in enumerate(pairs):
        pair = tuple(int(d) for d in pair)
        if len(set(pair)) != len(pair):
            raise ValueError(f"digit pair {pair} repeats a digit")
        idx = np.flatnonzero(np.isin(labels, pair))
        if len(idx) == 0:
            raise ValueError(f"no example of digits {pair}")
        idx = idx[rng.permutation(len(idx))]
        if max_per_task is not None:
            idx = idx[:max_per_task]
        n_train = int(round(len(idx) * train_fraction))
        if n_train < 1 or n_train >= len(idx):
            raise ValueError(f"task {k + 1} {pair}: {len(idx)} examples cannot be split with "
                             f"train_fraction={train_fraction}")
        x = torch.from_numpy(images[idx].astype(np.float32) / 255.0).unsqueeze(1)
        digits = torch.from_numpy(labels[idx].astype(np.int64))
        if scenario == "class_incremental":
            y, task_labels = digits, list(pair)
        else:
            y = torch.zeros_like(digits)
            for pos, d in enumerate(pair):
                y[digits == d] = pos
            task_labels = list(range(len(pair)))
        tasks.append(Task(name=f"task{k + 1}",
                          train=TensorDictDataset(pixel_values=x[:n_train], labels=y[:n_train]),
                          eval=TensorDictDataset(pixel_values=x[n_train:], labels=y[n_train:]),
                          labels=task_labels, class_names=[str(d) for d in pair]))
    return tasks
