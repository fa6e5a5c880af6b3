"""IOB2 tag sets and BIO checks of token-tagging data (:class:`~tl_hf.run.data.conll.Sentences`).

The tag set is ``data.label_names`` when given, else the training split's tags ordered ``O`` first, then per entity
type (types sorted by name) ``B-TYPE`` then ``I-TYPE``; a type seen only as ``B-`` or ``I-`` gets both. Every tag is
``O``, ``B-TYPE`` or ``I-TYPE``. A malformed sequence (``I-X`` at a sentence start, after ``O`` or after a tag of
another type) is warned about with counts (``data.bio_repair: warn``, the default; the data is kept as it is, and
strict IOB2 scoring counts no entity there), repaired (``repair``: the ``I-X`` becomes ``B-X``, as IOB1 -> IOB2
conversion does) or refused (``error``).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable

from tl_hf.run.data.conll import Sentences
from tl_hf.run.data.paths import DataError

__all__ = ["BIO_MODES", "TAG_RE", "b_to_i", "check_bio", "encode_tags", "tag_set"]

logger = logging.getLogger(__name__)

BIO_MODES = ("warn", "repair", "error")
TAG_RE = re.compile(r"O|([BI])-(\S+)")


def _split(tag: str) -> tuple[str, str | None]:
    m = TAG_RE.fullmatch(tag)
    if m is None:
        raise ValueError(tag)
    return (m.group(1), m.group(2)) if m.group(1) else ("O", None)


def _check_names(names: Iterable[str], where: str) -> None:
    bad = [n for n in names if TAG_RE.fullmatch(str(n)) is None]
    if bad:
        raise DataError(f"{where}: tag {bad[0]!r} is not IOB2; tags are O, B-TYPE or I-TYPE (IOBES/BILOU and bare "
                        "types are not read: convert the file to IOB2)")


def tag_set(train: Sentences | None, label_names: list[str] | None) -> list[str]:
    """The tag names in id order: ``label_names`` (checked) or the training tags in the documented order."""
    if label_names is not None:
        names = [str(n) for n in label_names]
        _check_names(names, "data.label_names")
        missing = sorted({f"I-{_split(n)[1]}" for n in names if n.startswith("B-")} - set(names))
        if missing:
            raise DataError(f"data.label_names has B- tags without their I- tags ({', '.join(missing)}); list both "
                            "for every entity type")
        return names
    if train is None:
        raise DataError("without training data the tag set must be given: set data.label_names")
    seen = {t for sent in train.tags for t in sent}
    for i, sent in enumerate(train.tags):
        for j, t in enumerate(sent):
            if TAG_RE.fullmatch(t) is None:
                _check_names([t], train.where(i, j))
    types = sorted({_split(t)[1] for t in seen if t != "O"})
    return ["O"] + [f"{p}-{ty}" for ty in types for p in ("B", "I")]


def encode_tags(data: Sentences, names: list[str]) -> list[list[int]]:
    """Tag ids of every sentence; a tag outside ``names`` is an error naming its file and line."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i, sent in enumerate(data.tags):
        ids = []
        for j, t in enumerate(sent):
            k = index.get(t)
            if k is None:
                shown = ", ".join(names[:14]) + (", ..." if len(names) > 14 else "")
                raise DataError(f"{data.where(i, j)}: tag {t!r} is not in the tag set ({shown}); fix the tag or add "
                                "it to data.label_names")
            ids.append(k)
        out.append(ids)
    return out


def _bad_positions(tags: list[str]) -> list[int]:
    """Positions of ``I-X`` tags that do not continue an ``X`` entity (strict IOB2)."""
    bad, prev = [], None
    for j, t in enumerate(tags):
        kind, ty = _split(t)
        if kind == "I" and prev != ty:
            bad.append(j)
        prev = ty
    return bad


def check_bio(data: Sentences, mode: str, split: str) -> tuple[Sentences, int]:
    """``(data, number of malformed tags)``: warn (log the count and where), repair (``I-X`` -> ``B-X``) or raise a
    one-line error naming the first lines, as ``mode`` says."""
    found = [(i, j) for i, sent in enumerate(data.tags) for j in _bad_positions(sent)]
    if not found:
        return data, 0
    sentences = len({i for i, _ in found})
    more = ", ..." if len(found) > 3 else ""
    if data.per_line:
        first = f"{data.source} lines " + ", ".join(str(data.starts[i] + j) for i, j in found[:3]) + more
    else:
        first = f"{data.source} " + ", ".join(f"row {data.starts[i]} token {j + 1}" for i, j in found[:3]) + more
    what = (f"{split} data: {len(found)} malformed IOB2 tag(s) in {sentences} sentence(s) (I-X at a sentence start, "
            f"after O or after another type), at {first}")
    if mode == "error":
        raise DataError(f"{what}; fix the file, or set data.bio_repair=repair (I-X -> B-X) or warn")
    if mode == "repair":
        tags = [list(s) for s in data.tags]
        for i, j in found:
            tags[i][j] = "B-" + tags[i][j][2:]
        data = Sentences(data.tokens, tags, data.starts, data.source, data.per_line)
        logger.warning("%s; repaired: each became B-X (data.bio_repair=repair)", what)
    else:
        logger.warning("%s; kept as they are (strict IOB2 scoring counts no entity there; data.bio_repair=repair "
                       "turns them into B-X, error refuses them)", what)
    return data, len(found)


def b_to_i(names: list[str]) -> list[int]:
    """For each tag id, the id its word's continuation subwords get: ``B-X`` -> ``I-X``, others unchanged."""
    index = {n: i for i, n in enumerate(names)}
    return [index.get("I-" + n[2:], i) if n.startswith("B-") else i for i, n in enumerate(names)]
