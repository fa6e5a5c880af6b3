"""Class labels of text data: the column checks, the label set taken from the training split, and the encoding of
every split by label *name* into a ``datasets.ClassLabel`` column.

A label value is canonicalised first: an int (or a digit string, or a float / numeric string with an integral value:
``1.0`` == ``"1"`` == ``1``) is a class id; any other string (and a bool) is a class name. A split whose labels are all
ids is encoded by id (``N`` = max id + 1 classes), otherwise by name (sorted). ``data.label_names`` fixes the set in
id order: labels that are all among its names map by name, integer ids below its length by id. Other splits are then
mapped by name onto the training split's set, never by raw id, so ``1.0`` in train and ``1`` in eval stay one class.

Regression targets (``data.problem_type: regression``) are finite numbers, encoded as a ``float32`` column
(:func:`encode_scores`). ``data.problem_type: auto`` tells them apart from class labels by the training split
(:func:`detect_problem_type`): names or integers are classes, fractional numbers with at least
:data:`MIN_REGRESSION_VALUES` distinct values a regression target; what could be either (fewer fractional values, or
:data:`MIN_SCALE_VALUES` and more integer-valued numbers written as floats) is refused, asking for
``data.problem_type``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from typing import Sequence

from tl_hf.run.data.paths import DataError

__all__ = ["LabelSet", "LabelWarning", "MAX_SPARE_CLASSES", "MIN_REGRESSION_VALUES", "MIN_SCALE_VALUES",
           "PROBLEM_TYPES", "check_label_feature", "check_text_feature", "detect_problem_type", "encode_labels",
           "encode_scores", "label_set"]

logger = logging.getLogger(__name__)

#: integer ids are class ids: ``max id + 1`` classes are refused above ``max(MAX_SPARE_CLASSES, 2 x distinct ids)``
MAX_SPARE_CLASSES = 1000
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
#: ``data.problem_type`` values of a text-classification run (multi-label data is ``task: text_multilabel``)
PROBLEM_TYPES = ("auto", "single_label_classification", "regression")
#: ``auto``: fractional labels are a regression target when they take at least this many distinct values
MIN_REGRESSION_VALUES = 3
#: ``auto``: integer-valued numbers written as floats (``1.0``) are class ids up to this many distinct values; from it
#: on they could as well be a rating scale (e.g. rounded 0-5 scores), and ``auto`` asks for ``data.problem_type``
MIN_SCALE_VALUES = 5


class LabelWarning(UserWarning):
    """The label set has classes no training example has (e.g. labels 1..N leave class 0 empty)."""


class LabelSet:
    """``names`` in id order and how values map to ids: ``by_id`` (ids are class ids) or by name."""

    def __init__(self, names: Sequence[str], by_id: bool, declared: bool = False) -> None:
        self.names = list(names)
        self.by_id = by_id
        self.declared = declared
        self.index = {n: i for i, n in enumerate(self.names)}

    def id_of(self, value) -> int | None:
        """The class id of a canonical value, or None when it is not in the set."""
        if self.by_id:
            return value if isinstance(value, int) and 0 <= value < len(self.names) else None
        return self.index.get(str(value))


def _canonical(v, where: str):
    """int (a class id) or str (a class name); None stays None (an empty label)."""
    if v is None or isinstance(v, bool):
        return None if v is None else str(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
        raise DataError(f"{where}: label {v!r} is not a class: labels are class names or integer ids (a fractional "
                        "number is a regression target: set data.problem_type: regression to predict it)")
    s = str(v)
    t = s.strip()
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return _canonical(float(t), where)
    return s


def _values(ds, column: str, where: str) -> list:
    feature = ds.features[column]
    raw = ds[column]
    names = getattr(feature, "names", None)
    if names is not None:  # a ClassLabel column (a Hub dataset): its names, not its ids
        return [names[v] if v is not None and v >= 0 else None for v in raw]
    out = [_canonical(v, where) for v in raw]
    for i, v in enumerate(out):
        if v is None or v == "":
            raise DataError(f"{where}: row {i + 1} has an empty label in column {column!r}; fill it in or drop the "
                            "row")
    kinds = {type(v) for v in out}
    if len(kinds) > 1:
        num = next(v for v in out if isinstance(v, int))
        name = next(v for v in out if isinstance(v, str))
        raise DataError(f"{where}: column {column!r} mixes integer ids and names (e.g. {num} and {name!r}); give "
                        "every label the same way")
    return out


def _number(v) -> float | None:
    """``v`` as a float when it is a number or a numeric string (``nan`` / ``inf`` included), else None."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _written_as_float(v) -> bool:
    return isinstance(v, float) or (isinstance(v, str) and not _INT.fullmatch(v.strip()))


def detect_problem_type(ds, column: str, where: str, problem_type: str = "auto") -> str:
    """``single_label_classification`` or ``regression`` for the labels of the training split ``ds``
    (``problem_type`` as configured; ``auto`` decides from the values and refuses what could be either)."""
    if problem_type != "auto":
        return problem_type
    if getattr(ds.features[column], "names", None) is not None:  # a ClassLabel column
        return "single_label_classification"
    raw = ds[column]
    numbers = [_number(v) for v in raw]
    if not numbers or any(x is None for x in numbers):
        return "single_label_classification"  # names (or empty labels, refused by the encoding)
    finite = [x for x in numbers if math.isfinite(x)]
    fractional = next((v for v, x in zip(raw, numbers) if math.isfinite(x) and not x.is_integer()), None)
    distinct = len(set(finite))
    fix = ("set data.problem_type: regression to predict the number, or single_label_classification for classes "
           "(given as names or integer ids)")
    if fractional is not None or len(finite) < len(numbers):
        if distinct >= MIN_REGRESSION_VALUES:
            return "regression"
        shown = _number(fractional) if fractional is not None else next(v for v, x in zip(raw, numbers)
                                                                         if not math.isfinite(x))
        raise DataError(f"{where}: label {shown!r} is not a class (labels are class names or integer ids) and column "
                        f"{column!r} has only {distinct} distinct finite numbers, too few to be sure it is a "
                        f"regression target (data.problem_type: auto); {fix}")
    if distinct >= MIN_SCALE_VALUES and any(_written_as_float(v) for v in raw):
        shown = ", ".join(str(v) for v in list(dict.fromkeys(raw))[:4])
        raise DataError(f"{where}: column {column!r} holds {distinct} integer-valued numbers written as floats (e.g. "
                        f"{shown}): {distinct} classes or a score? data.problem_type: auto cannot tell; {fix}")
    return "single_label_classification"


def encode_scores(ds, column: str, where: str):
    """``ds`` with ``column`` replaced by its numbers as ``float32`` (a regression target); a value that is not a
    finite number is refused, naming its row."""
    from datasets import Dataset, Features, Value

    out = []
    for i, v in enumerate(ds[column]):
        x = _number(v)
        if x is None or not math.isfinite(x):
            what = "is empty" if v is None or str(v).strip() == "" else \
                (f"is {v!r}, not a finite number" if x is not None else f"is {v!r}, not a number")
            raise DataError(f"{where}: row {i + 1} of column {column!r} {what}; a regression target "
                            "(data.problem_type: regression) is a finite number in every row: fix or drop the row")
        out.append(x)
    columns = {k: (out if k == column else ds[k]) for k in ds.column_names}
    features = Features({k: (Value("float32") if k == column else f) for k, f in ds.features.items()})
    return Dataset.from_dict(columns, features=features)


def check_label_feature(ds, column: str, where: str) -> None:
    """One label per row: a plain value or a ClassLabel, never a list or a dict."""
    from datasets import ClassLabel, Value

    feature = ds.features[column]
    if isinstance(feature, (Value, ClassLabel)) and getattr(feature, "dtype", "") != "null":
        return
    kind = "no values" if isinstance(feature, Value) else ("dicts" if isinstance(feature, dict) else "lists")
    example = next((v for v in ds[column][:3] if v is not None), None)
    raise DataError(f"{where}: column {column!r} (data.label_column) holds {kind}"
                    + (f" (e.g. {str(example)[:60]})" if example is not None else "")
                    + "; one label per row is needed (a class name or an integer id; multi-label data is not "
                      "supported)")


def check_text_feature(ds, column: str, key: str, where: str, *, pair: bool = False) -> None:
    """A column of strings that are not all numbers (``pair``: one side of a sentence pair, never empty)."""
    from datasets import Value

    feature = ds.features[column]
    cols = ", ".join(ds.column_names)
    if not isinstance(feature, Value):
        kind = "dicts" if isinstance(feature, dict) else "lists"
        example = next((v for v in ds[column][:3] if v is not None), None)
        raise DataError(f"{where}: column {column!r} ({key}) holds {kind}, not one string per row (e.g. "
                        f"{str(example)[:60]}); join the pieces into one string, or point {key} at the text column "
                        f"(columns: {cols})")
    if feature.dtype not in ("string", "large_string"):
        raise DataError(f"{where}: column {column!r} ({key}) holds {feature.dtype} numbers, not text; set {key} to "
                        f"the text column (columns: {cols})")
    missing = next((i for i, v in enumerate(ds[column]) if v is None), None)
    if missing is not None:
        raise DataError(f"{where}: row {missing + 1} has no text in column {column!r} ({key}) (null or missing); "
                        "fill it in or drop the row")
    empty = next((i for i, v in enumerate(ds[column]) if not v.strip()), None) if pair else None
    if empty is not None:
        raise DataError(f"{where}: row {empty + 1} has an empty text in column {column!r} ({key}); a sentence pair "
                        "needs both texts: fill it in or drop the row")
    sample = [v for v in ds[column][:1000] if v]
    if sample and all(_FLOAT.fullmatch(v.strip()) for v in sample):
        raise DataError(f"{where}: column {column!r} ({key}) holds only numbers (e.g. {sample[0]!r}), not text; set "
                        f"{key} to the text column (columns: {cols})")


def label_set(ds, column: str, where: str, declared: Sequence[str] | None = None) -> LabelSet:
    """The label set of the training split ``ds`` (or ``declared``, ``data.label_names``)."""
    values = _values(ds, column, where)
    feature_names = getattr(ds.features[column], "names", None)
    if declared:
        declared = [str(n) for n in declared]
        if all(str(v) in declared for v in values):
            return LabelSet(declared, by_id=False, declared=True)
        if all(isinstance(v, int) and 0 <= v < len(declared) for v in values):
            return LabelSet(declared, by_id=True, declared=True)
        outside = sorted({str(v) for v in values} - set(declared), key=str)
        raise DataError(f"labels {outside[:5]} are outside the label set data.label_names={declared} ({where}); "
                        "add them to data.label_names or fix the data")
    if feature_names is not None:
        return LabelSet(feature_names, by_id=False)
    if not values or isinstance(values[0], str):
        return LabelSet(sorted(set(values)), by_id=False)
    return _id_set(values, column, where)


def _id_set(values: list[int], column: str, where: str) -> LabelSet:
    lo, hi = min(values), max(values)
    if lo < 0:
        raise DataError(f"{where}: integer labels must be >= 0 (class ids), found {lo} in column {column!r}; "
                        "renumber them 0..N-1 or give them as names in data.label_names")
    counts = Counter(values)
    n = hi + 1
    if n > max(MAX_SPARE_CLASSES, 2 * len(counts)):
        raise DataError(f"{where}: label {hi} in column {column!r} would make {n:,} classes (integer labels are "
                        f"class ids 0..N-1) of which only {len(counts)} occur; renumber them 0..N-1, or list the "
                        "labels in data.label_names to map them by name")
    missing = [i for i in range(n) if i not in counts]
    if missing:
        if missing == [0] or (lo >= 1 and missing == list(range(lo))):
            how = (f"labels run {lo}..{hi} with no {'0' if lo == 1 else f'0..{lo - 1}'}: class 0 is a phantom class "
                   f"no example has; subtract {lo} from the labels, or map them by name with data.label_names="
                   f"[{', '.join(str(i) for i in range(lo, min(hi, lo + 4) + 1))}{', ...' if hi > lo + 4 else ''}]")
        else:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            how = (f"class id(s) {shown} of 0..{hi} occur in no training example: the head gets {n} outputs; "
                   "renumber the labels or map them by name with data.label_names")
        msg = f"{where}: column {column!r}: {how}"
        warnings.warn(msg, LabelWarning, stacklevel=3)
        logger.warning(msg)
    return LabelSet([str(i) for i in range(n)], by_id=True)


def encode_labels(ds, column: str, labels: LabelSet, where: str):
    """``ds`` with ``column`` replaced by class ids (a ``ClassLabel`` of ``labels.names``), mapped by name."""
    from datasets import ClassLabel

    values = _values(ds, column, where)
    ids = [labels.id_of(v) for v in values]
    unknown = sorted({str(v) for v, i in zip(values, ids) if i is None}, key=str)
    if unknown:
        what = "are outside the label set data.label_names" if labels.declared else \
            "do not occur in the training data"
        raise DataError(f"{where}: labels {unknown[:5]} {what} (labels: {', '.join(labels.names[:20])}"
                        f"{' ...' if len(labels.names) > 20 else ''}); fix them, or list every label in "
                        "data.label_names")
    ds = ds.remove_columns(column).add_column(column, ids)
    return ds.cast_column(column, ClassLabel(names=labels.names))
