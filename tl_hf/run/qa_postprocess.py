"""Extractive-QA post-processing: from start / end logits per window to one answer text per question.

The windows (features) of one question are regrouped by their ``example_id``; in every window the ``n_best`` highest
start and end logits are paired, spans that leave the context (offset ``None``), end before they start or are longer
than ``max_answer_length`` tokens are dropped, and the best-scoring span (start logit + end logit) over ALL windows
of the question wins; its character offsets cut the answer out of the context. SQuAD v1.1 has no unanswerable
questions, so a question always gets its best span ("" only when no window has a valid one).

The logits must be in feature order. ``Trainer.predict`` gives exactly that under several processes: accelerate's
``gather_for_metrics`` concatenates the processes' batches in sampler order and drops the samples it repeated to
even out the last batch, and the Trainer pads shorter batches' logits with -100 (positions past a window's own
length, which its offsets never reach).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

__all__ = ["best_spans", "postprocess_predictions"]


def best_spans(start: np.ndarray, end: np.ndarray, offsets: Sequence, n_best: int,
               max_answer_length: int) -> list[tuple[float, int, int]]:
    """``(score, start char, end char)`` candidates of one window, best first (at most ``n_best``)."""
    n = len(offsets)
    start, end = np.asarray(start[:n], dtype=np.float64), np.asarray(end[:n], dtype=np.float64)
    s_idx = np.argsort(start)[::-1][:n_best]
    e_idx = np.argsort(end)[::-1][:n_best]
    out = []
    for s in s_idx.tolist():
        if offsets[s] is None:
            continue
        for e in e_idx.tolist():
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            out.append((float(start[s] + end[e]), int(offsets[s][0]), int(offsets[e][1])))
    out.sort(key=lambda c: -c[0])
    return out[:n_best]


def postprocess_predictions(examples, features, start_logits, end_logits, *, n_best: int = 20,
                            max_answer_length: int = 30) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """``(predictions, nbest)``: question id -> answer text, and id -> the ``n_best`` candidates
    ``{"text", "score", "start", "end"}`` (character offsets into the context), over all windows of each question.
    ``features`` are the eval features (``example_id``, ``offset_mapping``) in the order of the logits' rows."""
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(start_logits)} / {len(end_logits)} rows of start / end logits for {len(features)} "
                         "eval features: the predictions do not cover the eval set exactly once")
    windows: dict[str, list[int]] = defaultdict(list)
    for i, ex_id in enumerate(features["example_id"]):
        windows[ex_id].append(i)
    offsets_all = features["offset_mapping"]
    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for ex_id, context in zip(examples["id"], examples["context"]):
        cands = []
        for i in windows.get(ex_id, []):
            cands += best_spans(start_logits[i], end_logits[i], offsets_all[i], n_best, max_answer_length)
        cands.sort(key=lambda c: -c[0])
        cands = cands[:n_best]
        predictions[ex_id] = context[cands[0][1]:cands[0][2]] if cands else ""
        nbest[ex_id] = [{"text": context[a:b], "score": s, "start": a, "end": b} for s, a, b in cands]
    return predictions, nbest
