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
import functools
import os
import typing
from typing import Any

import yaml

from tl_hf._errors import ConfigError, closest, hub_token_refused, one_line
from tl_hf.regularizers import REGULARIZERS, build_regularizer
from tl_hf.run.coerce import OverrideStr, build_dataclass, coerce, type_name, unknown_message
from tl_hf.run.data.text import DataConfig
from tl_hf.run.sections import (NON_MAPPING_SECTIONS, SECTION_TYPES, SECTIONS, TRAINING_DEFAULTS, TRAINING_EXTRA,
                                RunConfig)
from tl_hf.run.tasks import TASKS
from tl_hf.run.validate import check_training_dicts

__all__ = ["describe", "load_config", "parse_overrides"]


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = (), *,
                task: str | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None), apply overrides, coerce and validate.
    ``task``: refuse a config whose ``task`` (after overrides) is another one (a recipe that runs one task)."""
    raw: dict[str, Any] = {} if path is None else read_yaml(os.fspath(path))
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(unknown_message(str(key), SECTIONS, "section"))
        if key in NON_MAPPING_SECTIONS:
            continue
        if raw[key] is None:
            raw[key] = {}
        if not isinstance(raw[key], dict):
            raise ConfigError(f"section {key!r} must be a mapping of keys to values, got {raw[key]!r}")
    raw = {k: (v if k in NON_MAPPING_SECTIONS else dict(v)) for k, v in raw.items()}
    for dotted, value in parse_overrides(overrides):
        _apply_override(raw, dotted, value)
    if task is not None and raw.get("task") != task:
        raise ConfigError(f"{path} has task {raw.get('task')!r}; this recipe runs task: {task} (tl-hf run runs any "
                          "task)")
    return _build_run_config(raw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (configs are data: no tags that build objects) that refuses a key given twice in one
    mapping: plain PyYAML keeps the last one and silently drops the rest (a whole section, for two ``training:``)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` (merged keys may be overridden)
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the base class names it
                break
            if first is not None:
                raise ConfigError(f"{key_node.start_mark.name}: duplicate key {key!r} at line {first} and line "
                                  f"{line}; keep one (YAML would silently drop the first)")
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML config file: safe loading, duplicate keys refused, an empty file, a directory
    or a top level that is not a mapping named as such."""
    if os.path.isdir(path):
        raise ConfigError(f"config {path} is a directory; give the YAML file (e.g. {os.path.join(path, 'run.yaml')})")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            loaded = yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {one_line(exc)}") from None
    if loaded is None:
        raise ConfigError(f"config file {path} is empty (or only comments); it needs at least a training section, "
                          "e.g. training: {output_dir: outputs/run}")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(loaded).__name__}")
    return loaded


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
    if parts[0] in ("task", "strict") and len(parts) == 1:
        raw[parts[0]] = OverrideStr(value) if parts[0] == "strict" else value
        return
    if parts[0] == "regularizers":
        raise ConfigError(f"override {dotted}={value}: the regularizers list can only be set in the config file")
    if parts[0] not in SECTIONS:
        if len(parts) > 1:
            raise ConfigError(unknown_message(parts[0], SECTIONS, "section", where=f" in override {dotted}={value}"))
        sections = [s for s in SECTIONS if s not in NON_MAPPING_SECTIONS]
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
    node[parts[-1]] = OverrideStr(value)


@functools.lru_cache(maxsize=None)
def _training_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainingArguments) if f.init}
    return fields, helps


def _section_keys(section: str, task: str = "text_classification") -> list[str]:
    if section == "training":
        return list(_training_fields()[0]) + list(TRAINING_EXTRA)
    cls = SECTION_TYPES[section]
    if section == "data":
        cls = TASKS[task].data_cls if task in TASKS else DataConfig
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _build_run_config(raw: dict) -> RunConfig:
    kwargs: dict[str, Any] = {}
    task = raw.get("task", "text_classification")
    if task not in TASKS:
        raise ConfigError(unknown_message(str(task), list(TASKS), "task"))
    kwargs["task"] = task
    kwargs["strict"] = coerce(raw.get("strict", False), bool, "strict")
    data_cls = TASKS[task].data_cls
    for section in SECTION_TYPES:
        if section in raw:
            cls = data_cls if section == "data" else SECTION_TYPES[section]
            kwargs[section] = build_dataclass(cls, raw[section], section)
    if "data" not in raw:
        kwargs["data"] = DataConfig(dataset="sst2") if data_cls is DataConfig else data_cls()
    kwargs["regularizers"] = _build_regularizers(raw.get("regularizers") or [])
    kwargs["training"] = _build_training(raw.get("training") or {})
    return RunConfig(**kwargs)


def _build_regularizers(regs) -> list[dict]:
    """Each entry coerced by its config's field types (YAML 1e5 is a str) and validated; objects are built later."""
    if not isinstance(regs, list) or not all(isinstance(r, dict) and "name" in r for r in regs):
        raise ConfigError("regularizers must be a list of mappings with a name, e.g. [{name: l2sp, alpha: 0.01}]")
    typed = []
    for i, r in enumerate(regs):
        r = dict(r)
        cls = REGULARIZERS.get(r["name"])
        if cls is not None:
            hints = typing.get_type_hints(cls.config_cls)
            aliases = getattr(cls.config_cls, "ALIASES", {})
            for k, v in list(r.items()):
                key = aliases.get(k, k)
                if k != "name" and key in hints:
                    r[k] = coerce(v, hints[key], f"regularizers[{i}].{k}")
        try:
            build_regularizer(dict(r))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"regularizers: {one_line(exc)}") from None
        typed.append(r)
    return typed


def _build_training(section: dict) -> dict[str, Any]:
    """``TRAINING_DEFAULTS`` updated with ``section``, each key a checked field of ``TrainingArguments``."""
    training = dict(TRAINING_DEFAULTS)
    fields, _ = _training_fields()
    fields = {**fields, **{k: tp for k, (tp, _) in TRAINING_EXTRA.items()}}
    for key, value in section.items():
        if key == "hub_token":
            raise ConfigError(hub_token_refused("training.hub_token"))
        if key not in fields:
            raise ConfigError(unknown_message(str(key), list(fields), "key", section="training",
                                              extra=" of transformers.TrainingArguments"))
        training[key] = coerce(value, fields[key], f"training.{key}")
    _check_training(training)
    check_training_dicts(training)
    return training


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


def describe(section: str | None = None) -> str:
    """Help text of every key (for ``tl-hf keys``-style listings and docs)."""
    lines = []
    for s in SECTIONS if section is None else (section,):
        if s == "training":
            lines.append("training: any keyword argument of transformers.TrainingArguments, and")
            lines += [f"  {k} ({type_name(tp)}): {h}" for k, (tp, h) in TRAINING_EXTRA.items()]
            continue
        if s in NON_MAPPING_SECTIONS:  # task, regularizers: not a mapping of keys; their RunConfig help
            helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(RunConfig)}
            lines.append(f"{s}: {helps[s]}")
            continue
        lines.append(f"{s}:")
        hints = typing.get_type_hints(SECTION_TYPES[s])
        for f in dataclasses.fields(SECTION_TYPES[s]):
            if f.init:
                lines.append(f"  {f.name} ({type_name(hints[f.name])}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
