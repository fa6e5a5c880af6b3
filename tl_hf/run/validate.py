"""All checks of a run that need neither its data nor its model weights, in one place (:func:`check_run`), run
before any data or model is loaded: where the outputs go (never into an input model, not while another run holds the
folder), keys that the chosen policies ignore (a warning, an error under ``strict: true``), the keys inside
dict-valued ``TrainingArguments`` fields, memory that a size or batch size would need (:mod:`tl_hf.run.memory`), the
PEFT extra and its target modules, the configured metrics' arguments (:func:`check_metrics`) and whether the
checkpoint a run would resume from was written by this config (:func:`check_resume`)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import shutil
from typing import Any, Callable

from tl_hf._errors import ConfigError, did_you_mean
from tl_hf.run.memory import check_memory, estimate_bytes
from tl_hf.run.sections import RunConfig

logger = logging.getLogger(__name__)

__all__ = ["check_run", "check_model_config", "check_output_dir", "inactive_keys", "check_inactive_keys",
           "check_training_dicts", "estimate_bytes", "check_memory", "check_peft", "check_metrics",
           "detect_last_checkpoint", "last_checkpoint", "resume_fingerprint", "check_resume", "clear_checkpoints"]

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


def check_run(cfg: RunConfig, args, log: Callable = logger.warning, *, resume: bool = True,
              metrics=None) -> str | None:
    """Every check of this module, before any data or model is loaded: one-line ConfigErrors. ``metrics``: the
    run's loaded :class:`~tl_hf.run.metrics.RunMetrics`, dry-run here (:func:`check_metrics`). Returns the checkpoint
    the run resumes from (:func:`last_checkpoint`, refused when another config wrote it), None for a fresh run
    (always with ``resume=False``: the continual task keeps its own per-task resume)."""
    from tl_hf.run.lock import check_unlocked
    from tl_hf.run.outputs import is_main

    check_model_config(cfg)
    check_output_dir(cfg, args.output_dir)
    check_inactive_keys(cfg, log)
    check_training_dicts(cfg.training)
    check_memory(cfg, args)
    check_peft(cfg)
    if metrics is not None:
        check_metrics(cfg, metrics)
    if is_main():  # the other processes of a launch run beside the main one, which holds the lock
        check_unlocked(args.output_dir)  # another run writing there: refused before its checkpoints are read
    from tl_hf.core.distributed_checks import check_same_checkpoint, check_save_on_each_node

    check_save_on_each_node(args)  # several nodes writing one shared output_dir: refused
    if not resume:
        return None
    checkpoint = last_checkpoint(cfg, args, log)
    check_same_checkpoint(args, checkpoint)  # every node resumes from the same one (multi-node, save_on_each_node)
    if checkpoint is not None:
        check_resume(cfg, checkpoint)
    return checkpoint


# -- PEFT and metrics -------------------------------------------------------------------------------------------------
PEFT_MISSING = ("peft.enabled needs the 'peft' extra, which is not installed: pip install -e '.[peft]' (or "
                "'tl_hf[peft]'), or set peft.enabled: false")


def require_peft() -> None:
    """The ``peft`` package, or a one-line ConfigError naming the extra that installs it."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError(PEFT_MISSING) from None


def check_peft(cfg: RunConfig) -> None:
    """With ``peft.enabled``: peft is installed, and a local model without ``peft.target_modules`` has default LoRA
    targets (its ``model_type`` from config.json, before the model is loaded)."""
    if not cfg.peft.enabled:
        return
    require_peft()
    if cfg.peft.target_modules:
        return
    from tl_hf.core.architectures import default_lora_targets
    from tl_hf.run.memory import local_model_config

    local = local_model_config(cfg)
    mt = local[1].get("model_type") if local else None
    if isinstance(mt, str) and not default_lora_targets(mt):
        raise ConfigError(f"peft: no default target modules for model_type {mt!r}; set peft.target_modules")


def check_metrics(cfg: RunConfig, metrics) -> None:
    """Dry-run every configured metric (``metrics.check(num_labels)``) before the data is read: on the class count
    the config gives (``model.num_labels`` or ``data.label_names``); without one, on 2 and on 3 classes, refusing
    only an argument that fails on both (one that depends on the class count, like ``average: binary``, is checked
    again once the data's labels are known)."""
    known = cfg.model.num_labels or len(getattr(cfg.data, "label_names", None) or []) or None
    if known:
        metrics.check(known)
        return
    first = None
    for n in (2, 3):
        try:
            metrics.check(n)
            return
        except ConfigError as exc:
            first = first or exc
    raise first


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


# -- the model's config.json -------------------------------------------------------------------------------------------
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


# -- resume ---------------------------------------------------------------------------------------------------------
def detect_last_checkpoint(args, log: Callable = logger.info) -> str | None:
    """The checkpoint to resume from: ``training.resume_from_checkpoint`` if set, else the newest
    ``checkpoint-*`` in ``output_dir`` (a rerun after a crash resumes instead of starting over)."""
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint:
        if not os.path.isdir(args.resume_from_checkpoint):
            raise ConfigError(f"training.resume_from_checkpoint={args.resume_from_checkpoint} is not a directory")
        return args.resume_from_checkpoint
    if os.path.isdir(args.output_dir):
        last = get_last_checkpoint(args.output_dir)
        if last is not None:
            log(f"resuming from the last checkpoint {last} (delete it or change training.output_dir to start over)")
            return last
    return None


def last_checkpoint(cfg: RunConfig, args, log: Callable = logger.info) -> str | None:
    """The checkpoint this run resumes from (:func:`detect_last_checkpoint`); None with
    ``training.overwrite_output_dir`` (the earlier checkpoints are removed right before training)."""
    if cfg.training.get("overwrite_output_dir"):
        if args.resume_from_checkpoint:
            raise ConfigError("training.overwrite_output_dir=true and training.resume_from_checkpoint exclude each "
                              "other; drop one")
        return None
    return detect_last_checkpoint(args, log)


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
