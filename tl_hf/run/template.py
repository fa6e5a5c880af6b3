"""The one run template (transformers' run_glue flow): arguments -> last-checkpoint detection -> data -> model ->
strategy -> TransferTrainer -> train -> evaluate -> outputs -> model card -> push. A task fills in only what differs
(:class:`ClassificationTask`: its checks and its data + model, :class:`Built`); what a run writes is in
:mod:`tl_hf.run.outputs`. The continual task uses the shared steps (arguments, outputs) around its own runner."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tl_hf._errors import ConfigError, one_line
from tl_hf.core.device import has_accelerator
from tl_hf.run.sections import RunConfig
from tl_hf.run.validate import detect_last_checkpoint, require_peft
from tl_hf.run.validate import last_checkpoint as resume_point

logger = logging.getLogger(__name__)

__all__ = ["Built", "ClassificationTask", "build_training_args", "check_num_labels", "detect_last_checkpoint",
           "resolve_strategy", "maybe_wrap_peft", "callbacks_for", "build_trainer", "run_classification",
           "resume_point", "start_training"]


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
    from tl_hf.core.distributed_checks import check_deepspeed  # before TrainingArguments builds a DeepSpeed plugin

    check_deepspeed(cfg.training, regularizers=cfg.regularizers, freezing=cfg.freezing, llrd=cfg.llrd,
                    averaging=cfg.averaging, strategy_auto=cfg.strategy.mode == "auto")
    args = cfg.training_arguments()
    if args.dataloader_pin_memory and not has_accelerator():
        args.dataloader_pin_memory = False  # avoids torch's "no accelerator is found" warning on CPU machines
    return args


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
    require_peft()  # checked before the run loads anything (validate.check_peft); here for direct callers
    from peft import LoraConfig, get_peft_model

    from tl_hf.core.architectures import default_lora_targets
    from tl_hf.core.layers import unwrap_model_config

    mt = getattr(unwrap_model_config(model), "model_type", None)
    targets = cfg.peft.target_modules or default_lora_targets(mt)
    if not targets:
        raise ConfigError(f"peft: no default target modules for model_type {mt!r}; set peft.target_modules")
    heads = [n for n in ("classifier", "score", "pre_classifier", "pooler", "qa_outputs") if hasattr(model, n)
             or hasattr(getattr(model, model.base_model_prefix, None), n)]
    lora = LoraConfig(r=cfg.peft.r, lora_alpha=cfg.peft.alpha, lora_dropout=cfg.peft.dropout, target_modules=targets,
                      modules_to_save=[h for h in heads if h in ("classifier", "qa_outputs")] or None,
                      task_type=task_type)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"peft: {one_line(exc)} (target_modules={targets})") from None


def callbacks_for(cfg: RunConfig) -> list:
    if cfg.early_stopping.patience > 0:
        from transformers import EarlyStoppingCallback

        return [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping.patience,
                                      early_stopping_threshold=cfg.early_stopping.threshold)]
    return []


def build_trainer(cfg: RunConfig, model, args, *, llrd, freezing, train_dataset, eval_dataset, data_collator,
                  processing_class=None, compute_metrics=None):
    """The recipes' :class:`~tl_hf.TransferTrainer`: ``compute_metrics`` (default: the config's
    :class:`~tl_hf.run.metrics.RunMetrics`), the config's regularizers and callbacks."""
    from tl_hf.core.trainer import TransferTrainer

    if compute_metrics is None:
        compute_metrics = _run_metrics(cfg)

    return TransferTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing_class, data_collator=data_collator, compute_metrics=compute_metrics,
        llrd=llrd, freezing=freezing, regularizers=[dict(r) for r in cfg.regularizers], callbacks=callbacks_for(cfg),
        reinit=cfg.reinit, averaging=cfg.averaging,
    )


def _run_metrics(cfg: RunConfig):
    """The run's ``compute_metrics``: the default keys plus ``evaluation.metrics`` (each loaded now)."""
    from tl_hf.run.metrics import RunMetrics

    return RunMetrics(cfg.evaluation.metric_specs())


@dataclass
class Built:
    """What a task's ``build`` step hands the template: data, model (before PEFT) and what the outputs need."""

    model: Any
    train_dataset: Any
    eval_dataset: Any
    label_names: list[str]
    data_collator: Any
    processing_class: Any = None
    dataset_name: str | None = None
    summary: str = ""  # the task's part of the "model ...: N parameters" line (data sizes and sources)
    results: dict[str, Any] = field(default_factory=dict)  # extra entries of all_results.json (eval_split, ...)
    save_extras: Callable[[str], None] | None = None  # writes files the saved model needs into output_dir
    extra_eval_sets: dict[str, Any] = field(default_factory=dict)  # evaluation.extra_eval_sets, name -> dataset


@dataclass(frozen=True)
class ClassificationTask:
    """A task for the run template (:func:`run_classification`). ``check(cfg, args)`` runs the task's fast checks
    before any slow step and returns what ``build(cfg, args, checked, log)`` needs; ``build`` loads the data and
    the model. The other hooks default to single-label classification:

    * ``metrics(cfg)`` -- the ``compute_metrics`` object, built before any output is touched; it must have
      a ``check(num_labels)`` method, called once the labels are known (default: the config's :class:`~tl_hf.run.metrics.RunMetrics`),
      after ``bind_label_names(names)`` where it has one;
    * ``evaluate(trainer, built, cfg)`` -- after training: evaluate and write the task's predictions and plots,
      returning the results (default: :func:`~tl_hf.run.outputs.evaluate_classification`).
    """

    check: Callable[[RunConfig, Any], Any]
    build: Callable[..., Built]
    peft_task_type: str | None = "SEQ_CLS"
    metrics: Callable[[RunConfig], Any] | None = None
    evaluate: Callable[[Any, Built, RunConfig], dict[str, Any]] | None = None


def check_num_labels(cfg: RunConfig, label_names: list[str]) -> list[str]:
    """The head's label names: the data's, then ``str(i)`` up to ``model.num_labels``."""
    num_labels = cfg.model.num_labels or len(label_names)
    if num_labels < 2:
        raise ConfigError(f"model.num_labels must be >= 2 (classes), got {num_labels} (a one-output head is "
                          "regression: text data.problem_type: regression)")
    if num_labels < len(label_names):
        raise ConfigError(f"model.num_labels={num_labels} but the data has {len(label_names)} labels "
                          f"({', '.join(label_names)})")
    return label_names + [str(i) for i in range(len(label_names), num_labels)]


def run_classification(cfg: RunConfig, task: ClassificationTask, *, log: Callable = print) -> dict[str, Any]:
    """The one run: arguments -> task checks -> the metrics (loaded) -> every run check (:func:`~tl_hf.run.
    validate.check_run`: memory, PEFT, a metric dry run, the lock, the checkpoint to resume from, refused when
    written by another config), all before any data or model is loaded -> the ``output_dir`` lock -> seed -> data +
    model -> strategy -> PEFT -> TransferTrainer -> train -> evaluate, predictions, plots -> model + card ->
    ``all_results.json`` / ``run_config.json`` -> push. Returns the results (train and eval metrics,
    ``wall_time_s``, the task's extras)."""
    from tl_hf.run.lock import output_dir_lock
    from tl_hf.run.outputs import is_main
    from tl_hf.run.validate import check_run

    start = time.perf_counter()
    args = build_training_args(cfg)  # validate TrainingArguments before any slow step
    checked = task.check(cfg, args)
    # loads every configured metric: a missing one fails before any output or training
    metrics = task.metrics(cfg) if task.metrics is not None else _run_metrics(cfg)
    last_checkpoint = check_run(cfg, args, log, metrics=metrics if task.metrics is None else None)
    with output_dir_lock(args.output_dir, enabled=is_main()):
        return _run_locked(cfg, task, args, checked, log, start, metrics, last_checkpoint)


def _evaluate(task: ClassificationTask, trainer, built: Built, cfg: RunConfig) -> dict[str, Any]:
    """The task's evaluation step (default: single-label classification's predictions, confusion matrix, plots)."""
    if task.evaluate is not None:
        return task.evaluate(trainer, built, cfg)
    from tl_hf.run.outputs import evaluate_classification

    return evaluate_classification(trainer, label_names=built.label_names, train_size=len(built.train_dataset),
                                   eval_dataset=built.eval_dataset, extra=built.results)


def start_training(cfg: RunConfig, trainer, last_checkpoint: str | None, log: Callable = logger.info) -> None:
    """Right before training (the checks, the resume check included, ran in :func:`~tl_hf.run.validate.check_run`):
    record this config in the checkpoints to come and, in the main process, when the run starts fresh, remove what
    an earlier run left in ``output_dir`` (its checkpoints with ``training.overwrite_output_dir``; its predictions,
    plots and results, :func:`~tl_hf.run.outputs.clear_run_outputs`), so none of it is taken for this run's."""
    from tl_hf.run.outputs import clear_run_outputs
    from tl_hf.run.validate import clear_checkpoints, resume_fingerprint

    trainer.config_fingerprint = resume_fingerprint(cfg)
    if not trainer.args.should_save or last_checkpoint is not None:
        return
    if cfg.training.get("overwrite_output_dir"):
        clear_checkpoints(trainer.args.output_dir, log)
    clear_run_outputs(trainer.args.output_dir, log)


def _run_locked(cfg: RunConfig, task: ClassificationTask, args, checked, log: Callable, start: float,
                metrics, last_checkpoint: str | None) -> dict:
    import transformers

    from tl_hf.core.layers import get_layer_map
    from tl_hf.core.pooling import LOAD_NOTE
    from tl_hf.run.outputs import is_main, push_model, write_card, write_results
    from tl_hf.run.pooling import apply_run_pooling

    transformers.set_seed(args.seed)
    built = task.build(cfg, args, checked, log)
    if hasattr(metrics, "bind_label_names"):  # metrics that read tag names (token classification)
        metrics.bind_label_names(built.label_names)
    metrics.check(len(built.label_names))
    lmap = get_layer_map(built.model)
    llrd, freezing = resolve_strategy(cfg, len(built.train_dataset), lmap.num_blocks, log)
    pooling = apply_run_pooling(cfg, built.model, freezing, lmap, log)
    model = maybe_wrap_peft(built.model, cfg, task_type=task.peft_task_type)
    trainer = build_trainer(cfg, model, args, llrd=llrd, freezing=freezing, train_dataset=built.train_dataset,
                            eval_dataset=built.eval_dataset, data_collator=built.data_collator,
                            processing_class=built.processing_class, compute_metrics=metrics)
    trainer.robust_notes = [f"- **pooling**: {pooling}; {LOAD_NOTE}"] if pooling else []
    wise_init = _wise_ft_init(cfg, trainer, built)
    log(f"model {cfg.model.name_or_path}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{trainer.freezer.num_trainable():,} trainable; llrd decay {llrd.decay}, freezing {freezing.policy}; "
        f"{built.summary}")

    start_training(cfg, trainer, last_checkpoint, log)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.check_finite("the results")  # weights, before any output of this run is written
    trainer.save_metrics("train", dict(train_result.metrics), combined=False)  # all_results.json is written below
    save = args.should_save and (cfg.model.save_model or cfg.hub.push)
    with trainer.outputs_checked("the model and results"):  # before the task writes predictions or plots
        evaluated = _evaluate(task, trainer, built, cfg)
    trainer.check_finite("the model and results", eval_loss=evaluated.get("eval_loss"))
    evaluated.update(_after_training(cfg, trainer, built, wise_init, save, log))
    if save:
        if built.save_extras is not None:
            os.makedirs(args.output_dir, exist_ok=True)
            built.save_extras(args.output_dir)
        trainer.save_model()
        write_card(trainer, cfg, built.dataset_name, evaluated)
    results: dict[str, Any] = {**train_result.metrics, **evaluated, "wall_time_s": round(time.perf_counter() - start,
                                                                                          1)}
    if args.should_save:
        write_results(args.output_dir, results, cfg)
        if cfg.hub.push and is_main():  # one push, from the global main process (save_on_each_node: every node saves)
            push_model(trainer, cfg, built.dataset_name, evaluated, log)
    return results


def _wise_ft_init(cfg: RunConfig, trainer, built: Built):
    """theta_init of ``wise_ft`` (:class:`~tl_hf.run.wise_ft.WiseFTInit`), taken before training; None when off."""
    if cfg.evaluation.extra_eval_sets and not built.extra_eval_sets:
        raise ConfigError(f"evaluation.extra_eval_sets is supported by task text_classification, not {cfg.task}; "
                          "drop it")
    if not cfg.wise_ft.enabled:
        return None
    if built.eval_dataset is None:
        raise ConfigError("wise_ft.alphas chooses alpha on the validation set, but this run has no eval data; set "
                          "data.eval_file / data.eval_split (or data.eval_fraction), or drop wise_ft.alphas")
    from tl_hf.run.wise_ft import WiseFTInit

    return WiseFTInit(trainer)


def _after_training(cfg: RunConfig, trainer, built: Built, wise_init, save: bool, log: Callable) -> dict[str, Any]:
    """The extra eval sets (``<name>_*``) and the WiSE-FT sweep (``wise_ft_*``), on the trained model."""
    from tl_hf.run.wise_ft import evaluate_extra_sets, run_wise_ft

    out = evaluate_extra_sets(trainer, built.extra_eval_sets)
    for name in built.extra_eval_sets:
        if f"{name}_accuracy" in out:
            log(f"extra eval set {name}: accuracy {out[f'{name}_accuracy']:.4f}")
    if wise_init is not None:
        res = run_wise_ft(cfg, trainer, wise_init, built.extra_eval_sets, save=save, log=log)
        out.update(res)
        w = cfg.wise_ft
        trainer.robust_notes.append(
            f"- **WiSE-FT** (weight-space ensemble of theta_init = {wise_init.source} and the fine-tuned model): "
            f"alphas `{w.alphas}`, chosen alpha `{res['wise_ft_alpha']}` on `eval_{w.metric}` (validation only); "
            "curve in `wise_ft.json` / `wise_ft.png`" + ("; that model in `wise_ft/`" if save else "")
            + ". This folder's model is the fine-tuned one (alpha 1)")
    return out
