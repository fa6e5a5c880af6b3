"""The official SQuAD v1.1 scores (Rajpurkar et al. 2016; ``evaluate-v1.1.py``), written from the published
definition: answers are normalised (lower case, punctuation removed, the articles *a*, *an*, *the* removed, runs of
white space collapsed), then

* exact match: the normalised prediction equals a normalised gold answer;
* F1: the harmonic mean of token precision and recall between the normalised prediction and a gold answer (bag of
  tokens, counted with multiplicity);

each the maximum over ALL gold answers of the question, averaged over the questions and reported in percent (0-100),
as the official script does. A question without a prediction scores 0 on both. The packaged evaluate module
``tl_hf/run/metrics/modules/squad.py`` computes these; so does :func:`squad_scores` directly.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Mapping

__all__ = ["exact_match_score", "f1_score", "normalize_answer", "squad_scores"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (the official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _best(fn, prediction: str, golds: Iterable[str]) -> float:
    return max((fn(prediction, g) for g in golds), default=0.0)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over the questions of ``references`` (id -> gold answer texts);
    ``predictions`` is id -> answer text (a question it lacks scores 0, as in the official script)."""
    em = f1 = 0.0
    for qid, golds in references.items():
        golds = list(golds)
        if qid not in predictions:
            continue
        em += _best(exact_match_score, predictions[qid], golds)
        f1 += _best(f1_score, predictions[qid], golds)
    n = len(references)
    return {"exact_match": 100.0 * em / n if n else 0.0, "f1": 100.0 * f1 / n if n else 0.0}
