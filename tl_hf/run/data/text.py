"""Text-classification data: the ``data`` section (:class:`DataConfig`); load a built-in dataset or csv/tsv/json/jsonl
files, map columns to ``text`` / ``text_pair`` / ``label``, subset with a seed, tokenize.

Built-in datasets live under the data root (``data.root``, else ``$TL_HF_DATA_ROOT``, else ``../shared/data``
relative to the current directory):

* ``sst2`` -- GLUE SST-2 from ``sst2/{train,dev,test}.tsv``. ``train.tsv`` is ``label<TAB>sentence`` with CRLF line
  endings, ``dev.tsv``/``test.tsv`` are ``label<TAB>content`` (``test.tsv`` is labelled). Read verbatim: no quoting.
* ``trec`` -- TREC question type (Li & Roth 2002): ``trec/train_5500.label`` (split ``train``) and
  ``trec/TREC_10.label`` (split ``test``), one ``COARSE:fine question`` per line, Latin-1; the 6 coarse classes.
* ``emotion`` -- Saravia et al. 2018: ``emotion/{train,val,test}.txt``, ``text;label_name`` with a header line; 6
  classes (sadness joy love anger fear surprise).

Files are read with ``datasets.load_dataset("csv" | "json", data_files=...)`` (``.tsv`` = csv with a tab delimiter),
which works offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean, one_line
from tl_hf.run.data.paths import DataError, resolve_data_root, resolve_file

__all__ = ["BUILTIN_DATASETS", "DataConfig", "FILE_FORMATS", "TextClassificationData", "check_text_limits",
           "load_text_classification", "tokenize_datasets"]

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
    eval_split: str | None = field(default=None, metadata={
        "help": "Built-in dataset: split to evaluate on (default: sst2 dev, trec test, emotion val; sst2: dev or "
                "test)."})
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
class TextClassificationData:
    """``train`` / ``eval`` are ``datasets.Dataset`` with columns ``text``, optional ``text_pair``, and ``label``
    (int ids)."""

    train: Any = None
    eval: Any = None
    label_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_text_classification(cfg: DataConfig, seed: int = 42, *, need_train: bool = True) -> TextClassificationData:
    """Load, map columns, encode labels and subset (seeded) as ``cfg`` says. Does not tokenize."""
    seed = cfg.seed if cfg.seed is not None else seed
    if cfg.dataset is not None:
        data = _load_builtin(cfg, need_train)
    elif cfg.hub_id is not None:
        data = _load_hub(cfg, need_train)
    else:
        data = _load_files(cfg, need_train)
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

_SST2_SPLITS = {"train": ("train.tsv", "sentence"), "dev": ("dev.tsv", "content"), "test": ("test.tsv", "content")}


def _read_label_tsv(path: Path, text_header: str) -> dict[str, list]:
    """A two-column ``label<TAB>text`` file with a header; LF or CRLF endings; no quoting."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with open(path, encoding="utf-8", newline="") as fh:
        lines = fh.read().splitlines()
    if not lines:
        raise DataError(f"{path} is empty")
    header = lines[0].split("\t")
    if header != ["label", text_header]:
        raise DataError(f"{path}: expected header 'label<TAB>{text_header}', found columns {header}")
    labels, texts = [], []
    for i, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        label, sep, text = line.partition("\t")
        if not sep or label not in ("0", "1"):
            raise DataError(f"{path} line {i}: expected '<0|1><TAB><text>', got {line[:60]!r}")
        labels.append(int(label))
        texts.append(text)
    return {"text": texts, "label": labels}


TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
_TREC_SPLITS = {"train": "train_5500.label", "test": "TREC_10.label"}
_EMOTION_SPLITS = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
_BUILTIN = {  # dataset -> (label names, splits, default eval split)
    "sst2": (["negative", "positive"], _SST2_SPLITS, "dev"),
    "trec": (TREC_COARSE, _TREC_SPLITS, "test"),
    "emotion": (EMOTIONS, _EMOTION_SPLITS, "val"),
}


def _read_trec(path: Path) -> dict[str, list]:
    """``COARSE:fine question tokens`` per line, Latin-1."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    texts, labels = [], []
    with open(path, encoding="latin-1") as fh:
        for i, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            tag, _, question = line.partition(" ")
            coarse = tag.split(":", 1)[0]
            if coarse not in TREC_COARSE or not question:
                raise DataError(f"{path} line {i}: expected 'COARSE:fine question' with COARSE in "
                                f"{', '.join(TREC_COARSE)}, got {line[:60]!r}")
            texts.append(question)
            labels.append(TREC_COARSE.index(coarse))
    return {"text": texts, "label": labels}


def _read_emotion(path: Path) -> dict[str, list]:
    """``text;label_name`` with a header line."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    texts, labels = [], []
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip()
        if header != "text;label_name":
            raise DataError(f"{path}: expected header 'text;label_name', found {header!r}")
        for i, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            text, sep, label = line.rpartition(";")
            if not sep or label not in EMOTIONS:
                raise DataError(f"{path} line {i}: label {label!r} is not one of {', '.join(EMOTIONS)}")
            texts.append(text)
            labels.append(EMOTIONS.index(label))
    return {"text": texts, "label": labels}


def _load_builtin(cfg: DataConfig, need_train: bool) -> TextClassificationData:
    from datasets import ClassLabel, Dataset, Features, Value

    root = resolve_data_root(cfg.root)
    folder = root / cfg.dataset
    if not folder.is_dir():
        raise DataError(f"dataset folder not found: {folder} (data root {root})")
    names, splits, default_eval = _BUILTIN[cfg.dataset]
    eval_split = cfg.eval_split or default_eval
    for split in (cfg.train_split, eval_split):
        if split not in splits:
            raise DataError(f"{cfg.dataset} has splits {', '.join(splits)}; got {split!r}")
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    out = TextClassificationData(label_names=list(names))
    out.sources["eval_split"] = eval_split
    for attr, split in (("train", cfg.train_split), ("eval", eval_split)):
        if attr == "train" and not need_train:
            continue
        if cfg.dataset == "sst2":
            fname, header = splits[split]
            path = folder / fname
            rows = _read_label_tsv(path, header)
        else:
            path = folder / splits[split]
            rows = _read_trec(path) if cfg.dataset == "trec" else _read_emotion(path)
        setattr(out, attr, Dataset.from_dict(rows, features=features))
        out.sources[attr] = str(path)
    return out


# -- files ------------------------------------------------------------------------------------------------------------

def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "json", "jsonl", "parquet"):
        return suffix
    raise DataError(f"cannot tell the format of {path} from its extension; set data.file_format to csv, tsv, json, "
                    "jsonl or parquet")


def _load_files(cfg: DataConfig, need_train: bool) -> TextClassificationData:
    import datasets

    files = {}
    if cfg.train_file and need_train:
        files["train"] = resolve_file(cfg.train_file, cfg.root)
    if cfg.eval_file:
        files["eval"] = resolve_file(cfg.eval_file, cfg.root)
    if need_train and "train" not in files:
        raise DataError("data.train_file is not set")
    raw = {}
    for split, path in files.items():
        fmt = _format_of(path, cfg.file_format)
        kwargs: dict[str, Any] = {}
        if fmt in ("csv", "tsv"):
            builder = "csv"
            if fmt == "tsv":
                kwargs["delimiter"] = "\t"
        else:
            builder = "parquet" if fmt == "parquet" else "json"
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # "Generating data split" bars are noise for local files
        try:
            ds = datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
        except Exception as exc:  # noqa: BLE001 - pandas/arrow parse errors come in many types
            raise DataError(f"could not read {path} as {fmt}: {one_line(exc)[:300]}") from None
        finally:
            if bars:
                datasets.enable_progress_bars()
        raw[split] = ds
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

    label_names = _label_names(raw, cfg.label_column, files)
    if cfg.label_names:
        outside = sorted(set(label_names) - set(cfg.label_names), key=str)
        if outside and not all(n.isdigit() and int(n) < len(cfg.label_names) for n in label_names):
            raise DataError(f"labels {outside[:5]} are outside the label set data.label_names="
                            f"{list(cfg.label_names)}")
        label_names = list(cfg.label_names)
    rename = {cfg.text_column: "text", cfg.label_column: "label"}
    if cfg.text_pair_column:
        rename[cfg.text_pair_column] = "text_pair"
    out = TextClassificationData(label_names=label_names, sources={k: str(v) for k, v in files.items()})
    for split, ds in raw.items():
        ds = ds.select_columns(list(rename))
        ds = ds.rename_columns({k: v for k, v in rename.items() if k != v})
        ds = _encode_labels(ds, label_names, files[split])
        setattr(out, split, ds)
    return out


def _label_names(raw: dict, label_column: str, files: dict) -> list[str]:
    values = set()
    for split, ds in raw.items():
        for v in ds[label_column]:
            if v is None:
                raise DataError(f"{files[split]}: column {label_column!r} has an empty label")
            values.add(v)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DataError(f"integer labels must be >= 0, found {min(values)} in column {label_column!r}")
        return [str(i) for i in range(max(values) + 1)]
    source = raw.get("train", next(iter(raw.values())))
    return sorted({str(v) for v in source[label_column]})


def _encode_labels(ds, label_names: list[str], path: Path):
    from datasets import ClassLabel

    if ds.features["label"].dtype.startswith("int"):
        return ds.cast_column("label", ClassLabel(names=label_names))
    index = {n: i for i, n in enumerate(label_names)}
    unknown = sorted({str(v) for v in ds["label"]} - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} do not occur in the training data (labels: "
                        f"{', '.join(label_names)})")
    ds = ds.map(lambda b: {"label": [index[str(v)] for v in b["label"]]}, batched=True, desc="encoding labels")
    return ds.cast_column("label", ClassLabel(names=label_names))


# -- tokenization -----------------------------------------------------------------------------------------------------

def tokenize_datasets(data: TextClassificationData, tokenizer, max_length: int) -> TextClassificationData:
    """Tokenize ``text`` (and ``text_pair``) with truncation to ``max_length``; no padding (pad per batch)."""

    def encode(batch):
        text = [t if t is not None else "" for t in batch["text"]]
        pair = batch.get("text_pair")
        if pair is not None:
            pair = [t if t is not None else "" for t in pair]
        return tokenizer(text, pair, truncation=True, max_length=max_length)

    for split in ("train", "eval"):
        ds = getattr(data, split)
        if ds is None:
            continue
        drop = [c for c in ds.column_names if c != "label"]
        setattr(data, split, ds.map(encode, batched=True, remove_columns=drop, desc=f"tokenizing {split}"))
    return data
