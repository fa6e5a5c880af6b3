"""The steps every recipe shares (transformers' run_glue flow): arguments -> logging -> last-checkpoint detection ->
data -> model -> Trainer -> train -> save / metrics / plots -> model card -> push. Recipes stay thin."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import numpy as np

from tl_hf.run.config import ConfigError, RunConfig

logger = logging.getLogger(__name__)

__all__ = ["build_training_args", "detect_last_checkpoint", "resolve_strategy", "maybe_wrap_peft", "callbacks_for",
           "build_trainer", "finish_run", "PEFT_TARGETS"]

#: default LoRA target modules per model_type (query and value projections)
PEFT_TARGETS = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"], "electra": ["query", "value"], "albert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"], "deberta-v2": ["query_proj", "value_proj"],
    "vit": ["q_proj", "v_proj"], "deit": ["q_proj", "v_proj"], "beit": ["q_proj", "v_proj"],
    "dinov2": ["q_proj", "v_proj"], "swin": ["q_proj", "v_proj"], "swinv2": ["q_proj", "v_proj"],
}


def build_training_args(cfg: RunConfig):
    """``TrainingArguments`` from the ``training`` section, with early stopping's requirements filled in."""
    training = dict(cfg.training)
    es = cfg.early_stopping
    if es.patience > 0:
        if training.get("eval_strategy", "no") == "no":
            raise ConfigError("early_stopping.patience > 0 needs evaluations: set training.eval_strategy=epoch (or "
                              "steps with eval_steps) and the same training.save_strategy")
        training.setdefault("save_strategy", training["eval_strategy"])
        if training.get("save_strategy") == "no":
            training["save_strategy"] = training["eval_strategy"]
        if training["save_strategy"] == "steps" and "save_steps" not in training and "eval_steps" in training:
            training["save_steps"] = training["eval_steps"]
        training.update(load_best_model_at_end=True, metric_for_best_model=f"eval_{es.metric}",
                        greater_is_better=es.greater_is_better)
        training.setdefault("save_total_limit", 2)
    cfg = RunConfig(**{**cfg.__dict__, "training": training})
    args = cfg.training_arguments()
    if args.dataloader_pin_memory and not _has_accelerator():
        args.dataloader_pin_memory = False  # avoids torch's "no accelerator is found" warning on CPU machines
    return args


def detect_last_checkpoint(args, log: Callable = logger.info) -> str | None:
    """The checkpoint to resume from: ``training.resume_from_checkpoint`` if set, else the newest
    ``checkpoint-*`` in ``output_dir`` (a rerun after a crash resumes instead of starting over)."""
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint:
        if not os.path.isdir(args.resume_from_checkpoint):
            raise ConfigError(f"training.resume_from_checkpoint={args.resume_from_checkpoint} is not a directory")
        return args.resume_from_checkpoint
    if os.path.isdir(args.output_dir):
        last = get_last_checkpoint(args.output_dir)
        if last is not None:
            log(f"resuming from the last checkpoint {last} (delete it or change training.output_dir to start over)")
            return last
    return None


def resolve_strategy(cfg: RunConfig, n_train: int, num_blocks: int, log: Callable = logger.info):
    """``(llrd, freezing)`` for this run: as configured, or chosen by ``strategy: auto`` (reasons are logged)."""
    if cfg.strategy.mode != "auto":
        return cfg.llrd, cfg.freezing
    from tl_hf.run.strategy import choose_strategy

    llrd, freezing, reasons = choose_strategy(cfg.strategy, n_train, num_blocks)
    for r in reasons:
        log(f"strategy auto: {r}")
    return llrd, freezing


def maybe_wrap_peft(model, cfg: RunConfig, task_type: str | None = "SEQ_CLS"):
    """Wrap ``model`` with LoRA adapters when ``peft.enabled`` (the head stays fully trainable)."""
    if not cfg.peft.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    from tl_hf.core.layers import unwrap_model_config

    mt = getattr(unwrap_model_config(model), "model_type", None)
    targets = cfg.peft.target_modules or PEFT_TARGETS.get(mt)
    if not targets:
        raise ConfigError(f"peft: no default target modules for model_type {mt!r}; set peft.target_modules")
    heads = [n for n in ("classifier", "score", "pre_classifier", "pooler") if hasattr(model, n)
             or hasattr(getattr(model, model.base_model_prefix, None), n)]
    lora = LoraConfig(r=cfg.peft.r, lora_alpha=cfg.peft.alpha, lora_dropout=cfg.peft.dropout, target_modules=targets,
                      modules_to_save=[h for h in heads if h == "classifier"] or None, task_type=task_type)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"peft: {' '.join(str(exc).split())} (target_modules={targets})") from None


def callbacks_for(cfg: RunConfig) -> list:
    if cfg.early_stopping.patience > 0:
        from transformers import EarlyStoppingCallback

        return [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping.patience,
                                      early_stopping_threshold=cfg.early_stopping.threshold)]
    return []


def build_trainer(cfg: RunConfig, model, args, *, llrd, freezing, train_dataset, eval_dataset, data_collator,
                  processing_class=None):
    """The recipes' :class:`~tl_hf.TransferTrainer`: offline metrics, the config's regularizers and callbacks."""
    from tl_hf.run.metrics import compute_metrics
    from tl_hf.core.trainer import TransferTrainer

    return TransferTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing_class, data_collator=data_collator, compute_metrics=compute_metrics,
        llrd=llrd, freezing=freezing, regularizers=[dict(r) for r in cfg.regularizers], callbacks=callbacks_for(cfg),
    )


def finish_run(trainer, cfg: RunConfig, *, label_names: list[str], train_size: int, eval_dataset=None,
               dataset_name: str | None = None, extra: dict[str, Any] | None = None,
               log: Callable = logger.info) -> dict[str, Any]:
    """After ``trainer.train()``: evaluate, write predictions, plots and ``all_results.json`` (main process only),
    save the model and its card, push if asked. Returns the results dict."""
    args = trainer.args
    results: dict[str, Any] = dict(extra or {})
    results["train_samples"] = train_size
    if eval_dataset is not None:
        pred = trainer.predict(eval_dataset, metric_key_prefix="eval")  # gathered over all processes
        metrics = dict(pred.metrics)
        metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        results.update(metrics)
        preds = np.asarray(pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions)
        labels = np.asarray(pred.label_ids)
        pred_ids = preds.argmax(-1) if preds.ndim == 2 else preds
    if not args.should_save:
        return results
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    from tl_hf.run import plots
    from tl_hf.run.metrics import confusion_matrix

    written = {}
    if eval_dataset is not None:
        path = os.path.join(out, "eval_predictions.jsonl")
        with open(path, "w") as fh:
            for i, (p, y) in enumerate(zip(pred_ids.tolist(), labels.tolist())):
                fh.write(json.dumps({"index": i, "label": int(y), "prediction": int(p),
                                     "label_name": _name(label_names, y), "prediction_name": _name(label_names, p)})
                         + "\n")
        written["predictions"] = path
        cm = confusion_matrix(pred_ids, labels, max(len(label_names), int(max(pred_ids.max(), labels.max())) + 1))
        results["confusion_matrix"] = cm.tolist()
        written["confusion_matrix"] = plots.plot_confusion_matrix(cm, label_names,
                                                                  os.path.join(out, "confusion_matrix.png"))
    history = trainer.state.log_history
    written["learning_curve"] = plots.plot_learning_curve(history, os.path.join(out, "learning_curve.png"))
    if any(k.startswith("lr/") for h in history for k in h):
        written["lr_per_group"] = plots.plot_lr_per_group(history, os.path.join(out, "lr_per_group.png"))
    results["outputs"] = written
    if cfg.model.save_model or cfg.hub.push:
        trainer.save_model()
        _write_card(trainer, cfg, dataset_name, results)
    path = os.path.join(out, "all_results.json")
    merged = json.load(open(path)) if os.path.exists(path) else {}
    merged.update(results)
    from tl_hf.core.state import atomic_write_json

    atomic_write_json(path, merged)
    atomic_write_json(os.path.join(out, "run_config.json"), json.loads(json.dumps(cfg.to_dict(), default=str)))
    if cfg.hub.push:
        _push(trainer, cfg, dataset_name, results, log)
    return results


def _name(names, i):
    i = int(i)
    return names[i] if 0 <= i < len(names) else str(i)


def _write_card(trainer, cfg, dataset_name, results) -> None:
    try:
        from tl_hf.hub import write_model_card
    except ImportError:  # pragma: no cover - hub support not installed in this build
        return
    write_model_card(trainer, dataset_name=dataset_name,
                     results={k: v for k, v in results.items() if isinstance(v, (int, float))})


def _push(trainer, cfg, dataset_name, results, log) -> None:
    from tl_hf.hub import push

    push(trainer, repo_id=cfg.hub.repo_id, private=cfg.hub.private, dataset_name=dataset_name,
         results={k: v for k, v in results.items() if isinstance(v, (int, float))})
    log(f"pushed to the Hub: {cfg.hub.repo_id}")


def _has_accelerator() -> bool:
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()
