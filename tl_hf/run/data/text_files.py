"""Read one text-data file through a ``datasets`` builder (``csv`` for csv/tsv, ``json`` for json/jsonl,
``parquet``), with the checks that keep a file from being read wrongly without a word:

* csv/tsv cells are read as strings, verbatim (no ``NA`` -> missing, no type guessing); ``.tsv`` is read without
  CSV quoting by default (``data.quoting: none``; ``csv`` turns it on), ``.csv`` with it;
* the number of rows must equal the number of non-blank lines after the header (a quote that opens a field and never
  closes would otherwise merge the following rows into one), likewise for jsonl;
* an empty file, or a header without rows, is an error naming the file.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Any

from tl_hf._errors import one_line
from tl_hf.run.data.paths import DataError

__all__ = ["FORMATS", "QUOTING", "format_of", "load_builder", "quiet_datasets", "read_delimited", "read_file"]

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
QUOTING = ("none", "csv")


def format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    raise DataError(f"cannot tell the format of {path} from its extension; set data.file_format to csv, tsv, json, "
                    "jsonl or parquet")


@contextlib.contextmanager
def quiet_datasets():
    """No "Generating data split" bars for local files."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars:
            datasets.enable_progress_bars()


def load_builder(builder: str, path: Path, what: str, **kwargs: Any):
    """``datasets.load_dataset(builder, data_files=path)``; a parse error becomes one line naming the file."""
    import datasets

    with quiet_datasets():
        try:
            return datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
        except Exception as exc:  # noqa: BLE001 - pandas/arrow parse errors come in many types
            cause = exc.__cause__ or exc.__context__
            detail = one_line(exc) if not isinstance(exc, datasets.exceptions.DatasetGenerationError) or not cause \
                else one_line(cause)
            raise DataError(f"could not read {path} as {what}: {detail[:300]}") from None


def _data_lines(path: Path, fmt: str) -> list[bytes]:
    """The non-blank lines of a UTF-8 text file (csv/tsv: a line of spaces is a row; jsonl: blank)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path} holds NUL bytes: it is not UTF-8 text (UTF-16 or binary?); save it as UTF-8 {fmt}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} does not decode; "
                        f"save it as UTF-8 {fmt} (e.g. iconv -f latin1 -t utf-8)") from None
    blank = (lambda line: not line.strip()) if fmt in ("json", "jsonl") else (lambda line: not line.strip(b"\r"))
    return [line for line in raw.split(b"\n") if not blank(line)]


def _header(path: Path, delimiter: str, quoting: str, lines: list[bytes], key: str) -> list[str]:
    if not lines:
        raise DataError(f"{key}: {path} is empty (no header line, no rows); give a file with a header line and "
                        "data rows")
    first = lines[0].decode("utf-8-sig").rstrip("\r")
    if quoting == "csv":
        return next(csv.reader([first], delimiter=delimiter))
    return first.split(delimiter)


def read_delimited(path: Path, delimiter: str, quoting: str, key: str, fmt: str):
    """A csv/tsv file with a header line, every column a string; rows counted against lines."""
    from datasets import Features, Value

    lines = _data_lines(path, fmt)
    names = _header(path, delimiter, quoting, lines, key)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{key}: {path} has the column name(s) {', '.join(map(repr, dupes))} more than once in its "
                        "header line; rename them")
    if len(lines) == 1:
        raise DataError(f"{key}: {path} is empty: a header line ({', '.join(names)}) and no data rows")
    try:
        ds = load_builder("csv", path, fmt, delimiter=delimiter, quoting=csv.QUOTE_NONE if quoting == "none" else
                          csv.QUOTE_MINIMAL, keep_default_na=False, na_filter=False, encoding="utf-8",
                          features=Features({n: Value("string") for n in names}))
    except DataError as exc:
        if quoting == "csv" and "inside string" in str(exc):
            raise DataError(f"{exc}; a quote opens a field that never closes: if quotes are part of the text, set "
                            "data.quoting=none") from None
        raise
    if len(ds) != len(lines) - 1:
        raise DataError(_merged_rows_message(ds, path, len(lines) - 1, quoting, fmt))
    return ds


def _merged_rows_message(ds, path: Path, n_lines: int, quoting: str, fmt: str) -> str:
    head = f"{path}: {len(ds)} rows were read but the file has {n_lines} data lines"
    if quoting != "csv":
        return head + f"; check the {fmt} layout (one row per line)"
    row = next((i for i, r in enumerate(ds) if any(isinstance(v, str) and "\n" in v for v in r.values())), None)
    where = "" if row is None else f" (row {row + 1}, line {row + 2}, starts {str(ds[row])[:60]!r})"
    return (head + f": a quoted field runs over several lines{where}. If the quotes are part of the text, set "
            "data.quoting=none; text with line breaks is not supported in csv/tsv (use jsonl)")


def read_file(path: Path, fmt: str | None, quoting: str | None, key: str):
    """The file at ``path`` as a ``datasets.Dataset`` (``key`` names the config key in messages)."""
    fmt = format_of(path, fmt)
    if path.stat().st_size == 0 or (fmt != "parquet" and not _data_lines(path, fmt)):
        raise DataError(f"{key}: {path} is empty (0 rows); give a {fmt} file with data rows")
    if fmt in ("csv", "tsv"):
        quoting = quoting or ("none" if fmt == "tsv" else "csv")
        return read_delimited(path, "\t" if fmt == "tsv" else ",", quoting, key, fmt)
    ds = load_builder("parquet" if fmt == "parquet" else "json", path, fmt)
    if fmt == "jsonl" and len(ds) != len(_data_lines(path, fmt)):
        raise DataError(f"{path}: {len(ds)} rows were read but the file has {len(_data_lines(path, fmt))} non-blank "
                        "lines; a jsonl file holds one JSON object per line")
    return ds
