"""Continual learning: train one model on tasks T1..Tn in order and measure forgetting.

* :class:`~tl_hf.continual.tasks.Task` and :class:`ContinualRunner` (or :func:`run_continual`): trains with :class:`~tl_hf.TransferTrainer`
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
  named (:class:`~tl_hf.core.state.CorruptStateError`). The state files live in :mod:`tl_hf.continual.resume`.
* Metrics and the plot: :mod:`tl_hf.continual.metrics`; the Split-MNIST model and tasks: :mod:`tl_hf.continual.models`,
  :func:`~tl_hf.continual.tasks.split_mnist_tasks`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch

from tl_hf.continual.metrics import ACCURACY_MATRIX_DEFINITIONS, accuracy_matrix_metrics, plot_accuracy_matrix
from tl_hf.continual.resume import ResumableRun
from tl_hf.continual.tasks import (ContinualResult, Scenario, Task, check_label_sets, check_scenario, task_dir_name,
                                   task_labels, task_slug)
from tl_hf.core.device import has_accelerator
from tl_hf.core.progress import progress_bar, progress_bars
from tl_hf.core.state import atomic_write_json
from tl_hf.regularizers import Regularizer, build_regularizer
from tl_hf.regularizers.replay import Replay, check_replay_budget, check_replay_scenario

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["ContinualRunner", "run_continual"]

_DEFAULT_ARGS = dict(report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
_DEFAULT_HEAD = [r"(?:^|\.)classifier\."]


class ContinualRunner(ResumableRun):
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
            ``data_collator``, ``averaging``, ``reinit``...). Per task: ``reinit`` (re-initialise the top blocks)
            applies before the **first** task only (before a later task it would erase what the earlier ones
            learned); ``averaging`` (EMA / SWA) restarts at every task from the weights the task starts with; with
            ``final_average`` (default) the average is the model after the task (what the regularizers' ``end_task``,
            the evaluation and the next task see), otherwise the raw weights carry on and the evaluation (through
            ``Trainer.predict``) runs on the average when ``eval_with_average``.
        layer_map: shortcut for ``trainer_kwargs["layer_map"]`` (rules for a model without a built-in map).
        head_patterns: regexes of the head's parameter names (task-incremental), default ``classifier.``.
        num_labels: the head's output size; default ``model.config.num_labels``, else the out-size of the head.
        data_collator: for evaluation, the Fisher pass and the Trainer (default ``default_data_collator``).
        eval_batch_size: batch size of the accuracy evaluation (``Trainer.predict``, per device), unless the training
            arguments set ``per_device_eval_batch_size``.
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
        check_scenario(scenario)
        self.model = model
        self.tasks = list(tasks)
        self.scenario = scenario
        self.output_dir = os.fspath(output_dir)
        self.training_args = training_args or {}
        self.trainer_kwargs = self._checked_trainer_kwargs(trainer_kwargs, layer_map)
        if plot:
            try:
                import matplotlib  # noqa: F401  (checked now rather than after training)
            except ImportError as exc:
                raise ImportError("plot=True writes accuracy_matrix.png with matplotlib: pip install matplotlib, or "
                                  "pass plot=False") from exc
        self.data_collator = self._default_collator(data_collator)
        self.eval_batch_size = eval_batch_size
        self.save_regularizer_state = save_regularizer_state
        self.plot = plot
        self.head_patterns = list(head_patterns) if head_patterns is not None else list(_DEFAULT_HEAD)
        self._head_rx = [re.compile(p) for p in self.head_patterns]
        self.task_labels = task_labels(self.tasks)
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
        self._trainer = None  # the last task's trainer: evaluation (Trainer.predict) and the trackers (report_to)

    # -- validation -----------------------------------------------------------------------------------------------
    @staticmethod
    def _checked_trainer_kwargs(trainer_kwargs: Mapping | None, layer_map) -> dict:
        kwargs = dict(trainer_kwargs or {})
        for k in ("model", "args", "train_dataset", "regularizers"):
            if k in kwargs:
                raise ValueError(f"trainer_kwargs may not set {k!r}: the runner sets it for every task")
        if layer_map is not None:
            if kwargs.get("layer_map") is not None:
                raise ValueError("give the layer map once: layer_map=... or trainer_kwargs['layer_map']")
            kwargs["layer_map"] = layer_map
        return kwargs

    def _default_collator(self, data_collator):
        if data_collator is None:
            data_collator = self.trainer_kwargs.get("data_collator")
        if data_collator is None:
            from transformers import default_data_collator

            data_collator = default_data_collator
        return data_collator

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
        if self.scenario == "task_incremental" and not self._head_params():
            raise ValueError(f"task_incremental keeps one head per task, but no parameter of "
                             f"{type(self.model).__name__} matches head_patterns={self.head_patterns}; pass the "
                             "regexes of the classifier's parameters as head_patterns=[...]")
        check_label_sets(self.scenario, [t.name for t in self.tasks], self.task_labels, self.num_labels)

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
                check_replay_scenario(self.scenario)
                n1 = len(self.tasks[0].train)
                check_replay_budget(r.config.budget, n1, f"the data available to fill it: task "
                                    f"{self.tasks[0].name!r} has {n1} training examples")
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
        kw = {**_DEFAULT_ARGS, "per_device_eval_batch_size": self.eval_batch_size, **dict(kw)}
        if "use_cpu" not in kw:  # CPU-only machine: use_cpu=True (it is also what enables DDP over gloo there)
            kw["use_cpu"] = not has_accelerator()
        kw["output_dir"] = os.path.join(self.output_dir, task_dir_name(k, task.name))
        return TrainingArguments(**kw)

    def run(self) -> ContinualResult:
        """Train every task in order (with ``state_dir``: only those after the last finished one, see
        :meth:`restore`) and return the accuracy matrix and its metrics."""
        n = len(self.tasks)
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
            args = self._args_for(k, self.tasks[k])
            train_metrics.append(self._train_task(k, args))
            with progress_bars(not args.disable_tqdm):
                self._end_task(k, args)
                R[k][: k + 1] = self._evaluate_seen(k)
            self._log_row(k, R)
            if self.state_dir is not None and args.should_save:
                self._save_state(k, R, train_metrics)
            if self.on_task_end is not None:
                self.on_task_end(k + 1)
        return self._write_outputs(R, train_metrics)

    def _train_task(self, k: int, args) -> dict[str, float]:
        """Train task ``k`` (0-based) from the model's own trainability, with the active regularizers; its metrics."""
        from tl_hf.core.trainer import TransferTrainer

        task, n = self.tasks[k], len(self.tasks)
        self._use_task_head(k)
        for pname, param in self.model.named_parameters():
            param.requires_grad_(self._initial_trainable.get(pname, param.requires_grad))
        active = [r for r in self.regularizers if r.active]
        logger.info("task %d/%d %r (%s): %d train examples, regularizers %s", k + 1, n, task.name, self.scenario,
                    len(task.train), [r.name for r in active])
        kwargs = dict(self.trainer_kwargs)
        kwargs.setdefault("data_collator", self.data_collator)
        if k > 0:
            kwargs.pop("reinit", None)  # the top blocks are re-initialised before the first task only
        resume = self._task_checkpoint(args.output_dir) if self.state_dir is not None else None
        if resume is not None:
            logger.info("task %d/%d %r: resuming from its checkpoint %s", k + 1, n, task.name, resume)
        extra = list(self.task_callbacks(k + 1) or []) if self.task_callbacks is not None else []
        if extra:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + extra
        trainer = TransferTrainer(self.model, args, train_dataset=task.train, regularizers=active, **kwargs)
        out = trainer.train(resume_from_checkpoint=resume)
        self.model, self._trainer = trainer.model, trainer
        return {key: float(v) for key, v in out.metrics.items() if isinstance(v, (int, float))}

    def _end_task(self, k: int, args) -> None:
        """Keep task ``k``'s head (task-incremental) and let every regularizer consolidate it."""
        task = self.tasks[k]
        if self.scenario == "task_incremental":
            self.heads[task.name] = self._get_head()
        for r in self.regularizers:
            r.end_task(self.model, task.train, collate_fn=self.data_collator, source=task.name)
            if self.save_regularizer_state:
                r.save(os.path.join(args.output_dir, "regularizers"), prefix=f"tl_hf_reg_{r.name}")

    def _evaluate_seen(self, k: int) -> list[float]:
        """Accuracy on tasks ``0..k`` after training task ``k`` (row ``k`` of ``R``), each with its own head."""
        row = []
        for j in progress_bar(range(k + 1), desc=f"evaluating after task {k + 1}", unit="task"):
            self._use_task_head(j)
            allowed = self.task_labels[j] if self.scenario == "task_incremental" else None
            row.append(self.evaluate(self.tasks[j].eval, allowed))
        self._use_task_head(k)
        names = [t.name for t in self.tasks]
        logger.info("after task %d: %s", k + 1, " ".join(f"acc[{names[j]}]={row[j]:.2f}" for j in range(k + 1)))
        return row

    def _log_row(self, k: int, R) -> None:
        """Row ``k`` of ``R`` and ACC / BWT over the tasks so far, to the task's trackers (``report_to``) as
        ``eval/continual/accuracy/<task>``, ``eval/continual/ACC``, ``eval/continual/BWT``."""
        if self._trainer is None:
            return
        names = [t.name for t in self.tasks]
        logs = {f"eval_continual/accuracy/{names[j]}": float(R[k][j]) for j in range(k + 1)}
        m = accuracy_matrix_metrics([row[: k + 1] for row in R[: k + 1]])
        logs.update({f"eval_continual/{key}": float(m[key]) for key in ("ACC", "BWT", "avg_forgetting")
                     if m[key] is not None})
        self._trainer.log(logs)

    def _write_outputs(self, R, train_metrics) -> ContinualResult:
        """The metrics, per-task heads, ``accuracy_matrix.png`` and ``accuracy_matrix.json``."""
        names = [t.name for t in self.tasks]
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
                          os.path.join(hdir, f"{task_slug(name)}.safetensors"))
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

    def evaluate(self, dataset, allowed: Sequence[int] | None = None) -> float:
        """Accuracy of the model (as it is now: the caller swaps the head in) on ``dataset``. ``allowed``: the only
        outputs a prediction may pick (task-incremental: the task's own labels, since its head may be wider).

        Runs ``Trainer.predict`` of the last task's trainer: its device, precision (bf16/fp16) and, under several
        processes, each rank predicting its share and the logits gathered. Every process must call it."""
        import numpy as np

        out = self._predictor().predict(dataset)
        logits = out.predictions[0] if isinstance(out.predictions, (tuple, list)) else out.predictions
        labels = out.label_ids
        if labels is None:
            raise ValueError("continual evaluation needs a 'labels' column in every eval set (Trainer.predict "
                             "returned no label_ids)")
        logits = np.asarray(logits, dtype=np.float64)
        if allowed is not None:
            blocked = np.ones(logits.shape[-1], dtype=bool)
            blocked[list(allowed)] = False
            logits[..., blocked] = -np.inf
        labels = np.asarray(labels).reshape(-1)
        return float((logits.argmax(-1).reshape(-1) == labels).sum()) / labels.size

    def _predictor(self):
        """The trainer that predicts: the last task's, else (no task trained in this process) a plain Trainer with
        the runner's arguments."""
        if self._trainer is not None and self._trainer.model is self.model:
            return self._trainer
        from transformers import Trainer

        k = len(self.tasks) - 1
        return Trainer(self.model, self._args_for(k, self.tasks[k]), data_collator=self.data_collator)


def run_continual(model, tasks: Sequence[Task], **kwargs) -> ContinualResult:
    """``ContinualRunner(model, tasks, **kwargs).run()``."""
    return ContinualRunner(model, tasks, **kwargs).run()
