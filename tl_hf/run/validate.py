"""All checks of a run that need neither its data nor its model weights, in one place, run before any slow step:
where the outputs go (never into an input model), keys that the chosen policies ignore (a warning, an error under
``strict: true``), the keys inside dict-valued ``TrainingArguments`` fields, memory that a size or batch size would
need, and whether the checkpoints in ``output_dir`` were written by this config (:func:`check_resume`)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import re
import shutil
from typing import Any, Callable

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.sections import RunConfig

logger = logging.getLogger(__name__)

__all__ = ["check_run", "check_model_config", "check_output_dir", "inactive_keys", "check_inactive_keys",
           "check_training_dicts", "estimate_bytes", "check_memory", "resume_fingerprint", "check_resume",
           "clear_checkpoints"]

#: what a resume may change (where and how a run reports, not what it computes); every other config key must match
_RESUME_FREE = {
    "training": ("output_dir", "overwrite_output_dir", "logging_steps", "logging_strategy", "logging_first_step",
                 "logging_nan_inf_filter", "disable_tqdm", "report_to", "save_strategy", "save_steps",
                 "save_total_limit", "save_on_each_node", "save_only_model", "per_device_eval_batch_size",
                 "eval_accumulation_steps", "dataloader_num_workers", "dataloader_pin_memory",
                 "dataloader_persistent_workers", "dataloader_prefetch_factor", "run_name", "push_to_hub",
                 "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision", "use_cpu",
                 "resume_from_checkpoint",
                 # training longer (or shorter) than first planned is a resume, not another run
                 "max_steps", "num_train_epochs"),
    "model": ("save_model",),
    "data": ("root",),
}


def check_run(cfg: RunConfig, args, log: Callable = logger.warning) -> None:
    """Every check of this module but the resume check (which needs the checkpoint): one-line ConfigErrors."""
    check_model_config(cfg)
    check_output_dir(cfg, args.output_dir)
    check_inactive_keys(cfg, log)
    check_training_dicts(cfg.training)
    check_memory(cfg, args)


# -- outputs vs inputs ------------------------------------------------------------------------------------------------
def _input_dirs(cfg: RunConfig) -> list[tuple[str, str]]:
    """``[(key, real path)]`` of the local folders a run reads its model from (model, tokenizer, regularizer
    sources)."""
    from tl_hf.run.models import BUNDLED_ALIASES, resolve_model_path

    out = []
    for key, value in (("model.name_or_path", cfg.model.name_or_path), ("model.tokenizer", cfg.model.tokenizer)):
        if not value:
            continue
        if value.strip().lower() in {a.lower() for a in BUNDLED_ALIASES}:
            try:
                value = resolve_model_path(value)[0]
            except Exception:  # noqa: BLE001 - the model loader names a missing package itself
                continue
        out.append((key, value))
    for i, r in enumerate(cfg.regularizers):
        if r.get("source"):
            out.append((f"regularizers[{i}].source", str(r["source"])))
    return [(k, os.path.realpath(os.path.expanduser(v))) for k, v in out if os.path.exists(os.path.expanduser(v))]


def check_output_dir(cfg: RunConfig, output_dir: str) -> None:
    """``output_dir`` must not be, contain or lie inside a folder the run reads its model from: saving the model or
    checkpoints there would overwrite (or mix with) the pretrained weights."""
    out = os.path.realpath(os.path.expanduser(output_dir))
    for key, src in _input_dirs(cfg):
        folder = src if os.path.isdir(src) else os.path.dirname(src)
        if out == folder or out.startswith(folder + os.sep) or folder.startswith(out + os.sep):
            how = "is" if out == folder else ("is inside" if out.startswith(folder + os.sep) else "contains")
            raise ConfigError(f"training.output_dir {output_dir} {how} the folder of {key} ({folder}): the run would "
                              "write over its input model; choose another training.output_dir")


# -- keys the chosen policies ignore ----------------------------------------------------------------------------------
def _set_fields(obj, names) -> list[str]:
    """The fields of ``obj`` among ``names`` whose value differs from the field default."""
    out = []
    for f in dataclasses.fields(obj):
        if f.name not in names:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(obj, f.name) != default:
            out.append(f.name)
    return out


def inactive_keys(cfg: RunConfig) -> list[str]:
    """``["freezing.k (only used with freezing.policy top_k, not full)", ...]``: keys set to a non-default value that
    this run ignores."""
    fz, out = cfg.freezing, []
    used = {"top_k": ("k", "train_embeddings"), "patterns": ("include", "exclude"), "blocks": ("blocks",),
            "gradual": ("schedule",)}
    for policy, keys in used.items():
        if fz.policy != policy:
            out += [f"freezing.{k} (only used with freezing.policy {policy}, not {fz.policy})"
                    for k in _set_fields(fz, keys)]
    if not cfg.peft.enabled:
        out += [f"peft.{k} (peft.enabled is false)" for k in _set_fields(cfg.peft, ("r", "alpha", "dropout",
                                                                                   "target_modules"))]
    if cfg.early_stopping.patience == 0:
        out += [f"early_stopping.{k} (early_stopping.patience is 0: off)"
                for k in _set_fields(cfg.early_stopping, ("metric", "greater_is_better", "threshold"))]
    if cfg.strategy.mode != "auto":
        out += [f"strategy.{k} (strategy.mode is {cfg.strategy.mode}, not auto)"
                for k in _set_fields(cfg.strategy, ("small_max", "medium_max", "top_k", "llrd_decay", "domain_shift",
                                                    "cache_features"))]
    else:
        out += [f"{s} (strategy.mode auto chooses llrd and freezing itself)" for s in ("llrd", "freezing")
                if getattr(cfg, s) != type(getattr(cfg, s))()]
    return out


def check_inactive_keys(cfg: RunConfig, log: Callable = logger.warning) -> None:
    """Warn about :func:`inactive_keys` (one line each), or refuse them when ``strict: true``."""
    keys = inactive_keys(cfg)
    if keys and cfg.strict:
        raise ConfigError(f"strict: {len(keys)} key(s) set but ignored by this run: {'; '.join(keys)}; remove them "
                          "or set strict: false")
    for k in keys:
        log(f"warning: {k} is set but ignored (strict: true makes this an error)")


# -- dict-valued TrainingArguments fields -----------------------------------------------------------------------------
def _scheduler_keys(training: dict) -> tuple[str, list[str] | None]:
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    name = SchedulerType(training.get("lr_scheduler_type", "linear"))
    params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[name]).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return name.value, None
    fixed = {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"}
    return name.value, [p for p in params if p not in fixed]


def _dict_field_keys(field_name: str, training: dict) -> tuple[str, list[str] | None]:
    """``(what accepts the keys, the valid keys or None for any)`` of a dict-valued ``TrainingArguments`` field."""
    if field_name == "lr_scheduler_kwargs":
        name, keys = _scheduler_keys(training)
        return f"lr_scheduler_type {name}", keys
    if field_name == "accelerator_config":
        from transformers.trainer_pt_utils import AcceleratorConfig

        return "AcceleratorConfig", [f.name for f in dataclasses.fields(AcceleratorConfig)]
    if field_name == "gradient_checkpointing_kwargs":
        import torch.utils.checkpoint

        params = inspect.signature(torch.utils.checkpoint.checkpoint).parameters
        return "torch.utils.checkpoint.checkpoint", [p for p, v in params.items() if v.kind is v.KEYWORD_ONLY]
    if field_name == "fsdp_config":
        return "fsdp_config", ["activation_checkpointing", "auto_wrap_policy", "backward_prefetch", "cpu_offload",
                               "cpu_ram_efficient_loading", "forward_prefetch", "limit_all_gathers", "min_num_params",
                               "reshard_after_forward", "state_dict_type", "sync_module_states",
                               "transformer_layer_cls_to_wrap", "use_orig_params", "version", "xla",
                               "xla_fsdp_grad_ckpt", "xla_fsdp_settings"]
    return field_name, None


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def check_training_dicts(training: dict) -> None:
    """Each key inside a dict-valued ``TrainingArguments`` field (``lr_scheduler_kwargs``, ``accelerator_config``,
    ``gradient_checkpointing_kwargs``, ``fsdp_config``) must be one its consumer accepts; numbers must be finite."""
    for field_name, value in training.items():
        if not isinstance(value, dict):
            continue
        if _non_finite(value):
            raise ConfigError(f"training.{field_name}: numbers must be finite, got {value!r}")
        what, valid = _dict_field_keys(field_name, training)
        if valid is None:
            continue
        for key in value:
            k = key[5:] if field_name == "fsdp_config" and str(key).startswith("fsdp_") else key
            if k not in valid:
                shown = ", ".join(valid) if valid else "none"
                raise ConfigError(f"training.{field_name}.{key}: not a key of {what}"
                                  + did_you_mean(k, valid, quote=False, prefix=f"training.{field_name}.")
                                  + f" Valid keys: {shown}")


# -- memory ---------------------------------------------------------------------------------------------------------
def _machine_bytes() -> int:
    """Physical memory of this machine plus that of its accelerators."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        import torch

        if torch.cuda.is_available():
            total += sum(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no accelerator information: RAM only
        pass
    return total


def _model_size(cfg: RunConfig) -> tuple[str, dict[str, Any]] | None:
    """``(folder, config.json)`` of a local model (no weights read), or None."""
    from tl_hf.run.models import resolve_model_path

    try:
        path, local = resolve_model_path(cfg.model.name_or_path)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            conf = json.load(f)
    except Exception:  # noqa: BLE001 - the model loader reports a missing or broken model itself
        return None
    return (path, conf) if local and isinstance(conf, dict) else None


def check_model_config(cfg: RunConfig) -> None:
    """A local model folder's config.json must be a JSON object naming a ``model_type`` transformers knows (or,
    with ``model.trust_remote_code``, an ``auto_map``); read before any weights."""
    from tl_hf.run.models import resolve_model_path

    try:
        path, local = resolve_model_path(cfg.model.name_or_path)
    except Exception:  # noqa: BLE001 - not a model folder (e.g. continual's mlp): the model builder reports it
        return
    if not local:
        return
    file = os.path.join(path, "config.json")
    try:
        with open(file, encoding="utf-8") as f:
            conf = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {file} is not readable JSON ({str(exc)[:100]}); re-save the model") from None
    if not isinstance(conf, dict):
        raise ConfigError(f"model {file} is valid JSON but not an object (got {type(conf).__name__}); re-save the "
                          "model")
    if cfg.model.trust_remote_code and conf.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    mt = conf.get("model_type")
    if mt not in CONFIG_MAPPING:
        hint = did_you_mean(mt, list(CONFIG_MAPPING.keys())) if isinstance(mt, str) else ""
        raise ConfigError(f"model {file}: model_type {mt!r} is not an architecture transformers knows{hint}; fix "
                          "config.json or upgrade transformers")


def _int(conf: dict, *keys: str, default: int) -> int:
    for k in keys:
        v = conf.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return default


def estimate_bytes(cfg: RunConfig, args) -> list[tuple[str, float]]:
    """Rough lower bounds ``[(what, bytes)]`` of memory that the sizes of this run need: the model's weights with
    their gradients and Adam state (from its config.json), one training / eval batch's activations (images: the
    pixels), the classification head."""
    model = _model_size(cfg)
    conf = model[1] if model else {}
    hidden = _int(conf, "hidden_size", "dim", "d_model", default=1024)
    layers = _int(conf, "num_hidden_layers", "n_layers", "num_layers", default=24)
    out = []
    if model:
        inter = _int(conf, "intermediate_size", "hidden_dim", default=4 * hidden)
        vocab = _int(conf, "vocab_size", default=0)
        positions = _int(conf, "max_position_embeddings", default=0)
        params = (vocab + positions) * hidden + layers * (4 * hidden * hidden + 2 * hidden * inter)
        out.append((f"the model in {model[0]} ({params:,} parameters from its config.json: hidden_size {hidden}, "
                    f"{layers} layers, vocab_size {vocab})", 16.0 * params))
    mlp = re.match(r"^mlp:(\d+)$", cfg.model.name_or_path.strip(), re.IGNORECASE)  # continual's Split-MNIST MLP
    if mlp:
        h = int(mlp.group(1))
        out.append((f"model.name_or_path={cfg.model.name_or_path} ({784 * h + h * h + 10 * h:,} parameters)",
                    16.0 * (784 * h + h * h + 10 * h)))
    side = getattr(cfg.data, "image_size", None) or 224
    max_length = getattr(cfg.data, "max_length", None)
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        batch = getattr(args, key)
        if max_length and model:  # lower bounds: 4 stored fp32 activations per layer in training, 4 live in eval
            stored = layers if key.startswith("per_device_train") else 1
            out.append((f"training.{key}={batch} (x data.max_length {max_length} tokens)",
                        4.0 * 4 * batch * max_length * hidden * stored))
        elif cfg.task == "image_classification":
            out.append((f"training.{key}={batch} (x {side}x{side} pixels)", 4.0 * 3 * side * side * batch))
    if cfg.model.num_labels:
        out.append((f"model.num_labels={cfg.model.num_labels}", 16.0 * hidden * cfg.model.num_labels))
    return out


def check_memory(cfg: RunConfig, args) -> None:
    """Refuse, before anything is built, sizes that would need more memory than this machine has."""
    limit = _machine_bytes()
    for what, need in estimate_bytes(cfg, args):
        if need > limit:
            raise ConfigError(f"{what} would need about {need / 2**30:,.0f} GiB, more than this machine's "
                              f"{limit / 2**30:,.0f} GiB; lower it")


# -- resume ---------------------------------------------------------------------------------------------------------
def resume_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The part of the config a resumed run must share with the interrupted one: everything but the ``hub``
    section, tokens, and the keys of :data:`_RESUME_FREE` (output and logging settings, the run length,
    ``data.root``, ``model.save_model``)."""
    d = json.loads(json.dumps(cfg.to_dict(), default=str))
    d.pop("hub", None)
    d.pop("strict", None)
    for section, keys in _RESUME_FREE.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    d["training"] = {k: v for k, v in d.get("training", {}).items() if "token" not in k}
    return d


def check_resume(cfg: RunConfig, checkpoint: str) -> None:
    """Refuse to resume from ``checkpoint`` when the run that wrote it had another config (the ``config`` that
    TransferTrainer records in its ``tl_hf_state.json``), naming the differences; a checkpoint that records none
    (written by an older version, or not by tl_hf) is resumed. Damaged files are named first."""
    from tl_hf.core.state import STATE_FILE, fingerprint_differences, read_json, short_value, validate_checkpoint

    validate_checkpoint(checkpoint)
    path = os.path.join(checkpoint, STATE_FILE)
    saved = read_json(path).get("config") if os.path.isfile(path) else None
    if not isinstance(saved, dict):
        return
    diffs = fingerprint_differences({"config": saved}, {"config": resume_fingerprint(cfg)})
    if diffs:
        parts = [f"{k[len('config.'):]} was {short_value(a)}, now {short_value(b)}" for k, a, b in diffs[:3]]
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise ConfigError(f"{checkpoint} was written by a run with another config ({'; '.join(parts)}{more}): "
                          "resuming would continue that run; set training.overwrite_output_dir=true to start over "
                          "there, or use a new training.output_dir")


def clear_checkpoints(output_dir: str, log: Callable = logger.info) -> None:
    """``training.overwrite_output_dir``: remove the ``checkpoint-*`` folders of an earlier run."""
    if not os.path.isdir(output_dir):
        return
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if name.startswith("checkpoint-") and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(name)
    if removed:
        log(f"training.overwrite_output_dir: removed {len(removed)} earlier checkpoint(s) from {output_dir}")
