"""Token-tagging data read into :class:`Sentences`: CoNLL-style files (one ``token<TAB>tag`` per line, sentences
split on whitespace-only lines, ``-DOCSTART-`` lines skipped) and tables with a tokens column and a tags column
(jsonl / json / parquet files, Hub datasets: tags as names, or as ids with a ``ClassLabel`` feature or
``data.label_names``).

Every error is one line naming the file and the line (CoNLL) or row (tables) and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tl_hf.run.data.paths import DataError

__all__ = ["CONLL_SUFFIXES", "Sentences", "read_conll", "sentences_from_table"]

#: file extensions read as CoNLL (any other extension needs ``data.file_format``)
CONLL_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2", ".txt", ".tsv", ".annotated")


@dataclass
class Sentences:
    """``tokens[i]`` / ``tags[i]``: sentence ``i``'s words and tag names. ``starts[i]``: the 1-based line of its first
    token (CoNLL: token ``j`` is on line ``starts[i] + j``) or its 1-based row (tables)."""

    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    source: str = ""
    per_line: bool = True  # CoNLL (a token per line); False: a sentence per row

    def __len__(self) -> int:
        return len(self.tokens)

    def where(self, i: int, j: int = 0) -> str:
        """``file:line`` of token ``j`` of sentence ``i`` (tables: ``file row N, token j``)."""
        if self.per_line:
            return f"{self.source}:{self.starts[i] + j}"
        return f"{self.source} row {self.starts[i]}, token {j + 1}"

    def subset(self, index: Sequence[int]) -> "Sentences":
        return Sentences([self.tokens[i] for i in index], [self.tags[i] for i in index],
                         [self.starts[i] for i in index], self.source, self.per_line)


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path} holds NUL bytes: it is not UTF-8 text (UTF-16 or binary?); save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8 "
                        "(e.g. iconv -f latin1 -t utf-8)") from None
    return text.removeprefix("\ufeff")


def read_conll(path: Path) -> Sentences:
    """Sentences of a CoNLL-style file: ``token<TAB>tag`` per line (a line without a tab splits on whitespace), a
    line holding only whitespace (WNUT-17 train has lines holding one tab) ends a sentence, ``-DOCSTART-`` lines
    are skipped (they end a sentence too). A line with other than 2 columns, or no sentence at all, is an error."""
    out = Sentences(source=str(path))
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def close():
        if tokens:
            out.tokens.append(list(tokens))
            out.tags.append(list(tags))
            out.starts.append(start)
            tokens.clear()
            tags.clear()

    for n, line in enumerate(_decode(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.split(None, 1)[0] == "-DOCSTART-":
            close()
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if len(cols) != 2 or not cols[0] or not cols[1]:
            raise DataError(f"{path}:{n} has {len(cols)} column(s) ({line[:80]!r}); a CoNLL line is token<TAB>tag "
                            "(2 columns, both non-empty; sentences split on empty lines)")
        if not tokens:
            start = n
        tokens.append(cols[0])
        tags.append(cols[1])
    close()
    if not out.tokens:
        raise DataError(f"{path} has no sentences (no token<TAB>tag lines); check the file and data.file_format")
    return out


def _tag_names(ds, column: str, label_names: list[str] | None, where: str):
    """A function mapping a row's raw tags to names: ``ClassLabel`` ids by the feature's names, plain ids by
    ``data.label_names``, strings as they are."""
    feature = ds.features[column]
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    names = getattr(inner, "names", None)
    if names is None and label_names is not None:
        names = list(label_names)

    def convert(row_tags, row: int) -> list[str]:
        out = []
        for j, t in enumerate(row_tags):
            if isinstance(t, bool) or t is None:
                raise DataError(f"{where} row {row}, token {j + 1}: tag {t!r} is not a tag name or id")
            if isinstance(t, int):
                if names is None:
                    raise DataError(f"{where} row {row}: tags are integer ids but no tag names are known; set "
                                    "data.label_names to the tag set in id order (e.g. [O, B-PER, I-PER])")
                if not 0 <= t < len(names):
                    raise DataError(f"{where} row {row}, token {j + 1}: tag id {t} is outside the {len(names)} tags "
                                    f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
                out.append(str(names[t]))
            else:
                out.append(str(t).strip())
        return out

    return convert


def sentences_from_table(ds, tokens_column: str, tags_column: str, where: str,
                         label_names: list[str] | None = None) -> Sentences:
    """Sentences of a ``datasets.Dataset`` with a list-of-strings tokens column and a list tags column."""
    for key, col in (("data.tokens_column", tokens_column), ("data.tags_column", tags_column)):
        if col not in ds.column_names:
            raise DataError(f"column {col!r} ({key}) not found in {where}; its columns are: "
                            f"{', '.join(ds.column_names)}")
    convert = _tag_names(ds, tags_column, label_names, where)
    out = Sentences(source=where, per_line=False)
    for row, (toks, tags) in enumerate(zip(ds[tokens_column], ds[tags_column]), start=1):
        if not isinstance(toks, list) or not isinstance(tags, list):
            raise DataError(f"{where} row {row}: {tokens_column!r} and {tags_column!r} must be lists (a sentence's "
                            f"tokens and its tags), got {type(toks).__name__} and {type(tags).__name__}")
        if len(toks) != len(tags):
            raise DataError(f"{where} row {row}: {len(toks)} tokens but {len(tags)} tags; every token needs "
                            "exactly one tag")
        if not toks:
            continue
        if any(not isinstance(t, str) or not t.strip() for t in toks):
            raise DataError(f"{where} row {row}: tokens must be non-empty strings")
        out.tokens.append([t.strip() for t in toks])
        out.tags.append(convert(tags, row))
        out.starts.append(row)
    if not out.tokens:
        raise DataError(f"{where} has no sentences (every row is empty or the table has no rows)")
    return out
