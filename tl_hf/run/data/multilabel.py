"""Multi-label text data (``task: text_multilabel``): the ``data`` section (:class:`MultiLabelDataConfig`), the
built-in GoEmotions and csv/tsv/json/jsonl/parquet files whose label column holds several labels per row.

A row's labels are a comma-separated string of ids or names (``"0,15"``, ``"joy,love"``; the separator is
``data.label_separator``), a list (``[0, 15]``, ``["joy"]``), one int, or empty / null (a row without labels: allowed,
counted). The label set, in id order, is ``data.label_names``, else the lines of ``data.labels_file``, else the
training split's labels (ids: ``0..max``; names: sorted). A label outside the set, or a label listed twice in one
row, is an error naming the file, the row and the column (a duplicate is refused, not merged: it usually means a
broken join or export). Every split is checked against the set; the splits come out as ``text`` + ``label_ids``
(the sorted ids of each row).

The validation split (``eval``) is where the decision threshold is tuned; the ``test`` split is only scored with it.
Without a validation split, ``data.eval_fraction`` (default 0.1) of the training rows is held out for it.

* ``goemotions`` -- Demszky et al. 2020, ``goemotions/{train,dev,test}.tsv`` under the data root: no header,
  ``text<TAB>label_ids<TAB>comment_id``, some texts CSV-quoted (read with Python's csv reader; every row must have
  the three fields, rows are counted against lines), 28 labels from ``emotions.txt`` (27 emotions + neutral).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.data.labels import check_text_feature
from tl_hf.run.data.paths import DataError, data_root_field, resolve_data_root, resolve_file
from tl_hf.run.data.text import check_text_limits
from tl_hf.run.data.text_files import FORMATS, QUOTING, read_file
from tl_hf.run.metrics.multilabel import OBJECTIVES

__all__ = ["MULTILABEL_DATASETS", "MultiLabelData", "MultiLabelDataConfig", "THRESHOLD_MODES", "load_multilabel",
           "parse_label_rows"]

#: built-in dataset -> (splits -> file, default eval split)
MULTILABEL_DATASETS = {"goemotions": ({"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, "dev")}
THRESHOLD_MODES = ("tune", "tune_per_label")
DEFAULT_EVAL_FRACTION = 0.1
_INT = re.compile(r"[+-]?\d+")


@dataclass
class MultiLabelDataConfig:
    """Where the multi-label data comes from, its label set, and how the decision threshold is chosen."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in multi-label dataset under the data root: {', '.join(MULTILABEL_DATASETS)}. Leave empty "
                "and set train_file (and eval_file / test_file) for your own files."})
    root: str | None = data_root_field()
    train_split: str = field(default="train", metadata={"help": "Built-in dataset: split to train on."})
    eval_split: str | None = field(default=None, metadata={
        "help": "Built-in dataset: the validation split, where the threshold is tuned (goemotions: dev). Never test."})
    test_split: str | None = field(default="test", metadata={
        "help": "Built-in dataset: split scored with the validation-tuned threshold; null (or 'none') to skip."})
    train_file: str | None = field(default=None, metadata={
        "help": "Training file (csv, tsv, json, jsonl, parquet); a relative path is looked up under the data root "
                "first, then the current directory."})
    eval_file: str | None = field(default=None, metadata={
        "help": "Validation file (threshold tuning); without it, eval_fraction of the training rows is held out."})
    test_file: str | None = field(default=None, metadata={
        "help": "Optional test file, scored with the validation-tuned threshold (never tuned on)."})
    file_format: str | None = field(default=None, metadata={
        "help": f"One of {', '.join(FORMATS)}. Default: from the file extension."})
    quoting: str | None = field(default=None, metadata={
        "help": "csv/tsv files: 'none' reads every cell verbatim, 'csv' honours CSV quoting. Default: none for .tsv, "
                "csv for .csv (a label cell '0,15' in a .csv file must then be quoted)."})
    text_column: str = field(default="text", metadata={"help": "Files: column holding the text."})
    label_column: str = field(default="labels", metadata={
        "help": "Files: column holding each row's labels: ids or names separated by label_separator, a list, or "
                "empty (no label)."})
    label_separator: str = field(default=",", metadata={"help": "Separator of the labels in a string label cell."})
    label_names: list[str] | None = field(default=None, metadata={
        "help": "The label set, in id order. Default: labels_file, else the training labels (ids 0..max, or the "
                "names sorted)."})
    labels_file: str | None = field(default=None, metadata={
        "help": "A text file with one label name per line, in id order (like GoEmotions' emotions.txt)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random subset of this many rows (default: all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Tune the threshold on a seeded random subset of this many validation rows (default: all)."})
    max_test_samples: int | None = field(default=None, metadata={
        "help": "Score a seeded random subset of this many test rows (default: all)."})
    max_length: int = field(default=128, metadata={"help": "Truncate tokenized inputs to this many tokens."})
    eval_fraction: float | None = field(default=None, metadata={
        "help": f"Without a validation split: hold out this seeded fraction of the training rows for it (default "
                f"{DEFAULT_EVAL_FRACTION} when the threshold is tuned or a test split is given)."})
    threshold: float | str = field(default="tune", metadata={
        "help": "The decision threshold on the sigmoid scores (a label is predicted when its score >= it): 'tune' "
                "(one global threshold, grid 0.05..0.95, chosen on the validation split for threshold_objective), "
                "'tune_per_label' (each label's own, maximising its F1 on the validation split), or a number in "
                "(0, 1). Never tuned on the test split."})
    threshold_objective: str = field(default="f1_macro", metadata={
        "help": f"What threshold: tune maximises on the validation split: {', '.join(OBJECTIVES)}."})
    prior_bias: bool = field(default=True, metadata={
        "help": "Start a new head's bias at each label's log-odds in the training split (smoothed frequency), as "
                "Lin et al. 2017 (focal loss, sec. 3.3) do for rare classes: at bias 0 every label starts at p=0.5 "
                "and the first steps push all features towards 'no label' (measured: MiniLM on GoEmotions collapsed "
                "to constant outputs). A head loaded from the checkpoint is left as it is."})
    seed: int | None = field(default=None, metadata={"help": "Seed of the subsetting. Default: training.seed."})

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in MULTILABEL_DATASETS:
            raise ConfigError(f"data.dataset: unknown multi-label dataset {self.dataset!r}"
                              + did_you_mean(self.dataset, list(MULTILABEL_DATASETS))
                              + f" Built-in: {', '.join(MULTILABEL_DATASETS)}; or set data.train_file")
        if self.dataset is None and self.train_file is None:
            raise ConfigError("data: set data.dataset (built-in: " + ", ".join(MULTILABEL_DATASETS)
                              + ") or data.train_file (and data.eval_file / data.test_file)")
        if self.dataset is not None and (self.train_file or self.eval_file or self.test_file):
            raise ConfigError("data: set either data.dataset or data.train_file/eval_file/test_file, not both")
        if isinstance(self.test_split, str) and self.test_split.strip().lower() == "none":
            self.test_split = None
        _check_threshold(self)
        _check_splits(self)
        if self.eval_fraction is not None and not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.label_names is not None:
            names = [str(n) for n in self.label_names]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice or not names:
                raise ConfigError(f"data.label_names lists {', '.join(map(repr, twice))} more than once; name each "
                                  "label once, in id order" if twice else "data.label_names is empty")
            if self.labels_file:
                raise ConfigError("data: set data.label_names or data.labels_file, not both")
        if not self.label_separator:
            raise ConfigError("data.label_separator must not be empty (e.g. ',')")
        if self.text_column == self.label_column:
            raise ConfigError(f"data.text_column and data.label_column are both {self.text_column!r}; each names a "
                              "different column")
        if self.quoting is not None and self.quoting not in QUOTING:
            raise ConfigError(f"data.quoting must be one of {', '.join(QUOTING)}, got {self.quoting!r}")
        if self.file_format is not None and self.file_format not in FORMATS:
            raise ConfigError(f"data.file_format must be one of {', '.join(FORMATS)}, got {self.file_format!r}")
        check_text_limits(self)
        if self.max_test_samples is not None and self.max_test_samples < 1:
            raise ConfigError(f"data.max_test_samples must be >= 1 (or null for all rows), got {self.max_test_samples}")

    @property
    def tunes(self) -> bool:
        return isinstance(self.threshold, str)


def _check_threshold(cfg: MultiLabelDataConfig) -> None:
    t = cfg.threshold
    if isinstance(t, str):
        if t.strip() not in THRESHOLD_MODES:
            raise ConfigError(f"data.threshold must be tune, tune_per_label or a number in (0, 1), got {t!r}"
                              + did_you_mean(t, THRESHOLD_MODES))
        cfg.threshold = t.strip()
    elif not 0.0 < float(t) < 1.0:
        raise ConfigError(f"data.threshold={t} is outside (0, 1): it is compared with sigmoid scores; use e.g. 0.5, "
                          "or tune / tune_per_label")
    if cfg.threshold_objective not in OBJECTIVES:
        raise ConfigError(f"data.threshold_objective must be one of {', '.join(OBJECTIVES)}, got "
                          f"{cfg.threshold_objective!r}" + did_you_mean(cfg.threshold_objective, OBJECTIVES))


def _check_splits(cfg: MultiLabelDataConfig) -> None:
    if cfg.dataset is not None:
        splits, default_eval = MULTILABEL_DATASETS[cfg.dataset]
        cfg.eval_split = cfg.eval_split or default_eval
        for key in ("train_split", "eval_split", "test_split"):
            v = getattr(cfg, key)
            if v is not None and v not in splits:
                raise ConfigError(f"data.{key}: {cfg.dataset} has splits {', '.join(splits)}; got {v!r}")
        if cfg.eval_split == "test":
            raise ConfigError(f"data.eval_split=test: the threshold is tuned on the eval split, never on test; keep "
                              f"data.eval_split={default_eval} (test is scored with the {default_eval}-tuned "
                              "threshold through data.test_split)")
        if len({cfg.train_split, cfg.eval_split, cfg.test_split} - {None}) < 3 - (cfg.test_split is None):
            raise ConfigError(f"data: train_split, eval_split and test_split must be different splits, got "
                              f"{cfg.train_split}, {cfg.eval_split}, {cfg.test_split}")
    elif cfg.eval_file and cfg.test_file and cfg.eval_file == cfg.test_file:
        raise ConfigError("data.eval_file and data.test_file are the same file: the threshold would be tuned on the "
                          "test rows; give a separate validation file or leave data.eval_file unset (a held-out "
                          "fraction of the training rows is used)")


@dataclass
class MultiLabelData:
    """``train`` / ``eval`` (validation) / ``test`` are ``datasets.Dataset`` with ``text`` and ``label_ids`` (a
    list of int per row); ``unlabelled``: rows without any label per split."""

    train: Any = None
    eval: Any = None
    test: Any = None
    label_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    unlabelled: dict[str, int] = field(default_factory=dict)


# -- labels -----------------------------------------------------------------------------------------------------------

def _tokens(value, sep: str) -> list:
    """The labels of one cell: a list's items, a string split on ``sep`` (blank: none), an int, or none for null."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None and str(v).strip() != ""]
    if isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (int, float)):
        return [value]
    return [t.strip() for t in str(value).split(sep) if t.strip()]


def _as_id(token) -> int | None:
    if isinstance(token, bool):
        return None
    if isinstance(token, int):
        return token
    if isinstance(token, float):
        return int(token) if token.is_integer() else None
    t = str(token).strip()
    return int(t) if _INT.fullmatch(t) else None


def label_names_from(rows: list[list], where: str, column: str) -> list[str]:
    """The label set of the training rows: ``0..max id`` when every label is an id, else the names sorted."""
    tokens = [t for r in rows for t in r]
    if not tokens:
        raise DataError(f"{where}: no row has a label in column {column!r} (data.label_column): the training split "
                        "needs labelled rows")
    ids = [_as_id(t) for t in tokens]
    if all(i is not None for i in ids):
        if min(ids) < 0:
            raise DataError(f"{where}: label id {min(ids)} in column {column!r} is negative; ids are 0..N-1")
        return [str(i) for i in range(max(ids) + 1)]
    if any(i is not None for i in ids):
        num = next(t for t, i in zip(tokens, ids) if i is not None)
        name = next(t for t, i in zip(tokens, ids) if i is None)
        raise DataError(f"{where}: column {column!r} mixes label ids and names (e.g. {num!r} and {name!r}); give "
                        "every label the same way, or list the names in data.label_names")
    return sorted({str(t).strip() for t in tokens})


def parse_label_rows(rows: list[list], names: list[str], where: str, column: str, row_name) -> list[list[int]]:
    """Each row's tokens as sorted label ids of ``names`` (by name, else by id); ``row_name(i)`` says where row i
    is (``row 3 (line 4)``). A label outside the set or listed twice in a row is a :class:`DataError`."""
    index = {n: i for i, n in enumerate(names)}
    shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    out = []
    for r, tokens in enumerate(rows):
        ids = []
        for t in tokens:
            i = index.get(str(t).strip())
            if i is None:
                i = _as_id(t)
                if i is None:
                    raise DataError(f"{where} {row_name(r)}: label {str(t)!r} in column {column!r} is not in the "
                                    f"label set ({len(names)} labels: {shown})" + did_you_mean(str(t), names)
                                    + " Fix the row, or add the label to data.label_names")
                if not 0 <= i < len(names):
                    raise DataError(f"{where} {row_name(r)}: label id {i} in column {column!r} is outside the label "
                                    f"set (ids 0..{len(names) - 1}: {shown}); fix the row, or extend "
                                    "data.label_names")
            if i in ids:
                raise DataError(f"{where} {row_name(r)}: label {names[i]!r} is listed twice in column {column!r}; "
                                "list each label once per row (duplicates are refused, not merged)")
            ids.append(i)
        out.append(sorted(ids))
    return out


def _read_label_names(cfg: MultiLabelDataConfig) -> list[str] | None:
    if cfg.label_names:
        return [str(n) for n in cfg.label_names]
    if not cfg.labels_file:
        return None
    path = resolve_file(cfg.labels_file, cfg.root, "data.labels_file")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if not names or twice:
        raise DataError(f"data.labels_file {path}: " + ("no label names in it" if not names else
                                                       f"{', '.join(map(repr, twice))} listed more than once"))
    return names


# -- reading ----------------------------------------------------------------------------------------------------------

def _read_goemotions(path: Path) -> tuple[list[str], list[list], Any]:
    """``(texts, label tokens, row_name)`` of a GoEmotions split: ``text<TAB>ids<TAB>comment_id``, CSV-quoted texts;
    rows counted against lines."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    lines = [ln for ln in text.split("\n") if ln.strip("\r")]
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    if len(rows) != len(lines):
        raise DataError(f"{path}: {len(rows)} rows were read but the file has {len(lines)} lines (a quote that never "
                        "closes?); expected one text<TAB>label_ids<TAB>comment_id row per line")
    texts, labels = [], []
    for i, r in enumerate(rows):
        if len(r) != 3 or not re.fullmatch(r"\d+(,\d+)*", r[1]):
            raise DataError(f"{path} line {i + 1}: expected text<TAB>label_ids<TAB>comment_id with comma-separated "
                            f"ids, got {lines[i][:60]!r}; fix or remove the line")
        texts.append(r[0])
        labels.append(r[1].split(","))
    return texts, labels, lambda r: f"line {r + 1}"


def _read_user_file(cfg: MultiLabelDataConfig, path: Path, key: str) -> tuple[list[str], list[list], Any]:
    ds = read_file(path, cfg.file_format, cfg.quoting, key)
    for k, col in (("text_column", cfg.text_column), ("label_column", cfg.label_column)):
        if col not in ds.column_names:
            raise DataError(f"column {col!r} (data.{k}) not found in {path}; its columns are: "
                            f"{', '.join(ds.column_names)}")
    check_text_feature(ds, cfg.text_column, "data.text_column", str(path))
    fmt = cfg.file_format or path.suffix.lower().lstrip(".")
    row_name = (lambda r: f"row {r + 1} (line {r + 2})") if fmt in ("csv", "tsv") else \
        (lambda r: f"row {r + 1} (line {r + 1})") if fmt == "jsonl" else (lambda r: f"row {r + 1}")
    return ds[cfg.text_column], [_tokens(v, cfg.label_separator) for v in ds[cfg.label_column]], row_name


def _raw_splits(cfg: MultiLabelDataConfig) -> dict[str, tuple[str, tuple]]:
    """split -> (source, (texts, label tokens, row_name)) for train, eval and test where given."""
    out = {}
    if cfg.dataset is not None:
        root = resolve_data_root(cfg.root)
        folder = root / cfg.dataset
        if not folder.is_dir():
            raise DataError(f"dataset folder not found: {folder} (data root {root})")
        files = MULTILABEL_DATASETS[cfg.dataset][0]
        for split, name in (("train", cfg.train_split), ("eval", cfg.eval_split), ("test", cfg.test_split)):
            if name is not None:
                out[split] = (str(folder / files[name]), _read_goemotions(folder / files[name]))
        return out
    for split in ("train", "eval", "test"):
        name = getattr(cfg, f"{split}_file")
        if name:
            path = resolve_file(name, cfg.root, f"data.{split}_file")
            out[split] = (str(path), _read_user_file(cfg, path, f"data.{split}_file"))
    return out


def _goemotions_names(cfg: MultiLabelDataConfig) -> list[str]:
    path = resolve_data_root(cfg.root) / cfg.dataset / "emotions.txt"
    if not path.is_file():
        raise DataError(f"label names file not found: {path}")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(names) != 28 or len(set(names)) != 28:
        raise DataError(f"{path}: expected 28 distinct label names (27 emotions + neutral), found {len(names)}")
    return names


def load_multilabel(cfg: MultiLabelDataConfig, seed: int = 42) -> MultiLabelData:
    """Read, check and encode every split, hold out a validation split when needed, and subset (seeded)."""
    from datasets import Dataset, Sequence, Value, Features

    seed = cfg.seed if cfg.seed is not None else seed
    raw = _raw_splits(cfg)
    names = _goemotions_names(cfg) if cfg.dataset else _read_label_names(cfg)
    src, (_, tokens, _) = raw["train"]
    if names is None:
        names = label_names_from(tokens, src, cfg.label_column)
    out = MultiLabelData(label_names=names)
    features = Features({"text": Value("string"), "label_ids": Sequence(Value("int64"))})
    for split, (source, (texts, rows, row_name)) in raw.items():
        ids = parse_label_rows(rows, names, source, cfg.label_column, row_name)
        if split == "train" and not any(ids):
            raise DataError(f"{source}: no row has a label in column {cfg.label_column!r} (data.label_column): the "
                            "training split needs labelled rows")
        setattr(out, split, Dataset.from_dict({"text": list(texts), "label_ids": ids}, features=features))
        out.sources[split] = source
    out.sources["eval_split"] = cfg.eval_split if cfg.dataset else "eval_file"
    fraction = cfg.eval_fraction or (DEFAULT_EVAL_FRACTION if cfg.tunes or out.test is not None else None)
    if out.eval is None and fraction is not None:
        split = out.train.train_test_split(test_size=fraction, seed=seed)
        out.train, out.eval = split["train"], split["test"]
        out.sources["eval"] = f"held-out {fraction:.0%} of {out.sources['train']} (seed {seed})"
        out.sources["eval_split"] = "held-out"
    for split in ("train", "eval", "test"):
        ds, limit = getattr(out, split), getattr(cfg, f"max_{split}_samples")
        if ds is not None and limit is not None and limit < len(ds):
            setattr(out, split, ds.shuffle(seed=seed).select(range(limit)))
            ds = getattr(out, split)
        if ds is not None:
            if len(ds) == 0:
                raise DataError(f"the {split} data ({out.sources.get(split)}) has no rows")
            out.unlabelled[split] = sum(1 for r in ds["label_ids"] if not r)
    return out
