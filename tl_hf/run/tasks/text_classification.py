"""Text classification (BERT-style encoders): the library side of ``recipes/text_classification.py`` and of
``tl-hf run`` for ``task: text_classification``."""

from __future__ import annotations

import os
import time
from typing import Any

from tl_hf.run.config import DataConfig, RunConfig, register_task
from tl_hf.run.models import _from_pretrained, resolve_model_path
from tl_hf.run.template import (build_trainer, build_training_args, detect_last_checkpoint, finish_run, maybe_wrap_peft,
                         resolve_strategy)

__all__ = ["run_text_classification"]


def run_text_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate a sequence classifier as ``cfg`` says; writes ``all_results.json``, eval predictions,
    a confusion matrix, a learning curve and the LR per layer group under ``training.output_dir``."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from tl_hf.run.data.text import load_text_classification, tokenize_datasets

    start = time.perf_counter()
    args = build_training_args(cfg)  # validate TrainingArguments before any slow step
    resolve_model_path(cfg.model.name_or_path)
    if cfg.model.tokenizer:
        resolve_model_path(cfg.model.tokenizer)
    transformers.set_seed(args.seed)
    last_checkpoint = detect_last_checkpoint(args, log)

    data = load_text_classification(cfg.data, seed=args.seed)
    num_labels = cfg.model.num_labels or data.num_labels
    if num_labels < data.num_labels:
        raise ValueError(f"model.num_labels={num_labels} but the data has {data.num_labels} labels "
                         f"({', '.join(data.label_names)})")
    tokenizer = _from_pretrained(AutoTokenizer, cfg.model.tokenizer or cfg.model.name_or_path, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)
    data = tokenize_datasets(data, tokenizer, cfg.data.max_length)

    names = data.label_names + [str(i) for i in range(len(data.label_names), num_labels)]
    model = _from_pretrained(AutoModelForSequenceClassification, cfg.model.name_or_path, "model", trust_remote_code=cfg.model.trust_remote_code,
                             num_labels=num_labels, id2label=dict(enumerate(names)),
                             label2id={n: i for i, n in enumerate(names)})
    from tl_hf.core.layers import get_layer_map

    llrd, freezing = resolve_strategy(cfg, len(data.train), get_layer_map(model).num_blocks, log)
    model = maybe_wrap_peft(model, cfg)
    trainer = build_trainer(cfg, model, args, llrd=llrd, freezing=freezing, train_dataset=data.train,
                            eval_dataset=data.eval, data_collator=DataCollatorWithPadding(tokenizer),
                            processing_class=tokenizer)
    log(f"model {cfg.model.name_or_path}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{trainer.freezer.num_trainable():,} trainable; llrd decay {llrd.decay}, freezing "
        f"{freezing.policy}; train {len(data.train):,} rows ({data.sources.get('train')}), eval "
        f"{len(data.eval) if data.eval is not None else 0:,} rows ({data.sources.get('eval')})")

    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_metrics("train", dict(train_result.metrics))
    results: dict[str, Any] = dict(train_result.metrics)
    results.update(finish_run(trainer, cfg, label_names=names, train_size=len(data.train), eval_dataset=data.eval,
                              dataset_name=cfg.data.dataset or os.path.basename(str(cfg.data.train_file)), log=log))
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    results["eval_split"] = data.sources.get("eval_split", "dev")
    if args.should_save:
        from tl_hf.core.state import atomic_write_json, read_json

        path = os.path.join(args.output_dir, "all_results.json")
        atomic_write_json(path, {**read_json(path), "wall_time_s": results["wall_time_s"],
                                 "eval_split": results["eval_split"]})
    return results


register_task("text_classification", DataConfig, run_text_classification,
              "sequence classification with a BERT-style encoder")
