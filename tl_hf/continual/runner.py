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

* Resume (``state_dir=``): after every finished task the runner persists everything needed to go on -- the rows of
  ``R`` so far, the train metrics, the model weights, the per-task heads and every regularizer's state -- as
  safetensors + JSON (never pickle) in ``state_dir/after_task<k>/``, written in a temporary folder and renamed, so an
  interruption leaves either the old state or the new one. A new runner with the same ``state_dir`` and the same
  tasks / scenario / regularizers (and ``fingerprint``) continues with task ``k+1``; an interrupted task whose folder
  holds ``checkpoint-*`` folders (``save_strategy="steps"``) resumes from the newest one through the Trainer's own
  ``resume_from_checkpoint``. A different setup is refused (:class:`ResumeMismatchError`), a damaged state file is
  named (:class:`~tl_hf.core.state.CorruptStateError`).
* :func:`accuracy_matrix_metrics` (ACC, BWT, forgetting) and :func:`plot_accuracy_matrix`.
* :func:`load_mnist_idx` and :func:`split_mnist_tasks`: Split-MNIST built from the local MNIST test set (t10k).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from tl_hf.regularizers import Regularizer, build_regularizer
from tl_hf.regularizers.replay import Replay
from tl_hf.core.state import CorruptStateError, atomic_write_json, file_problem

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = [
    "ACCURACY_MATRIX_DEFINITIONS", "SCENARIOS", "ContinualResult", "ContinualRunner",
    "ResumeMismatchError", "Task", "TensorDictDataset", "check_state_fingerprint", "fingerprint_differences",
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


_DEFAULT_ARGS = dict(report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
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
            ``(task_index, task) -> dict``. Defaults: ``report_to="none", save_strategy="no"``, ``use_cpu=True`` on a machine without an
            accelerator.
        trainer_kwargs: passed to every :class:`~tl_hf.TransferTrainer` (``llrd``, ``freezing``, ``layer_map``,
            ``data_collator``...).
        layer_map: shortcut for ``trainer_kwargs["layer_map"]`` (rules for a model without a built-in map).
        head_patterns: regexes of the head's parameter names (task-incremental), default ``classifier.``.
        num_labels: the head's output size; default ``model.config.num_labels``, else the out-size of the head.
        data_collator: for evaluation, the Fisher pass and the Trainer (default ``default_data_collator``).
        eval_batch_size: batch size of the accuracy evaluation.
        save_regularizer_state: also write every regularizer's state after each task (``<task dir>/regularizers``).
        plot: write ``accuracy_matrix.png`` (needs matplotlib).
        state_dir: make the run resumable (see the module docstring): ``run.json`` (what the run is) and, after each
            finished task, ``after_task<k>/`` (``state.json``, ``model.safetensors``, ``heads.safetensors``,
            ``regularizers/``) are written here, and a runner started on the same folder continues after the last
            finished task (:meth:`restore`; ``run`` calls it). ``None`` (default): nothing is persisted.
        fingerprint: JSON-serialisable description of the run (e.g. the config) stored in ``run.json`` and compared on
            resume together with the runner's own (tasks, sizes, labels, scenario, head, regularizer configs); any
            difference is a :class:`ResumeMismatchError` naming it.
        task_callbacks: ``k -> [TrainerCallback, ...]``: extra Trainer callbacks for task ``k`` (1-based).
        on_task_end: ``k -> None``, called after task ``k`` (1-based) is trained, evaluated and its state saved.

    Everything that can be checked before training is checked in the constructor: label sets against the scenario and
    the head size, replay budget against the size of task 1's training set, head exemptions of the regularizers.
    """

    def __init__(self, model: torch.nn.Module, tasks: Sequence[Task], *, scenario: Scenario, output_dir: str,
                 regularizers: Sequence[Mapping | Regularizer] | None = None,
                 training_args: Mapping | Callable[[int, Task], Mapping] | None = None,
                 trainer_kwargs: Mapping | None = None, layer_map=None, head_patterns: Sequence[str] | None = None,
                 num_labels: int | None = None, data_collator=None, eval_batch_size: int = 256,
                 save_regularizer_state: bool = False, plot: bool = True, state_dir: str | None = None,
                 fingerprint: Mapping | None = None,
                 task_callbacks: Callable[[int], list[TrainerCallback]] | None = None,
                 on_task_end: Callable[[int], None] | None = None) -> None:
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
        # every task applies its freezing policy to the model as it was given: a parameter a gradual schedule had not
        # unfrozen by the end of one task must not stay frozen for the next (the new policy would treat it as frozen
        # by someone else, e.g. a PEFT base weight, and never train it)
        self._initial_trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        self.state_dir = os.fspath(state_dir) if state_dir is not None else None
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), default=str)) if fingerprint else None
        self._restored: tuple[int, list, list] | None = None  # (finished tasks, R, train metrics) once restored
        self.task_callbacks = task_callbacks
        self.on_task_end = on_task_end

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
        from tl_hf.core.layers import unwrap_model_config

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
        if "use_cpu" not in kw:  # CPU-only machine: use_cpu=True (it is also what enables DDP over gloo there)
            from tl_hf.run.template import _has_accelerator

            kw["use_cpu"] = not _has_accelerator()
        kw["output_dir"] = os.path.join(self.output_dir, _task_dir(k, task.name))
        return TrainingArguments(**kw)

    def run(self) -> ContinualResult:
        """Train every task in order (with ``state_dir``: only those after the last finished one, see
        :meth:`restore`) and return the accuracy matrix and its metrics."""
        from tl_hf.core.trainer import TransferTrainer

        n = len(self.tasks)
        names = [t.name for t in self.tasks]
        R: list[list[float | None]] = [[None] * n for _ in range(n)]
        train_metrics: list[dict[str, float]] = []
        os.makedirs(self.output_dir, exist_ok=True)
        start = 0
        if self.state_dir is not None:
            start = self.restore()
            _, rows, tm = self._restored
            for i, row in enumerate(rows):
                R[i] = list(row)
            train_metrics = list(tm)
        for k in range(start, n):
            task = self.tasks[k]
            self._use_task_head(k)
            for pname, param in self.model.named_parameters():
                param.requires_grad_(self._initial_trainable.get(pname, param.requires_grad))
            active = [r for r in self.regularizers if r.active]
            args = self._args_for(k, task)
            logger.info("task %d/%d %r (%s): %d train examples, regularizers %s", k + 1, n, task.name, self.scenario,
                        len(task.train), [r.name for r in active])
            kwargs = dict(self.trainer_kwargs)
            kwargs.setdefault("data_collator", self.data_collator)
            resume = self._task_checkpoint(args.output_dir) if self.state_dir is not None else None
            if resume is not None:
                logger.info("task %d/%d %r: resuming from its checkpoint %s", k + 1, n, task.name, resume)
            extra = list(self.task_callbacks(k + 1) or []) if self.task_callbacks is not None else []
            if extra:
                kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + extra
            trainer = TransferTrainer(self.model, args, train_dataset=task.train, regularizers=active, **kwargs)
            out = trainer.train(resume_from_checkpoint=resume)
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
            if self.state_dir is not None and args.should_save:
                self._save_state(k, R, train_metrics)
            if self.on_task_end is not None:
                self.on_task_end(k + 1)
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

    # -- resume ---------------------------------------------------------------------------------------------------
    def own_fingerprint(self) -> dict[str, Any]:
        """What this runner is, for ``run.json``: scenario, head, tasks (names, sizes, labels), regularizer configs."""
        from dataclasses import asdict, is_dataclass

        regs = []
        for r in self.regularizers:
            conf = asdict(r.config) if is_dataclass(r.config) else dict(vars(r.config))
            regs.append({"name": r.name, **conf})
        fp = {"scenario": self.scenario, "num_labels": self.num_labels,
              "head_patterns": self.head_patterns if self.scenario == "task_incremental" else None,
              "tasks": [{"name": t.name, "train_examples": len(t.train), "eval_examples": len(t.eval),
                         "labels": list(labels)} for t, labels in zip(self.tasks, self.task_labels)],
              "regularizers": regs}
        return json.loads(json.dumps(fp, default=str))

    def restore(self) -> int:
        """With ``state_dir``: check that the folder belongs to this run and load the state of the last finished task.

        A fresh folder gets ``run.json`` (the fingerprints) and 0 is returned. Otherwise ``run.json`` must match this
        runner (:class:`ResumeMismatchError` naming the differences) and ``after_task<k>/`` -- model weights, heads,
        regularizer states, rows of ``R`` and train metrics -- is loaded (:class:`~tl_hf.core.state.CorruptStateError`
        naming a damaged file); returns ``k``, the number of finished tasks. :meth:`run` calls it; call it first to
        know where the run starts (e.g. to fill a replay memory only when starting fresh). Loads once.
        """
        if self._restored is not None:
            return self._restored[0]
        if self.state_dir is None:
            raise ValueError("restore() needs a runner built with state_dir=...")
        names = [t.name for t in self.tasks]
        n = len(names)
        fp = {"runner": self.own_fingerprint()}
        if self.fingerprint is not None:
            fp["config"] = self.fingerprint
        run_file = os.path.join(self.state_dir, RUN_FILE)
        main = self._args_for(0, self.tasks[0]).should_save
        if os.path.exists(run_file):
            saved = _read_state_json(run_file, self.output_dir)
            if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT or "fingerprint" not in saved:
                raise CorruptStateError(f"{run_file} is not a tl_hf continual run file (format {STATE_FORMAT}); "
                                        f"{_START_OVER.format(out=self.output_dir)}")
            diffs = fingerprint_differences(saved["fingerprint"], fp)
            if diffs and _has_progress(self.output_dir, self.state_dir):
                raise ResumeMismatchError(_mismatch_message(self.output_dir, diffs))
            if diffs:  # nothing was finished or checkpointed: nothing to mix, start this run instead
                logger.warning("%s: the earlier run (a different setup) finished no task and left no checkpoint; "
                               "starting over", self.output_dir)
                if main:
                    atomic_write_json(run_file, {"format": STATE_FORMAT, "fingerprint": fp, "task_names": names})
        else:
            self._check_no_foreign_checkpoints()
            if main:
                atomic_write_json(run_file, {"format": STATE_FORMAT, "fingerprint": fp, "task_names": names})
        if main:  # leftovers of a save that was interrupted before its rename
            for d in os.listdir(self.state_dir):
                if d.startswith("_tmp_"):
                    shutil.rmtree(os.path.join(self.state_dir, d), ignore_errors=True)
        found = _state_folders(self.state_dir)
        if not found:
            self._restored = (0, [], [])
            return 0
        k, folder = found[-1]
        if k > n:
            raise ResumeMismatchError(f"cannot resume the continual run in {self.output_dir}: {folder} holds the state "
                                      f"after task {k}, but this run has {n} tasks; "
                                      f"{_START_OVER.format(out=self.output_dir)}")
        rows, metrics = self._load_state(folder, k)
        self._restored = (k, rows, metrics)
        logger.info("resuming after task %d/%d (%s) from %s", k, n, names[k - 1], folder)
        return k

    def _load_state(self, folder: str, k: int) -> tuple[list, list]:
        from safetensors.torch import load_file, load_model

        names = [t.name for t in self.tasks]
        _check_state_files(folder, self.output_dir)
        path = os.path.join(folder, STATE_JSON)
        doc = _read_state_json(path, self.output_dir)
        rows = doc.get("R") if isinstance(doc, dict) else None
        if (not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("completed") != k
                or doc.get("task_names") != names or not isinstance(rows, list) or len(rows) != k
                or any(not isinstance(r, list) or len(r) != len(names) for r in rows)
                or len(doc.get("train_metrics", [])) != k):
            raise CorruptStateError(f"{path} does not describe the state after task {k} of tasks {names}; "
                                    f"{_START_OVER.format(out=self.output_dir)}")
        mpath = os.path.join(folder, MODEL_FILE)
        device = next(self.model.parameters()).device
        missing, unexpected = load_model(self.model, mpath, strict=False, device=str(device))
        if missing or unexpected:
            raise ResumeMismatchError(f"cannot resume the continual run in {self.output_dir}: {mpath} does not fit "
                                      f"the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                                      f"{_START_OVER.format(out=self.output_dir)}")
        frozen = set(doc.get("frozen", []))
        for pname, param in self.model.named_parameters():
            param.requires_grad_(pname not in frozen)
        if self.scenario == "task_incremental":
            hpath = os.path.join(folder, HEADS_FILE)
            if not os.path.exists(hpath):
                raise CorruptStateError(f"cannot resume: {hpath} is missing (the per-task heads); "
                                        f"{_START_OVER.format(out=self.output_dir)}")
            t = load_file(hpath)

            def part(prefix):
                return {key[len(prefix):]: v for key, v in t.items() if key.startswith(prefix)}

            initial = part("initial/")
            heads = {names[j]: part(f"task{j}/") for j in range(k)}
            expected = set(self._head_params())
            if set(initial) != expected or any(set(h) != expected for h in heads.values()):
                raise CorruptStateError(f"{hpath} does not hold the head parameters {sorted(expected)} for the initial "
                                        f"head and tasks {names[:k]}; {_START_OVER.format(out=self.output_dir)}")
            self._initial_head, self.heads = initial, heads
        rdir = os.path.join(folder, "regularizers")
        for r in self.regularizers:
            try:
                r.load(rdir, prefix=f"tl_hf_reg_{r.name}")
            except (OSError, ValueError, KeyError) as exc:
                raise CorruptStateError(f"cannot resume: the {r.name} state in {rdir} is missing or damaged "
                                        f"({' '.join(str(exc).split())[:200]}); "
                                        f"{_START_OVER.format(out=self.output_dir)}") from None
        return rows, list(doc["train_metrics"])

    def _save_state(self, k: int, R, train_metrics) -> str:
        """Write ``state_dir/after_task<k+1>/`` (via a temporary folder and a rename) and drop older states."""
        from safetensors.torch import save_file, save_model

        names = [t.name for t in self.tasks]
        os.makedirs(self.state_dir, exist_ok=True)
        final = os.path.join(self.state_dir, f"after_task{k + 1}")
        tmp = os.path.join(self.state_dir, f"_tmp_after_task{k + 1}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        save_model(self.model, os.path.join(tmp, MODEL_FILE), force_contiguous=True)
        if self.scenario == "task_incremental":
            heads = {f"initial/{p}": v for p, v in self._initial_head.items()}
            for j in range(k + 1):
                heads.update({f"task{j}/{p}": v for p, v in self.heads[names[j]].items()})
            save_file({key: v.detach().contiguous().cpu() for key, v in heads.items()}, os.path.join(tmp, HEADS_FILE))
        for r in self.regularizers:
            r.save(os.path.join(tmp, "regularizers"), prefix=f"tl_hf_reg_{r.name}")
        atomic_write_json(os.path.join(tmp, STATE_JSON), {
            "format": STATE_FORMAT, "completed": k + 1, "n_tasks": len(names), "task_names": names,
            "scenario": self.scenario, "R": [list(R[i]) for i in range(k + 1)], "train_metrics": train_metrics,
            "regularizers": [r.name for r in self.regularizers],
            "frozen": sorted(n for n, p in self.model.named_parameters() if not p.requires_grad)})
        _fsync_tree(tmp)
        if os.path.isdir(final):  # an earlier attempt at this task got as far as its rename
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_tree(self.state_dir, files=False)
        for j, old in _state_folders(self.state_dir):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _task_checkpoint(self, task_dir: str) -> str | None:
        """The newest complete ``checkpoint-*`` of an interrupted task (resumed by the Trainer), if any. A checkpoint
        whose save was interrupted (no ``trainer_state.json``, written last) is skipped; a damaged file is an error."""
        if not os.path.isdir(task_dir):
            return None
        from tl_hf.core.state import validate_checkpoint

        found = sorted((int(m.group(1)), d) for d in os.listdir(task_dir)
                       if (m := re.fullmatch(r"checkpoint-(\d+)", d)) and os.path.isdir(os.path.join(task_dir, d)))
        for _, d in reversed(found):
            path = os.path.join(task_dir, d)
            if not os.path.exists(os.path.join(path, "trainer_state.json")):
                logger.warning("%s is incomplete (no trainer_state.json: its save was interrupted); skipping it", path)
                continue
            try:
                validate_checkpoint(path)
            except CorruptStateError as exc:
                why = str(exc).split("; resume from an earlier checkpoint")[0]
                raise CorruptStateError(f"{why}; delete {path} and rerun: the task then resumes from an earlier "
                                        "checkpoint (or from its start)") from None
            return path
        return None

    def _check_no_foreign_checkpoints(self) -> None:
        for k, t in enumerate(self.tasks):
            d = os.path.join(self.output_dir, _task_dir(k, t.name))
            if os.path.isdir(d):
                found = sorted(x for x in os.listdir(d) if x.startswith("checkpoint-"))
                if found:
                    raise ResumeMismatchError(
                        f"{d} holds checkpoints ({', '.join(found[:3])}) but {self.state_dir} has no {RUN_FILE}: they "
                        "were not written by a resumable continual run (or its state was deleted), so resuming from "
                        f"them could mix two runs; {_START_OVER.format(out=self.output_dir)}")


def run_continual(model, tasks: Sequence[Task], **kwargs) -> ContinualResult:
    """``ContinualRunner(model, tasks, **kwargs).run()``."""
    return ContinualRunner(model, tasks, **kwargs).run()


# ---------------------------------------------------------------------------------------------------------------------
# Resume: state files, fingerprints
# ---------------------------------------------------------------------------------------------------------------------

STATE_FORMAT = 1
RUN_FILE = "run.json"
STATE_JSON = "state.json"
MODEL_FILE = "model.safetensors"
HEADS_FILE = "heads.safetensors"
_STATE_DIR = re.compile(r"^after_task(\d+)$")
_START_OVER = "use a fresh training.output_dir, or delete {out} to start over"


class ResumeMismatchError(ValueError):
    """The state in an output folder was written by a different run (tasks, scenario, regularizers, config)."""


def _state_folders(state_dir: str) -> list[tuple[int, str]]:
    """``[(k, folder)]`` of the complete ``after_task<k>`` folders, oldest first."""
    if not os.path.isdir(state_dir):
        return []
    out = []
    for d in os.listdir(state_dir):
        m = _STATE_DIR.match(d)
        if m and os.path.isdir(os.path.join(state_dir, d)):
            out.append((int(m.group(1)), os.path.join(state_dir, d)))
    return sorted(out)


def _read_state_json(path: str, output_dir: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {path} is truncated or corrupt "
                                f"({' '.join(str(exc).split())[:120]}); {_START_OVER.format(out=output_dir)}") from None


def _check_state_files(folder: str, output_dir: str) -> None:
    """Every JSON file parses and every safetensors header reads; else a one-line error naming the file."""
    for dirpath, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            problem = file_problem(path)
            if problem:
                raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {path} is truncated or "
                                        f"corrupt ({problem}); "
                                        f"{_START_OVER.format(out=output_dir)}")
    if not os.path.exists(os.path.join(folder, STATE_JSON)) or not os.path.exists(os.path.join(folder, MODEL_FILE)):
        raise CorruptStateError(f"cannot resume the continual run in {output_dir}: {folder} lacks {STATE_JSON} or "
                                f"{MODEL_FILE}; {_START_OVER.format(out=output_dir)}")


def _fsync_tree(folder: str, files: bool = True) -> None:
    """Flush a freshly written folder (its files, then the folder entry) before it is renamed into place."""
    if files:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for mappings; a list of mappings as the list of their names plus each entry by index
    (``tasks[1].train_examples``); other values as they are."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, Mapping) for v in obj):
        out = {prefix: [v.get("name", i) for i, v in enumerate(obj)]}  # the names (or the length) first
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def fingerprint_differences(saved: Mapping, now: Mapping) -> list[tuple[str, Any, Any]]:
    """``[(key, saved value, current value)]`` where two run fingerprints differ (``"<absent>"`` for a missing key).
    Differences of the ``config`` part come first, and only they are listed when there are any: the runner's own
    part (tasks, sizes, regularizer configs) usually differs as a consequence."""
    a, b = _flatten(dict(saved)), _flatten(dict(now))
    missing = "<absent>"
    diffs = [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b), key=lambda k: (
        not k.startswith("config."), k)) if a.get(k, missing) != b.get(k, missing)]
    # when the names of a list's entries differ (e.g. other regularizers), their fields are not listed one by one
    lists = {k for k, _, _ in diffs}
    diffs = [d for d in diffs if not any(d[0].startswith(k + "[") for k in lists)]
    config = [d for d in diffs if d[0].startswith("config.")]
    return config or diffs


def _short(v: Any) -> str:
    text = v if v == "<absent>" else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _mismatch_message(output_dir: str, diffs: list[tuple[str, Any, Any]]) -> str:
    parts = []
    for key, old, new in diffs[:3]:
        key = key[len("config."):] if key.startswith("config.") else key.replace("runner.", "", 1)
        parts.append(f"{key} was {_short(old)}, now {_short(new)}")
    more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return (f"cannot resume the continual run in {output_dir}: it was started with a different setup "
            f"({'; '.join(parts)}{more}); {_START_OVER.format(out=output_dir)}")


def check_state_fingerprint(state_dir: str, output_dir: str, config: Mapping) -> None:
    """Before any slow step: if ``state_dir/run.json`` exists, its ``config`` fingerprint must equal ``config``
    (:class:`ResumeMismatchError` naming the differences otherwise). :meth:`ContinualRunner.restore` checks it all."""
    path = os.path.join(state_dir, RUN_FILE)
    if not os.path.exists(path):
        return
    saved = _read_state_json(path, output_dir)
    if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), dict):
        raise CorruptStateError(f"{path} is not a tl_hf continual run file; {_START_OVER.format(out=output_dir)}")
    now = json.loads(json.dumps(dict(config), default=str))
    diffs = fingerprint_differences({"config": saved["fingerprint"].get("config", {})}, {"config": now})
    if diffs and _has_progress(output_dir, state_dir):
        raise ResumeMismatchError(_mismatch_message(output_dir, diffs))


def _has_progress(output_dir: str, state_dir: str) -> bool:
    """Whether an earlier run left anything a resume would use: a finished task's state or a task checkpoint."""
    if _state_folders(state_dir):
        return True
    if not os.path.isdir(output_dir):
        return False
    for d in os.listdir(output_dir):
        sub = os.path.join(output_dir, d)
        if os.path.isdir(sub) and os.path.abspath(sub) != os.path.abspath(state_dir):
            if any(x.startswith("checkpoint-") and os.path.isdir(os.path.join(sub, x)) for x in os.listdir(sub)):
                return True
    return False


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
