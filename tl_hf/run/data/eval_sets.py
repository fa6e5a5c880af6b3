"""Extra evaluation sets of a text run (``evaluation.extra_eval_sets``): out-of-distribution sets evaluated after
training, reported as ``<name>_accuracy`` etc., never used to choose anything (WiSE-FT chooses on the eval set).

Each entry is ``{name: NAME, dataset: cr | imdb_test2000}`` (a sentiment set under the data root: ids 0 = negative,
1 = positive, for a run with 2 labels in that order) or ``{name: NAME, file: PATH, text_column, label_column,
file_format, quoting}`` (labels mapped onto the run's label names, as ``data.eval_file``); ``max_samples`` keeps a
seeded subset.

* ``cr`` -- product reviews (Hu & Liu 2004; SentEval's ``custrev.pos`` = 1 / ``custrev.neg`` = 0, one sentence per
  line, empty lines skipped).
* ``imdb_test2000`` -- 2,000 full IMDB test reviews, ``test.tsv`` with header ``id label text``, CSV-quoted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.data.paths import DataError, resolve_data_root

__all__ = ["EVAL_SET_DATASETS", "EVAL_SET_KEYS", "check_extra_eval_sets", "load_extra_eval_sets"]

EVAL_SET_DATASETS = ("cr", "imdb_test2000")
EVAL_SET_KEYS = ("name", "dataset", "file", "text_column", "text_pair_column", "label_column", "file_format",
                 "quoting", "max_samples")
_RESERVED = ("eval", "train", "test", "predict")
_SENTIMENT_NAMES = (["negative", "positive"], ["0", "1"], ["neg", "pos"])


def check_extra_eval_sets(specs: Any) -> None:
    """One-line :class:`ConfigError` for a malformed ``evaluation.extra_eval_sets``."""
    if not isinstance(specs, list):
        raise ConfigError(f"evaluation.extra_eval_sets must be a list of mappings, got {specs!r}")
    seen = set()
    for i, spec in enumerate(specs):
        where = f"evaluation.extra_eval_sets[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping like {{name: cr, dataset: cr}}, got {spec!r}")
        unknown = sorted(set(spec) - set(EVAL_SET_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], EVAL_SET_KEYS)} "
                              f"Valid: {', '.join(EVAL_SET_KEYS)}")
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or name in _RESERVED:
            raise ConfigError(f"{where}.name must be an identifier (letters, digits, _) other than "
                              f"{', '.join(_RESERVED)}; it prefixes the metrics (<name>_accuracy); got {name!r}")
        if name in seen:
            raise ConfigError(f"evaluation.extra_eval_sets names {name!r} twice; give each set its own name")
        seen.add(name)
        if ("dataset" in spec) == ("file" in spec):
            raise ConfigError(f"{where} ({name}): set exactly one of dataset ({', '.join(EVAL_SET_DATASETS)}) or "
                              "file")
        if "dataset" in spec and spec["dataset"] not in EVAL_SET_DATASETS:
            raise ConfigError(f"{where}.dataset: unknown set {spec['dataset']!r}"
                              f"{did_you_mean(str(spec['dataset']), EVAL_SET_DATASETS)} "
                              f"Valid: {', '.join(EVAL_SET_DATASETS)}; or give a file")
        m = spec.get("max_samples")
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"{where}.max_samples must be an int >= 1 (or null), got {m!r}")


def _sentiment_ids(label_names: list[str], name: str) -> None:
    if [str(n).lower() for n in label_names] not in _SENTIMENT_NAMES:
        raise ConfigError(f"evaluation.extra_eval_sets {name!r} is a sentiment set (0 = negative, 1 = positive), but "
                          f"this run's labels are {label_names}; use it with a binary sentiment run (labels negative, "
                          "positive) or give a file with your labels")


def _read_cr(folder: Path):
    from datasets import ClassLabel, Dataset, Features, Value

    texts, labels = [], []
    for fname, label in (("custrev.neg", 0), ("custrev.pos", 1)):
        path = folder / fname
        if not path.is_file():
            raise DataError(f"extra eval set cr: {path} not found (data root {folder.parent})")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(label)
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features), str(folder)


def _load_one(spec: dict, root: str | None, label_names: list[str]):
    """``(datasets.Dataset with text [text_pair] label, source)`` of one entry."""
    from tl_hf.run.data.text import DataConfig, load_text_classification

    name = spec["name"]
    if spec.get("dataset") == "cr":
        _sentiment_ids(label_names, name)
        return _read_cr(resolve_data_root(root) / "cr")
    if spec.get("dataset") == "imdb_test2000":
        _sentiment_ids(label_names, name)
        cfg = DataConfig(eval_file=str(resolve_data_root(root) / "imdb_test2000" / "test.tsv"), quoting="csv",
                         root=root, label_names=["0", "1"])
    else:
        keys = ("text_column", "text_pair_column", "label_column", "file_format", "quoting")
        cfg = DataConfig(eval_file=spec["file"], root=root, label_names=list(label_names),
                         **{k: spec[k] for k in keys if k in spec})
    data = load_text_classification(cfg, need_train=False)
    return data.eval, data.sources.get("eval", spec.get("file"))


def load_extra_eval_sets(specs: list[dict], *, root: str | None, label_names: list[str], tokenizer, max_length: int,
                         seed: int = 42) -> tuple[dict[str, Any], dict[str, str]]:
    """``({name: tokenized Dataset}, {name: source})`` for ``evaluation.extra_eval_sets``."""
    from tl_hf.run.data.text import TextClassificationData, tokenize_datasets

    sets, sources = {}, {}
    for spec in specs:
        ds, source = _load_one(spec, root, label_names)
        if spec.get("max_samples") is not None and spec["max_samples"] < len(ds):
            ds = ds.shuffle(seed=seed).select(range(spec["max_samples"]))
        if len(ds) == 0:
            raise DataError(f"extra eval set {spec['name']!r} ({source}) has no rows")
        sets[spec["name"]] = tokenize_datasets(TextClassificationData(eval=ds), tokenizer, max_length).eval
        sources[spec["name"]] = f"{source} ({len(ds):,} rows)"
    return sets, sources
