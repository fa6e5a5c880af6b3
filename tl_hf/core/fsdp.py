"""FSDP support: the one place that knows about sharded (DTensor) parameters.

FSDP2 (``torch.distributed.fsdp.fully_shard``; Accelerate ``fsdp_version: 2``) is tl_hf's sharded path. It keeps
every original parameter (now a ``DTensor`` holding this rank's dim-0 chunk), so LLRD groups, freezing and gradual
unfreezing (``requires_grad`` per parameter; torch re-reads it at every all-gather) work unchanged. What needs care:

- regularizer state (EWC Fisher and anchors, L2-SP anchors) must be sharded like the parameters it pulls on, so the
  penalty gradient lands on this rank's chunk (:func:`shard_state`); a penalty's value summed over ``DTensor`` chunks
  is all-reduced by torch, so it counts once;
- a checkpoint stores that state full (plain tensors, written once by the main process): :func:`full_state`
  gathers it on every rank first;
- the Fisher, replay and DER memories are computed on a plain replica with the full weights (:func:`plain_replica`),
  exactly as under DDP (each rank its share of the examples, all-reduced), so they equal the single-process ones.

FSDP1 (``fsdp_version: 1``) flattens parameters; tl_hf only allows it with ``use_orig_params``. :func:`check_fsdp`
holds every refusal, each one line naming the fix.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from tl_hf._errors import ConfigError

__all__ = [
    "as_float",
    "sum_as_float",
    "check_fsdp",
    "freeze_as_saved",
    "fsdp_requested",
    "fsdp_version",
    "full_state",
    "full_state_dict",
    "is_dtensor",
    "plain_replica",
    "shard_like",
    "shard_state",
]


def fsdp_requested(args: Any, environ: dict[str, str] | None = None) -> bool:
    """True when ``args`` (TrainingArguments) or ``accelerate launch`` (``ACCELERATE_USE_FSDP``) asks for FSDP."""
    env = os.environ if environ is None else environ
    return bool(getattr(args, "fsdp", None)) or env.get("ACCELERATE_USE_FSDP", "false").strip().lower() in (
        "1", "true", "yes", "on")


def fsdp_version(accelerator: Any) -> int | None:
    """1 or 2 when ``accelerator`` runs FSDP, else None."""
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)  # set only when FSDP runs
    if plugin is None:
        return None
    return int(getattr(plugin, "fsdp_version", 1))


def is_dtensor(t: Any) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "device_mesh")


def as_float(t: torch.Tensor) -> float:
    """A scalar as a Python float; a sum over DTensor chunks is all-reduced first (every rank must call it), so a
    penalty counts every parameter once."""
    return float(t.full_tensor() if is_dtensor(t) else t)


def sum_as_float(terms: Iterable[torch.Tensor]) -> float:
    """The sum of scalar tensors as one Python float: one device sync (and under FSDP2 one all-reduce, DTensor terms
    summed as partials first) however many terms, instead of one per term."""
    terms = list(terms)
    total = 0.0
    for group in ([t for t in terms if is_dtensor(t)], [t for t in terms if not is_dtensor(t)]):
        if group:
            total += as_float(functools.reduce(torch.add, group))
    return total


def check_fsdp(args: Any, accelerator: Any, *, freezing_policy: str = "full", model: Any = None,
               regularizers: Iterable[Any] = (), averaging: bool = False) -> None:
    """Refuse what tl_hf cannot do under the FSDP this run got, before training (one-line
    :class:`~tl_hf._errors.ConfigError` naming the fix):

    - FSDP asked for but not running: Accelerate enables FSDP only for several GPU processes and otherwise silently
      trains plain DDP (or one process);
    - FSDP1 without ``use_orig_params`` and a freezing policy other than ``full`` (a FlatParameter cannot be partly
      frozen);
    - FSDP2 with LoRA (PEFT) and a freezing policy or regularizers, with weight averaging, or with regularizers on a
      model that has no ``config`` (the Fisher and memories are computed on a replica built from it).

    A model an earlier trainer already sharded is kept as it is (no second wrapping).
    """
    version = fsdp_version(accelerator)
    if version is None:
        if fsdp_requested(args):
            raise ConfigError(
                "FSDP is configured (training.fsdp / an accelerate FSDP config) but Accelerate did not enable it: it "
                f"runs FSDP only with several processes on GPUs, and this run is {_run_kind(accelerator)}, which "
                "would silently train without sharding; drop the FSDP settings (use recipes/configs/accelerate/"
                "ddp.yaml) or launch on GPUs with recipes/configs/accelerate/fsdp2.yaml")
        return
    plugin = accelerator.state.fsdp_plugin
    if version == 1:
        if freezing_policy != "full" and not getattr(plugin, "use_orig_params", False):
            raise ValueError(
                f"freezing policy {freezing_policy!r} under FSDP (version 1) needs use_orig_params=True: FSDP "
                "flattens each wrapped module's parameters into one tensor whose requires_grad cannot be partly "
                "False. Set fsdp_config: {use_orig_params: true} (or fsdp_version: 2), or use DDP.")
        return
    regularizers = list(regularizers)
    names = ", ".join(getattr(r, "name", type(r).__name__) for r in regularizers)
    if _stateless_sgd(args) and _saves_checkpoints(args):
        raise ConfigError("optim: sgd without momentum keeps no optimizer state, and torch cannot load such an FSDP2 "
                          "checkpoint's optimizer (it finds no tensors), so the run could not resume: set "
                          "training.optim_args: momentum=0.9 (or use adamw_torch), or use DDP")
    if averaging:
        raise ConfigError("averaging (EMA / SWA) is not supported under FSDP2: it keeps and swaps full copies of the "
                          "weights, which FSDP2 shards; drop averaging or use DDP "
                          "(recipes/configs/accelerate/ddp.yaml)")
    if model is not None and hasattr(model, "peft_config") and (regularizers or freezing_policy != "full"):
        what = f"regularizers ({names})" if regularizers else f"freezing policy {freezing_policy!r}"
        raise ConfigError(f"LoRA (peft) with {what} is not supported under FSDP2 (tl_hf does not test the adapter "
                          "wrapping with sharded state); drop one of them or use DDP (recipes/configs/accelerate/"
                          "ddp.yaml)")
    if model is not None and regularizers and getattr(model, "config", None) is None:
        raise ConfigError(f"regularizers ({names}) under FSDP2 need a transformers model (with a config): their "
                          "Fisher / memories are computed on a full replica built from it; use DDP for this model")
    if model is not None and any(is_dtensor(p) for p in model.parameters()):
        # sharded by an earlier trainer (the next task of a sequence): keep it as it is; Accelerate would look for
        # its layer classes by their original names (now FSDP<name>) and fail
        plugin.auto_wrap_policy = None


def _saves_checkpoints(args: Any) -> bool:
    """Whether the run writes resumable checkpoints (``save_strategy`` other than ``no``; unset counts as saving)."""
    strategy = getattr(args, "save_strategy", "steps")
    return str(getattr(strategy, "value", strategy)) != "no"


def _stateless_sgd(args: Any) -> bool:
    """``optim: sgd`` whose ``optim_args`` give no momentum: torch.optim.SGD then keeps no per-parameter state."""
    optim = getattr(args, "optim", None)
    if str(getattr(optim, "value", optim)) != "sgd":
        return False
    pairs = dict(kv.split("=", 1) for kv in str(getattr(args, "optim_args", None) or "").replace(" ", "").split(",")
                 if "=" in kv)
    try:
        return float(pairs.get("momentum", 0)) == 0.0
    except ValueError:
        return False  # a bad momentum fails in the optimizer with its own message


def _run_kind(accelerator: Any) -> str:
    n = getattr(getattr(accelerator, "state", None), "num_processes", 1)
    dtype = str(getattr(getattr(accelerator, "state", None), "distributed_type", "NO")).split(".")[-1]
    return f"{dtype} with {n} process{'es' if n != 1 else ''}"


def shard_like(t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The plain full tensor ``t`` as a ``DTensor`` sharded like ``param`` (this rank keeps its own chunk; no
    communication: every rank holds the same ``t``). ``t`` itself when ``param`` is not a DTensor."""
    if not is_dtensor(param) or is_dtensor(t):
        return t
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(t.to(param.device), param.device_mesh, param.placements, src_data_rank=None)


def _param_for_key(key: str, params: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The parameter a state tensor belongs to: its key is the parameter name or ends with ``.<name>``."""
    if key in params:
        return params[key]
    parts = key.split(".")
    for i in range(1, len(parts)):
        p = params.get(".".join(parts[i:]))
        if p is not None:
            return p
    return None


def shard_state(regularizer: Any, model: torch.nn.Module) -> None:
    """Shard a regularizer's parameter-shaped tensors (Fisher, anchors) like ``model``'s DTensor parameters, through
    its ``state_dict`` / ``load_state_dict``; other tensors (replay memory) stay as they are. Call after ``bind``."""
    params = dict(model.named_parameters())
    if not any(is_dtensor(p) for p in params.values()):
        return
    tensors, meta = regularizer.state_dict()
    if not tensors:
        return
    out = {}
    for k, v in tensors.items():
        p = _param_for_key(k, params)
        out[k] = shard_like(v, p) if p is not None and tuple(v.shape) == tuple(p.shape) else v
    regularizer.load_state_dict(out, meta)


@contextlib.contextmanager
def full_state(regularizers: Iterable[Any]) -> Iterator[None]:
    """Within the block every regularizer's state holds full plain tensors (gathered on every rank: every process
    must enter it, in the same order); the sharded tensors are put back afterwards. A no-op without DTensors."""
    saved = []
    for r in regularizers:
        tensors, meta = r.state_dict()
        if any(is_dtensor(v) for v in tensors.values()):
            saved.append((r, tensors, meta))
            r.load_state_dict({k: v.full_tensor() if is_dtensor(v) else v for k, v in tensors.items()}, meta)
    try:
        yield
    finally:
        for r, tensors, meta in saved:
            r.load_state_dict(tensors, meta)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) weights of an FSDP2 model on every rank (collective), or the plain state dict."""
    if not any(is_dtensor(p) for p in model.parameters()):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _plain_class(model: torch.nn.Module) -> type:
    """The model's own class (``fully_shard`` swaps in a subclass of it and ``FSDPModule``)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if issubclass(c, torch.nn.Module) and not issubclass(c, FSDPModule))


def plain_replica(model: torch.nn.Module) -> torch.nn.Module:
    """A plain (unsharded) copy of a transformers model with the full weights, on every rank (collective); the model
    itself when it holds no DTensors. Its train/eval mode is the model's."""
    if not any(is_dtensor(p) for p in model.parameters()):
        return model
    sd = full_state_dict(model)
    cls = _plain_class(model)
    replica = cls(model.config)
    missing, unexpected = replica.load_state_dict(sd, strict=False)
    if unexpected or any(m in dict(replica.named_parameters()) for m in missing):
        raise RuntimeError(f"the FSDP2 replica of {cls.__name__} does not match its weights (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    device = next(iter(sd.values())).device if sd else torch.device("cpu")
    for n, p in replica.named_parameters():
        p.requires_grad_(model.get_parameter(n).requires_grad)
    return replica.to(device).train(model.training)


def freeze_as_saved(freezer: Any, model: torch.nn.Module) -> None:
    """Before a resume loads the optimizer state into an FSDP2 model: apply the restored unfreezing phase to its
    (DTensor) parameters, since torch loads that state strictly and frozen parameters have none. The gradual
    callback applies the same phase again at ``on_train_begin``. A no-op without DTensors or a dynamic phase."""
    if getattr(freezer, "phase", None) is None or not any(is_dtensor(p) for p in model.parameters()):
        return
    freezer.params = dict(model.named_parameters())
    freezer.apply(freezer.phase)
