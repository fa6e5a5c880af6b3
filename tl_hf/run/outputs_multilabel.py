"""What a multi-label run (``task: text_multilabel``) evaluates and writes after training: the decision threshold
tuned on the validation split (never on test), the validation and test scores at that threshold (micro / macro /
example-based F1, per-label precision / recall / F1), ``eval_predictions.jsonl`` / ``test_predictions.jsonl`` with
label names and scores, a per-label F1 plot and the training plots. Every split is predicted through
``Trainer.predict``, which gathers the logits of all processes, so every process tunes the same threshold on the
whole validation set; only the main process writes."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tl_hf.run.metrics.multilabel import SCALAR_KEYS, apply_thresholds, sigmoid, tune_thresholds
from tl_hf.run.outputs import numeric, training_plots

__all__ = ["evaluate_multilabel", "threshold_source"]


def threshold_source(data_cfg, sources: dict[str, str]) -> str:
    """Where the threshold comes from, in words (``all_results.json``'s ``threshold_split``)."""
    if not data_cfg.tunes:
        return f"fixed by data.threshold={data_cfg.threshold}"
    if sources.get("eval_split") == "held-out":
        return f"tuned on the {sources.get('eval')} (no validation split given)"
    return f"tuned on the validation split {sources.get('eval_split')} ({sources.get('eval')})"


def _predict(trainer, dataset, prefix: str):
    """``(sigmoid scores [n, L], multi-hot references [n, L], Trainer metrics)`` of ``dataset``, gathered."""
    pred = trainer.predict(dataset, metric_key_prefix=prefix)
    logits = pred.predictions[0] if isinstance(pred.predictions, (tuple, list)) else pred.predictions
    refs = (np.asarray(pred.label_ids) >= 0.5).astype(np.int64)
    return sigmoid(logits), refs, dict(pred.metrics)


def _scored(metric, probs, refs, thresholds, prefix: str, names: list[str]) -> dict[str, Any]:
    scores = metric.compute(apply_thresholds(probs, thresholds), refs)
    out: dict[str, Any] = {f"{prefix}_{k}": scores[k] for k in SCALAR_KEYS}
    out[f"{prefix}_per_label"] = {n: {"precision": scores["precision"][j], "recall": scores["recall"][j],
                                      "f1": scores["f1"][j], "support": scores["support"][j]}
                                  for j, n in enumerate(names)}
    return out


def evaluate_multilabel(trainer, built, data_cfg) -> dict[str, Any]:
    """After ``trainer.train()``: predict the validation split, tune the threshold there (``data.threshold``), score
    the validation and test splits with it, and (main process) write predictions and plots. Returns the results."""
    metric = trainer.compute_metrics  # a MultiLabelMetrics: the multilabel_f1 evaluate module
    names = built.label_names
    results: dict[str, Any] = dict(built.results)
    results["train_samples"] = len(built.train_dataset)
    scored: dict[str, tuple] = {}
    thresholds: Any = float(data_cfg.threshold) if not data_cfg.tunes else 0.5
    if built.eval_dataset is not None:
        probs, refs, metrics = _predict(trainer, built.eval_dataset, "eval")
        if data_cfg.tunes:
            thresholds = tune_thresholds(probs, refs, per_label=data_cfg.threshold == "tune_per_label",
                                         objective=data_cfg.threshold_objective)
            results["eval_at_threshold_0.5"] = {k[5:]: v for k, v in metrics.items() if k[5:] in SCALAR_KEYS}
        results.update({k: v for k, v in metrics.items() if k[5:] not in SCALAR_KEYS})
        results["eval_samples"] = len(built.eval_dataset)
        results.update(_scored(metric, probs, refs, thresholds, "eval", names))
        scored["eval"] = (probs, refs)
    results["threshold_mode"] = data_cfg.threshold if data_cfg.tunes else "fixed"
    results["threshold"] = dict(zip(names, thresholds)) if isinstance(thresholds, list) else thresholds
    results["threshold_split"] = threshold_source(data_cfg, built.sources)
    if data_cfg.tunes and data_cfg.threshold == "tune":
        results["threshold_objective"] = data_cfg.threshold_objective
    if built.test_dataset is not None:
        probs, refs, metrics = _predict(trainer, built.test_dataset, "test")
        results.update({k: v for k, v in metrics.items() if k[5:] not in SCALAR_KEYS})
        results["test_samples"] = len(built.test_dataset)
        results.update(_scored(metric, probs, refs, thresholds, "test", names))
        scored["test"] = (probs, refs)
    for split in scored:
        trainer.log_metrics(split, numeric({k: v for k, v in results.items() if k.startswith(split + "_")}))
    if not trainer.args.should_save:
        return results
    results["outputs"] = _write_outputs(trainer, built, scored, thresholds, results)
    return results


def _write_outputs(trainer, built, scored: dict, thresholds, results: dict) -> dict[str, str]:
    from tl_hf.run import plots

    out = trainer.args.output_dir
    os.makedirs(out, exist_ok=True)
    written = {}
    for split, (probs, refs) in scored.items():
        path = os.path.join(out, f"{split}_predictions.jsonl")
        written[f"{split}_predictions"] = _write_predictions(path, built.rows.get(split), probs, refs, thresholds,
                                                             built.label_names)
    if scored:
        f1 = {split: [results[f"{split}_per_label"][n]["f1"] for n in built.label_names] for split in scored}
        written["per_label_f1"] = plots.plot_per_label_f1(built.label_names, f1, os.path.join(out,
                                                                                             "per_label_f1.png"))
    written.update(training_plots(trainer, out))
    return written


def _write_predictions(path: str, rows, probs, refs, thresholds, names: list[str]) -> str:
    """One JSON object per example: its text, true and predicted label names, and every label's score."""
    pred = apply_thresholds(probs, thresholds)
    texts = rows["text"] if rows is not None and len(rows) == len(probs) else [None] * len(probs)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(len(probs)):
            fh.write(json.dumps({"index": i, "text": texts[i],
                                 "labels": [names[j] for j in np.flatnonzero(refs[i])],
                                 "predicted": [names[j] for j in np.flatnonzero(pred[i])],
                                 "scores": {n: round(float(probs[i, j]), 4) for j, n in enumerate(names)}},
                                ensure_ascii=False) + "\n")
    return path
