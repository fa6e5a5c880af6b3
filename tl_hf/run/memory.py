"""The memory a run's sizes need, checked before any data or weights are read (:func:`check_memory`, part of
:func:`tl_hf.run.validate.check_run`). The estimate is a lower bound, so that a run that fits is never refused:

* the model: its exact parameter count, from the model built from its ``config.json`` on the meta device (no memory
  is allocated; shared layers, tied embeddings and every architecture transformers knows are counted as they are),
  times the bytes per parameter: the weights in their dtype (2 bytes for a bfloat16 / float16 config, else 4), plus,
  when every parameter trains (``freezing.policy: full``, no PEFT, no ``strategy: auto``), a gradient and AdamW's two
  moment estimates of the same dtype (4 x the weights); with freezing or LoRA only the weights are counted;
* one batch's activations, stated as rough: 4 stored tensors of ``batch x sequence x hidden`` per layer in training
  (1 with ``gradient_checkpointing``), 4 live ones in evaluation; the sequence is ``data.max_length`` tokens or the
  image patches (``(image_size / patch_size)^2 + 1``); a model without patches counts its input pixels only.
  Real activations are larger (attention scores, MLP intermediates), so this never over-counts;
* the limit is generous: this machine's RAM plus every accelerator's memory.

Training needs the model state and the training batch at once, evaluation the weights and the eval batch; either
above the limit is refused with one line naming the largest parts and their sizes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from tl_hf._errors import ConfigError
from tl_hf.run.sections import RunConfig

logger = logging.getLogger(__name__)

__all__ = ["machine_bytes", "local_model_config", "model_parameters", "estimate_bytes", "check_memory"]

_GIB = 2.0 ** 30


def machine_bytes() -> int:
    """Physical memory of this machine plus that of its accelerators."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        import torch

        if torch.cuda.is_available():
            total += sum(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no accelerator information: RAM only
        pass
    return total


def local_model_config(cfg: RunConfig) -> tuple[str, dict[str, Any]] | None:
    """``(folder, config.json)`` of a local model (no weights read), or None."""
    from tl_hf.run.models import resolve_model_path

    try:
        path, local = resolve_model_path(cfg.model.name_or_path)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            conf = json.load(f)
    except Exception:  # noqa: BLE001 - the model loader reports a missing or broken model itself
        return None
    return (path, conf) if local and isinstance(conf, dict) else None


def model_parameters(folder: str, conf: dict[str, Any], trust_remote_code: bool = False) -> int | None:
    """The exact parameter count of the model ``config.json`` describes, built on the meta device (no memory, no
    weights read); None when transformers cannot build it from the config alone (remote code, an unknown type)."""
    if conf.get("auto_map") and not trust_remote_code:
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)  # config.json only
        with torch.device("meta"):
            model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        return sum(p.numel() for p in model.parameters())
    except Exception as exc:  # noqa: BLE001 - no estimate rather than a false refusal; the loader reports errors
        logger.debug("no parameter count for %s: %s", folder, exc)
        return None


def _int(conf: dict, *keys: str) -> int | None:
    for k in keys:
        v = conf.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return None


def _all_trainable(cfg: RunConfig) -> bool:
    return cfg.freezing.policy == "full" and not cfg.peft.enabled and cfg.strategy.mode != "auto"


def _model_terms(cfg: RunConfig) -> tuple[list[tuple[str, float]], list[tuple[str, float]], dict]:
    """``(training terms, eval terms, config.json)`` of the model (and of a ``model.num_labels`` head): its state in
    training, its weights in evaluation."""
    mlp = re.match(r"^mlp:(\d+)$", cfg.model.name_or_path.strip(), re.IGNORECASE)  # continual's Split-MNIST MLP
    train: list[tuple[str, float]] = []
    evaluation: list[tuple[str, float]] = []
    conf: dict = {}
    n, width = None, 4
    if mlp:
        h = int(mlp.group(1))
        n, where = 784 * h + h + h * h + h + 10 * h + 10, f"model.name_or_path={cfg.model.name_or_path}"
    else:
        local = local_model_config(cfg)
        if local is not None:
            folder, conf = local
            n, where = model_parameters(folder, conf, cfg.model.trust_remote_code), f"the model in {folder}"
            width = 2 if str(conf.get("dtype") or conf.get("torch_dtype")) in ("bfloat16", "float16") else 4
    if n is not None:
        full = _all_trainable(cfg)
        per = width * (4 if full else 1)
        train.append((f"{where} ({n:,} parameters x {per} bytes: weights"
                      + (", gradients, 2 AdamW states)" if full else "; frozen / LoRA: nothing else counted)"),
                      float(n * per)))
        evaluation.append((f"{where} ({n:,} parameters x {width} bytes of weights)", float(n * width)))
    if cfg.model.num_labels:  # the classification head (always trained): num_labels x hidden
        head = cfg.model.num_labels * (_int(conf, "hidden_size", "dim", "d_model", "n_embd") or 1)
        train.append((f"model.num_labels={cfg.model.num_labels} (a head of {head:,} parameters x {4 * width} "
                      "bytes)", float(head * 4 * width)))
        evaluation.append((f"model.num_labels={cfg.model.num_labels} (a head of {head:,} parameters)",
                           float(head * width)))
    return train, evaluation, conf


def _sequence(cfg: RunConfig, conf: dict) -> tuple[int | None, str, int]:
    """``(sequence length or None, what it is, input pixels per example)``."""
    max_length = getattr(cfg.data, "max_length", None)
    if isinstance(max_length, int) and max_length > 0:
        return max_length, f"data.max_length {max_length} tokens", 0
    if cfg.task != "image_classification":
        return None, "", 0
    side = getattr(cfg.data, "image_size", None) or _int(conf, "image_size") or 224
    patch = _int(conf, "patch_size")
    seq = (side // patch) ** 2 + 1 if patch else None
    return seq, (f"{seq} patches of " if seq else "") + f"{side}x{side} pixels", 3 * side * side


def _activation_term(cfg: RunConfig, args, conf: dict, key: str) -> tuple[str, float] | None:
    batch = getattr(args, key)
    training = key.startswith("per_device_train")
    width = 2 if (args.bf16 or args.fp16) else 4
    seq, seq_what, pixels = _sequence(cfg, conf)
    hidden = _int(conf, "hidden_size", "dim", "d_model", "n_embd")
    layers = _int(conf, "num_hidden_layers", "n_layers", "num_layers", "n_layer")
    if seq and hidden and layers:
        stored = (1 if args.gradient_checkpointing else 4) * layers if training else 4
        return (f"training.{key}={batch} (x {seq_what}: activations, rough)", float(width * stored * batch * seq
                                                                                    * hidden))
    if pixels:
        return f"training.{key}={batch} (x {seq_what}: input pixels)", float(4 * batch * pixels)
    return None


def estimate_bytes(cfg: RunConfig, args) -> dict[str, list[tuple[str, float]]]:
    """``{"training": [(what, bytes)], "evaluation": [...]}``: the lower-bound parts of the memory that training and
    evaluation need (see the module docstring)."""
    train, evaluation, conf = _model_terms(cfg)
    out: dict[str, list[tuple[str, float]]] = {"training": train, "evaluation": evaluation}
    for phase, key in (("training", "per_device_train_batch_size"), ("evaluation", "per_device_eval_batch_size")):
        act = _activation_term(cfg, args, conf, key)
        if act is not None:
            out[phase].append(act)
    return out


def check_memory(cfg: RunConfig, args) -> None:
    """Refuse, before anything is built, sizes whose training or evaluation would need more memory than this machine
    has (RAM plus accelerators); the message names the largest parts."""
    limit = machine_bytes()
    for phase, terms in estimate_bytes(cfg, args).items():
        need = sum(b for _, b in terms)
        if need <= limit:
            continue
        parts = sorted(terms, key=lambda t: -t[1])
        shown = "; ".join(f"{what}: {b / _GIB:,.1f} GiB" for what, b in parts if b >= 0.01 * need)
        raise ConfigError(f"{phase} would need at least about {need / _GIB:,.0f} GiB ({shown}), more than this "
                          f"machine's {limit / _GIB:,.0f} GiB (RAM + accelerators); lower the largest part")
