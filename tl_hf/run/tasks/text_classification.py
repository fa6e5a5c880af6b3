"""Text classification (BERT-style encoders): ``task: text_classification`` for ``tl-hf run`` and
``recipes/text_classification.py``. Fills in the run template (:func:`tl_hf.run.template.run_classification`) with
the text data and a sequence-classification model: single texts or sentence pairs (``data.text_pair_column``, the
built-in ``rte`` / ``mrpc`` / ``stsb``), class labels or regression scores (``data.problem_type``; a one-output head
with ``config.problem_type="regression"``, MSE loss, Pearson / Spearman / MSE, :mod:`tl_hf.run.regression`)."""

from __future__ import annotations

import os
from typing import Any

from tl_hf._errors import ConfigError
from tl_hf.run.data.text import DataConfig
from tl_hf.run.models import _from_pretrained
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, check_num_labels, run_classification

__all__ = ["TEXT_CLASSIFICATION", "run_text_classification"]


def _check(cfg: RunConfig, args) -> None:
    from tl_hf.run.data.tokenizer import check_text_model

    check_text_model(cfg.model, cfg.data.max_length)  # fails fast: not a model, an offline Hub id, no vocabulary
    _check_head(cfg)


def _check_head(cfg: RunConfig, problem_type: str | None = None) -> None:
    """The head fits the problem: regression has one output (and a regression early-stopping metric), a classifier
    at least two."""
    from tl_hf.run.regression import REGRESSION, check_regression_early_stopping, is_regression_config

    regression = problem_type == REGRESSION if problem_type else is_regression_config(cfg)
    n = cfg.model.num_labels
    if regression:
        if n not in (None, 1):
            raise ConfigError(f"model.num_labels={n} but data.problem_type is regression: the head predicts one "
                              "number per example; set model.num_labels: 1 or drop it")
        check_regression_early_stopping(cfg)
    elif n == 1:
        raise ConfigError("model.num_labels must be >= 2 for a classifier, got 1 (a one-output regression head): set "
                          "data.problem_type: regression for scores, or model.num_labels >= 2")


def _build(cfg: RunConfig, args, checked, log) -> Built:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from tl_hf.run.data.text import load_text_classification, tokenize_datasets
    from tl_hf.run.data.tokenizer import check_tokenizer_works

    data = load_text_classification(cfg.data, seed=args.seed, allow_regression=True)
    regression = data.problem_type == "regression"
    _check_head(cfg, data.problem_type)
    names = ["score"] if regression else check_num_labels(cfg, data.label_names)
    tokenizer = _from_pretrained(AutoTokenizer, cfg.model.tokenizer or cfg.model.name_or_path, "tokenizer",
                                 trust_remote_code=cfg.model.trust_remote_code)
    check_tokenizer_works(tokenizer, cfg.model.tokenizer or cfg.model.name_or_path)
    kind = "pairs, " if data.is_pair else ""
    data = tokenize_datasets(data, tokenizer, cfg.data.max_length)
    log(_truncation_line(data))
    head = {"problem_type": "regression"} if regression else {}
    model = _from_pretrained(AutoModelForSequenceClassification, cfg.model.name_or_path, "model",
                             trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                             id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             ignore_mismatched_sizes=cfg.model.ignore_mismatched_sizes, **head)
    n_eval = len(data.eval) if data.eval is not None else 0
    return Built(model=model, train_dataset=data.train, eval_dataset=data.eval, label_names=names,
                 extra_eval_sets=_extra_eval_sets(cfg, args, names, tokenizer, log),
                 data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                 dataset_name=cfg.data.dataset or os.path.basename(str(cfg.data.train_file)),
                 summary=f"{kind}{data.problem_type}; train {len(data.train):,} rows ({data.sources.get('train')}), "
                         f"eval {n_eval:,} rows ({data.sources.get('eval')})",
                 results={"eval_split": data.sources.get("eval_split", "dev"), "problem_type": data.problem_type,
                          **data.truncation})


def _truncation_line(data) -> str:
    t = data.truncation
    counts = ", ".join(f"{t[f'truncated_{s}']:,} of {len(getattr(data, s)):,} {s}" for s in ("train", "eval")
                       if f"truncated_{s}" in t)
    what = "sentence pairs tokenized as pairs" if t.get("pairs") else "texts tokenized"
    return (f"{what}, truncation {t['truncation']} to data.max_length={t['max_length']}: {counts} examples "
            "truncated")


def _evaluate(trainer, built: Built, cfg: RunConfig) -> dict[str, Any]:
    """Regression: :func:`~tl_hf.run.regression.evaluate_regression`; classes: the template's default step."""
    if built.results.get("problem_type") == "regression":
        from tl_hf.run.regression import evaluate_regression

        return evaluate_regression(trainer, built, cfg)
    from tl_hf.run.outputs import evaluate_classification

    return evaluate_classification(trainer, label_names=built.label_names, train_size=len(built.train_dataset),
                                   eval_dataset=built.eval_dataset, extra=built.results)


def _metrics(cfg: RunConfig):
    from tl_hf.run.regression import TextMetrics

    return TextMetrics(cfg)


def _extra_eval_sets(cfg: RunConfig, args, names, tokenizer, log) -> dict:
    """``evaluation.extra_eval_sets``, tokenized like the eval set (:mod:`tl_hf.run.data.eval_sets`)."""
    if not cfg.evaluation.extra_eval_sets:
        return {}
    from tl_hf.run.data.eval_sets import load_extra_eval_sets

    sets, sources = load_extra_eval_sets(cfg.evaluation.extra_eval_sets, root=cfg.data.root, label_names=names,
                                         tokenizer=tokenizer, max_length=cfg.data.max_length, seed=args.seed)
    for name, src in sources.items():
        log(f"extra eval set {name}: {src}")
    return sets


TEXT_CLASSIFICATION = ClassificationTask(check=_check, build=_build, peft_task_type="SEQ_CLS", metrics=_metrics,
                                         evaluate=_evaluate)


def run_text_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate a sequence classifier (or a one-output regressor) as ``cfg`` says; writes
    ``all_results.json``, eval predictions, a confusion matrix (regression: a scatter plot), a learning curve and the
    LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, TEXT_CLASSIFICATION, log=log)


register_task("text_classification", DataConfig, run_text_classification,
              "sequence classification (single texts or pairs; classes or regression scores) with a BERT-style "
              "encoder")
