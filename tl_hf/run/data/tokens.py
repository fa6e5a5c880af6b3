"""Token-classification data (NER): the ``data`` section of ``task: token_classification`` (:class:`TokenDataConfig`),
loading (:func:`load_token_data`) and the word-to-subword label alignment (:func:`tokenize_sentences`).

Sources: the built-in ``wnut17`` (WNUT-17 under the data root: ``train`` = ``wnut17train.conll``, ``dev`` =
``emerging.dev.conll``, ``test`` = ``emerging.test.annotated``), CoNLL-style files, jsonl / json / parquet files with a
tokens and a tags column, or a Hub dataset (``data.hub_id``). The tag set and BIO rules are in
:mod:`tl_hf.run.data.tags`.

Alignment (a fast tokenizer is needed for ``word_ids``): each word's first subword carries its tag; the other subwords
and the special tokens get ``-100`` (ignored by the loss), or with ``data.label_all_subwords`` the continuation
subwords carry the word's tag with ``B-X`` turned into ``I-X``. The eval split is always labelled on first subwords
only, so its metrics and predictions are per word. Sentences longer than ``data.max_length`` subwords are truncated
(no stride); the words cut off are counted and said, and in evaluation they are predicted ``O``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.data.conll import CONLL_SUFFIXES, Sentences, read_conll, sentences_from_table
from tl_hf.run.data.paths import DataError, data_root_field, resolve_data_root, resolve_file
from tl_hf.run.data.tags import BIO_MODES, b_to_i, check_bio, encode_tags, tag_set

__all__ = ["TOKEN_BUILTIN", "TOKEN_FORMATS", "TokenData", "TokenDataConfig", "load_token_data",
           "tokenize_sentences"]

logger = logging.getLogger(__name__)

TOKEN_FORMATS = ("conll", "jsonl", "json", "parquet")
#: built-in datasets: name -> (folder under the data root, split -> file, default eval split)
TOKEN_BUILTIN = {"wnut17": ("wnut17", {"train": "wnut17train.conll", "dev": "emerging.dev.conll",
                                       "test": "emerging.test.annotated"}, "dev")}


@dataclass
class TokenDataConfig:
    """Where the token-classification data comes from and how it is aligned to subwords."""

    dataset: str | None = field(default=None, metadata={
        "help": f"A built-in dataset under the data root: {', '.join(TOKEN_BUILTIN)}. Or set train_file/eval_file "
                "(CoNLL, jsonl, json, parquet) or hub_id."})
    root: str | None = data_root_field()
    train_split: str = field(default="train", metadata={"help": "Built-in / Hub dataset: split to train on."})
    eval_split: str | None = field(default=None, metadata={
        "help": "Built-in / Hub dataset: split to evaluate on (wnut17: dev (default) or test; Hub: validation)."})
    train_file: str | None = field(default=None, metadata={
        "help": "Training file: CoNLL (token<TAB>tag lines, blank-line separated) or jsonl/json/parquet with "
                "tokens/tags columns; relative paths are looked up under the data root, then the current folder."})
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation file, same rules as train_file."})
    file_format: str | None = field(default=None, metadata={
        "help": f"One of {', '.join(TOKEN_FORMATS)}. Default: from the extension ({', '.join(CONLL_SUFFIXES)} "
                "are CoNLL)."})
    hub_id: str | None = field(default=None, metadata={
        "help": "A Hub dataset with tokens / tags columns (e.g. 'leondz/wnut_17'); needs the network or the HF cache."})
    tokens_column: str = field(default="tokens", metadata={"help": "Tables: column holding each sentence's words."})
    tags_column: str = field(default="ner_tags", metadata={
        "help": "Tables: column holding the tags (names, or ids with a ClassLabel feature or data.label_names)."})
    label_names: list[str] | None = field(default=None, metadata={
        "help": "The IOB2 tag set in id order (O, B-X, I-X, ...). Default: from the training tags, O first, then "
                "B-/I- per type, types sorted."})
    bio_repair: str = field(default="warn", metadata={
        "help": "Malformed IOB2 (I-X at a sentence start, after O or after another type): 'warn' (count and keep), "
                "'repair' (I-X -> B-X) or 'error' (refuse, naming the lines)."})
    label_all_subwords: bool = field(default=False, metadata={
        "help": "Training: label every subword of a word (B-X continues as I-X) instead of the first only. "
                "Evaluation is always per word (first subwords)."})
    max_length: int = field(default=128, metadata={
        "help": "Subwords per sentence; longer sentences are truncated (counted and said; cut-off eval words are "
                "predicted O)."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Train on a seeded random subset of this many sentences (default: all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Evaluate on a seeded random subset of this many sentences (default: all)."})
    seed: int | None = field(default=None, metadata={"help": "Seed of the subsetting. Default: training.seed."})

    def __post_init__(self) -> None:
        from tl_hf.run.data.text import check_text_limits

        if self.dataset is not None and self.dataset not in TOKEN_BUILTIN:
            raise ConfigError(f"data.dataset: unknown token-classification dataset {self.dataset!r}"
                              + did_you_mean(self.dataset, list(TOKEN_BUILTIN))
                              + f" Built-in: {', '.join(TOKEN_BUILTIN)}; or set data.train_file/data.eval_file")
        given = [k for k in ("dataset", "hub_id") if getattr(self, k)] + (
            ["train_file/eval_file"] if self.train_file or self.eval_file else [])
        if len(given) > 1:
            raise ConfigError(f"data: set one of data.dataset, data.hub_id or data.train_file/eval_file, not "
                              f"{' and '.join(given)}")
        if not given:
            raise ConfigError(f"data: set data.dataset (built-in: {', '.join(TOKEN_BUILTIN)}), data.hub_id or "
                              "data.train_file / data.eval_file")
        if self.bio_repair not in BIO_MODES:
            raise ConfigError(f"data.bio_repair must be one of {', '.join(BIO_MODES)}, got {self.bio_repair!r}")
        if self.file_format is not None and self.file_format not in TOKEN_FORMATS:
            raise ConfigError(f"data.file_format must be one of {', '.join(TOKEN_FORMATS)}, got "
                              f"{self.file_format!r}")
        if not isinstance(self.label_all_subwords, bool):
            raise ConfigError(f"data.label_all_subwords must be true or false, got {self.label_all_subwords!r}")
        if self.tokens_column == self.tags_column:
            raise ConfigError(f"data.tokens_column and data.tags_column are both {self.tokens_column!r}; each "
                              "names a different column")
        if self.label_names is not None and len(set(map(str, self.label_names))) != len(self.label_names):
            raise ConfigError("data.label_names lists a tag more than once; name each tag once, in id order")
        check_text_limits(self)


@dataclass
class TokenData:
    """``train`` / ``eval``: :class:`Sentences` with tag names; ``label_names``: the tag set in id order."""

    train: Sentences | None = None
    eval: Sentences | None = None
    label_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)  # split -> malformed IOB2 tags found


def _read(cfg: TokenDataConfig, path, key: str) -> Sentences:
    fmt = cfg.file_format or ("conll" if path.suffix.lower() in CONLL_SUFFIXES else path.suffix.lower().lstrip("."))
    if fmt == "conll":
        return read_conll(path)
    if fmt not in TOKEN_FORMATS:
        raise DataError(f"{key}: cannot tell the format of {path} from its extension; set data.file_format to "
                        f"{', '.join(TOKEN_FORMATS)}")
    from tl_hf.run.data.text_files import read_file

    ds = read_file(path, fmt, None, key)
    return sentences_from_table(ds, cfg.tokens_column, cfg.tags_column, str(path), cfg.label_names)


def _raw_splits(cfg: TokenDataConfig, need_train: bool) -> tuple[dict[str, Sentences], str]:
    """``({"train": ..., "eval": ...}, eval split name)`` as read, before the tag checks."""
    if cfg.dataset is not None:
        folder, files, default_eval = TOKEN_BUILTIN[cfg.dataset]
        root = resolve_data_root(cfg.root)
        eval_split = cfg.eval_split or default_eval
        for split in (cfg.train_split, eval_split):
            if split not in files:
                raise DataError(f"{cfg.dataset} has splits {', '.join(files)}; got {split!r}")
        wanted = {"train": cfg.train_split, "eval": eval_split} if need_train else {"eval": eval_split}
        out = {}
        for attr, split in wanted.items():
            path = root / folder / files[split]
            if not path.is_file():
                raise DataError(f"{cfg.dataset} split {split}: {path} not found (data root {root})")
            out[attr] = read_conll(path)
        return out, eval_split
    if cfg.hub_id is not None:
        return _hub_splits(cfg, need_train), cfg.eval_split or "validation"
    out = {}
    for attr in ("train", "eval"):
        name = getattr(cfg, f"{attr}_file")
        if name and (attr == "eval" or need_train):
            out[attr] = _read(cfg, resolve_file(name, cfg.root, f"data.{attr}_file"), f"data.{attr}_file")
    if need_train and "train" not in out:
        raise DataError("data.train_file is not set")
    return out, "dev"


def _hub_splits(cfg: TokenDataConfig, need_train: bool) -> dict[str, Sentences]:
    import datasets

    from tl_hf._errors import one_line
    from tl_hf._hub_access import hub_reachable, offline

    if offline() or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        raise DataError(f"data.hub_id={cfg.hub_id!r} needs the Hugging Face Hub, but {why}; use local files "
                        "(data.train_file / data.eval_file) or a built-in dataset (data.dataset)")
    splits = {"eval": cfg.eval_split or "validation", **({"train": cfg.train_split} if need_train else {})}
    out = {}
    for attr, split in splits.items():
        try:
            ds = datasets.load_dataset(cfg.hub_id, split=split)
        except Exception as exc:  # noqa: BLE001 - offline / missing split / connection errors come in many types
            raise DataError(f"cannot load split {split!r} of Hub dataset {cfg.hub_id!r}: {one_line(exc)[:300]}") \
                from None
        out[attr] = sentences_from_table(ds, cfg.tokens_column, cfg.tags_column, f"{cfg.hub_id}[{split}]",
                                         cfg.label_names)
    return out


def load_token_data(cfg: TokenDataConfig, seed: int = 42, *, need_train: bool = True) -> TokenData:
    """Read, check the tags (tag set, unknown tags, BIO as ``data.bio_repair`` says) and subset (seeded)."""
    import random

    raw, eval_split = _raw_splits(cfg, need_train)
    names = tag_set(raw.get("train"), cfg.label_names)
    out = TokenData(label_names=names, sources={"eval_split": eval_split})
    seed = cfg.seed if cfg.seed is not None else seed
    for attr, limit in (("train", cfg.max_train_samples), ("eval", cfg.max_eval_samples)):
        data = raw.get(attr)
        if data is None:
            continue
        encode_tags(data, names)  # a tag outside the set: one line naming file and line
        data, out.malformed[attr] = check_bio(data, cfg.bio_repair, attr)
        if limit is not None and limit < len(data):
            data = data.subset(sorted(random.Random(seed).sample(range(len(data)), limit)))
        setattr(out, attr, data)
        out.sources[attr] = data.source
    return out


# -- alignment --------------------------------------------------------------------------------------------------------

def check_fast_tokenizer(tokenizer, where: str) -> None:
    """Word-to-subword alignment reads ``word_ids``, which only fast (Rust) tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"token classification needs a fast tokenizer (word_ids() for the word-to-subword "
                          f"labels), but {where} loads the Python tokenizer {type(tokenizer).__name__}; use a model "
                          "whose folder has tokenizer.json, or set model.tokenizer to one that does")


def align_labels(word_ids: list[int | None], tags: list[int], continuation: list[int] | None) -> list[int]:
    """Labels per subword: the tag on each word's first subword; ``-100`` on special tokens and, unless
    ``continuation`` (tag id -> the continuation subwords' id) is given, on the other subwords."""
    labels, prev = [], None
    for w in word_ids:
        if w is None:
            labels.append(-100)
        elif w != prev:
            labels.append(tags[w])
        else:
            labels.append(continuation[tags[w]] if continuation is not None else -100)
        prev = w
    return labels


def tokenize_sentences(data: Sentences, names: list[str], tokenizer, max_length: int, *, all_subwords: bool,
                       split: str) -> tuple[Any, dict[str, Any]]:
    """``(datasets.Dataset of input_ids / attention_mask / labels, info)``; ``info``: ``words`` (per sentence, the
    word index of each labelled position, in order), ``truncated_sentences`` / ``truncated_words``."""
    import datasets

    ids = encode_tags(data, names)
    enc = tokenizer(data.tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    continuation = b_to_i(names) if all_subwords else None
    labels, words, cut_sentences, cut_words = [], [], 0, 0
    for i in range(len(data)):
        wids = enc.word_ids(i)
        labels.append(align_labels(wids, ids[i], continuation))
        first = sorted({w for w in wids if w is not None})
        words.append(first)
        if first and first[-1] < len(data.tokens[i]) - 1 and len(enc["input_ids"][i]) >= max_length:
            cut_sentences += 1
            cut_words += len(data.tokens[i]) - 1 - first[-1]
    if cut_sentences:
        logger.warning("%s data: %d sentence(s) longer than data.max_length=%d subwords were truncated (%d word(s) "
                       "cut off%s); raise data.max_length to keep them", split, cut_sentences, max_length, cut_words,
                       ", predicted O in evaluation" if split == "eval" else ", not trained on")
    columns = {**{k: enc[k] for k in enc.keys()}, "labels": labels}
    empty = [i for i, row in enumerate(labels) if all(y == -100 for y in row)]
    if empty and split == "train":  # no word got a subword: its loss would be 0/0
        keep = [i for i in range(len(labels)) if i not in set(empty)]
        columns = {k: [v[i] for i in keep] for k, v in columns.items()}
        logger.warning("train data: %d sentence(s) whose words all tokenize to nothing are left out (first at %s)",
                       len(empty), data.where(empty[0]))
    ds = datasets.Dataset.from_dict(columns)
    return ds, {"words": words, "truncated_sentences": cut_sentences, "truncated_words": cut_words,
                "unlabelled_sentences": len(empty)}
