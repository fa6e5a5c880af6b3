"""Multi-label text classification: ``task: text_multilabel``. Fills in the run template
(:func:`tl_hf.run.template.run_classification`) with multi-label data (:mod:`tl_hf.run.data.multilabel`), a
sequence-classification model with ``problem_type="multi_label_classification"`` (one sigmoid per label, BCE with
logits on multi-hot float labels), the ``multilabel_f1`` evaluate module as ``compute_metrics``, and an evaluation
step that tunes the decision threshold on the validation split and scores the test split with it
(:mod:`tl_hf.run.outputs_multilabel`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tl_hf._errors import ConfigError
from tl_hf.run.data.multilabel import MultiLabelDataConfig
from tl_hf.run.models import _from_pretrained
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, run_classification

__all__ = ["MultiLabelBuilt", "TEXT_MULTILABEL", "head_linear", "init_prior_bias", "run_text_multilabel",
           "tokenize_multilabel"]


@dataclass
class MultiLabelBuilt(Built):
    """:class:`~tl_hf.run.template.Built` plus the test split and the untokenized rows the outputs need."""

    test_dataset: Any = None
    rows: dict[str, Any] = field(default_factory=dict)  # split -> Dataset with text + label_ids
    sources: dict[str, str] = field(default_factory=dict)  # split -> where its rows come from; eval_split


def _check(cfg: RunConfig, args) -> None:
    from tl_hf.run.data.tokenizer import check_text_model
    from tl_hf.run.metrics.multilabel import SCALAR_KEYS

    check_text_model(cfg.model, cfg.data.max_length)  # fails fast: not a model, an offline Hub id, no vocabulary
    if cfg.evaluation.metrics:
        raise ConfigError("evaluation.metrics: task text_multilabel always computes its multi-label scores "
                          f"({', '.join(SCALAR_KEYS)}, per-label precision/recall/F1) with the multilabel_f1 module; "
                          "single-label metrics do not apply to label sets, remove evaluation.metrics")
    es = cfg.early_stopping
    if es.patience > 0 and es.metric not in SCALAR_KEYS + ("loss",):
        raise ConfigError(f"early_stopping.metric={es.metric!r} is not a multi-label score; use one of "
                          f"{', '.join(SCALAR_KEYS + ('loss',))} (loss with greater_is_better: false)")


def _metrics(cfg: RunConfig):
    from tl_hf.run.metrics.multilabel import MultiLabelMetrics

    return MultiLabelMetrics(threshold=0.5 if cfg.data.tunes else float(cfg.data.threshold))


def tokenize_multilabel(ds, tokenizer, max_length: int, num_labels: int):
    """``text`` -> ``input_ids`` / ``attention_mask`` (truncated to ``max_length``, padded per batch) and
    ``label_ids`` -> ``labels``, a multi-hot float vector of ``num_labels`` (what BCE with logits takes)."""

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = [[1.0 if j in set(ids) else 0.0 for j in range(num_labels)] for ids in batch["label_ids"]]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenizing")


def head_linear(model, num_labels: int):
    """``(name, module)`` of the head's output layer: the last ``nn.Linear`` with ``num_labels`` outputs."""
    import torch

    found = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features ==
             num_labels]
    if not found:
        raise ConfigError(f"model.name_or_path: no linear layer with {num_labels} outputs (the label count) found")
    return found[-1]


def init_prior_bias(model, label_ids: list[list[int]], num_labels: int) -> list[float]:
    """Set the head's bias to each label's log-odds ``log(f / (1 - f))`` with ``f = (count + 1) / (n + 2)`` over
    the training rows (``label_ids``); returns the frequencies ``f``."""
    import numpy as np
    import torch

    counts = np.bincount([i for r in label_ids for i in r], minlength=num_labels)[:num_labels]
    f = (counts + 1.0) / (len(label_ids) + 2.0)
    _, layer = head_linear(model, num_labels)
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(np.log(f / (1.0 - f)), dtype=layer.bias.dtype))
    return f.tolist()


def _new_head(model, info, num_labels: int) -> bool:
    name, layer = head_linear(model, num_labels)
    keys = {str(k if isinstance(k, str) else k[0]) for k in [*info.get("missing_keys", ()),
                                                              *info.get("mismatched_keys", ())]}
    return layer.bias is not None and f"{name}.bias" in keys


def _build(cfg: RunConfig, args, checked, log) -> MultiLabelBuilt:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from tl_hf.run.data.multilabel import load_multilabel
    from tl_hf.run.data.tokenizer import check_tokenizer_works

    data = load_multilabel(cfg.data, seed=args.seed)
    names = data.label_names
    if cfg.model.num_labels is not None and cfg.model.num_labels != len(names):
        raise ConfigError(f"model.num_labels={cfg.model.num_labels} but the data has {len(names)} labels; a "
                          "multi-label head has one output per label: leave model.num_labels unset")
    source = cfg.model.tokenizer or cfg.model.name_or_path
    tokenizer = _from_pretrained(AutoTokenizer, source, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)
    check_tokenizer_works(tokenizer, source)
    tok = {s: tokenize_multilabel(getattr(data, s), tokenizer, cfg.data.max_length, len(names))
           for s in ("train", "eval", "test") if getattr(data, s) is not None}
    model, info = _from_pretrained(AutoModelForSequenceClassification, cfg.model.name_or_path, "model",
                                   trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                                   problem_type="multi_label_classification", id2label=dict(enumerate(names)),
                                   label2id={n: i for i, n in enumerate(names)}, output_loading_info=True,
                                   ignore_mismatched_sizes=cfg.model.ignore_mismatched_sizes)
    head_bias = "as loaded"
    if cfg.data.prior_bias and _new_head(model, info, len(names)):
        init_prior_bias(model, data.train["label_ids"], len(names))
        head_bias = "label log-odds of the training split"
    sizes = ", ".join(f"{s} {len(d):,} rows ({data.sources.get(s)}; {data.unlabelled[s]:,} without labels)"
                      for s, d in tok.items())
    results = {"eval_split": data.sources.get("eval_split"), "num_labels": len(names), "head_bias": head_bias,
               "rows_without_labels": dict(data.unlabelled)}
    if data.test is not None:
        results["test_split"] = cfg.data.test_split if cfg.data.dataset else "test_file"
    return MultiLabelBuilt(model=model, train_dataset=tok["train"], eval_dataset=tok.get("eval"), label_names=names,
                           data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                           dataset_name=cfg.data.dataset or os.path.basename(str(cfg.data.train_file)),
                           summary=f"{len(names)} labels, multi-label (BCE with logits); {sizes}", results=results,
                           test_dataset=tok.get("test"),
                           rows={s: getattr(data, s) for s in ("eval", "test") if getattr(data, s) is not None},
                           sources=dict(data.sources))


def _evaluate(trainer, built: MultiLabelBuilt, cfg: RunConfig) -> dict[str, Any]:
    from tl_hf.run.outputs_multilabel import evaluate_multilabel

    return evaluate_multilabel(trainer, built, cfg.data)


TEXT_MULTILABEL = ClassificationTask(check=_check, build=_build, peft_task_type="SEQ_CLS", metrics=_metrics,
                                     evaluate=_evaluate)


def run_text_multilabel(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune a multi-label classifier as ``cfg`` says; tune the threshold on the validation split, score the
    test split with it; writes ``all_results.json`` (thresholds included), eval / test predictions with label names
    and scores, a per-label F1 plot, a learning curve and the LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, TEXT_MULTILABEL, log=log)


register_task("text_multilabel", MultiLabelDataConfig, run_text_multilabel,
              "multi-label sequence classification (sigmoid per label, BCE) with a BERT-style encoder")
