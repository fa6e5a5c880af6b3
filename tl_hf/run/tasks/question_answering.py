"""Extractive question answering (SQuAD v1.1 style): ``task: question_answering`` for ``tl-hf run``. Fills in the run
template (:func:`tl_hf.run.template.run_classification`) with QA data (:mod:`tl_hf.run.data.squad`), windowed
features (:mod:`tl_hf.run.data.qa_features`), an ``AutoModelForQuestionAnswering`` (head ``qa_outputs``), the n-best
span post-processing (:mod:`tl_hf.run.qa_postprocess`) and the official v1.1 exact match / F1 (the packaged evaluate
module ``squad``).

Outputs: ``eval_predictions.json`` as ``{question id: answer text}`` (the prediction file of the official
``evaluate-v1.1.py``), ``eval_nbest_predictions.json`` with ``data.write_nbest``, and ``eval_exact_match`` /
``eval_f1`` (percent) in ``all_results.json``.
"""

from __future__ import annotations

import os
from typing import Any

from tl_hf._errors import ConfigError
from tl_hf.run.data.squad import QADataConfig
from tl_hf.run.models import _from_pretrained
from tl_hf.run.sections import RunConfig
from tl_hf.run.tasks.registry import register_task
from tl_hf.run.template import Built, ClassificationTask, run_classification

__all__ = ["QAMetrics", "question_answering_task", "run_question_answering"]

_METRICS = ("exact_match", "f1", "loss")


def _check(cfg: RunConfig, args) -> None:
    from tl_hf.run.data.tokenizer import check_text_model

    if cfg.freezing.cache_features or (cfg.strategy.mode == "auto" and cfg.strategy.cache_features):
        key = "freezing.cache_features" if cfg.freezing.cache_features else "strategy.cache_features"
        raise ConfigError(f"{key}: cached features are not valid for question_answering (the qa_outputs head reads "
                          "every token's hidden state of every window, not one pooled vector); set "
                          f"{key}: false (feature extraction without a cache works)")
    if cfg.evaluation.metrics:
        raise ConfigError("evaluation.metrics: question_answering is scored with the SQuAD v1.1 exact_match and f1 "
                          "(always computed); evaluation.metrics takes class-id metrics: remove it")
    if cfg.early_stopping.patience > 0 and cfg.early_stopping.metric not in _METRICS:
        raise ConfigError(f"early_stopping.metric={cfg.early_stopping.metric!r}: question_answering reports "
                          f"{', '.join(_METRICS)}; set early_stopping.metric to one of them")
    check_text_model(cfg.model, cfg.data.max_length)  # fails fast: not a model, an offline Hub id, no vocabulary


class QAMetrics:
    """The run's ``compute_metrics`` for QA: post-processes the gathered start / end logits of the bound eval
    features into answers and scores them with the packaged ``squad`` evaluate module. ``last`` keeps the latest
    ``(predictions, nbest)``."""

    def __init__(self, cfg: RunConfig) -> None:
        from tl_hf.run.metrics import load_metric

        self.metric = load_metric("squad", where="question_answering: ")
        self.n_best, self.max_answer_length = cfg.data.n_best, cfg.data.max_answer_length
        self.examples = self.features = None
        self.last: tuple[dict, dict] | None = None

    def check(self, num_labels: int) -> None:  # the template's hook; QA has no label set
        return None

    def bind(self, examples, features) -> None:
        """The eval questions and their features (``example_id``, ``offset_mapping``), in evaluation order."""
        self.examples, self.features = examples, features

    def __call__(self, eval_pred) -> dict[str, float]:
        from tl_hf.run.qa_postprocess import postprocess_predictions

        start, end = eval_pred.predictions[:2] if hasattr(eval_pred, "predictions") else eval_pred[0][:2]
        preds, nbest = postprocess_predictions(self.examples, self.features, start, end, n_best=self.n_best,
                                               max_answer_length=self.max_answer_length)
        self.last = (preds, nbest)
        refs = [{"id": i, "answers": a} for i, a in zip(self.examples["id"], self.examples["answers"])]
        return dict(self.metric.compute(predictions=[{"id": k, "prediction_text": v} for k, v in preds.items()],
                                        references=refs))


def _build(cfg: RunConfig, args, checked, log, *, metrics: dict) -> Built:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding

    from tl_hf.run.data.qa_features import EVAL_KEEP, prepare_features
    from tl_hf.run.data.squad import load_qa
    from tl_hf.run.data.tokenizer import check_tokenizer_works

    data = load_qa(cfg.data, seed=args.seed, log=log)
    tok_name = cfg.model.tokenizer or cfg.model.name_or_path
    tokenizer = _from_pretrained(AutoTokenizer, tok_name, "tokenizer", trust_remote_code=cfg.model.trust_remote_code)
    check_tokenizer_works(tokenizer, tok_name)
    kw = dict(max_length=cfg.data.max_length, doc_stride=cfg.data.doc_stride)
    train = prepare_features(data.train, tokenizer, train=True, where=data.sources["train"], **kw)
    eval_features = eval_inputs = None
    if data.eval is not None:
        eval_features = prepare_features(data.eval, tokenizer, train=False, where=data.sources["eval"], **kw)
        eval_inputs = eval_features.remove_columns(list(EVAL_KEEP))
        metrics["object"].bind(data.eval, eval_features)
    model = _from_pretrained(AutoModelForQuestionAnswering, cfg.model.name_or_path, "model",
                             trust_remote_code=cfg.model.trust_remote_code)
    metrics["data"] = data
    n_eval = f"{len(data.eval):,} questions / {len(eval_features):,} windows" if data.eval is not None else "none"
    results = {**data.results, "train_samples": len(data.train), "train_features": len(train)}
    return Built(model=model, train_dataset=train, eval_dataset=eval_inputs, label_names=[],
                 data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                 dataset_name=cfg.data.dataset or os.path.basename(str(cfg.data.train_file)),
                 summary=f"train {len(data.train):,} questions / {len(train):,} windows ({data.sources['train']}), "
                         f"eval {n_eval} (max_length {cfg.data.max_length}, doc_stride {cfg.data.doc_stride})",
                 results=results)


def _evaluate(trainer, built: Built, cfg: RunConfig, *, metrics: dict) -> dict[str, Any]:
    """Predict the eval windows (gathered over all processes), score the answers; the main process writes
    ``eval_predictions.json`` ({id: answer}), optionally the n-best file, and the training plots."""
    from tl_hf.run.outputs import evaluate_step

    data = metrics["data"]

    def score(pred):
        scores = dict(pred.metrics)
        scores["eval_samples"], scores["eval_features"] = len(data.eval), len(built.eval_dataset)
        return scores, metrics["object"].last

    def write(out: str, value) -> dict[str, str]:
        preds, nbest = value
        written = {"predictions": _write_json(os.path.join(out, "eval_predictions.json"), preds)}
        if cfg.data.write_nbest:
            written["nbest"] = _write_json(os.path.join(out, "eval_nbest_predictions.json"), nbest)
        return written

    return evaluate_step(trainer, dict(built.results), built.eval_dataset, score=score, write=write)


def _write_json(path: str, obj) -> str:
    from tl_hf.core.state import atomic_write_json

    atomic_write_json(path, obj)
    return path


def question_answering_task() -> ClassificationTask:
    """The QA task of one run (its metrics object is shared by the build, training-time and final evaluation)."""
    shared: dict[str, Any] = {}

    def make_metrics(cfg: RunConfig) -> QAMetrics:
        shared["object"] = QAMetrics(cfg)
        return shared["object"]

    return ClassificationTask(check=_check, build=lambda *a: _build(*a, metrics=shared),
                              peft_task_type="QUESTION_ANS", metrics=make_metrics,
                              evaluate=lambda *a: _evaluate(*a, metrics=shared))


def run_question_answering(cfg: RunConfig, *, log=print) -> dict[str, Any]:
    """Fine-tune and evaluate an extractive QA model as ``cfg`` says; writes ``all_results.json`` (exact_match, f1),
    ``eval_predictions.json`` and the learning curve under ``training.output_dir``."""
    return run_classification(cfg, question_answering_task(), log=log)


register_task("question_answering", QADataConfig, run_question_answering,
              "extractive question answering (SQuAD v1.1 style spans) with a BERT-style encoder")
