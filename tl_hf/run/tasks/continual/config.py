"""The ``data`` section of ``task: continual`` (:class:`ContinualDataConfig`) and the sources it names: text tasks
and replay sources (:class:`TextSource`), the Split-MNIST replay source (:class:`ImageSource`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean, one_line
from tl_hf.regularizers.replay import check_replay_scenario
from tl_hf.run.data.paths import data_root_field
from tl_hf.run.data.text import BUILTIN_DATASETS, FILE_FORMATS, DataConfig, check_text_limits

__all__ = ["ContinualDataConfig", "DEFAULT_PAIRS", "DEFAULT_TEXT_TASKS", "IMAGE_SOURCE_KEYS", "ImageSource", "KINDS",
           "SCENARIOS", "SOURCE_KEYS", "TASK_KEYS", "TextSource", "domain_label_error"]

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
    ``data`` is the :class:`~tl_hf.run.data.text.DataConfig` handed to
    :func:`~tl_hf.run.data.text.load_text_classification`."""

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
    root: str | None = data_root_field()
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
        check_replay_scenario(self.scenario, _REPLAY_SOURCE_TASK_IL, error=ConfigError)
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
        check_replay_scenario(self.scenario, _REPLAY_SOURCE_TASK_IL, error=ConfigError)
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
            raise ConfigError(f"{where}: {one_line(exc)}") from None

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

