"""Text-classification data: the ``data`` section (:class:`DataConfig`); load a built-in dataset or csv/tsv/json/jsonl
files, map columns to ``text`` / ``text_pair`` / ``label``, subset with a seed, tokenize.

Built-in datasets (``sst2``, ``trec``, ``emotion``; the GLUE pairs ``rte``, ``mrpc`` and the regression ``stsb``) live
under the data root (``data.root``, else
``$TL_HF_DATA_ROOT``, else ``../shared/data``) and are read by :mod:`tl_hf.run.data.text_builtin`; files (csv, tsv,
json, jsonl, parquet) by :mod:`tl_hf.run.data.text_files`, both through ``datasets`` builders, offline. Labels become
a ``ClassLabel`` column whose set comes from the training split (:mod:`tl_hf.run.data.labels`); regression targets
(``data.problem_type``: ``regression``, or detected by ``auto``) a ``float32`` column. Sentence pairs are tokenized as
pairs, truncated ``longest_first`` to ``data.max_length``; the truncated examples are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean, one_line
from tl_hf.run.data.labels import (PROBLEM_TYPES, check_label_feature, check_text_feature, detect_problem_type,
                                   encode_labels, encode_scores, label_set)
from tl_hf.run.data.paths import DataError, data_root_field, resolve_data_root, resolve_file
from tl_hf.run.data.text_builtin import (BUILTIN as _BUILTIN, EMOTIONS, FOLDERS, PAIR_DATASETS, REGRESSION_DATASETS,
                                         TREC_COARSE, read_builtin_split)
from tl_hf.run.data.text_files import FORMATS as FILE_FORMATS, QUOTING, quiet_datasets, read_file

__all__ = ["BUILTIN_DATASETS", "DataConfig", "EMOTIONS", "FILE_FORMATS", "PAIR_DATASETS", "PROBLEM_TYPES", "QUOTING",
           "REGRESSION", "REGRESSION_DATASETS", "TREC_COARSE", "TextClassificationData", "check_text_limits",
           "load_text_classification", "tokenize_datasets"]

BUILTIN_DATASETS = tuple(_BUILTIN)
REGRESSION = "regression"


def check_text_limits(data) -> None:
    """Shared checks of a text data section: sample limits >= 1 (or null) and max_length >= 2."""
    for name in ("max_train_samples", "max_eval_samples"):
        v = getattr(data, name)
        if v is not None and v < 1:
            raise ConfigError(f"data.{name} must be >= 1 (or null for all rows), got {v}")
    if data.max_length < 2:
        raise ConfigError(f"data.max_length must be >= 2, got {data.max_length}")


def _check_columns(data) -> None:
    """data.text_column, data.text_pair_column and data.label_column name three different columns."""
    keys = [("data.text_column", data.text_column), ("data.label_column", data.label_column)]
    if data.text_pair_column:
        keys.insert(1, ("data.text_pair_column", data.text_pair_column))
    for i, (k1, v1) in enumerate(keys):
        for k2, v2 in keys[i + 1:]:
            if v1 == v2:
                raise ConfigError(f"{k1} and {k2} are both {v1!r}; each names a different column (the text would be "
                                  "its own label)" if "label" in k2 else f"{k1} and {k2} are both {v1!r}; each names "
                                  "a different column")


def _check_problem_type(data) -> None:
    """data.problem_type is one of PROBLEM_TYPES and fits a built-in dataset."""
    if data.problem_type == "multi_label_classification":
        raise ConfigError("data.problem_type=multi_label_classification: multi-label data is its own task; set "
                          "task: text_multilabel (labels as lists of names or ids)")
    if data.problem_type not in PROBLEM_TYPES:
        raise ConfigError(f"data.problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {data.problem_type!r}"
                          + did_you_mean(str(data.problem_type), PROBLEM_TYPES))
    if data.dataset is None or data.problem_type == "auto":
        return
    regression = data.dataset in REGRESSION_DATASETS
    if regression != (data.problem_type == REGRESSION):
        kind = "a regression dataset (float scores)" if regression else "a classification dataset"
        raise ConfigError(f"data.dataset={data.dataset} is {kind}; set data.problem_type to auto or "
                          f"{REGRESSION if regression else 'single_label_classification'}, not {data.problem_type}")


@dataclass
class DataConfig:
    """Where the text-classification data comes from and how it is prepared."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(BUILTIN_DATASETS)}. Leave empty and set "
                "train_file/eval_file for your own csv/tsv/json/jsonl files."})
    root: str | None = data_root_field()
    train_split: str = field(default="train", metadata={"help": "Built-in dataset: split to train on."})
    eval_split: str | None = field(default=None, metadata={
        "help": "Built-in dataset: split to evaluate on (default: sst2 dev, trec test, emotion val; sst2: dev or "
                "test)."})
    train_file: str | None = field(default=None, metadata={
        "help": "Training file (csv, tsv, json, jsonl); a relative path is looked up under the data root first, "
                "then the current directory."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation file, same rules as train_file."})
    file_format: str | None = field(default=None, metadata={
        "help": f"One of {', '.join(FILE_FORMATS)}. Default: from the file extension."})
    quoting: str | None = field(default=None, metadata={
        "help": "csv/tsv files: 'none' reads every cell verbatim (a quote is text), 'csv' honours CSV quoting. "
                "Default: none for .tsv, csv for .csv. Either way the rows must match the file's lines."})
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
    problem_type: str = field(default="auto", metadata={
        "help": "auto | single_label_classification | regression. auto: class names or integer ids classify; "
                "fractional numbers (at least 3 distinct values, e.g. STS-B scores) are a regression target (one "
                "output, MSE loss, Pearson / Spearman / MSE); labels that could be either are refused, asking for "
                "this key. Multi-label data is task: text_multilabel."})

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
        if self.label_names is not None:
            twice = sorted({str(n) for n in self.label_names if list(map(str, self.label_names)).count(str(n)) > 1})
            if twice:
                raise ConfigError(f"data.label_names lists {', '.join(map(repr, twice))} more than once; name each "
                                  "class once, in id order")
        if self.quoting is not None and self.quoting not in QUOTING:
            raise ConfigError(f"data.quoting must be one of {', '.join(QUOTING)}, got {self.quoting!r}")
        _check_columns(self)
        _check_problem_type(self)
        if self.file_format is not None and self.file_format not in FILE_FORMATS:
            raise ConfigError(f"data.file_format must be one of {', '.join(FILE_FORMATS)}, got {self.file_format!r}")
        check_text_limits(self)


@dataclass
class TextClassificationData:
    """``train`` / ``eval`` are ``datasets.Dataset`` with columns ``text``, optional ``text_pair``, and ``label``
    (int ids; ``float32`` scores when ``problem_type`` is regression, with no ``label_names``). ``truncation``: what
    :func:`tokenize_datasets` did (max_length, strategy, truncated examples per split)."""

    train: Any = None
    eval: Any = None
    label_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    problem_type: str = "single_label_classification"
    truncation: dict[str, Any] = field(default_factory=dict)

    @property
    def is_pair(self) -> bool:
        ds = self.train if self.train is not None else self.eval
        return ds is not None and "text_pair" in ds.column_names

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_text_classification(cfg: DataConfig, seed: int = 42, *, need_train: bool = True,
                             allow_regression: bool = False) -> TextClassificationData:
    """Load, map columns, encode labels and subset (seeded) as ``cfg`` says. Does not tokenize. Regression targets
    are refused unless ``allow_regression`` (the caller trains a one-output regression head)."""
    seed = cfg.seed if cfg.seed is not None else seed
    if cfg.dataset is not None:
        data = _load_builtin(cfg, need_train)
    elif cfg.hub_id is not None:
        data = _load_hub(cfg, need_train)
    else:
        data = _load_files(cfg, need_train)
    if data.problem_type == REGRESSION and not allow_regression:
        raise ConfigError(f"the labels of {data.sources.get('train') or data.sources.get('eval')} are regression "
                          "targets (numbers), but this task classifies; use task: text_classification (it fits a "
                          "regression head) or give class labels")
    if data.eval is None and cfg.eval_fraction is not None and data.train is not None:
        split = data.train.train_test_split(test_size=cfg.eval_fraction, seed=seed)
        data.train, data.eval = split["train"], split["test"]
        data.sources["eval"] = f"{cfg.eval_fraction:.0%} of {data.sources.get('train')} (seed {seed})"
        data.sources["eval_split"] = "held-out"
    if data.train is not None and cfg.max_train_samples is not None and cfg.max_train_samples < len(data.train):
        data.train = data.train.shuffle(seed=seed).select(range(cfg.max_train_samples))
    if data.eval is not None and cfg.max_eval_samples is not None and cfg.max_eval_samples < len(data.eval):
        data.eval = data.eval.shuffle(seed=seed).select(range(cfg.max_eval_samples))
    for split in ("train", "eval"):
        ds = getattr(data, split)
        if ds is not None and len(ds) == 0:
            raise DataError(f"the {split} data ({data.sources.get(split)}) has no rows")
    return data


# -- built-in datasets ------------------------------------------------------------------------------------------------

def _load_builtin(cfg: DataConfig, need_train: bool) -> TextClassificationData:
    root = resolve_data_root(cfg.root)
    folder = root / FOLDERS.get(cfg.dataset, cfg.dataset)
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder} (data root {root})")
    names, splits, default_eval = _BUILTIN[cfg.dataset]
    eval_split = cfg.eval_split or default_eval
    for split in (cfg.train_split, eval_split):
        if split not in splits:
            raise DataError(f"{cfg.dataset} has splits {', '.join(splits)}; got {split!r}")
    out = TextClassificationData(label_names=list(names), problem_type=REGRESSION if cfg.dataset in
                                 REGRESSION_DATASETS else "single_label_classification")
    out.sources["eval_split"] = eval_split
    for attr, split in (("train", cfg.train_split), ("eval", eval_split)):
        if attr == "train" and not need_train:
            continue
        ds, path = read_builtin_split(cfg.dataset, folder, split)
        setattr(out, attr, ds)
        out.sources[attr] = str(path)
    return out


# -- files ------------------------------------------------------------------------------------------------------------

def _load_files(cfg: DataConfig, need_train: bool) -> TextClassificationData:
    files = {}
    if cfg.train_file and need_train:
        files["train"] = resolve_file(cfg.train_file, cfg.root, "data.train_file")
    if cfg.eval_file:
        files["eval"] = resolve_file(cfg.eval_file, cfg.root, "data.eval_file")
    if need_train and "train" not in files:
        raise DataError("data.train_file is not set")
    raw = {split: read_file(path, cfg.file_format, cfg.quoting, f"data.{split}_file")
           for split, path in files.items()}
    return _from_raw(cfg, raw, files)


def _load_hub(cfg: DataConfig, need_train: bool) -> TextClassificationData:
    """A dataset by Hub id: fails fast offline (HF_HUB_OFFLINE=1) or when the Hub cannot be reached."""
    import datasets

    from tl_hf._hub_access import hub_reachable as _hub_reachable, offline as _offline

    if _offline() or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hub cannot be reached"
        raise DataError(f"data.hub_id={cfg.hub_id!r} needs the Hugging Face Hub, but {why}; use local files "
                        "(data.train_file / data.eval_file) or a built-in dataset (data.dataset)")
    splits = {"eval": cfg.eval_split or "validation"}
    if need_train:
        splits["train"] = cfg.train_split
    raw = {}
    for attr, split in splits.items():
        try:
            raw[attr] = datasets.load_dataset(cfg.hub_id, split=split)
        except Exception as exc:  # noqa: BLE001 - offline / missing split / connection errors come in many types
            msg = one_line(exc)[:300]
            raise DataError(f"cannot load split {split!r} of Hub dataset {cfg.hub_id!r}: {msg}. Offline, use local "
                            "files (data.train_file / data.eval_file) or a built-in dataset") from None
    return _from_raw(cfg, raw, {k: f"{cfg.hub_id}[{v}]" for k, v in splits.items()})


def _from_raw(cfg: DataConfig, raw: dict, files: dict) -> TextClassificationData:
    columns = [cfg.text_column, cfg.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for split, ds in raw.items():
        for key, col in zip(("text_column", "label_column", "text_pair_column"), columns):
            if col not in ds.column_names:
                raise DataError(f"column {col!r} (data.{key}) not found in {files[split]}; its columns are: "
                                f"{', '.join(ds.column_names)}")
        pair = bool(cfg.text_pair_column)
        check_text_feature(ds, cfg.text_column, "data.text_column", str(files[split]), pair=pair)
        if pair:
            check_text_feature(ds, cfg.text_pair_column, "data.text_pair_column", str(files[split]), pair=True)
        check_label_feature(ds, cfg.label_column, str(files[split]))
    first = "train" if "train" in raw else next(iter(raw))
    problem = detect_problem_type(raw[first], cfg.label_column, str(files[first]), cfg.problem_type)
    if problem == REGRESSION and cfg.label_names:
        raise ConfigError("data.label_names names classes, but data.problem_type is regression (one number per "
                          "row); drop data.label_names or set data.problem_type: single_label_classification")
    labels = label_set(raw[first], cfg.label_column, str(files[first]), cfg.label_names) if problem != REGRESSION \
        else None
    rename = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        rename[cfg.text_pair_column] = "text_pair"
    out = TextClassificationData(label_names=labels.names if labels else [], problem_type=problem,
                                 sources={k: str(v) for k, v in files.items()})
    for split, ds in raw.items():
        with quiet_datasets():
            ds = ds.select_columns(list(rename))
            ds = encode_labels(ds, cfg.label_column, labels, str(files[split])) if labels else \
                encode_scores(ds, cfg.label_column, str(files[split]))
        setattr(out, split, ds.rename_columns({k: v for k, v in rename.items() if k != v}))
    return out


# -- tokenization -----------------------------------------------------------------------------------------------------

TRUNCATION = "longest_first"


def tokenize_datasets(data: TextClassificationData, tokenizer, max_length: int) -> TextClassificationData:
    """Tokenize ``text`` (and ``text_pair``, as a pair) with truncation ``longest_first`` to ``max_length``; no
    padding (pad per batch). ``data.truncation`` records max_length, the strategy and the truncated examples per
    split (an example is truncated when its untruncated encoding is longer than ``max_length``)."""

    def encode(batch):
        text = [t if t is not None else "" for t in batch["text"]]
        pair = batch.get("text_pair")
        if pair is not None:
            pair = [t if t is not None else "" for t in pair]
        full = tokenizer(text, pair, truncation=False, verbose=False)["input_ids"]
        out = tokenizer(text, pair, truncation=TRUNCATION, max_length=max_length)
        out["_truncated"] = [len(ids) > max_length for ids in full]
        return out

    data.truncation = {"max_length": max_length, "truncation": TRUNCATION, "pairs": data.is_pair}
    for split in ("train", "eval"):
        ds = getattr(data, split)
        if ds is None:
            continue
        drop = [c for c in ds.column_names if c != "label"]
        ds = ds.map(encode, batched=True, remove_columns=drop, desc=f"tokenizing {split}")
        data.truncation[f"truncated_{split}"] = int(sum(ds["_truncated"]))
        setattr(data, split, ds.remove_columns("_truncated"))
    return data
