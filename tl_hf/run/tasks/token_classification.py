"""Token classification (NER) with a BERT-style encoder: ``task: token_classification``. Fills in the run template
(:func:`tl_hf.run.template.run_classification`) with tagged sentences (:mod:`tl_hf.run.data.tokens`), an
``AutoModelForTokenClassification``, entity-level metrics (:class:`~tl_hf.run.metrics.entities.TokenMetrics`) and
per-word predictions.

What a run writes besides the template's files: ``eval_predictions.jsonl`` (one line per eval sentence: ``tokens``,
``gold`` and ``predicted`` tags, per word, never per subword) and, in ``all_results.json``, ``eval_precision`` /
``eval_recall`` / ``eval_f1`` (entities, micro), ``eval_accuracy`` (words), ``eval_<type>_*`` and ``eval_per_type``.
The final scores are computed per word over whole sentences: a word cut off by ``data.max_length`` (or one the
tokenizer turns into no subword) counts as predicted ``O``, so its entity is a miss, never left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tl_hf.run.data.tokens import TokenDataConfig
from tl_hf.run.models import _from_pretrained
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, check_num_labels, run_classification

__all__ = ["TOKEN_CLASSIFICATION", "TokenBuilt", "run_token_classification", "word_predictions"]


@dataclass
class TokenBuilt(Built):
    """:class:`~tl_hf.run.template.Built` plus what per-word predictions need: the eval sentences and, per sentence,
    the word index of each labelled subword position."""

    eval_sentences: Any = None
    eval_words: list[list[int]] = field(default_factory=list)


def _check(cfg: RunConfig, args):
    """The text task's model and tokenizer checks, then the data (read and tag-checked before any output)."""
    from transformers import AutoTokenizer

    from tl_hf.run.data.tokenizer import check_tokenizer_works
    from tl_hf.run.data.tokens import check_fast_tokenizer, load_token_data
    from tl_hf.run.tasks.text_classification import _check as check_model

    check_model(cfg, args)
    data = load_token_data(cfg.data, seed=args.seed)
    where = cfg.model.tokenizer or cfg.model.name_or_path
    tokenizer = _from_pretrained(AutoTokenizer, where, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)
    check_fast_tokenizer(tokenizer, where)
    check_tokenizer_works(tokenizer, where)
    return data, tokenizer


def _build(cfg: RunConfig, args, checked, log) -> TokenBuilt:
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from tl_hf.run.data.tokens import tokenize_sentences

    data, tokenizer = checked
    names = check_num_labels(cfg, data.label_names)
    d = cfg.data
    train, info = tokenize_sentences(data.train, names, tokenizer, d.max_length, all_subwords=d.label_all_subwords,
                                     split="train")
    results: dict[str, Any] = {"eval_split": data.sources.get("eval_split"), "tag_set": names,
                               "train_truncated_sentences": info["truncated_sentences"],
                               "malformed_bio_tags": dict(data.malformed), "bio_repair": d.bio_repair,
                               "label_all_subwords": d.label_all_subwords}
    eval_ds, words = None, []
    if data.eval is not None:
        eval_ds, einfo = tokenize_sentences(data.eval, names, tokenizer, d.max_length, all_subwords=False,
                                            split="eval")
        words = einfo["words"]
        results.update(eval_truncated_sentences=einfo["truncated_sentences"],
                       eval_truncated_words=einfo["truncated_words"])
    model = _from_pretrained(AutoModelForTokenClassification, cfg.model.name_or_path, "model",
                             trust_remote_code=cfg.model.trust_remote_code, num_labels=len(names),
                             id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                             ignore_mismatched_sizes=cfg.model.ignore_mismatched_sizes)
    n_eval = len(data.eval) if data.eval is not None else 0
    return TokenBuilt(model=model, train_dataset=train, eval_dataset=eval_ds, label_names=names,
                      data_collator=DataCollatorForTokenClassification(tokenizer), processing_class=tokenizer,
                      dataset_name=d.dataset or d.hub_id or os.path.basename(str(d.train_file)),
                      summary=f"train {len(train):,} sentences ({data.sources.get('train')}), eval {n_eval:,} "
                              f"sentences ({data.sources.get('eval')}); {len(names)} tags",
                      results=results, eval_sentences=data.eval, eval_words=words)


def word_predictions(predictions, label_ids, words: list[list[int]], lengths: list[int],
                     names: list[str]) -> list[list[str]]:
    """Predicted tag names per word of each sentence: the prediction at each labelled position goes to its word
    (``words[i]``); a word without a labelled position (cut off by truncation) is ``O``."""
    p = np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
    ids = p.argmax(axis=-1) if p.ndim == 3 else p
    labels = np.asarray(label_ids)
    if len(ids) != len(words):
        raise ValueError(f"{len(ids)} predicted rows for {len(words)} eval sentences")
    out = []
    for i, (row, row_y) in enumerate(zip(ids, labels)):
        at = row[row_y != -100]
        if len(at) != len(words[i]):
            raise ValueError(f"eval sentence {i}: {len(at)} labelled positions for {len(words[i])} words")
        tags = ["O"] * lengths[i]
        for w, t in zip(words[i], at.tolist()):
            tags[w] = names[t] if 0 <= t < len(names) else "O"
        out.append(tags)
    return out


def _evaluate(trainer, built: TokenBuilt, cfg: RunConfig) -> dict[str, Any]:
    """Predict the eval set (gathered over all processes), score it per word over whole sentences, and in the main
    process write ``eval_predictions.jsonl`` and the training plots."""
    from tl_hf.run.metrics.entities import flat_scores
    from tl_hf.run.outputs import evaluate_step

    results: dict[str, Any] = dict(built.results)
    results["train_samples"] = len(built.train_dataset)
    sents = built.eval_sentences

    def score(pred):
        predicted = word_predictions(pred.predictions, pred.label_ids, built.eval_words,
                                     [len(t) for t in sents.tokens], built.label_names)
        scores = trainer.compute_metrics.score(sents.tags, predicted)
        metrics = dict(pred.metrics)  # its entity scores are on the words that got a subword; replaced here
        metrics.update({f"eval_{k}": v for k, v in flat_scores(scores).items()})
        metrics.update(eval_samples=len(sents), eval_entities=scores["number"], eval_per_type=scores["per_type"])
        return metrics, predicted

    def write(out: str, predicted) -> dict[str, str]:
        path = os.path.join(out, "eval_predictions.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for i, (toks, gold, prd) in enumerate(zip(sents.tokens, sents.tags, predicted)):
                fh.write(json.dumps({"index": i, "tokens": toks, "gold": gold, "predicted": prd},
                                    ensure_ascii=False) + "\n")
        return {"predictions": path}

    return evaluate_step(trainer, results, built.eval_dataset, score=score, write=write)


def _metrics(cfg: RunConfig):
    from tl_hf._errors import ConfigError
    from tl_hf.run.metrics.entities import TokenMetrics

    if cfg.evaluation.metric_specs():
        raise ConfigError("evaluation.metrics: token classification scores entities (precision, recall, f1 per "
                          "type and micro) and word accuracy itself; remove evaluation.metrics")
    return TokenMetrics()


TOKEN_CLASSIFICATION = ClassificationTask(check=_check, build=_build, peft_task_type="TOKEN_CLS", metrics=_metrics,
                                          evaluate=_evaluate)


def run_token_classification(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate a token classifier (NER) as ``cfg`` says; writes ``all_results.json``, per-word eval
    predictions, a learning curve and the LR per layer group under ``training.output_dir``."""
    return run_classification(cfg, TOKEN_CLASSIFICATION, log=log)


register_task("token_classification", TokenDataConfig, run_token_classification,
              "token classification (NER, IOB2 tags) with a BERT-style encoder")
