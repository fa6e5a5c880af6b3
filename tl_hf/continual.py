"""Continual learning: train one model on tasks T1..Tn in order and measure forgetting.

* :class:`Task` and :class:`ContinualRunner` (or :func:`run_continual`): trains with :class:`~tl_hf.TransferTrainer`
  on every task in turn, carrying the same forgetting regularizers (:mod:`tl_hf.regularizers`) across tasks, and after
  each task evaluates every task seen so far. The result is the accuracy matrix ``R`` (``R[i][j]`` = accuracy on task
  ``j`` after training task ``i``), written as ``accuracy_matrix.json`` and ``accuracy_matrix.png``.
* Scenarios (van de Ven & Tolias 2019, https://arxiv.org/abs/1904.07734):

  - ``task_incremental``: one head per task. The runner keeps each task's classifier weights apart and swaps the
    right head into the model to train or evaluate a task (the task identity is known at test time). Every new task's
    head starts from the model's head weights as they were before task 1. The backbone is shared; regularizers are
    told to exempt the head parameters (each task's head is stored separately). Replay is refused here: a replayed
    example would go through the current task's head with a label that belongs to its own task's head.
  - ``class_incremental``: one shared head over the union of all tasks' labels; prediction is the argmax over every
    output, with no task identity.
  - ``domain_incremental``: one shared head; every task has the same label set (e.g. "first or second digit").

* :func:`accuracy_matrix_metrics` (ACC, BWT, forgetting) and :func:`plot_accuracy_matrix`.
* :func:`load_mnist_idx` and :func:`split_mnist_tasks`: Split-MNIST built from the local MNIST test set (t10k).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from .regularizers import Regularizer, build_regularizer
from .regularizers.replay import Replay
from .state import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "ACCURACY_MATRIX_DEFINITIONS", "SCENARIOS", "ContinualResult", "ContinualRunner", "Task", "TensorDictDataset",
    "accuracy_matrix_metrics", "load_mnist_idx", "plot_accuracy_matrix", "run_continual", "split_mnist_tasks",
    "MLP_LAYER_MAP", "SmallMLP",
]


#: layer map of :class:`SmallMLP` (it has no ``config.model_type``)
MLP_LAYER_MAP = {r"^embed\.": "embeddings", r"^blocks\.(\d+)\.": "block", r".*": "head"}


class SmallMLP(torch.nn.Module):
    """``784 -> hidden -> hidden -> num_labels`` with ReLU for Split-MNIST: ``embed`` (depth 0), ``blocks.0``,
    ``classifier`` (the head the task-incremental runner swaps). ``forward(pixel_values, labels=None)`` returns
    ``{"logits", "loss"}``. Use :data:`MLP_LAYER_MAP` as its layer map."""

    def __init__(self, num_labels: int, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Linear(28 * 28, hidden)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(hidden, hidden)])
        self.classifier = torch.nn.Linear(hidden, num_labels)

    def forward(self, pixel_values, labels=None):
        h = torch.relu(self.embed(pixel_values.flatten(1)))
        for b in self.blocks:
            h = torch.relu(b(h))
        logits = self.classifier(h)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out

SCENARIOS = ("task_incremental", "class_incremental", "domain_incremental")
Scenario = Literal["task_incremental", "class_incremental", "domain_incremental"]

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


# ---------------------------------------------------------------------------------------------------------------------
# Metrics and plot
# ---------------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------------
# Tasks and the runner
# ---------------------------------------------------------------------------------------------------------------------

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


class TensorDictDataset(torch.utils.data.Dataset):
    """Columns of equal-length tensors -> dict examples (``{"pixel_values": ..., "labels": ...}``)."""

    def __init__(self, **columns: torch.Tensor) -> None:
        lens = {k: len(v) for k, v in columns.items()}
        if len(set(lens.values())) != 1:
            raise ValueError(f"columns of different lengths: {lens}")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


_DEFAULT_ARGS = dict(use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
_DEFAULT_HEAD = [r"(?:^|\.)classifier\."]


class ContinualRunner:
    """Train ``model`` on ``tasks`` in order with :class:`~tl_hf.TransferTrainer`, measuring forgetting.

    Args:
        model: any classification model whose forward takes the dataset's columns and returns ``loss`` (with
            ``labels``) and ``logits`` [batch, classes] (a ``transformers`` model, or an ``nn.Module`` returning a dict
            or a tuple ``(loss, logits)``; pass ``trainer_kwargs={"layer_map": {...}}`` for a model without a
            built-in layer map, or ``layer_map=...``).
        tasks: the :class:`Task` sequence.
        scenario: ``task_incremental``, ``class_incremental`` or ``domain_incremental`` (see module docstring).
        output_dir: per-task Trainer folders ``task<k>_<name>/``, ``accuracy_matrix.json`` / ``.png``, per-task heads.
        regularizers: regularizer specs (``{"name": "ewc", "lambda": 100}``...) or instances. One object per spec is
            built once and carried across tasks. A regularizer joins the training of a task as soon as it is
            ``active`` (EWC / online EWC after a Fisher exists, i.e. from task 2; replay once its memory holds task 1;
            L2-SP from task 1). After each task every regularizer gets ``end_task(model, task.train, ...)``.
        training_args: ``TrainingArguments`` keywords for every task (``output_dir`` is set per task), or a callable
            ``(task_index, task) -> dict``. Defaults: ``use_cpu=True, report_to="none", save_strategy="no"``.
        trainer_kwargs: passed to every :class:`~tl_hf.TransferTrainer` (``llrd``, ``freezing``, ``layer_map``,
            ``data_collator``...).
        layer_map: shortcut for ``trainer_kwargs["layer_map"]`` (rules for a model without a built-in map).
        head_patterns: regexes of the head's parameter names (task-incremental), default ``classifier.``.
        num_labels: the head's output size; default ``model.config.num_labels``, else the out-size of the head.
        data_collator: for evaluation, the Fisher pass and the Trainer (default ``default_data_collator``).
        eval_batch_size: batch size of the accuracy evaluation.
        save_regularizer_state: also write every regularizer's state after each task (``<task dir>/regularizers``).
        plot: write ``accuracy_matrix.png`` (needs matplotlib).

    Everything that can be checked before training is checked in the constructor: label sets against the scenario and
    the head size, replay budget against the size of task 1's training set, head exemptions of the regularizers.
    """

    def __init__(self, model: torch.nn.Module, tasks: Sequence[Task], *, scenario: Scenario, output_dir: str,
                 regularizers: Sequence[Mapping | Regularizer] | None = None,
                 training_args: Mapping | Callable[[int, Task], Mapping] | None = None,
                 trainer_kwargs: Mapping | None = None, layer_map=None, head_patterns: Sequence[str] | None = None,
                 num_labels: int | None = None, data_collator=None, eval_batch_size: int = 256,
                 save_regularizer_state: bool = False, plot: bool = True) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown continual-learning scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
        self.model = model
        self.tasks = list(tasks)
        self.scenario = scenario
        self.output_dir = os.fspath(output_dir)
        self.training_args = training_args or {}
        self.trainer_kwargs = dict(trainer_kwargs or {})
        for k in ("model", "args", "train_dataset", "regularizers"):
            if k in self.trainer_kwargs:
                raise ValueError(f"trainer_kwargs may not set {k!r}: the runner sets it for every task")
        if layer_map is not None:
            if self.trainer_kwargs.get("layer_map") is not None:
                raise ValueError("give the layer map once: layer_map=... or trainer_kwargs['layer_map']")
            self.trainer_kwargs["layer_map"] = layer_map
        if plot:
            try:
                import matplotlib  # noqa: F401  (checked now rather than after training)
            except ImportError as exc:
                raise ImportError("plot=True writes accuracy_matrix.png with matplotlib: pip install matplotlib, or "
                                  "pass plot=False") from exc
        if data_collator is None:
            data_collator = self.trainer_kwargs.get("data_collator")
        if data_collator is None:
            from transformers import default_data_collator

            data_collator = default_data_collator
        self.data_collator = data_collator
        self.eval_batch_size = eval_batch_size
        self.save_regularizer_state = save_regularizer_state
        self.plot = plot
        self.head_patterns = list(head_patterns) if head_patterns is not None else list(_DEFAULT_HEAD)
        self._head_rx = [re.compile(p) for p in self.head_patterns]
        self.task_labels = self._validate_tasks()
        self.num_labels = self._num_labels(num_labels)
        self._validate_labels()
        self.regularizers = self._build_regularizers(regularizers or [])
        self.heads: dict[str, dict[str, torch.Tensor]] = {}
        self._initial_head = self._get_head() if scenario == "task_incremental" else {}

    # -- validation -----------------------------------------------------------------------------------------------
    def _validate_tasks(self) -> list[list[int]]:
        if not self.tasks:
            raise ValueError("a continual run needs at least one task")
        for k, t in enumerate(self.tasks):
            if not isinstance(t, Task):
                raise TypeError(f"tasks[{k}] must be a tl_hf.continual.Task, got {type(t).__name__}")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique, {dup} appear more than once")
        out = []
        for t in self.tasks:
            for split in ("train", "eval"):
                ds = getattr(t, split)
                if ds is None or len(ds) == 0:
                    raise ValueError(f"task {t.name!r} has an empty {split} dataset")
            seen = set()
            for split in ("train", "eval"):
                seen |= _dataset_labels(getattr(t, split), f"task {t.name!r} {split}")
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
            out.append(labels)
        return out

    def _head_params(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters() if any(r.search(n) for r in self._head_rx)]

    def _num_labels(self, given: int | None) -> int:
        if given is not None:
            return int(given)
        from .layers import unwrap_model_config

        cfg = unwrap_model_config(self.model)
        n = getattr(cfg, "num_labels", None)
        if n is not None:
            return int(n)
        params = dict(self.model.named_parameters())
        mats = [params[n] for n in self._head_params() if params[n].ndim == 2]
        if mats:
            return int(mats[-1].shape[0])
        raise ValueError(f"cannot tell the head size of {type(self.model).__name__}: it has no config.num_labels and "
                         f"no 2-D parameter matches head_patterns={self.head_patterns}; pass num_labels=... (and "
                         "head_patterns=[...] for the task-incremental scenario)")

    def _validate_labels(self) -> None:
        n, sc = self.num_labels, self.scenario
        names = [t.name for t in self.tasks]
        if sc == "task_incremental":
            if not self._head_params():
                raise ValueError(f"task_incremental keeps one head per task, but no parameter of "
                                 f"{type(self.model).__name__} matches head_patterns={self.head_patterns}; pass the "
                                 "regexes of the classifier's parameters as head_patterns=[...]")
            for name, labels in zip(names, self.task_labels):
                if labels and max(labels) >= n:
                    raise ValueError(f"task_incremental: task {name!r} uses labels {labels}, but each task's head has "
                                     f"{n} outputs (labels must be in 0..{n - 1}); relabel the task's classes as "
                                     f"0..k-1 within the task or build the model with num_labels >= {max(labels) + 1}")
            return
        union = sorted(set().union(*map(set, self.task_labels)))
        if sc == "domain_incremental":
            first = self.task_labels[0]
            for name, labels in zip(names[1:], self.task_labels[1:]):
                if set(labels) != set(first):
                    raise ValueError(f"domain_incremental: every task must share one label set, but task "
                                     f"{names[0]!r} has labels {first} and task {name!r} has {labels}")
        for name, labels in zip(names, self.task_labels):
            over = [v for v in labels if v >= n]
            if over:
                raise ValueError(f"{sc}: task {name!r} uses labels {labels}, but the shared head has num_labels={n} "
                                 f"(labels must be in 0..{n - 1}); the union of all tasks' labels is {union} "
                                 f"({len(union)} classes): build the model with num_labels >= {max(union) + 1}")
        if sc == "class_incremental":
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    common = sorted(set(self.task_labels[a]) & set(self.task_labels[b]))
                    if common:
                        logger.warning("class_incremental: tasks %r and %r share labels %s (class-incremental tasks "
                                       "usually have disjoint classes)", names[a], names[b], common)

    def _build_regularizers(self, specs) -> list[Regularizer]:
        regs: list[Regularizer] = []
        head = self._head_params() if self.scenario == "task_incremental" else []
        for spec in specs:
            if isinstance(spec, Mapping):
                spec = dict(spec)
                if head:
                    exempt = list(spec.get("exempt", []))
                    spec["exempt"] = exempt + [p for p in self.head_patterns if p not in exempt]
                r = build_regularizer(spec)
            elif isinstance(spec, Regularizer):
                r = spec
                missing = [n for n in head if not r.is_exempt(n)]
                if missing:
                    raise ValueError(f"task_incremental: regularizer {r.name!r} does not exempt the head parameters "
                                     f"{missing[:3]}, which are swapped per task; build it with "
                                     f"exempt={self.head_patterns} or pass it as a dict spec (exempted automatically)")
            else:
                raise TypeError(f"a regularizer is a dict spec or a Regularizer, got {type(spec).__name__}")
            regs.append(r)
        names = [r.name for r in regs]
        if len(set(names)) != len(names):
            raise ValueError(f"each regularizer may be given once, got {names}")
        for r in regs:
            if isinstance(r, Replay):
                if self.scenario == "task_incremental":
                    raise ValueError(
                        "replay is not supported in the task_incremental scenario: the runner swaps one head per task "
                        "into the model, so replayed examples of earlier tasks would be trained through the current "
                        "task's head with labels that belong to their own head. Use replay with class_incremental or "
                        "domain_incremental (one shared head)")
                n1 = len(self.tasks[0].train)
                if r.config.budget > n1:
                    raise ValueError(f"replay budget {r.config.budget} is larger than the data available to fill it: "
                                     f"task {self.tasks[0].name!r} has {n1} training examples; lower the replay "
                                     f"budget to at most {n1}")
        return regs

    # -- heads (task-incremental) ---------------------------------------------------------------------------------
    def _get_head(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().clone() for n in self._head_params()}

    @torch.no_grad()
    def _set_head(self, head: Mapping[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        for n, t in head.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))

    def _use_task_head(self, k: int) -> None:
        if self.scenario == "task_incremental":
            self._set_head(self.heads.get(self.tasks[k].name, self._initial_head))

    # -- run ------------------------------------------------------------------------------------------------------
    def _args_for(self, k: int, task: Task):
        from transformers import TrainingArguments

        kw = self.training_args(k, task) if callable(self.training_args) else self.training_args
        kw = {**_DEFAULT_ARGS, **dict(kw)}
        kw["output_dir"] = os.path.join(self.output_dir, _task_dir(k, task.name))
        return TrainingArguments(**kw)

    def run(self) -> ContinualResult:
        from .trainer import TransferTrainer

        n = len(self.tasks)
        names = [t.name for t in self.tasks]
        R: list[list[float | None]] = [[None] * n for _ in range(n)]
        train_metrics: list[dict[str, float]] = []
        os.makedirs(self.output_dir, exist_ok=True)
        for k, task in enumerate(self.tasks):
            self._use_task_head(k)
            active = [r for r in self.regularizers if r.active]
            args = self._args_for(k, task)
            logger.info("task %d/%d %r (%s): %d train examples, regularizers %s", k + 1, n, task.name, self.scenario,
                        len(task.train), [r.name for r in active])
            kwargs = dict(self.trainer_kwargs)
            kwargs.setdefault("data_collator", self.data_collator)
            trainer = TransferTrainer(self.model, args, train_dataset=task.train, regularizers=active, **kwargs)
            out = trainer.train()
            train_metrics.append({k2: float(v) for k2, v in out.metrics.items() if isinstance(v, (int, float))})
            self.model = trainer.model
            del trainer
            if self.scenario == "task_incremental":
                self.heads[task.name] = self._get_head()
            for r in self.regularizers:
                r.end_task(self.model, task.train, collate_fn=self.data_collator, source=task.name)
                if self.save_regularizer_state:
                    r.save(os.path.join(args.output_dir, "regularizers"), prefix=f"tl_hf_reg_{r.name}")
            for j in range(k + 1):
                self._use_task_head(j)
                allowed = self.task_labels[j] if self.scenario == "task_incremental" else None
                R[k][j] = self.evaluate(self.tasks[j].eval, allowed)
            self._use_task_head(k)
            logger.info("after task %d: %s", k + 1, " ".join(f"acc[{names[j]}]={R[k][j]:.2f}" for j in range(k + 1)))
        metrics = accuracy_matrix_metrics(R)
        if metrics["BWT"] is not None:
            logger.info("continual run (%s): ACC=%.4f BWT=%+.4f avg forgetting=%.4f", self.scenario, metrics["ACC"],
                        metrics["BWT"], metrics["avg_forgetting"])
        if self.heads:
            from safetensors.torch import save_file

            hdir = os.path.join(self.output_dir, "heads")
            os.makedirs(hdir, exist_ok=True)
            for name, head in self.heads.items():
                save_file({p: t.contiguous().cpu() for p, t in head.items()},
                          os.path.join(hdir, f"{_slug(name)}.safetensors"))
        png = os.path.join(self.output_dir, "accuracy_matrix.png") if self.plot else None
        if png:
            plot_accuracy_matrix(R, names, png, title=self.scenario)
        doc = {
            "scenario": self.scenario, "task_names": names, "R": R,
            "ACC": metrics["ACC"], "BWT": metrics["BWT"],
            "forgetting": {names[j]: f for j, f in enumerate(metrics["forgetting"])},
            "avg_forgetting": metrics["avg_forgetting"],
            "definitions": ACCURACY_MATRIX_DEFINITIONS,
            "regularizers": [r.name for r in self.regularizers],
            "task_labels": {t.name: labels for t, labels in zip(self.tasks, self.task_labels)},
            "train_metrics": train_metrics,
        }
        json_path = os.path.join(self.output_dir, "accuracy_matrix.json")
        atomic_write_json(json_path, doc)
        return ContinualResult(R=R, task_names=names, scenario=self.scenario, metrics=metrics, json_path=json_path,
                               png_path=png, train_metrics=train_metrics, heads=self.heads)

    @torch.no_grad()
    def evaluate(self, dataset, allowed: Sequence[int] | None = None) -> float:
        """Accuracy of the model (as it is now: the caller swaps the head in) on ``dataset``. ``allowed``: the only
        outputs a prediction may pick (task-incremental: the task's own labels, since its head may be wider)."""
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False,
                                             collate_fn=self.data_collator)
        correct = total = 0
        try:
            for batch in loader:
                labels = batch["labels"]
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
                out = model(**inputs)
                logits = out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else \
                    (out[0] if isinstance(out, (tuple, list)) else out)
                if allowed is not None:
                    mask = torch.full_like(logits, float("-inf"))
                    mask[..., list(allowed)] = 0.0
                    logits = logits + mask
                pred = logits.argmax(-1).cpu()
                correct += int((pred == labels.view(-1)).sum())
                total += labels.numel()
        finally:
            model.train(was_training)
        return correct / total


def run_continual(model, tasks: Sequence[Task], **kwargs) -> ContinualResult:
    """``ContinualRunner(model, tasks, **kwargs).run()``."""
    return ContinualRunner(model, tasks, **kwargs).run()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def _task_dir(k: int, name: str) -> str:
    """``task<k>_<name>`` (just ``task<k>`` when the name is already that)."""
    slug = _slug(name)
    return slug if slug == f"task{k + 1}" else f"task{k + 1}_{slug}"


def _dataset_labels(ds, what: str) -> set[int]:
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


# ---------------------------------------------------------------------------------------------------------------------
# Split-MNIST from the local MNIST test set
# ---------------------------------------------------------------------------------------------------------------------

DATA_ROOT_ENV = "TL_HF_DATA_ROOT"
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _mnist_dir(root: str | os.PathLike | None) -> Path:
    if root is None:
        root = os.environ.get(DATA_ROOT_ENV)
        if not root:
            raise ValueError(f"no data root: pass root=... or set ${DATA_ROOT_ENV} to the folder holding mnist_t10k/")
    root = Path(root)
    for d in (root / "mnist_t10k", root):
        if all((d / f).is_file() for f in MNIST_FILES):
            return d
    raise FileNotFoundError(f"{root} holds neither mnist_t10k/{MNIST_FILES[0]} nor {MNIST_FILES[0]} "
                            f"(expected files: {', '.join(MNIST_FILES)})")


def load_mnist_idx(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images and labels from the gzipped IDX files ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` under ``root/mnist_t10k/`` (or ``root`` itself); ``root`` defaults to
    ``$TL_HF_DATA_ROOT``. Returns ``(images uint8 [N, 28, 28], labels uint8 [N])``; the IDX headers (magic numbers
    2051 / 2049, counts, 28 x 28) are checked."""
    d = _mnist_dir(root)
    with gzip.open(d / MNIST_FILES[0], "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051 or len(raw) != 16 + int(count) * int(rows) * int(cols):
        raise ValueError(f"{d / MNIST_FILES[0]} is not an IDX3 image file of the stated size (magic {magic})")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(int(count), int(rows), int(cols))
    with gzip.open(d / MNIST_FILES[1], "rb") as f:
        raw = f.read()
    magic, lcount = np.frombuffer(raw[:8], dtype=">u4")
    if magic != 2049 or len(raw) != 8 + int(lcount):
        raise ValueError(f"{d / MNIST_FILES[1]} is not an IDX1 label file of the stated size (magic {magic})")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if int(lcount) != int(count):
        raise ValueError(f"{count} images but {lcount} labels in {d}")
    return images, labels


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
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown continual-learning scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
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
