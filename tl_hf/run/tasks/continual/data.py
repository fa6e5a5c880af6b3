"""The task sequence of a continual run, prepared: text tasks (loaded, labels mapped for the scenario, tokenized) and
their replay source; the checks every kind shares (replay budgets, ``model.num_labels``). Split-MNIST is in
:mod:`tl_hf.run.tasks.continual.mnist`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tl_hf._errors import ConfigError
from tl_hf.regularizers.replay import check_replay_budget
from tl_hf.run.data.text_files import quiet_datasets
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.continual.config import ContinualDataConfig, domain_label_error

__all__ = ["Prepared", "prepare_text"]


@dataclass
class Prepared:
    """The tasks, the head (size and label names), per-task info for the results, and the replay source."""

    tasks: list
    num_labels: int
    label_names: list[str]
    info: list[dict]
    collator: Any = None
    tokenizer: Any = None
    source: Any = None            # the replay source's (tokenized) dataset
    source_info: dict | None = None


def check_budgets(budgets: list[int], task1: str, n1: int, source: str | None, n_source: int | None,
                  text: bool = True) -> None:
    """Every replay budget must be fillable from task 1's training set and from the replay source."""
    for b in budgets:
        check_replay_budget(b, n1, f"the data available to fill it: task {task1!r} (task 1) has {n1} training "
                            "examples", f"the replay budget to at most {n1} or train on more examples of task 1",
                            prefix="regularizers: ", error=ConfigError)
        if n_source is not None:
            limits = "data.replay_source.max_samples / data.max_train_samples" if text else \
                "data.replay_source.max_samples, or the images available"
            check_replay_budget(b, n_source, f"data.replay_source {source!r}, which has {n_source} examples "
                                f"({limits})", f"the replay budget to at most {n_source} or give the source more "
                                "examples", prefix="regularizers: ", error=ConfigError)


def fit_num_labels(cfg: RunConfig, num_labels: int, names: list[str]) -> tuple[int, list[str]]:
    """``model.num_labels`` (when set) widens the head; a head smaller than the scenario needs is refused."""
    if cfg.model.num_labels is None:
        return num_labels, names
    if cfg.model.num_labels < num_labels:
        raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the {cfg.data.scenario} head needs "
                          f"{num_labels} outputs")
    return cfg.model.num_labels, names + [str(i) for i in range(num_labels, cfg.model.num_labels)]


class _PadCollator:
    """``DataCollatorWithPadding`` that also takes examples whose values are tensors (replayed memory examples are
    stored as tensors; new examples come as lists), by turning every tensor into a list first."""

    def __init__(self, tokenizer) -> None:
        from transformers import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)

    def __call__(self, features):
        return self.inner([{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.items()} for f in features])


def _relabel(ds, mapping: dict[int, int]):
    """Tokenized dataset with ``label`` -> ``labels`` (int64) through ``mapping``."""
    from datasets import Value

    ds = ds.cast_column("label", Value("int64"))
    return ds.map(lambda b: {"labels": [mapping[int(y)] for y in b["label"]]}, batched=True, remove_columns=["label"])


def _task_label_maps(d: ContinualDataConfig, sources, loaded) -> tuple[list[dict[int, int]], list[str], int]:
    """``(label id map per task, head label names, head size)``: task-incremental keeps each task's ids,
    class-incremental offsets them, domain-incremental maps names onto the first task's."""
    sc = d.scenario
    if sc == "domain_incremental":
        ref = loaded[0].label_names
        for s, data in zip(sources[1:], loaded[1:]):
            if set(data.label_names) != set(ref):
                raise ConfigError(domain_label_error(f"task {sources[0].name!r}", ref, f"task {s.name!r}",
                                                     data.label_names))
    maps: list[dict[int, int]] = []
    label_names: list[str] = []
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
        return maps, [str(i) for i in range(num_labels)], num_labels
    if sc == "class_incremental":
        return maps, label_names, offset
    return maps, list(loaded[0].label_names), len(loaded[0].label_names)


def _source_label_map(d: ContinualDataConfig, src, src_spec, first_task: str, label_names: list[str],
                      num_labels: int) -> tuple[dict[int, int], list[str], int]:
    """The replay source's label id map: its own block after the tasks' (class-incremental) or the tasks' ids by
    name (domain-incremental; task-incremental is refused by the config)."""
    if d.scenario == "class_incremental":
        src_map = {i: num_labels + i for i in range(len(src.label_names))}
        return src_map, label_names + [f"{src_spec.name}:{n}" for n in src.label_names], \
            num_labels + len(src.label_names)
    if set(src.label_names) != set(label_names):
        raise ConfigError("data.replay_source: domain_incremental needs the tasks' label names, but "
                          + domain_label_error(f"task {first_task!r}", label_names,
                                               f"replay source {src_spec.name!r}", src.label_names, prefix=False))
    return {i: label_names.index(n) for i, n in enumerate(src.label_names)}, label_names, num_labels


def _load_tokenizer(cfg: RunConfig):
    from transformers import AutoTokenizer

    from tl_hf.run.data.tokenizer import check_tokenizer_files, check_tokenizer_works
    from tl_hf.run.models import _from_pretrained

    name = cfg.model.tokenizer or cfg.model.name_or_path
    check_tokenizer_files(name, "model.tokenizer" if cfg.model.tokenizer else "model.name_or_path")
    tokenizer = _from_pretrained(AutoTokenizer, name, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)
    check_tokenizer_works(tokenizer, name)
    return tokenizer


def prepare_text(cfg: RunConfig, seed: int, budgets: list[int]) -> Prepared:
    """``kind: text``: load every task (and the replay source), map labels for the scenario, check the replay
    budgets and the head size, tokenize with the model's tokenizer."""
    from tl_hf.run.data.text import load_text_classification

    d: ContinualDataConfig = cfg.data
    sources, src_spec = d.text_sources(), d.replay_source_spec()
    with quiet_datasets():
        loaded = [load_text_classification(s.data, seed=seed) for s in sources]
        src = load_text_classification(src_spec.data, seed=seed) if src_spec else None
    for s, data in zip(sources, loaded):
        if data.eval is None:
            raise ConfigError(f"{s.where} ({s.name}): no eval set; every task needs one")
    maps, label_names, num_labels = _task_label_maps(d, sources, loaded)
    src_map = None
    if src is not None:
        src_map, label_names, num_labels = _source_label_map(d, src, src_spec, sources[0].name, label_names,
                                                             num_labels)
    check_budgets(budgets, sources[0].name, len(loaded[0].train), src_spec.name if src_spec else None,
                  len(src.train) if src is not None else None)
    num_labels, label_names = fit_num_labels(cfg, num_labels, label_names)
    tokenizer = _load_tokenizer(cfg)
    with quiet_datasets():
        tasks, info = _tokenize_tasks(d, sources, loaded, maps, tokenizer)
        source_ds, source_info = _tokenize_source(d, src, src_spec, src_map, tokenizer) if src is not None \
            else (None, None)
    return Prepared(tasks=tasks, num_labels=num_labels, label_names=label_names, info=info,
                    collator=_PadCollator(tokenizer), tokenizer=tokenizer, source=source_ds, source_info=source_info)


def _tokenize_tasks(d: ContinualDataConfig, sources, loaded, maps, tokenizer) -> tuple[list, list[dict]]:
    from tl_hf.continual import Task
    from tl_hf.run.data.text import tokenize_datasets

    tasks, info = [], []
    for s, data, m in zip(sources, loaded, maps):
        tok = tokenize_datasets(data, tokenizer, d.max_length)
        train, ev = _relabel(tok.train, m), _relabel(tok.eval, m)
        labels = [m[i] for i in range(len(data.label_names))]
        tasks.append(Task(s.name, train, ev, labels=labels, class_names=list(data.label_names)))
        info.append({"name": s.name, "train_samples": len(train), "eval_samples": len(ev),
                     "labels": labels, "class_names": list(data.label_names),
                     "train_source": data.sources.get("train"), "eval_source": data.sources.get("eval")})
    return tasks, info


def _tokenize_source(d: ContinualDataConfig, src, src_spec, src_map, tokenizer) -> tuple[Any, dict]:
    from tl_hf.run.data.text import tokenize_datasets

    src.eval = None
    source_ds = _relabel(tokenize_datasets(src, tokenizer, d.max_length).train, src_map)
    return source_ds, {"name": src_spec.name, "samples": len(source_ds), "source": src.sources.get("train"),
                       "labels": [src_map[i] for i in range(len(src.label_names))],
                       "class_names": list(src.label_names)}
