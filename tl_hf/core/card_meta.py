"""Hub-valid model-card metadata: the base model's Hub id, dataset ids, ``model-index`` results in the Hub's metric
names, and a check of a whole card with huggingface_hub's own parsers before it is written.

The Hub refuses a card whose ``base_model`` or ``datasets`` are not repo ids (a local path, say), and its
``model-index`` is meant for task metrics only (no loss, runtime or per-class scores).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Any, Iterable, Mapping

from tl_hf._errors import TOKEN_LIKE, one_line
from tl_hf._hub_access import is_hub_id

logger = logging.getLogger(__name__)

__all__ = ["CardError", "HUB_METRICS", "base_model_id", "check_card", "hub_dataset_id", "model_index_results"]


class CardError(ValueError):
    """A model card the Hub would refuse (bad YAML, a base model or dataset that is not a repo id, a broken
    ``model-index``); nothing was written."""


#: our metric keys (after the ``eval_`` / ``test_`` prefix) -> (Hub metric type, metric args, display name)
HUB_METRICS: dict[str, tuple[str, dict | None, str]] = {
    "accuracy": ("accuracy", None, "Accuracy"),
    "f1": ("f1", None, "F1"),
    "f1_macro": ("f1", {"average": "macro"}, "F1 (macro)"),
    "f1_micro": ("f1", {"average": "micro"}, "F1 (micro)"),
    "f1_weighted": ("f1", {"average": "weighted"}, "F1 (weighted)"),
    "f1_samples": ("f1", {"average": "samples"}, "F1 (samples)"),  # multi-label, example-based
    "precision": ("precision", None, "Precision"),
    "precision_macro": ("precision", {"average": "macro"}, "Precision (macro)"),
    "recall": ("recall", None, "Recall"),
    "recall_macro": ("recall", {"average": "macro"}, "Recall (macro)"),
    "matthews_correlation": ("matthews_correlation", None, "Matthews correlation"),
    "mcc": ("matthews_correlation", None, "Matthews correlation"),
    "pearsonr": ("pearsonr", None, "Pearson correlation"),
    "spearmanr": ("spearmanr", None, "Spearman correlation"),
    "mse": ("mse", None, "MSE"),
    "exact_match": ("exact_match", None, "Exact match"),  # SQuAD v1.1 (percent); its "f1" is the token F1 above
}
_SPLITS = {"eval": "validation", "test": "test", "predict": "test"}


def _origin_in_config(folder: str) -> str | None:
    """``_name_or_path`` of ``folder/config.json`` when it is a Hub id (older transformers wrote it there)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            name = json.load(f).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and is_hub_id(name, namespace=True) else None


def base_model_id(name: str | None) -> str | None:
    """The Hub id a model named ``name`` (its ``_name_or_path``) comes from: ``name`` itself when it is a Hub id; for a
    local folder, the ``_name_or_path`` its ``config.json`` records when that is a Hub id; else ``None`` (a warning
    says that ``base_model`` is left out)."""
    if not name:
        return None
    if not os.path.exists(name) and is_hub_id(name, namespace=True):
        return name
    origin = _origin_in_config(name) if os.path.isdir(name) else None
    if origin is None:
        logger.warning("model card: base_model left out: %s is a local path and its config.json records no Hub id "
                       "it came from (pass finetuned_from=<hub id> to name it)", name)
    return origin


def hub_dataset_id(name: str | None) -> str | None:
    """``name`` when it is a valid Hub dataset id, else ``None``."""
    return name if isinstance(name, str) and is_hub_id(name) else None


def model_index_results(metrics: Mapping[str, Any], *, task: str, dataset_id: str, dataset_name: str | None = None,
                        dataset_config: str | None = None) -> list:
    """``huggingface_hub.EvalResult`` s for the task metrics in ``metrics`` (``eval_accuracy``, ``eval_f1_macro``, ...),
    in the Hub's metric names; loss, runtimes, per-class scores and non-finite values are left out."""
    from huggingface_hub import EvalResult

    out = []
    for key, value in metrics.items():
        prefix, _, base = key.partition("_") if key.split("_", 1)[0] in _SPLITS else ("", "", key)
        if base not in HUB_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(float(value)):
            continue
        mtype, margs, mname = HUB_METRICS[base]
        out.append(EvalResult(task_type=task, dataset_type=dataset_id, dataset_name=dataset_name or dataset_id,
                              dataset_config=dataset_config, dataset_split=_SPLITS.get(prefix),
                              metric_type=mtype, metric_args=margs, metric_name=mname, metric_value=float(value)))
    return out


def _ids(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_ids(kind: str, values: Iterable) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    for v in values:
        try:
            if not isinstance(v, str):
                raise HFValidationError(f"not a string: {v!r}")
            validate_repo_id(v)
        except HFValidationError as exc:
            raise CardError(f"model card: {kind} {v!r} is not a Hub repo id ({one_line(exc)})") from None


def check_card(content: str) -> None:
    """Refuse (:class:`CardError`, one line) a card the Hub would refuse, parsed with huggingface_hub's own
    ``ModelCard`` / ``model_index_to_eval_results`` / ``validate_repo_id``: bad YAML, a ``base_model`` or ``datasets``
    entry that is not a repo id, a ``model-index`` that does not parse or holds a non-numeric / non-finite value, or
    anything shaped like a token."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if TOKEN_LIKE.search(content):
        raise CardError("model card: it contains something shaped like a Hugging Face token (hf_...)")
    try:
        card = ModelCard(content, ignore_metadata_errors=False)
    except Exception as exc:  # noqa: BLE001 - yaml / value errors of every kind
        raise CardError(f"model card: its metadata does not parse: {one_line(exc)}") from None
    meta = card.data.to_dict()
    _check_ids("base_model", _ids(meta.get("base_model")))
    _check_ids("datasets entry", _ids(meta.get("datasets")))
    index = meta.get("model-index")
    if index is None:
        return
    try:
        _, results = model_index_to_eval_results(index)
    except Exception as exc:  # noqa: BLE001
        raise CardError(f"model card: model-index does not parse: {one_line(exc)}") from None
    for r in results:
        _check_ids("model-index dataset", [r.dataset_type])
        v = r.metric_value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise CardError(f"model card: model-index metric {r.metric_type!r} has value {v!r}; a finite number is "
                            "needed")
        if not re.fullmatch(r"[a-z0-9_\-]+", str(r.metric_type)):
            raise CardError(f"model card: model-index metric type {r.metric_type!r} is not a metric id")
