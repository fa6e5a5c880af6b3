"""Text classification (BERT-style encoders): ``task: text_classification`` for ``tl-hf run`` and
``recipes/text_classification.py``. Fills in the run template (:func:`tl_hf.run.template.run_classification`) with
the text data and a sequence-classification model."""

from __future__ import annotations

import os
from typing import Any

from tl_hf.run.data.text import DataConfig
from tl_hf.run.models import _from_pretrained, resolve_model_path
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, check_num_labels, run_classification

__all__ = ["TEXT_CLASSIFICATION", "run_text_classification"]


def _check(cfg: RunConfig, args) -> None:
    from tl_hf.run.data.tokenizer import check_max_length, check_tokenizer_files

    resolve_model_path(cfg.model.name_or_path)  # fails fast: not a model, an offline Hub id
    if cfg.model.tokenizer:
        resolve_model_path(cfg.model.tokenizer)
    check_tokenizer_files(cfg.model.tokenizer or cfg.model.name_or_path,
                          "model.tokenizer" if cfg.model.tokenizer else "model.name_or_path")
    check_max_length(cfg.model.name_or_path, cfg.data.max_length)


def _build(cfg: RunConfig, args, checked, log) -> Built:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from tl_hf.run.data.text import load_text_classification, tokenize_datasets
    from tl_hf.run.data.tokenizer import check_tokenizer_works

    data = load_text_classification(cfg.data, seed=args.seed)
    names = check_num_labels(cfg, data.label_names)
    tokenizer = _from_pretrained(AutoTokenizer, cfg.model.tokenizer or cfg.model.name_or_path, "tokenizer",
                                 trust_remote_code=cfg.model.trust_remote_code)
    check_tokenizer_works(tokenizer, cfg.model.tokenizer or cfg.model.name_or_path)
    data = tokenize_datasets(data, tokenizer, cfg.data.max_length)
    model = _from_pretrained(AutoModelForSequenceClassification, cfg.model.name_or_path, "model",
                             trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                             id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             ignore_mismatched_sizes=cfg.model.ignore_mismatched_sizes)
    n_eval = len(data.eval) if data.eval is not None else 0
    return Built(model=model, train_dataset=data.train, eval_dataset=data.eval, label_names=names,
                 extra_eval_sets=_extra_eval_sets(cfg, args, names, tokenizer, log),
                 data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                 dataset_name=cfg.data.dataset or os.path.basename(str(cfg.data.train_file)),
                 summary=f"train {len(data.train):,} rows ({data.sources.get('train')}), eval {n_eval:,} rows "
                         f"({data.sources.get('eval')})",
                 results={"eval_split": data.sources.get("eval_split", "dev")})


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


TEXT_CLASSIFICATION = ClassificationTask(check=_check, build=_build, peft_task_type="SEQ_CLS")


def run_text_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate a sequence classifier as ``cfg`` says; writes ``all_results.json``, eval predictions,
    a confusion matrix, a learning curve and the LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, TEXT_CLASSIFICATION, log=log)


register_task("text_classification", DataConfig, run_text_classification,
              "sequence classification with a BERT-style encoder")
