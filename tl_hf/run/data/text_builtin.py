"""The built-in text datasets under the data root, read through ``datasets`` builders into ``text`` / ``label``
(``ClassLabel``) columns; a line that breaks a file's format is named with its line number.

* ``sst2`` -- GLUE SST-2 from ``sst2/{train,dev,test}.tsv``. ``train.tsv`` is ``label<TAB>sentence`` with CRLF line
  endings, ``dev.tsv``/``test.tsv`` are ``label<TAB>content`` (``test.tsv`` is labelled). The ``csv`` builder, tab
  delimiter, no quoting (read verbatim), rows counted against lines.
* ``trec`` -- TREC question type (Li & Roth 2002): ``trec/train_5500.label`` (split ``train``) and
  ``trec/TREC_10.label`` (split ``test``), one ``COARSE:fine question`` per line, Latin-1 (the ``text`` builder);
  the 6 coarse classes.
* ``emotion`` -- Saravia et al. 2018: ``emotion/{train,val,test}.txt``, ``text;label_name`` with a header line (the
  ``csv`` builder, ``;`` delimiter, no quoting); 6 classes (sadness joy love anger fear surprise).
* ``rte`` / ``mrpc`` / ``stsb`` -- GLUE sentence pairs from ``glue_rte/``, ``glue_mrpc/``, ``glue_stsb/``
  (``{train,dev}.tsv``; the GLUE test files are unlabelled): the ``csv`` builder, tab delimiter, no quoting (the
  text holds quote characters), rows counted against lines, into ``text`` / ``text_pair`` / ``label``. RTE:
  ``index sentence1 sentence2 label`` with ``entailment`` / ``not_entailment``; MRPC: ``Quality #1 ID #2 ID #1 String
  #2 String`` after a UTF-8 BOM, ``Quality`` 0/1 (``not_equivalent`` / ``equivalent``); STS-B: 10 columns with
  ``sentence1``, ``sentence2`` and the float ``score`` (0-5) last, a regression target (a ``float32`` label).
"""

from __future__ import annotations

import math
from pathlib import Path

from tl_hf.run.data.paths import DataError
from tl_hf.run.data.text_files import load_builder, read_delimited

__all__ = ["BUILTIN", "EMOTIONS", "FOLDERS", "PAIR_DATASETS", "REGRESSION_DATASETS", "TREC_COARSE",
           "read_builtin_split"]

TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
_SST2_SPLITS = {"train": ("train.tsv", "sentence"), "dev": ("dev.tsv", "content"), "test": ("test.tsv", "content")}
_TREC_SPLITS = {"train": "train_5500.label", "test": "TREC_10.label"}
_EMOTION_SPLITS = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
#: dataset -> (label names, splits, default eval split)
BUILTIN = {
    "sst2": (["negative", "positive"], _SST2_SPLITS, "dev"),
    "trec": (TREC_COARSE, _TREC_SPLITS, "test"),
    "emotion": (EMOTIONS, _EMOTION_SPLITS, "val"),
    "rte": (["entailment", "not_entailment"], {"train": "train.tsv", "dev": "dev.tsv"}, "dev"),
    "mrpc": (["not_equivalent", "equivalent"], {"train": "train.tsv", "dev": "dev.tsv"}, "dev"),
    "stsb": ([], {"train": "train.tsv", "dev": "dev.tsv"}, "dev"),  # regression: no classes
}
#: dataset -> its folder under the data root (default: the dataset's name)
FOLDERS = {"rte": "glue_rte", "mrpc": "glue_mrpc", "stsb": "glue_stsb"}
#: GLUE pair datasets: (header, text column, pair column, label column); a label column's position is checked too
_GLUE = {
    "rte": (["index", "sentence1", "sentence2", "label"], "sentence1", "sentence2", "label"),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], "#1 String", "#2 String", "Quality"),
    "stsb": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"], "sentence1", "sentence2", "score"),
}
PAIR_DATASETS = tuple(_GLUE)
REGRESSION_DATASETS = ("stsb",)


def _encode(ds, names: list[str], label_of, path: Path, line_of, expected: str):
    """``ds`` -> ``text`` + ``label`` (ClassLabel of ``names``); ``label_of(row)`` is an id or None (a bad line)."""
    from datasets import ClassLabel, Features, Value

    rows = ds.to_dict()
    keys = list(rows)
    labels = []
    for i in range(len(ds)):
        row = {k: rows[k][i] for k in keys}
        y = label_of(row)
        if y is None:
            raise DataError(f"{path} line {line_of(i)}: expected {expected}, got "
                            f"{'<TAB>'.join(str(v) for v in row.values())[:60]!r}; fix or remove the line")
        labels.append(y)
    return rows, labels, Features({"text": Value("string"), "label": ClassLabel(names=names)})


def _sst2(path: Path, header: str):
    from datasets import Dataset

    ds = read_delimited(path, "\t", "none", f"sst2 {path.name}", "tsv")
    if ds.column_names != ["label", header]:
        raise DataError(f"{path}: expected header 'label<TAB>{header}', found columns {ds.column_names}")
    rows, labels, features = _encode(ds, BUILTIN["sst2"][0], lambda r: {"0": 0, "1": 1}.get(r["label"]), path,
                                     lambda i: i + 2, "'<0|1><TAB><text>'")
    return Dataset.from_dict({"text": rows[header], "label": labels}, features=features)


def _trec(path: Path):
    from datasets import Dataset

    ds = load_builder("text", path, "text (Latin-1)", encoding="latin-1")
    lines = [i for i, t in enumerate(ds["text"]) if t.strip()]
    ds = ds.select(lines)
    texts = []

    def label_of(row):
        tag, _, question = row["text"].strip().partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in TREC_COARSE or not question:
            return None
        texts.append(question)
        return TREC_COARSE.index(coarse)

    _, labels, features = _encode(ds, TREC_COARSE, label_of, path, lambda i: lines[i] + 1,
                                  f"'COARSE:fine question' with COARSE in {', '.join(TREC_COARSE)}")
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _emotion(path: Path):
    from datasets import Dataset

    ds = read_delimited(path, ";", "none", f"emotion {path.name}", "text;label_name")
    if ds.column_names != ["text", "label_name"]:
        raise DataError(f"{path}: expected header 'text;label_name', found columns {ds.column_names}")
    index = {n: i for i, n in enumerate(EMOTIONS)}
    rows, labels, features = _encode(ds, EMOTIONS, lambda r: index.get(r["label_name"]), path, lambda i: i + 2,
                                     f"'<text>;<label>' with a label in {', '.join(EMOTIONS)}")
    return Dataset.from_dict({"text": rows["text"], "label": labels}, features=features)


def _score(text: str) -> float | None:
    """A finite float score (STS-B), or None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _glue(dataset: str, path: Path):
    from datasets import Dataset, Features, Value

    header, first, second, label = _GLUE[dataset]
    ds = read_delimited(path, "\t", "none", f"{dataset} {path.name}", "tsv")
    if ds.column_names != header:
        raise DataError(f"{path}: expected the {len(header)} columns {'<TAB>'.join(header)}, found "
                        f"{'<TAB>'.join(ds.column_names)}; this is not the GLUE {dataset.upper()} train/dev file")
    for col in (first, second):
        empty = next((i for i, t in enumerate(ds[col]) if not t.strip()), None)
        if empty is not None:
            raise DataError(f"{path} line {empty + 2}: column {col!r} is empty; a sentence pair needs both texts")
    names = BUILTIN[dataset][0]
    if dataset in REGRESSION_DATASETS:
        rows, labels, _ = _encode(ds, ["x"], lambda r: _score(r[label]), path, lambda i: i + 2,
                                  f"a finite number in column {label!r} (the last)")
        features = Features({"text": Value("string"), "text_pair": Value("string"), "label": Value("float32")})
        return Dataset.from_dict({"text": rows[first], "text_pair": rows[second], "label": labels}, features=features)
    index = {n: i for i, n in enumerate(names)} if dataset == "rte" else {"0": 0, "1": 1}
    rows, labels, features = _encode(ds, names, lambda r: index.get(r[label]), path, lambda i: i + 2,
                                     f"{label!r} in {', '.join(index)}")
    features = Features({"text": Value("string"), "text_pair": Value("string"), "label": features["label"]})
    return Dataset.from_dict({"text": rows[first], "text_pair": rows[second], "label": labels}, features=features)


def read_builtin_split(dataset: str, folder: Path, split: str):
    """``(Dataset with text (+ text_pair) + label, path)`` of one split of a built-in dataset: a ``ClassLabel``, or
    a ``float32`` score for a regression dataset."""
    splits = BUILTIN[dataset][1]
    if dataset == "sst2":
        fname, header = splits[split]
        path = folder / fname
    else:
        path = folder / splits[split]
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if dataset == "sst2":
        return _sst2(path, header), path
    if dataset in _GLUE:
        return _glue(dataset, path), path
    return (_trec(path) if dataset == "trec" else _emotion(path)), path
