"""What a run leaves in ``training.output_dir``: the single writer of ``all_results.json`` and ``run_config.json``,
the eval predictions, confusion matrix and plots of a classification run, its model card and push. Only the main
process writes (``is_main``)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import numpy as np

from tl_hf.run.sections import RunConfig

logger = logging.getLogger(__name__)

__all__ = ["DATASET_HUB_CONFIGS", "DATASET_HUB_IDS", "card_info", "is_main", "main_process_log", "write_results",
           "evaluate_classification", "evaluate_step",
           "write_card", "push_model", "numeric", "training_plots", "RUN_OUTPUTS", "clear_run_outputs"]


def is_main() -> bool:
    """True in the main process (``RANK`` 0 or unset): under ``accelerate launch`` / torchrun only it reports."""
    return int(os.environ.get("RANK", "0")) == 0


def _silent(*args, **kwargs) -> None:
    pass


def main_process_log(log: Callable) -> Callable:
    """``log`` in the main process, a no-op in the others."""
    return log if is_main() else _silent


def write_results(output_dir: str, results: dict[str, Any], cfg: RunConfig) -> None:
    """Write ``all_results.json`` (this run's results only: an earlier run's file is replaced, never merged into) and
    ``run_config.json`` (the config; it holds no token: ``training.hub_token`` is refused when the config is read).
    The one place a run writes them; call it from the main process only."""
    from tl_hf.core.state import atomic_write_json

    atomic_write_json(os.path.join(output_dir, "all_results.json"), dict(results))
    run_config = json.loads(json.dumps(cfg.to_dict(), default=str))
    atomic_write_json(os.path.join(output_dir, "run_config.json"), run_config)


#: what a run writes into ``output_dir`` beside the model and its checkpoints (results, predictions, plots)
RUN_OUTPUTS = ("all_results.json", "run_config.json", "train_results.json", "eval_results.json",
               "eval_predictions.jsonl", "confusion_matrix.png", "learning_curve.png", "lr_per_group.png",
               "wise_ft.json", "wise_ft.png",
               "test_predictions.jsonl", "per_label_f1.png",  # text_multilabel
               "eval_scatter.png")  # text_classification with data.problem_type regression


def clear_run_outputs(output_dir: str, log: Callable = logger.info) -> list[str]:
    """At the start of a fresh run (never at a resume): remove an earlier run's :data:`RUN_OUTPUTS` and the files
    its ``all_results.json`` lists under ``outputs``, so that no prediction, plot or result of another run is left
    beside this one's (a run that stops early, or writes fewer files, leaves none of them). Only plain files
    directly in ``output_dir`` are removed; anything else there (the user's files, the model) stays."""
    if not os.path.isdir(output_dir):
        return []
    names = set(RUN_OUTPUTS)
    try:
        with open(os.path.join(output_dir, "all_results.json"), encoding="utf-8") as f:
            listed = json.load(f).get("outputs")
        if isinstance(listed, dict):  # paths as that run wrote them (absolute, or relative to the same folder)
            real = os.path.realpath(output_dir)
            names |= {os.path.basename(p) for p in listed.values()
                      if isinstance(p, str) and os.path.realpath(os.path.dirname(os.path.abspath(p))) == real}
    except (OSError, ValueError, AttributeError):
        pass
    removed = []
    for name in sorted(names):
        path = os.path.join(output_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(name)
    if removed:
        log(f"fresh run: removed {len(removed)} output(s) of an earlier run from {output_dir} ({', '.join(removed)})")
    return removed


def numeric(results: dict[str, Any]) -> dict[str, Any]:
    """The int / float entries of ``results`` (what a model card and a push report)."""
    return {k: v for k, v in results.items() if isinstance(v, (int, float))}


def evaluate_step(trainer, results: dict[str, Any], eval_dataset, *, score: Callable, write: Callable) -> dict:
    """The evaluate step every task shares, after ``trainer.train()``. ``trainer.predict`` on ``eval_dataset``
    (gathered over all processes); ``score(pred) -> (metrics, value)`` gives the ``eval_`` metrics, which are logged
    and merged into ``results``, and a task value. Then, in the saving process only, ``write(out, value)`` writes the
    task's files into the output folder (returning ``{name: path}``), followed by the training plots. No eval set:
    only the plots."""
    value = None
    if eval_dataset is not None:
        pred = trainer.predict(eval_dataset, metric_key_prefix="eval")
        metrics, value = score(pred)
        trainer.log_metrics("eval", numeric(metrics))  # its table prints numbers only; a metric may give lists
        results.update(metrics)
    if not trainer.args.should_save:
        return results
    out = trainer.args.output_dir
    os.makedirs(out, exist_ok=True)
    written = dict(write(out, value)) if eval_dataset is not None else {}
    written.update(training_plots(trainer, out))
    results["outputs"] = written
    return results


def evaluate_classification(trainer, *, label_names: list[str], train_size: int, eval_dataset=None,
                            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """After ``trainer.train()``: evaluate (gathered over all processes) and, in the main process, write the eval
    predictions, the confusion matrix and the learning-curve / LR plots. Returns the results (``extra`` first)."""
    from tl_hf.run.metrics import confusion_matrix, predictions_from_logits

    results: dict[str, Any] = dict(extra or {})
    results["train_samples"] = train_size

    def score(pred):
        metrics = dict(pred.metrics)
        metrics["eval_samples"] = len(eval_dataset)
        return metrics, (predictions_from_logits(pred.predictions), np.asarray(pred.label_ids))

    def write(out: str, value) -> dict[str, str]:
        from tl_hf.run import plots

        pred_ids, labels = value
        cm = confusion_matrix(pred_ids, labels, max(len(label_names), int(max(pred_ids.max(), labels.max())) + 1))
        results["confusion_matrix"] = cm.tolist()
        return {"predictions": _write_predictions(os.path.join(out, "eval_predictions.jsonl"), pred_ids, labels,
                                                  label_names),
                "confusion_matrix": plots.plot_confusion_matrix(cm, label_names,
                                                                os.path.join(out, "confusion_matrix.png"))}

    return evaluate_step(trainer, results, eval_dataset, score=score, write=write)


def training_plots(trainer, out: str) -> dict[str, str]:
    """The learning curve and (with LLRD groups) the LR per group of a finished run, written into ``out``."""
    from tl_hf.run import plots

    written = {}
    history = trainer.state.log_history
    written["learning_curve"] = plots.plot_learning_curve(history, os.path.join(out, "learning_curve.png"))
    if any(k.startswith("lr/") for h in history for k in h):
        every_step = getattr(trainer, "lr_history", None) or history  # every optimizer step, warm-up included
        written["lr_per_group"] = plots.plot_lr_per_group(every_step, os.path.join(out, "lr_per_group.png"))
    return written


def _write_predictions(path: str, pred_ids, labels, label_names: list[str]) -> str:
    with open(path, "w") as fh:
        for i, (p, y) in enumerate(zip(pred_ids.tolist(), labels.tolist())):
            fh.write(json.dumps({"index": i, "label": int(y), "prediction": int(p),
                                 "label_name": _name(label_names, y), "prediction_name": _name(label_names, p)})
                     + "\n")
    return path


def _name(names, i):
    i = int(i)
    return names[i] if 0 <= i < len(names) else str(i)


#: the built-in datasets' Hub ids (hymenoptera has none: the card names it in its text only)
DATASET_HUB_IDS = {"sst2": "stanfordnlp/sst2", "trec": "CogComp/trec", "emotion": "dair-ai/emotion",
                   "mnist": "ylecun/mnist", "squad_v1.1": "rajpurkar/squad",
                   "wnut17": "leondz/wnut_17", "rte": "nyu-mll/glue", "mrpc": "nyu-mll/glue", "stsb": "nyu-mll/glue",
                   "goemotions": "google-research-datasets/go_emotions"}
#: the Hub config of a built-in dataset that is one config of a Hub dataset (GLUE's tasks)
DATASET_HUB_CONFIGS = {"rte": "rte", "mrpc": "mrpc", "stsb": "stsb",
                       "goemotions": "simplified"}  # the 43,410 / 5,426 / 5,427 train/dev/test rows, 28 labels


def card_info(cfg: RunConfig, dataset_name: str | None, results: dict[str, Any]) -> dict[str, Any]:
    """What the model card says about this run: the dataset (its Hub id for a built-in one), the base model's Hub id
    (the bundled alias's; otherwise read from the model) and the results."""
    from tl_hf.run.models import hub_origin

    info: dict[str, Any] = {"dataset_name": dataset_name, "results": numeric(results),
                            "dataset": DATASET_HUB_IDS.get(getattr(cfg.data, "dataset", None) or "")}
    config = DATASET_HUB_CONFIGS.get(getattr(cfg.data, "dataset", None) or "")
    if config:
        info["dataset_config"] = config
    base = hub_origin(cfg.model.name_or_path)
    if base:
        info["base_model"] = base
    return info


def write_card(trainer, cfg: RunConfig, dataset_name: str | None, results: dict[str, Any]) -> None:
    """The model card (``README.md``) next to the saved model: ``trainer.create_model_card()``, with this run's
    :func:`card_info` (also used when the card is pushed)."""
    trainer.card_info.update(card_info(cfg, dataset_name, results))
    trainer.create_model_card()


def push_model(trainer, cfg: RunConfig, dataset_name: str | None, results: dict[str, Any],
               log: Callable = logger.info) -> None:
    """Push the trained model (and its card) to ``hub.repo_id`` through ``trainer.push_to_hub``."""
    from tl_hf.hub import push

    trainer.card_info.update(card_info(cfg, dataset_name, results))
    push(trainer, repo_id=cfg.hub.repo_id, private=cfg.hub.private)
    log(f"pushed to the Hub: {cfg.hub.repo_id}")
