"""Entity-level precision / recall / F1 with exact-span strict IOB2 semantics (what ``seqeval`` computes with
``mode="strict", scheme=IOB2``; the tests check it against seqeval): an entity is a ``B-X`` followed by zero or more
``I-X``; an ``I-X`` that continues no ``X`` entity starts none. A predicted entity is correct only when its type,
start and end equal a gold entity's. Scores per type and micro-averaged over all entities of the whole set, plus
token accuracy (the fraction of tokens whose tag equals the gold tag). Pure Python: sequences of tag names in,
plain numbers out; :class:`TokenMetrics` is the Trainer's ``compute_metrics`` of a token-classification run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

__all__ = ["TokenMetrics", "entity_scores", "entity_spans", "word_sequences"]


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, start, end)`` (end exclusive) of the strict IOB2 entities in one tag sequence."""
    spans, ty, start = [], None, 0
    for j, t in enumerate(list(tags) + ["O"]):
        kind, rest = (t[0], t[2:]) if len(t) > 2 and t[1] == "-" and t[0] in "BI" else ("O", None)
        if ty is not None and not (kind == "I" and rest == ty):
            spans.append((ty, start, j))
            ty = None
        if kind == "B":
            ty, start = rest, j
    return spans


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``precision``, ``recall``, ``f1`` (micro over entities), ``accuracy`` (tokens), ``number`` (gold entities)
    and ``per_type``: ``{type: {precision, recall, f1, number}}`` for every type in the gold or predicted tags.
    A score with an empty denominator is 0 (seqeval's ``zero_division=0``)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference sequences but {len(predictions)} predicted ones")
    true, pred, hit = Counter(), Counter(), Counter()
    correct = total = 0
    for i, (ref, prd) in enumerate(zip(references, predictions)):
        if len(ref) != len(prd):
            raise ValueError(f"sequence {i}: {len(ref)} reference tags but {len(prd)} predicted tags")
        correct += sum(a == b for a, b in zip(ref, prd))
        total += len(ref)
        gold, found = set(entity_spans(ref)), set(entity_spans(prd))
        true.update(s[0] for s in gold)
        pred.update(s[0] for s in found)
        hit.update(s[0] for s in gold & found)
    p, r, f = _prf(sum(hit.values()), sum(pred.values()), sum(true.values()))
    per_type = {}
    for ty in sorted(set(true) | set(pred)):
        tp, tr, tf = _prf(hit[ty], pred[ty], true[ty])
        per_type[ty] = {"precision": tp, "recall": tr, "f1": tf, "number": true[ty]}
    return {"precision": p, "recall": r, "f1": f, "accuracy": correct / total if total else 0.0,
            "number": sum(true.values()), "per_type": per_type}


def flat_scores(scores: dict[str, Any]) -> dict[str, float]:
    """The Trainer's flat keys: ``precision``, ``recall``, ``f1``, ``accuracy`` and ``<type>_<score>``."""
    out = {k: scores[k] for k in ("precision", "recall", "f1", "accuracy")}
    for ty, s in scores["per_type"].items():
        out.update({f"{ty}_{k}": v for k, v in s.items()})
    return out


def word_sequences(predictions, label_ids, names: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """``(gold, predicted)`` tag names of each row at its labelled positions (``label != -100``): logits
    ``[n, length, tags]`` (or ids ``[n, length]``) and labels ``[n, length]``, padded with -100 as the Trainer
    gathers them."""
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    p = np.asarray(predictions)
    ids = p.argmax(axis=-1) if p.ndim == 3 else p
    labels = np.asarray(label_ids[0] if isinstance(label_ids, (tuple, list)) else label_ids)
    gold, pred = [], []
    for row_p, row_y in zip(ids, labels):
        keep = row_y != -100
        gold.append([names[int(t)] for t in row_y[keep]])
        pred.append([names[int(t)] if 0 <= int(t) < len(names) else "O" for t in row_p[keep]])
    return gold, pred


class TokenMetrics:
    """``compute_metrics`` of a token-classification run: the packaged ``entity_f1`` evaluate module on the words'
    tag names (first subwords) of the whole gathered eval set; keys ``precision``, ``recall``, ``f1``,
    ``accuracy`` and ``<type>_precision`` / ``_recall`` / ``_f1`` / ``_number``. The tag names are bound once the
    data is loaded (:meth:`bind_label_names`)."""

    def __init__(self) -> None:
        from tl_hf.run.metrics.loading import load_metric

        self.metric = load_metric("entity_f1", where="token classification: ")
        self.names: list[str] | None = None

    def bind_label_names(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def check(self, num_labels: int) -> None:
        if self.names is None or len(self.names) != num_labels:
            raise ValueError(f"token classification metrics: bind the {num_labels} tag names first")

    def score(self, gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
        return self.metric.compute(predictions=pred, references=gold)

    def __call__(self, eval_pred) -> dict[str, float]:
        if self.names is None:
            raise ValueError("token classification metrics: the tag names are not bound")
        gold, pred = word_sequences(eval_pred.predictions, eval_pred.label_ids, self.names)
        return flat_scores(self.score(gold, pred))
