"""Continual learning from a config: ``task: continual`` for ``tl-hf run`` and ``recipes/continual.py``.

One model is trained on tasks T1..Tn in order with :class:`~tl_hf.continual.ContinualRunner` (the regularizers of the
``regularizers`` section, LLRD and freezing carried across tasks; the ``training`` section gives every task's
``TrainingArguments``), and after each task every task seen so far is evaluated. Outputs under
``training.output_dir``: ``accuracy_matrix.json`` / ``accuracy_matrix.png`` (from the runner), ``all_results.json``
(ACC, BWT, forgetting, the matrix, per-task numbers), ``run_config.json``, one Trainer folder per task, ``heads/``
(one classifier per task, task-incremental only), ``continual_state/`` (what a resume needs, below) and, with
``model.save_model`` or ``hub.push``, ``model/`` (the final weights and a ``README.md`` model card).

Two kinds of task sequence (``data.kind``):

* ``text`` -- a list of text-classification datasets (``data.tasks``): built-in names (``trec``, ``emotion``,
  ``sst2``) or mappings ``{name, dataset | train_file + eval_file, text_column, label_column, ...}``, tokenized with
  the model's tokenizer; the model is ``AutoModelForSequenceClassification`` from ``model.name_or_path``.
  Label sets may differ between tasks; how they meet the head depends on the scenario:

  - ``task_incremental``: one head sized to the largest label set; each task keeps its own label ids ``0..k-1`` and
    its own copy of the head weights (the runner swaps them). Prediction is the argmax over the whole head, so a task
    with fewer classes than the head also has to learn to keep the unused outputs low (it does after a few steps).
  - ``class_incremental``: one shared head over the union of all label sets, in task order: task ``t``'s labels are
    offset by the sizes of the tasks before it (TREC 0-5, emotion 6-11, SST-2 12-13; head = the sum).
  - ``domain_incremental``: one shared head; every task must have the same label names (same set; ids follow the
    first task's order). Anything else is an error naming the tasks and their label sets.

* ``mnist`` -- Split-MNIST from the local MNIST test set (:func:`~tl_hf.continual.split_mnist_tasks`; one task per
  digit pair in ``data.pairs``, a non-standard split carved out of t10k). ``model.name_or_path`` is either

  - ``mlp`` (or ``mlp:HIDDEN``): a small MLP built here, ``784 -> HIDDEN -> HIDDEN -> head`` with ReLU (HIDDEN
    defaults to 256), seeded with ``training.seed``, with the layer map ``embed -> embeddings``, ``blocks.i ->
    block i``, the rest -> ``head`` (so LLRD and freezing work on it); it is saved as ``model.safetensors`` when
    ``model.save_model`` is set; or
  - a local ``AutoModelForImageClassification`` directory whose model takes grey 1 x 28 x 28 images
    (``num_channels: 1``, and ``image_size: 28`` where the config has one), e.g. a small ViT with patch size 7.

  Labels: the digit itself in ``class_incremental`` (head = largest digit + 1), the position in the pair (0 / 1) in
  the two other scenarios (head = largest pair size).

``data.replay_source`` (``class_incremental`` or ``domain_incremental``, needs a ``replay`` regularizer): data whose
examples are offered to the replay memory *before task 1*, standing in for the pre-training data (memory then holds a
mix of it and of every finished task, as the replay ``selection`` decides; replay already mixes memory into task 1;
``all_results.json`` counts the memory's examples per origin in ``replay_memory.by_source``, the source as
``replay_source:<name>``). A budget larger than the source is refused. ``task_incremental`` refuses it: replayed
examples would be trained through the current task's head with labels of another head (the runner refuses replay
there for the same reason).

* ``kind: text``: a dataset -- a built-in name or a mapping ``{dataset | train_file, split, text_column,
  label_column, max_samples}``. ``class_incremental``: its labels get their own block of the shared head, after every
  task's block (TREC + emotion + an SST-2 source: 0-5, 6-11, 12-13); those outputs take part in every prediction but
  no task evaluates them. It may not be one of the tasks' datasets (that would give the same classes two ids).
  ``domain_incremental``: it must have the tasks' label names (another domain of the same problem).
* ``kind: mnist``: a mapping with exactly one of

  - ``digits: [8, 9]`` -- MNIST t10k images of digits that no task uses (a digit of a task is refused: the source
    would share images, even eval images, with it). Labels: the digits themselves in ``class_incremental`` (the head
    grows to the largest digit + 1); the position in the list in ``domain_incremental``, which needs as many digits
    as each task's group.
  - ``imagefolder: DIR`` -- class subfolders of image files (any format Pillow reads; relative paths are looked up
    under the data root first, then the current directory), each image flattened to RGB, converted to grey (ITU-R
    601-2 luma) and resized to 28 x 28 (bilinear, the whole image), as floats in [0, 1] like the tasks' images.
    ``class_incremental`` only: its classes (sorted folder names) get their own block after the tasks' labels.

  and optionally ``max_samples`` (a seeded random sample; default all) and ``name`` (default ``mnist_digits_8_9`` /
  the folder's name). Other keys are refused with the closest valid key suggested.

Resume: a run interrupted at any point continues when it is started again with the same ``training.output_dir``
and the same config. After each finished task the runner writes ``continual_state/after_task<k>/`` atomically
(JSON + safetensors, never pickle): the rows of the accuracy matrix so far, the train metrics, the model weights and
which parameters are frozen, the per-task heads, and every regularizer's state (EWC / online EWC Fisher and anchors,
L2-SP anchors, the replay memory with its provenance and RNG). The rerun logs ``resuming after task k/n``, restores
it all (the replay source is not offered again) and goes on with task ``k+1``, giving the same accuracy matrix and
weights as an uninterrupted run. An interrupted task whose folder holds ``checkpoint-*`` folders
(``training.save_strategy: steps``) resumes from the newest one through the Trainer's ``resume_from_checkpoint``
(TransferTrainer restores its own state from it). ``continual_state/run.json`` records the config at the start; a
rerun whose config differs in anything but output / logging settings (``data.root``, ``model.save_model``,
``hub``, ``training.output_dir / logging_* / save_* / report_to / disable_tqdm / per_device_eval_batch_size /
dataloader_*``...) is refused with a one-line error naming the differences -- use a fresh ``training.output_dir``
or delete the old one to start over (as with the text recipe's checkpoints; transformers 5 has no
``overwrite_output_dir``). An earlier run that finished no task and left no checkpoint has nothing to resume: a
changed config then simply starts over. A truncated or corrupt state file is named in a one-line error.
``training.resume_from_checkpoint`` is refused (resuming is automatic).

Model card and push: with ``model.save_model`` or ``hub.push`` the final model is saved in ``output_dir/model`` with
a ``README.md`` (:func:`tl_hf.hub.write_continual_model_card`): base model, scenario, the task sequence with data
sizes, LLRD and freezing, the regularizers and their strengths, the accuracy matrix, ACC / BWT / forgetting, and
``model-index`` results (the final accuracy on every task); tokens are never written. ``hub.push: true`` then uploads
``model/`` (and ``heads/`` for task-incremental runs, as ``heads/`` in the repo) in one commit to ``hub.repo_id`` at
$HF_ENDPOINT (:func:`tl_hf.hub.push_folder`); offline (``HF_HUB_OFFLINE=1``) or with the Hub unreachable it fails at
once with :class:`~tl_hf.hub.HubUnavailableError`, after every output (the model included) is saved locally. Only the
main process saves the model, writes the card and pushes.

Unsupported here (each is a clear error): ``peft.enabled``, ``early_stopping.patience > 0``, ``training.eval_strategy``
other than ``no`` (the runner evaluates every task itself), ``training.resume_from_checkpoint``. ``strategy: auto``
chooses freezing and LLRD from the size of task 1's training set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.data.text import BUILTIN_DATASETS, FILE_FORMATS, DataConfig, check_text_limits
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task

__all__ = ["ContinualDataConfig", "DEFAULT_PAIRS", "DEFAULT_TEXT_TASKS", "ImageSource", "KINDS", "MLP_LAYER_MAP",
           "STATE_DIR", "TextSource", "resume_fingerprint",
           "build_mlp", "run_continual_recipe"]

KINDS = ("text", "mnist")
SCENARIOS = ("task_incremental", "class_incremental", "domain_incremental")  # = tl_hf.continual.SCENARIOS
DEFAULT_TEXT_TASKS = ["trec", "emotion", "sst2"]
DEFAULT_PAIRS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]

#: keys of a ``data.tasks`` mapping; everything but ``name`` goes to :class:`~tl_hf.run.data.text.DataConfig`
TASK_KEYS = ("name", "dataset", "train_split", "eval_split", "train_file", "eval_file", "file_format", "text_column",
             "text_pair_column", "label_column", "max_train_samples", "max_eval_samples")
#: keys of a ``data.replay_source`` mapping (kind: text)
SOURCE_KEYS = ("name", "dataset", "split", "train_file", "file_format", "text_column", "text_pair_column",
               "label_column", "max_samples")
#: keys of a ``data.replay_source`` mapping (kind: mnist)
IMAGE_SOURCE_KEYS = ("name", "digits", "imagefolder", "max_samples")

#: layer map of the ``mlp`` model (``embed`` -> embeddings, ``blocks.i`` -> block i, everything else -> head)
from tl_hf.continual import MLP_LAYER_MAP  # noqa: E402  (re-exported)
_MLP_SPEC = re.compile(r"^mlp(?::(\d+))?$", re.IGNORECASE)


_REPLAY_SOURCE_TASK_IL = (
    "data.replay_source fills the replay memory, but replay needs one shared head and data.scenario is "
    "task_incremental (one head per task: replayed examples would be trained through the current task's head with "
    "labels of another head). Use class_incremental or domain_incremental, or drop data.replay_source")


def _builtin_labels(name: str) -> list[str]:
    from tl_hf.run.data.text import _BUILTIN

    return list(_BUILTIN[name][0])


@dataclass
class TextSource:
    """One text dataset of the sequence (or the replay source), resolved from ``data.tasks`` / ``data.replay_source``:
    ``data`` is the :class:`~tl_hf.run.data.text.DataConfig` handed to :func:`~tl_hf.run.data.text.load_text_classification`."""

    name: str
    data: DataConfig
    where: str  # the config key it came from, for error messages

    @property
    def static_labels(self) -> list[str] | None:
        """The label names of a built-in dataset (known without reading it); ``None`` for files."""
        return _builtin_labels(self.data.dataset) if self.data.dataset else None

    @property
    def identity(self) -> str:
        d = self.data
        return f"builtin:{d.dataset}" if d.dataset else f"file:{os.path.abspath(str(d.train_file))}"


@dataclass
class ImageSource:
    """The replay source of a Split-MNIST run (``data.replay_source`` with ``kind: mnist``): MNIST images of
    ``digits`` that no task uses, or the images of an ``imagefolder`` (class subfolders), converted to grey 28 x 28."""

    name: str
    digits: list[int] | None = None
    imagefolder: str | None = None
    max_samples: int | None = None
    where: str = "data.replay_source"


@dataclass
class ContinualDataConfig:
    """The task sequence of a continual-learning run (``task: continual``)."""

    kind: str = field(default="text", metadata={
        "help": "text: a sequence of text-classification datasets (data.tasks); mnist: Split-MNIST digit pairs "
                "(data.pairs) from the local MNIST test set."})
    scenario: str = field(default="task_incremental", metadata={
        "help": "task_incremental (one head per task, task known at test time), class_incremental (one head over "
                "the union of all tasks' labels) or domain_incremental (one head, every task has the same labels)."})
    tasks: list[str | dict] | None = field(default=None, metadata={
        "help": "text: the tasks in training order; each a built-in dataset name (trec, emotion, sst2) or a mapping "
                "{name, dataset | train_file + eval_file, text_column, label_column, train_split, eval_split, "
                "max_train_samples, max_eval_samples}. Default [trec, emotion, sst2]."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "text: seeded random subset of each task's training set (default: all rows)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "text: seeded random subset of each task's eval set (default: all rows)."})
    max_length: int = field(default=128, metadata={"help": "text: truncate tokenized inputs to this many tokens."})
    pairs: list[list[int]] | None = field(default=None, metadata={
        "help": "mnist: one task per group of digits, in order. Default [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]."})
    max_per_task: int | None = field(default=None, metadata={
        "help": "mnist: keep at most this many examples per task (train + eval) after a seeded shuffle."})
    train_fraction: float = field(default=0.8, metadata={
        "help": "mnist: fraction of each task's examples used for training; the rest is its eval set."})
    root: str | None = field(default=None, metadata={
        "help": "Data root. Default: $TL_HF_DATA_ROOT, else ../shared/data relative to the current directory."})
    seed: int | None = field(default=None, metadata={"help": "Seed of subsetting and splits. Default: "
                                                             "training.seed."})
    replay_source: str | dict | None = field(default=None, metadata={
        "help": "class_incremental or domain_incremental, with a replay regularizer: data whose examples fill the "
                "replay memory before task 1, standing in for pre-training data. text: a dataset (built-in name or "
                "mapping {dataset | train_file, split, text_column, label_column, max_samples}); mnist: a mapping "
                "{digits: [8, 9], max_samples} (MNIST images of digits no task uses) or {imagefolder: DIR, "
                "max_samples} (class subfolders of any images, converted to grey 28 x 28; class_incremental only). "
                "class_incremental: its labels get their own outputs of the head (digits: the digits themselves; "
                "otherwise a block after the tasks'); domain_incremental: it must have the tasks' labels."})

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"data.kind: unknown kind {self.kind!r}{did_you_mean(self.kind, KINDS)} "
                              f"Valid: {', '.join(KINDS)}")
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"data.scenario: unknown continual-learning scenario {self.scenario!r}"
                              f"{did_you_mean(self.scenario, SCENARIOS)} Valid: {', '.join(SCENARIOS)}")
        check_text_limits(self)
        if self.kind == "mnist":
            self._check_mnist()
        else:
            self._check_text()

    # -- mnist ----------------------------------------------------------------------------------------------------
    def _check_mnist(self) -> None:
        for key in ("tasks", "max_train_samples", "max_eval_samples"):
            if getattr(self, key) is not None:
                hint = {"tasks": "Split-MNIST tasks are set by data.pairs"}.get(key, "use data.max_per_task")
                raise ConfigError(f"data.{key} is for kind: text, but data.kind is mnist ({hint})")
        if self.pairs is None:
            self.pairs = [list(p) for p in DEFAULT_PAIRS]
        if not self.pairs:
            raise ConfigError("data.pairs must list at least one group of digits, e.g. [[0, 1], [2, 3]]")
        for i, p in enumerate(self.pairs):
            if len(p) < 2:
                raise ConfigError(f"data.pairs[{i}] = {p}: a task needs at least 2 digits")
            if any(d < 0 or d > 9 for d in p):
                raise ConfigError(f"data.pairs[{i}] = {p}: digits must be in 0..9")
            if len(set(p)) != len(p):
                raise ConfigError(f"data.pairs[{i}] = {p} repeats a digit")
        if self.scenario == "domain_incremental" and len({len(p) for p in self.pairs}) > 1:
            raise ConfigError(f"data.pairs {self.pairs}: domain_incremental needs the same number of digits in every "
                              "task (the label is the position in the group)")
        if self.max_per_task is not None and self.max_per_task < 2:
            raise ConfigError(f"data.max_per_task must be >= 2 (train + eval), got {self.max_per_task}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"data.train_fraction must be in (0, 1), got {self.train_fraction}")
        self.image_source_spec()  # validates data.replay_source

    def image_source_spec(self) -> ImageSource | None:
        """``data.replay_source`` of a Split-MNIST run, validated (``kind: mnist``); ``None`` when not set."""
        spec, where = self.replay_source, "data.replay_source"
        if spec is None:
            return None
        if isinstance(spec, str):
            raise ConfigError(f"data.replay_source is for kind: text when it names a dataset ({spec!r}); with kind: "
                              "mnist give a mapping {digits: [8, 9], max_samples: 200} (MNIST digits that no task "
                              "uses) or {imagefolder: DIR, max_samples: 200} (images converted to grey 28 x 28)")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping {{digits: [...]}} or {{imagefolder: DIR}}, got {spec!r}")
        for k in spec:
            if k not in IMAGE_SOURCE_KEYS:
                text = " (a text source's key; kind is mnist)" if k in SOURCE_KEYS else ""
                raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(k, IMAGE_SOURCE_KEYS)}{text} Valid keys "
                                  f"for kind: mnist: {', '.join(IMAGE_SOURCE_KEYS)}")
        digits, folder = spec.get("digits"), spec.get("imagefolder")
        if (digits is None) == (folder is None):
            raise ConfigError(f"{where}: set exactly one of digits (MNIST digits that no task uses, e.g. [8, 9]) "
                              "or imagefolder (a folder of class subfolders of images)")
        if self.scenario == "task_incremental":
            raise ConfigError(_REPLAY_SOURCE_TASK_IL)
        n = _positive_int(spec.get("max_samples"), f"{where}.max_samples")
        name = spec.get("name")
        if digits is not None:
            if isinstance(digits, int) and not isinstance(digits, bool):
                digits = [digits]
            if (not isinstance(digits, list) or not digits
                    or any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 9 for x in digits)):
                raise ConfigError(f"{where}.digits must be a list of digits in 0..9, e.g. [8, 9], got {digits!r}")
            if len(set(digits)) != len(digits):
                raise ConfigError(f"{where}.digits {digits} repeats a digit")
            for i, p in enumerate(self.pairs):
                common = sorted(set(p) & set(digits))
                if common:
                    raise ConfigError(f"{where}.digits {digits}: digit {common[0]} is also in task {i + 1}'s group "
                                      f"{p} (the source would share images, even eval images, with that task); "
                                      "choose digits that no task uses")
            if self.scenario == "domain_incremental" and len(digits) != len(self.pairs[0]):
                raise ConfigError(f"{where}.digits {digits}: domain_incremental labels an image by its position in "
                                  f"its group, so the source needs {len(self.pairs[0])} digits like every task "
                                  f"(data.pairs {self.pairs})")
            name = name if name is not None else "mnist_digits_" + "_".join(str(x) for x in digits)
        else:
            if not isinstance(folder, str) or not folder.strip():
                raise ConfigError(f"{where}.imagefolder must be a folder path, got {folder!r}")
            if self.scenario == "domain_incremental":
                raise ConfigError(f"{where}.imagefolder: domain_incremental needs the tasks' labels (the position of "
                                  "a digit in its group), but an image folder brings classes of its own; use "
                                  "{digits: [...]} with as many digits as each task, or class_incremental")
            name = name if name is not None else (os.path.basename(os.path.normpath(folder)) or "images")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        return ImageSource(name=name, digits=list(digits) if digits is not None else None, imagefolder=folder,
                           max_samples=n, where=where)

    # -- text -----------------------------------------------------------------------------------------------------
    def _check_text(self) -> None:
        for key in ("pairs", "max_per_task"):
            if getattr(self, key) is not None:
                raise ConfigError(f"data.{key} is for kind: mnist, but data.kind is text (text tasks are set by "
                                  "data.tasks)")
        if self.tasks is None:
            self.tasks = list(DEFAULT_TEXT_TASKS)
        if not self.tasks:
            raise ConfigError("data.tasks must list at least one task, e.g. [trec, emotion, sst2]")
        sources = self.text_sources()
        names = [s.name for s in sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"data.tasks: task names must be unique, {dup} appear more than once; give each a "
                              "mapping with its own name, e.g. {name: sst2_b, dataset: sst2}")
        if self.scenario == "domain_incremental":
            first = sources[0]
            for s in sources[1:]:
                a, b = first.static_labels, s.static_labels
                if a is not None and b is not None and set(a) != set(b):
                    raise ConfigError(domain_label_error(f"task {first.name!r}", a, f"task {s.name!r}", b))
        src = self.replay_source_spec()
        if src is None:
            return
        if self.scenario == "task_incremental":
            raise ConfigError(_REPLAY_SOURCE_TASK_IL)
        if self.scenario == "class_incremental":
            for s in sources:
                if s.identity == src.identity:
                    raise ConfigError(
                        f"data.replay_source: {src.name!r} is also task {s.name!r}; in class_incremental the source "
                        "gets its own block of labels, so the same classes would have two ids (task "
                        f"{s.name!r}'s examples enter the memory anyway once it is trained). Name another dataset")
        if self.scenario == "domain_incremental":
            a, b = sources[0].static_labels, src.static_labels
            if a is not None and b is not None and set(a) != set(b):
                raise ConfigError("data.replay_source: domain_incremental needs the tasks' label names, but "
                                  + domain_label_error(f"task {sources[0].name!r}", a,
                                                       f"replay source {src.name!r}", b, prefix=False))

    def _data_config(self, spec: dict, where: str, *, source: bool) -> DataConfig:
        seed = self.seed
        kw: dict[str, Any] = dict(root=self.root, max_length=self.max_length, seed=seed)
        if spec.get("dataset") is not None:
            ds = spec["dataset"]
            if ds not in BUILTIN_DATASETS:
                raise ConfigError(f"{where}: unknown dataset {ds!r}{did_you_mean(ds, BUILTIN_DATASETS)} Built-in: "
                                  f"{', '.join(BUILTIN_DATASETS)}; or give a mapping with train_file"
                                  + ("" if source else " and eval_file"))
            if spec.get("train_file") or spec.get("eval_file"):
                raise ConfigError(f"{where}: set either dataset or train_file/eval_file, not both")
        elif not spec.get("train_file"):
            raise ConfigError(f"{where}: set dataset (built-in: {', '.join(BUILTIN_DATASETS)}) or train_file"
                              + ("" if source else " and eval_file"))
        elif not source and not spec.get("eval_file"):
            raise ConfigError(f"{where}: train_file {spec['train_file']!r} has no eval_file; every task needs an "
                              "eval set (its accuracy is measured after each task)")
        if spec.get("file_format") is not None and spec["file_format"] not in FILE_FORMATS:
            raise ConfigError(f"{where}.file_format must be one of {', '.join(FILE_FORMATS)}, "
                              f"got {spec['file_format']!r}")
        for key in ("dataset", "train_file", "eval_file", "file_format", "text_column", "text_pair_column",
                    "label_column", "train_split", "eval_split"):
            if key in spec and spec[key] is not None:
                if not isinstance(spec[key], str):
                    raise ConfigError(f"{where}.{key}: expected a string, got {spec[key]!r}")
                kw[key] = spec[key]
        if source:
            if "split" in spec and spec["split"] is not None:
                kw["train_split"] = str(spec["split"])
            n = spec.get("max_samples", self.max_train_samples)
            kw["max_train_samples"] = _positive_int(n, f"{where}.max_samples")
            kw["max_eval_samples"] = 1  # a source's eval split is never used; keep it tiny
        else:
            kw["max_train_samples"] = _positive_int(spec.get("max_train_samples", self.max_train_samples),
                                                    f"{where}.max_train_samples")
            kw["max_eval_samples"] = _positive_int(spec.get("max_eval_samples", self.max_eval_samples),
                                                   f"{where}.max_eval_samples")
        try:
            return DataConfig(**kw)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None

    def _source(self, spec: str | dict, where: str, *, source: bool) -> TextSource:
        keys = SOURCE_KEYS if source else TASK_KEYS
        if isinstance(spec, str):
            if spec not in BUILTIN_DATASETS:
                raise ConfigError(f"{where}: unknown dataset {spec!r}{did_you_mean(spec, BUILTIN_DATASETS)} Built-in: "
                                  f"{', '.join(BUILTIN_DATASETS)}; for your own files give a mapping "
                                  "{name, train_file, " + ("" if source else "eval_file, ")
                                  + "text_column, label_column}")
            spec = {"dataset": spec}
        elif not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a dataset name or a mapping, got {spec!r}")
        for k in spec:
            if k not in keys:
                raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(k, keys)} Valid keys: {', '.join(keys)}")
        data = self._data_config(spec, where, source=source)
        name = spec.get("name")
        if name is None:
            name = data.dataset or os.path.splitext(os.path.basename(str(data.train_file)))[0]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name must be a non-empty string, got {name!r}")
        return TextSource(name=name, data=data, where=where)

    def text_sources(self) -> list[TextSource]:
        """The text tasks, resolved (``kind: text``)."""
        return [self._source(t, f"data.tasks[{i}]", source=False) for i, t in enumerate(self.tasks or [])]

    def replay_source_spec(self) -> TextSource | None:
        if self.replay_source is None:
            return None
        return self._source(self.replay_source, "data.replay_source", source=True)


def _positive_int(v, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{where} must be an int >= 1 (or null for all rows), got {v!r}")
    return v


def domain_label_error(a_desc: str, a: list[str], b_desc: str, b: list[str], *, prefix: bool = True) -> str:
    """``a_desc`` / ``b_desc``: e.g. ``task 'trec'``, ``replay source 'sst2'``."""
    return (("domain_incremental needs one label set shared by every task, but " if prefix else "")
            + f"{a_desc} has labels [{', '.join(a)}] and {b_desc} has [{', '.join(b)}]; use class_incremental "
            "(union of the label sets) or task_incremental (one head per task)")


# ---------------------------------------------------------------------------------------------------------------------
# The MLP of kind: mnist
# ---------------------------------------------------------------------------------------------------------------------

def build_mlp(num_labels: int, hidden: int = 256, seed: int = 0):
    """The Split-MNIST MLP (:class:`tl_hf.continual.SmallMLP`); its layer map is :data:`MLP_LAYER_MAP`."""
    from tl_hf.continual import SmallMLP

    return SmallMLP(num_labels, hidden=hidden, seed=seed)


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class _Prepared:
    tasks: list
    num_labels: int
    label_names: list[str]
    info: list[dict]
    collator: Any = None
    tokenizer: Any = None
    source: Any = None            # tokenized replay-source dataset
    source_info: dict | None = None


class _PadCollator:
    """``DataCollatorWithPadding`` that also takes examples whose values are tensors (replayed memory examples are
    stored as tensors; new examples come as lists), by turning every tensor into a list first."""

    def __init__(self, tokenizer) -> None:
        from transformers import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)

    def __call__(self, features):
        return self.inner([{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.items()} for f in features])


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


def _relabel(ds, mapping: dict[int, int]):
    """Tokenized dataset with ``label`` -> ``labels`` (int64) through ``mapping``."""
    from datasets import Value

    ds = ds.cast_column("label", Value("int64"))
    return ds.map(lambda b: {"labels": [mapping[int(y)] for y in b["label"]]}, batched=True, remove_columns=["label"])


def _prepare_text(cfg: RunConfig, seed: int, budgets: list[int]) -> _Prepared:
    from tl_hf.continual import Task
    from tl_hf.run.data.text import load_text_classification, tokenize_datasets

    d: ContinualDataConfig = cfg.data
    sc = d.scenario
    sources = d.text_sources()
    src_spec = d.replay_source_spec()
    with _quiet_datasets():
        loaded = [load_text_classification(s.data, seed=seed) for s in sources]
        src = load_text_classification(src_spec.data, seed=seed) if src_spec else None
    for s, data in zip(sources, loaded):
        if data.eval is None:
            raise ConfigError(f"{s.where} ({s.name}): no eval set; every task needs one")
    # label ids per task: task-incremental keeps them, class-incremental offsets them, domain-incremental maps names
    maps: list[dict[int, int]] = []
    label_names: list[str] = []
    info: list[dict] = []
    if sc == "domain_incremental":
        ref = loaded[0].label_names
        for s, data in zip(sources[1:], loaded[1:]):
            if set(data.label_names) != set(ref):
                raise ConfigError(domain_label_error(f"task {sources[0].name!r}", ref, f"task {s.name!r}",
                                                     data.label_names))
    offset = 0
    for s, data in zip(sources, loaded):
        k = len(data.label_names)
        if sc == "task_incremental":
            m = {i: i for i in range(k)}
        elif sc == "class_incremental":
            m = {i: offset + i for i in range(k)}
            label_names += [f"{s.name}:{n}" for n in data.label_names]
        else:
            m = {i: loaded[0].label_names.index(n) for i, n in enumerate(data.label_names)}
        maps.append(m)
        offset += k
    if sc == "task_incremental":
        num_labels = max(len(x.label_names) for x in loaded)
        label_names = [str(i) for i in range(num_labels)]
    elif sc == "class_incremental":
        num_labels = offset
    else:
        label_names = list(loaded[0].label_names)
        num_labels = len(label_names)
    src_map = None
    if src is not None:
        if sc == "class_incremental":
            src_map = {i: num_labels + i for i in range(len(src.label_names))}
            label_names += [f"{src_spec.name}:{n}" for n in src.label_names]
            num_labels += len(src.label_names)
        else:  # domain_incremental (task_incremental is refused by the config)
            if set(src.label_names) != set(label_names):
                raise ConfigError("data.replay_source: domain_incremental needs the tasks' label names, but "
                                  + domain_label_error(f"task {sources[0].name!r}", label_names,
                                                       f"replay source {src_spec.name!r}", src.label_names,
                                                       prefix=False))
            src_map = {i: label_names.index(n) for i, n in enumerate(src.label_names)}
    _check_budgets(budgets, sources[0].name, len(loaded[0].train), src_spec.name if src_spec else None,
                   len(src.train) if src is not None else None)
    if cfg.model.num_labels is not None:
        if cfg.model.num_labels < num_labels:
            raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the {sc} head needs {num_labels} outputs")
        label_names += [str(i) for i in range(num_labels, cfg.model.num_labels)]
        num_labels = cfg.model.num_labels

    tokenizer = _load_tokenizer(cfg)
    tasks = []
    with _quiet_datasets():
        for s, data, m in zip(sources, loaded, maps):
            tok = tokenize_datasets(data, tokenizer, d.max_length)
            train, ev = _relabel(tok.train, m), _relabel(tok.eval, m)
            labels = [m[i] for i in range(len(data.label_names))]
            tasks.append(Task(s.name, train, ev, labels=labels, class_names=list(data.label_names)))
            info.append({"name": s.name, "train_samples": len(train), "eval_samples": len(ev),
                         "labels": labels, "class_names": list(data.label_names),
                         "train_source": data.sources.get("train"), "eval_source": data.sources.get("eval")})
        source_ds = source_info = None
        if src is not None:
            src.eval = None
            tok = tokenize_datasets(src, tokenizer, d.max_length)
            source_ds = _relabel(tok.train, src_map)
            source_info = {"name": src_spec.name, "samples": len(source_ds), "source": src.sources.get("train"),
                           "labels": [src_map[i] for i in range(len(src.label_names))],
                           "class_names": list(src.label_names)}
    return _Prepared(tasks=tasks, num_labels=num_labels, label_names=label_names, info=info,
                     collator=_PadCollator(tokenizer), tokenizer=tokenizer, source=source_ds,
                     source_info=source_info)


def _load_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer

    from tl_hf.run.models import _from_pretrained

    return _from_pretrained(AutoTokenizer, cfg.model.tokenizer or cfg.model.name_or_path, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)


def _prepare_mnist(cfg: RunConfig, seed: int, budgets: list[int]) -> _Prepared:
    from tl_hf.continual import split_mnist_tasks
    from tl_hf.run.data.mnist import load_mnist_idx
    from tl_hf.run.data.paths import resolve_data_root

    d: ContinualDataConfig = cfg.data
    images, labels = load_mnist_idx(resolve_data_root(d.root))
    try:
        tasks = split_mnist_tasks(images, labels, pairs=[tuple(p) for p in d.pairs], train_fraction=d.train_fraction,
                                  seed=seed, max_per_task=d.max_per_task, scenario=d.scenario)
    except ValueError as exc:
        raise ConfigError(f"data: {' '.join(str(exc).split())}") from None
    spec = d.image_source_spec()
    if d.scenario == "class_incremental":
        top = max(max(p) for p in d.pairs)
        if spec is not None and spec.digits is not None:
            top = max(top, *spec.digits)  # a digits source keeps its digits as labels
        num_labels = top + 1
        names = [str(i) for i in range(num_labels)]
    else:
        num_labels = max(len(p) for p in d.pairs)
        names = [f"digit {i + 1} of the pair" for i in range(num_labels)]
    source = source_info = None
    if spec is not None:
        source, source_info = _load_image_source(spec, d, images, labels, seed, num_labels)
        if spec.imagefolder is not None:  # class_incremental: the folder's classes get a block after the tasks'
            names += [f"{spec.name}:{c}" for c in source_info["class_names"]]
            num_labels += len(source_info["class_names"])
    _check_budgets(budgets, tasks[0].name, len(tasks[0].train), spec.name if spec else None,
                   len(source) if source is not None else None, text=False)
    if cfg.model.num_labels is not None:
        if cfg.model.num_labels < num_labels:
            raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the {d.scenario} head needs "
                              f"{num_labels} outputs")
        names += [str(i) for i in range(num_labels, cfg.model.num_labels)]
        num_labels = cfg.model.num_labels
    info = [{"name": t.name, "train_samples": len(t.train), "eval_samples": len(t.eval), "labels": list(t.labels),
             "class_names": list(t.class_names), "digits": [int(x) for x in p]} for t, p in zip(tasks, d.pairs)]
    return _Prepared(tasks=tasks, num_labels=num_labels, label_names=names, info=info, source=source,
                     source_info=source_info)


def _load_image_source(spec: ImageSource, d: ContinualDataConfig, images, labels, seed: int, offset: int):
    """``(TensorDictDataset, info)`` of a Split-MNIST replay source: grey ``[1, 28, 28]`` floats in [0, 1] (like the
    tasks' examples), a seeded sample of ``max_samples``. Labels: a digits source's digits (class_incremental) or
    positions in its digit list (domain_incremental); an image folder's classes ``offset + i`` (sorted names)."""
    import numpy as np
    import torch

    from tl_hf.continual import TensorDictDataset

    rng = np.random.default_rng(seed + 7919)  # its own stream: the tasks' splits do not depend on the source
    if spec.digits is not None:
        idx = np.flatnonzero(np.isin(labels, spec.digits))
        idx = idx[rng.permutation(len(idx))][:spec.max_samples]
        digits = labels[idx].astype(np.int64)
        if d.scenario == "class_incremental":
            y, ids, class_names = digits, list(spec.digits), [str(x) for x in spec.digits]
        else:
            y = np.array([spec.digits.index(int(x)) for x in digits], dtype=np.int64)
            ids, class_names = list(range(len(spec.digits))), [str(x) for x in spec.digits]
        x = images[idx]
        where = f"MNIST t10k digits {spec.digits} ({len(idx)} of {int(np.isin(labels, spec.digits).sum())} images)"
    else:
        from tl_hf.run.data.paths import DataError
        from tl_hf.run.data.imagefolder import resolve_dir, scan_folder

        try:
            folder = resolve_dir(spec.imagefolder, d.root, f"{spec.where}.imagefolder")
            class_names, paths, cls = scan_folder(folder, f"{spec.where}.imagefolder", [], [])
        except DataError as exc:
            raise ConfigError(" ".join(str(exc).split())) from None
        order = rng.permutation(len(paths))[:spec.max_samples]
        order = np.sort(order)
        x = np.stack([_grey28(paths[i], spec.where) for i in order]) if len(order) else np.zeros((0, 28, 28), np.uint8)
        y = np.array([offset + cls[i] for i in order], dtype=np.int64)
        ids = [offset + i for i in range(len(class_names))]
        where = f"{folder} ({len(order)} of {len(paths)} images, grey 28 x 28)"
    ds = TensorDictDataset(pixel_values=torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1),
                           labels=torch.from_numpy(np.asarray(y, dtype=np.int64)))
    info = {"name": spec.name, "samples": len(ds), "source": where, "labels": ids, "class_names": class_names}
    return ds, info


def _grey28(path: str, where: str):
    """One image file as MNIST-like ``uint8 [28, 28]``: flattened to RGB (palette, alpha, 16-bit handled as the image
    recipe does), converted to grey (ITU-R 601-2 luma), resized to 28 x 28 (bilinear, whole image, no crop)."""
    import numpy as np
    from PIL import Image

    from tl_hf.run.data.image_transform import to_rgb

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (56, 56))  # decode big JPEGs at reduced scale (DCT scaling)
            im.load()
            img = to_rgb(im).convert("L")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        raise ConfigError(f"{where}.imagefolder: cannot read image {path} ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]}); remove it from the folder") from None
    if img.size != (28, 28):
        img = img.resize((28, 28), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _check_budgets(budgets: list[int], task1: str, n1: int, source: str | None, n_source: int | None,
                   text: bool = True) -> None:
    for b in budgets:
        if b > n1:
            raise ConfigError(f"regularizers: replay budget {b} is larger than the data available to fill it: task "
                              f"{task1!r} (task 1) has {n1} training examples; lower the replay budget to at most "
                              f"{n1} or train on more examples of task 1")
        if n_source is not None and b > n_source:
            limits = "data.replay_source.max_samples / data.max_train_samples" if text else \
                "data.replay_source.max_samples, or the images available"
            raise ConfigError(f"regularizers: replay budget {b} is larger than data.replay_source {source!r}, which "
                              f"has {n_source} examples ({limits}); lower the replay budget to at most {n_source} or "
                              "give the source more examples")


def _build_model(cfg: RunConfig, prep: _Prepared, seed: int):
    """``(model, layer_map or None)``."""
    d: ContinualDataConfig = cfg.data
    name = cfg.model.name_or_path.strip()
    id2label = dict(enumerate(prep.label_names))
    label2id = {n: i for i, n in id2label.items()}
    from tl_hf.run.models import _from_pretrained

    if d.kind == "mnist":
        m = _MLP_SPEC.match(name)
        if m:
            hidden = int(m.group(1)) if m.group(1) else 256
            if hidden < 1:
                raise ConfigError(f"model.name_or_path {name!r}: the hidden size must be >= 1")
            return build_mlp(prep.num_labels, hidden=hidden, seed=seed), dict(MLP_LAYER_MAP)
        from transformers import AutoConfig, AutoModelForImageClassification

        conf = _from_pretrained(AutoConfig, name, "model config", trust_remote_code=cfg.model.trust_remote_code)
        channels = getattr(conf, "num_channels", 1)
        size = getattr(conf, "image_size", 28)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if channels != 1 or size != (28, 28):
            raise ConfigError(f"model {name!r} takes {channels}-channel {size[0]} x {size[1]} images, but Split-MNIST "
                              "examples are grey 1 x 28 x 28; use a model with num_channels 1 (and image_size 28), "
                              "or model.name_or_path=mlp")
        model = _from_pretrained(AutoModelForImageClassification, name, "model", trust_remote_code=cfg.model.trust_remote_code, num_labels=prep.num_labels,
                                 id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
        return model, None
    if _MLP_SPEC.match(name):
        raise ConfigError("model.name_or_path=mlp is the Split-MNIST MLP (data.kind: mnist); text tasks need a "
                          "sequence-classification model, e.g. bundled:all-MiniLM-L6-v2")
    from transformers import AutoModelForSequenceClassification

    model = _from_pretrained(AutoModelForSequenceClassification, name, "model", trust_remote_code=cfg.model.trust_remote_code, num_labels=prep.num_labels,
                             id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
    return model, None


def _check_unsupported(cfg: RunConfig) -> None:
    if cfg.peft.enabled:
        raise ConfigError("peft.enabled is not supported by task: continual (the runner swaps classifier weights "
                          "per task and carries regularizers over the full parameter names); set peft.enabled=false")
    if cfg.early_stopping.patience > 0:
        raise ConfigError("early_stopping is not supported by task: continual (the runner evaluates every task "
                          "after each task itself); set early_stopping.patience=0")
    if cfg.training.get("resume_from_checkpoint"):
        raise ConfigError("training.resume_from_checkpoint is not used by task: continual: rerunning with the same "
                          "training.output_dir resumes by itself (after the last finished task, and an interrupted "
                          "task from its newest checkpoint-*); drop training.resume_from_checkpoint")
    es = cfg.training.get("eval_strategy", "no")
    if str(getattr(es, "value", es)) != "no" or cfg.training.get("load_best_model_at_end"):
        raise ConfigError("training.eval_strategy must be 'no' for task: continual (the runner evaluates every task "
                          "seen so far after each task and writes accuracy_matrix.json)")


class _Forward(logging.Handler):
    def __init__(self, log: Callable) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record) -> None:
        try:
            self.log(f"[continual] {record.getMessage()}")
        except Exception:  # noqa: BLE001
            self.handleError(record)


@contextlib.contextmanager
def _forward_runner_logs(log: Callable):
    """Show the runner's progress lines ("task 2/3 ...", "after task 2: acc[...]") through ``log`` while it runs."""
    lg = logging.getLogger("tl_hf.continual")
    handler, level = _Forward(log), lg.level
    lg.addHandler(handler)
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        lg.removeHandler(handler)
        lg.setLevel(level)


def _format_matrix(R, names) -> list[str]:
    w = max(8, *(len(n) for n in names)) + 1
    lines = ["accuracy matrix R[i][j] (row: after training task i; column: evaluated on task j):",
             " " * (w + 6) + "".join(f"{n:>{w}}" for n in names)]
    for i, row in enumerate(R):
        cells = "".join(f"{v:>{w}.4f}" if v is not None else " " * w for v in row)
        lines.append(f"after {names[i]:<{w}}" + cells)
    return lines


#: what a resume may change (where and how a run reports, not what it computes); every other config key must match
_RESUME_FREE = {
    "training": ("output_dir", "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter",
                 "disable_tqdm", "report_to", "save_strategy", "save_steps", "save_total_limit", "save_on_each_node",
                 "save_only_model", "per_device_eval_batch_size", "eval_accumulation_steps", "dataloader_num_workers",
                 "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "run_name",
                 "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision",
                 "use_cpu"),
    "model": ("save_model",),
    "data": ("root",),
}
STATE_DIR = "continual_state"


def resume_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The part of the config a resumed run must share with the interrupted one (stored in
    ``output_dir/continual_state/run.json``): everything but the ``hub`` section, tokens, and the keys of
    :data:`_RESUME_FREE` (output and logging settings, ``data.root``, ``model.save_model``)."""
    d = json.loads(json.dumps(cfg.to_dict(), default=str))
    d.pop("hub", None)
    for section, keys in _RESUME_FREE.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    d["training"] = {k: v for k, v in d.get("training", {}).items() if "token" not in k}
    return d


def _card_task(info: dict, d: ContinualDataConfig, source: TextSource | None) -> dict:
    """A task's entry of the model card: ``dataset`` (an id: built-in name, file name, ``mnist``) and ``data``."""
    if d.kind == "mnist":
        return {**info, "dataset": "mnist", "data": "MNIST t10k digits " + ", ".join(str(x) for x in info["digits"])}
    if source is not None and source.data.dataset:
        return {**info, "dataset": source.data.dataset, "data": f"built-in `{source.data.dataset}`"}
    name = os.path.basename(str(source.data.train_file)) if source is not None else info["name"]
    return {**info, "dataset": name, "data": f"file `{name}`"}


def _silent(*args, **kwargs) -> None:
    pass


def run_continual_recipe(cfg: RunConfig, *, log=print, _interrupt: dict | None = None) -> dict[str, Any]:
    """Run the continual-learning sequence ``cfg`` describes (see the module docstring); returns the results written
    to ``training.output_dir/all_results.json`` plus ``eval_accuracy`` (= ACC) and ``eval_split`` for the CLI.

    ``_interrupt`` (tests only): ``{"after_task": k}`` stops (:class:`~tl_hf.continual.ContinualInterrupted`) once
    task ``k`` is finished and saved; ``{"task": k, "step": s}`` stops inside task ``k`` right after its checkpoint
    at step ``s`` (needs ``training.save_strategy=steps``), as a crash would."""
    import transformers

    from tl_hf.continual import ContinualRunner, check_state_fingerprint
    from tl_hf.core.layers import get_layer_map
    from tl_hf.regularizers import Replay, build_regularizer
    from tl_hf.run.template import _has_accelerator, build_training_args, resolve_strategy

    if int(os.environ.get("RANK", "0")) != 0:
        log = _silent  # under accelerate launch / torchrun only the main process reports
    from tl_hf.core.state import atomic_write_json

    start = time.perf_counter()
    d = cfg.data
    if not isinstance(d, ContinualDataConfig):
        raise ConfigError(f"task: continual needs a continual data section, got {type(d).__name__}")
    _check_unsupported(cfg)
    args = build_training_args(cfg)  # validates TrainingArguments before any slow step
    seed = d.seed if d.seed is not None else args.seed
    regs = [dict(r) for r in cfg.regularizers]
    budgets = []
    for r in regs:
        if r["name"] == "replay":
            if d.scenario == "task_incremental":
                raise ConfigError("regularizers: replay is not supported with data.scenario task_incremental (one "
                                  "head per task: replayed examples would be trained through the current task's "
                                  "head with labels that belong to their own head); use class_incremental or "
                                  "domain_incremental, or EWC / L2-SP")
            budgets.append(build_regularizer(dict(r)).config.budget)
    if d.replay_source is not None and not budgets:
        raise ConfigError("data.replay_source fills the replay memory, but no replay regularizer is configured: add "
                          "regularizers: [{name: replay, budget: N}] or drop data.replay_source")
    out = args.output_dir
    state_dir = os.path.join(out, STATE_DIR)
    fingerprint = resume_fingerprint(cfg)
    check_state_fingerprint(state_dir, out, fingerprint)  # a changed config is refused before any data is read
    transformers.set_seed(args.seed)

    if d.kind == "text":
        from tl_hf.run.models import resolve_model_path

        resolve_model_path(cfg.model.name_or_path)
        if cfg.model.tokenizer:
            resolve_model_path(cfg.model.tokenizer)
        prep = _prepare_text(cfg, seed, budgets)
    else:
        prep = _prepare_mnist(cfg, seed, budgets)
    for t in prep.info:
        log(f"task {t['name']}: {t['train_samples']:,} train / {t['eval_samples']:,} eval examples, labels "
            f"{t['labels']} ({', '.join(t['class_names'])})")
    if prep.source_info:
        s = prep.source_info
        log(f"replay source {s['name']}: {s['samples']:,} examples ({s['source']}), labels {s['labels']}")

    transformers.set_seed(args.seed)
    model, layer_map = _build_model(cfg, prep, args.seed)
    lmap = get_layer_map(model, layer_map)
    llrd, freezing = resolve_strategy(cfg, len(prep.tasks[0].train), lmap.num_blocks, log)

    training = {k: v for k, v in cfg.training.items() if k != "output_dir"}
    accel = _has_accelerator()
    # on a machine without an accelerator, use_cpu=True is what makes transformers use DDP (gloo) under a
    # multi-process launch; without it every rank would train on its own (parallel_mode NOT_PARALLEL)
    training.setdefault("use_cpu", not accel)
    if not accel:
        training.setdefault("dataloader_pin_memory", False)
    trainer_kwargs: dict[str, Any] = {"llrd": llrd, "freezing": freezing}
    if layer_map is not None:
        trainer_kwargs["layer_map"] = layer_map
    runner = ContinualRunner(model, prep.tasks, scenario=d.scenario, output_dir=out, regularizers=regs,
                             training_args=training, trainer_kwargs=trainer_kwargs, num_labels=prep.num_labels,
                             data_collator=prep.collator, eval_batch_size=args.per_device_eval_batch_size,
                             state_dir=state_dir, fingerprint=fingerprint)
    runner._interrupt = _interrupt
    n_params = sum(p.numel() for p in model.parameters())
    n_tasks = len(prep.tasks)
    log(f"model {cfg.model.name_or_path}: {n_params:,} parameters, head {prep.num_labels} outputs; scenario "
        f"{d.scenario}; {n_tasks} tasks; regularizers {[r['name'] for r in regs] or 'none'}; llrd decay "
        f"{llrd.decay}, freezing {freezing.policy}")
    done = runner.restore()  # a rerun on the same output_dir continues after its last finished task
    replays = [r for r in runner.regularizers if isinstance(r, Replay)]
    if done:
        what = ["model weights", "accuracy-matrix rows", "train metrics"]
        what += ["per-task heads"] if d.scenario == "task_incremental" else []
        what += [f"{r.name} state" for r in runner.regularizers]
        log(f"resuming after task {done}/{n_tasks} ({prep.tasks[done - 1].name}): restored the {', '.join(what)} "
            f"from {state_dir}" + (f"; continuing with task {done + 1}/{n_tasks}" if done < n_tasks else
                                  "; every task is finished, writing the outputs"))
    if prep.source is not None:
        if done == 0:
            for r in replays:
                r.memory.add_dataset(prep.source, source=f"replay_source:{prep.source_info['name']}")
            log(f"replay memory filled from {prep.source_info['name']} before task 1: {len(replays[0].memory)} "
                "examples")
        else:
            log(f"replay memory restored: {len(replays[0].memory)} examples (filled from "
                f"{prep.source_info['name']} before task 1)")

    with _forward_runner_logs(log):
        result = runner.run()
    model = runner.model

    names = result.task_names
    R, m = result.R, result.metrics
    n = len(names)
    per_task = []  # a list, in task order (JSON objects are written with sorted keys)
    for j, name in enumerate(names):
        per_task.append({"name": name, "accuracy_after_training": R[j][j], "final_accuracy": R[n - 1][j],
                          "forgetting": m["forgetting"][j] if j < n - 1 else None,
                          "train_loss": result.train_metrics[j].get("train_loss"),
                          "train_runtime_s": result.train_metrics[j].get("train_runtime")})
    results: dict[str, Any] = {
        "task": "continual", "kind": d.kind, "scenario": d.scenario, "model": cfg.model.name_or_path,
        "task_names": names, "R": R, "ACC": m["ACC"], "BWT": m["BWT"],
        "forgetting": {names[j]: f for j, f in enumerate(m["forgetting"])}, "avg_forgetting": m["avg_forgetting"],
        "per_task": per_task, "tasks": prep.info, "num_labels": prep.num_labels,
        "regularizers": [r.name for r in runner.regularizers],
        "train_runtime_s": round(sum(t.get("train_runtime", 0.0) for t in result.train_metrics), 1),
        "resumed_after_task": done,
        "outputs": {"accuracy_matrix_json": result.json_path, "accuracy_matrix_png": result.png_path,
                    "state": state_dir},
    }
    if prep.source_info:
        results["replay_source"] = prep.source_info
    if replays:
        counts: dict[str, int] = {}
        for src, _ in replays[0].memory.provenance:
            counts[src] = counts.get(src, 0) + 1
        results["replay_memory"] = {"size": len(replays[0].memory), "by_source": counts}
    if result.heads:
        results["outputs"]["heads"] = os.path.join(out, "heads")
    main = args.should_save  # only the main process saves the model, writes its card and pushes
    mdir = os.path.join(out, "model")
    if (cfg.model.save_model or cfg.hub.push) and main:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(mdir)
            if prep.tokenizer is not None:
                prep.tokenizer.save_pretrained(mdir)
        else:
            from safetensors.torch import save_file

            os.makedirs(mdir, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                      os.path.join(mdir, "model.safetensors"))
        results["outputs"]["model"] = mdir
        results["outputs"]["model_card"] = _write_card(cfg, results, prep, runner, model, llrd, freezing, lmap,
                                                       args, n_params, mdir)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "all_results.json"), results)
    run_config = json.loads(json.dumps(cfg.to_dict(), default=str))
    if run_config.get("training", {}).get("hub_token"):
        run_config["training"]["hub_token"] = "<redacted>"
    atomic_write_json(os.path.join(out, "run_config.json"), run_config)

    for line in _format_matrix(R, names):
        log(line)
    for t in per_task:
        name = t["name"]
        f = f", forgetting {t['forgetting']:+.4f}" if t["forgetting"] is not None else ""
        log(f"  {name}: accuracy right after training {t['accuracy_after_training']:.4f}, final "
            f"{t['final_accuracy']:.4f}{f}")
    bwt = f"{m['BWT']:+.4f}" if m["BWT"] is not None else "n/a"
    fg = f"{m['avg_forgetting']:.4f}" if m["avg_forgetting"] is not None else "n/a"
    log(f"ACC={m['ACC']:.4f} BWT={bwt} avg forgetting={fg} ({d.scenario}, {n} tasks); accuracy_matrix.json/png and "
        f"all_results.json in {out}")
    if cfg.hub.push and main:
        from tl_hf.hub import HubUnavailableError, push_folder

        extra = {"heads": os.path.join(out, "heads")} if result.heads else None
        try:
            commit = push_folder(mdir, repo_id=cfg.hub.repo_id, private=cfg.hub.private,
                                 token=cfg.training.get("hub_token"), extra_folders=extra,
                                 commit_message=f"tl_hf continual run: {n} tasks ({d.scenario}), ACC {m['ACC']:.4f}")
        except HubUnavailableError as exc:
            raise HubUnavailableError(f"{exc}; or rerun this config then: the finished run is restored from "
                                      f"{state_dir} (not trained again) and pushed"
                                      + (" with heads/" if extra else "")) from None
        log(f"pushed to the Hub: {cfg.hub.repo_id} ({getattr(commit, 'commit_url', commit)})")
    return {**results, "eval_accuracy": m["ACC"], "eval_split": "continual, mean final (ACC)"}


def _write_card(cfg: RunConfig, results: dict, prep: _Prepared, runner, model, llrd, freezing, lmap, args,
                n_params: int, mdir: str) -> str:
    """``output_dir/model/README.md`` (:func:`tl_hf.hub.write_continual_model_card`)."""
    from tl_hf.hub import write_continual_model_card

    d: ContinualDataConfig = cfg.data
    summary = dict(results)
    sources = d.text_sources() if d.kind == "text" else [None] * len(prep.info)
    summary["tasks"] = [_card_task(t, d, src) for t, src in zip(prep.info, sources)]
    summary["architecture"] = type(model).__name__
    summary["num_parameters"] = n_params
    if runner.heads:
        from tl_hf.continual.tasks import task_slug as _slug

        summary["heads"] = [f"heads/{_slug(name)}.safetensors" for name in runner.heads]
    name = cfg.hub.repo_id.split("/")[-1] if cfg.hub.repo_id else os.path.basename(os.path.normpath(args.output_dir))
    return write_continual_model_card(mdir, summary, model_name=name, token=cfg.training.get("hub_token"),
                                      regularizers=runner.regularizers, llrd=llrd, freezing=freezing,
                                      layer_map=lmap, learning_rate=args.learning_rate,
                                      weight_decay=args.weight_decay)


register_task("continual", ContinualDataConfig, run_continual_recipe,
              "continual learning over a sequence of text tasks or Split-MNIST digit pairs: accuracy matrix, "
              "ACC / BWT / forgetting")
