"""Extractive-QA data (``task: question_answering``): the ``data`` section (:class:`QADataConfig`) and the loaders.

Sources:

* SQuAD-format JSON files (``data.train_file`` / ``data.eval_file``): the official nested layout
  ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
  "answer_start"}]}]}]}]}``;
* flat jsonl / json-lines / parquet files with the columns ``id``, ``question``, ``context`` and ``answers``
  (``{"text": [...], "answer_start": [...]}``, the layout of the Hub's ``rajpurkar/squad``);
* the built-in ``squad_v1.1``: only the official ``dev-v1.1.json`` (48 articles, 10,570 questions) is in the data
  root, so it is split BY ARTICLE into train and eval articles with a seeded shuffle (``data.split_seed``,
  ``data.eval_articles``). This split is NOT the standard train/dev split: its scores are not comparable with
  published SQuAD dev numbers (the titles of each side are written into ``all_results.json``).

Every answer's text must be found at its ``answer_start`` in the context: a mismatch is a one-line error naming the
question id (``data.on_bad_answer: skip`` drops such questions instead, and the count is logged).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.data.paths import DataError, data_root_field, resolve_data_root, resolve_file

__all__ = ["BUILTIN_QA", "QAData", "QADataConfig", "check_answers", "load_qa", "read_qa_file", "split_by_article"]

#: built-in QA datasets under the data root: name -> (folder, file)
BUILTIN_QA = {"squad_v1.1": ("squad_v1.1", "dev-v1.1.json")}
_ON_BAD = ("error", "skip")
_COLUMNS = ("id", "question", "context", "answers")


@dataclass
class QADataConfig:
    """Where the extractive-QA data comes from and how questions become model inputs."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(BUILTIN_QA)} (its dev set split by article, "
                "non-standard). Leave empty and set train_file/eval_file for your own files."})
    root: str | None = data_root_field()
    train_file: str | None = field(default=None, metadata={
        "help": "Training file: SQuAD-format .json (nested data/paragraphs/qas), or flat .jsonl/.parquet with id, "
                "question, context, answers {text, answer_start}."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation file, same formats as train_file."})
    eval_articles: int = field(default=8, metadata={
        "help": "Built-in dataset: number of articles held out for evaluation (the rest train)."})
    split_seed: int = field(default=0, metadata={"help": "Built-in dataset: seed of the article shuffle."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random subset of this many questions (default: all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Evaluate on a seeded random subset of this many questions (default: all)."})
    max_length: int = field(default=384, metadata={"help": "Tokens per question + context window."})
    doc_stride: int | None = field(default=128, metadata={
        "help": "Overlap in tokens between the windows of a context longer than max_length (overflowing windows); "
                "null: no windows, and a context that does not fit is an error."})
    n_best: int = field(default=20, metadata={"help": "Start and end candidates per window in the span search."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest predicted answer, in tokens."})
    on_bad_answer: str = field(default="error", metadata={
        "help": "An answer whose text is not at its answer_start: error (one line naming the question id) or skip "
                "(drop the question; the count is logged)."})
    write_nbest: bool = field(default=False, metadata={
        "help": "Also write eval_nbest_predictions.json (the n_best candidates of every question with scores)."})
    seed: int | None = field(default=None, metadata={"help": "Seed of the subsetting. Default: training.seed."})

    def __post_init__(self) -> None:
        if self.dataset is not None and self.dataset not in BUILTIN_QA:
            raise ConfigError(f"data.dataset: unknown QA dataset {self.dataset!r}"
                              + did_you_mean(self.dataset, list(BUILTIN_QA))
                              + f" Built-in: {', '.join(BUILTIN_QA)}; or set data.train_file/data.eval_file")
        if self.dataset is not None and (self.train_file or self.eval_file):
            raise ConfigError("data: set either data.dataset or data.train_file/data.eval_file, not both")
        if self.dataset is None and not self.train_file and not self.eval_file:
            raise ConfigError(f"data: set data.dataset (built-in: {', '.join(BUILTIN_QA)}) or data.train_file / "
                              "data.eval_file")
        for name in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"data.{name} must be >= 1 (or null for all questions), got {v}")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8 for question + context, got {self.max_length}")
        if self.doc_stride is not None and not 0 <= self.doc_stride < self.max_length:
            raise ConfigError(f"data.doc_stride={self.doc_stride} must be >= 0 and below data.max_length="
                              f"{self.max_length} (the overlap between windows; e.g. 128 for max_length 384)")
        if self.n_best < 1 or self.max_answer_length < 1:
            raise ConfigError(f"data.n_best and data.max_answer_length must be >= 1, got {self.n_best} and "
                              f"{self.max_answer_length}")
        if self.eval_articles < 1:
            raise ConfigError(f"data.eval_articles must be >= 1, got {self.eval_articles}")
        if self.on_bad_answer not in _ON_BAD:
            raise ConfigError(f"data.on_bad_answer must be one of {', '.join(_ON_BAD)}, got {self.on_bad_answer!r}")


@dataclass
class QAData:
    """``train`` / ``eval``: ``datasets.Dataset`` with ``id``, ``question``, ``context``, ``answers`` (``{"text": [...],
    "answer_start": [...]}``); ``results`` go into ``all_results.json`` (the split of a built-in dataset)."""

    train: Any = None
    eval: Any = None
    sources: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------------------------------------

def _rows_of_articles(articles: list, where: str) -> list[dict]:
    rows = []
    for a in articles:
        for p in a.get("paragraphs", []) if isinstance(a, dict) else []:
            context = p.get("context")
            for q in p.get("qas", []):
                if "answers" not in q:
                    raise DataError(f"{where}: question {q.get('id')!r} has no 'answers'; every question of a QA file "
                                    "needs its gold answers ({'text', 'answer_start'})")
                answers = q["answers"] or []
                rows.append({"id": str(q.get("id")), "title": a.get("title", ""), "question": q.get("question"),
                             "context": context, "answers": {"text": [x.get("text") for x in answers],
                                                             "answer_start": [x.get("answer_start") for x in answers]}})
    return rows


def _read_nested(path: Path, key: str) -> list:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{key}: {path} is not a SQuAD-format JSON file ({type(exc).__name__}: {exc}); give the "
                        "official nested layout or a flat .jsonl") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError(f"{key}: {path} is not in the SQuAD layout: a JSON object with a 'data' list of articles "
                        "(title, paragraphs[context, qas[id, question, answers]]) is needed")
    return obj["data"]


def read_qa_file(path: Path, key: str):
    """A QA file as a ``datasets.Dataset`` of flat rows (SQuAD nested .json, or flat .jsonl / .parquet)."""
    import datasets

    from tl_hf.run.data.text_files import read_file

    if path.suffix.lower() == ".json" and path.stat().st_size and path.read_bytes()[:4096].lstrip()[:1] == b"{":
        try:
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError):
            obj = None  # JSON lines, or broken: the jsonl reader names the problem
        if isinstance(obj, dict) and "data" in obj:
            return datasets.Dataset.from_list(_rows_of_articles(_read_nested(path, key), str(path)))
    ds = read_file(path, "jsonl" if path.suffix.lower() == ".json" else None, None, key)
    missing = [c for c in _COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{key}: {path} has no column(s) {', '.join(map(repr, missing))} (its columns: "
                        f"{', '.join(ds.column_names)}); a QA file needs id, question, context and answers "
                        "{text, answer_start}, or the SQuAD nested .json layout")
    return ds


def split_by_article(articles: list, n_eval: int, seed: int) -> tuple[list, list]:
    """``(train, eval)`` articles: a seeded shuffle of the articles, the first ``n_eval`` for evaluation."""
    if n_eval >= len(articles):
        raise ConfigError(f"data.eval_articles={n_eval} leaves no training article (the file has {len(articles)})")
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return ([a for i, a in enumerate(articles) if i not in held], [a for i, a in enumerate(articles) if i in held])


def _load_builtin(cfg: QADataConfig, log) -> QAData:
    import datasets

    folder, name = BUILTIN_QA[cfg.dataset]
    root = resolve_data_root(cfg.root)
    path = root / folder / name
    if not path.is_file():
        raise DataError(f"{cfg.dataset}: {path} not found (data root {root})")
    train_a, eval_a = split_by_article(_read_nested(path, "data.dataset"), cfg.eval_articles, cfg.split_seed)
    out = QAData(train=datasets.Dataset.from_list(_rows_of_articles(train_a, str(path))),
                 eval=datasets.Dataset.from_list(_rows_of_articles(eval_a, str(path))))
    split = (f"non-standard: {cfg.dataset} dev-v1.1.json split by article (seed {cfg.split_seed}), "
             f"{len(train_a)} train / {len(eval_a)} eval articles; not the official train/dev split")
    log(f"data: {split}")
    out.sources = {"train": f"{path} ({len(train_a)} articles)", "eval": f"{path} ({len(eval_a)} articles)"}
    out.results = {"eval_split": "held-out articles (non-standard)", "data_split": split,
                   "train_articles": [a.get("title", "") for a in train_a],
                   "eval_articles": [a.get("title", "") for a in eval_a]}
    return out


# -- checks -----------------------------------------------------------------------------------------------------------

def _bad_row(row: dict, need_answer: bool) -> str | None:
    """Why ``row`` cannot be used, or None."""
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "has an empty question"
    if not isinstance(row.get("context"), str) or not row["context"].strip():
        return "has an empty context"
    ans = row.get("answers") or {}
    texts, starts = ans.get("text") or [], ans.get("answer_start") or []
    if len(texts) != len(starts):
        return f"has {len(texts)} answer texts but {len(starts)} answer_start values"
    if need_answer and not texts:
        return "has no answer (SQuAD v1.1 questions are all answerable)"
    for t, s in zip(texts, starts):
        if not isinstance(t, str) or not isinstance(s, int) or s < 0 or row["context"][s:s + len(t)] != t:
            found = row["context"][s:s + len(t)] if isinstance(s, int) and isinstance(t, str) else None
            return f"has the answer {t!r} at answer_start {s!r}, but the context there reads {found!r}"
    return None


def check_answers(ds, where: str, on_bad: str, log):
    """Refuse (or with ``on_bad='skip'`` drop, logging the count) questions whose answers are not at their
    offsets, or whose question / context is empty; every question needs at least one answer."""
    bad = []
    for i, row in enumerate(ds):
        why = _bad_row(row, need_answer=True)
        if why is None:
            continue
        if why.startswith("has an empty") or on_bad == "error":
            hint = ("; fix the offset or set data.on_bad_answer=skip to drop such questions"
                    if "answer_start" in why else "")
            raise DataError(f"{where}: question id {row.get('id')!r} {why}{hint}")
        bad.append(i)
    if bad:
        log(f"data: {where}: skipped {len(bad)} question(s) whose answer text is not at its answer_start "
            "(data.on_bad_answer=skip)")
        keep = sorted(set(range(len(ds))) - set(bad))
        ds = ds.select(keep)
    if len(ds) == 0:
        raise DataError(f"{where}: no usable questions")
    return ds


# -- the loader -------------------------------------------------------------------------------------------------------

def load_qa(cfg: QADataConfig, seed: int = 42, *, log=print) -> QAData:
    """Load, check the answers and subset (seeded) as ``cfg`` says. Does not tokenize."""
    seed = cfg.seed if cfg.seed is not None else seed
    if cfg.dataset is not None:
        data = _load_builtin(cfg, log)
    else:
        if not cfg.train_file:
            raise DataError("data.train_file is not set (question_answering trains on it)")
        data = QAData()
        for split in ("train", "eval"):
            name = getattr(cfg, f"{split}_file")
            if name:
                path = resolve_file(name, cfg.root, f"data.{split}_file")
                setattr(data, split, read_qa_file(path, f"data.{split}_file"))
                data.sources[split] = str(path)
        data.results = {"eval_split": "eval_file"}
    for split in ("train", "eval"):
        ds = getattr(data, split)
        if ds is None:
            continue
        ds = check_answers(ds, data.sources[split], cfg.on_bad_answer, log)
        limit = getattr(cfg, f"max_{split}_samples")
        if limit is not None and limit < len(ds):
            ds = ds.shuffle(seed=seed).select(range(limit))
        ids = ds["id"]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{data.sources[split]}: question id {dup!r} occurs more than once; ids must be unique "
                            "(predictions are keyed by id)")
        setattr(data, split, ds)
    return data
