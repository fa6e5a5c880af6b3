"""Distributed checks made before training. :func:`check_same_checkpoint`: every process of a (multi-node) launch
resumes from the same checkpoint, or none does. :func:`check_save_on_each_node`: ``save_on_each_node`` is not used
on a filesystem the nodes share. :func:`check_deepspeed`: what tl_hf refuses under DeepSpeed, the one
rule, called by ``TransferTrainer.__init__`` (before the Trainer builds its Accelerator) and by the run layer (before
``TrainingArguments`` is built).

DeepSpeed is not installed on tl_hf's test machines and has no CPU path there, so nothing tl_hf adds to the Trainer
is proven under it. Its ZeRO stages own the gradients, the optimizer and (stage 3) the weights, which is exactly
where tl_hf's features work:

- regularizers (EWC, online EWC, L2-SP, replay, DER) add penalty gradients to ``p.grad`` after backward and run their
  own backward passes for the Fisher; ZeRO-2 reduces and partitions gradients into its own buckets during backward;
- freezing policies (every one but ``full``) keep all parameters in the optimizer and toggle ``requires_grad``;
  ZeRO builds its flat, partitioned fp32 state from ``requires_grad`` once, at initialization;
- LLRD (per-depth parameter groups) is replaced by the DeepSpeed config's own optimizer when it has one;
- weight averaging (SWA / EMA) reads and swaps the full weights, which ZeRO-3 partitions.

A run with any of them under DeepSpeed is refused with one line naming them and the fix (DDP or FSDP2), never run
with the feature silently half-applied. A run with none of them is the plain Trainer under DeepSpeed (logged)."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from tl_hf._errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["deepspeed_requested", "deepspeed_unsupported", "check_deepspeed", "check_same_checkpoint",
           "check_save_on_each_node"]

FIX = ("use DDP (recipes/configs/accelerate/ddp.yaml, multi_node.yaml) or FSDP2 (recipes/configs/accelerate/"
       "fsdp2.yaml), or drop them")


def deepspeed_requested(args: Any = None, environ: dict[str, str] | None = None) -> bool:
    """True when the run will use DeepSpeed: ``TrainingArguments.deepspeed`` (a config file or dict), a DeepSpeed
    plugin already built on ``args``, or ``accelerate launch`` with a DeepSpeed config (``ACCELERATE_USE_DEEPSPEED``).
    ``args`` may also be the run config's ``training`` mapping."""
    env = os.environ if environ is None else environ
    if isinstance(args, dict):
        value = args.get("deepspeed")
    else:
        value = getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None)
    return bool(value) or env.get("ACCELERATE_USE_DEEPSPEED", "false").strip().lower() in ("1", "true", "yes", "on")


def deepspeed_unsupported(*, regularizers: Sequence[Any] = (), freezing: Any = None, llrd: Any = None,
                          averaging: Any = None, strategy_auto: bool = False) -> list[str]:
    """The tl_hf features in use that DeepSpeed does not support, each named with why (empty: none in use).
    ``regularizers``: built regularizers or their specs (``{"name": ...}``); the rest: tl_hf's config objects."""
    out = []
    if regularizers:
        names = ", ".join(str(r.get("name") if isinstance(r, dict) else getattr(r, "name", type(r).__name__))
                          for r in regularizers)
        out.append(f"regularizers ({names}: penalty gradients added to p.grad and Fisher backward passes, which "
                   "ZeRO's partitioned gradient buckets do not see)")
    policy = getattr(freezing, "policy", "full")
    if policy != "full":
        out.append(f"freezing policy {policy!r} (it toggles requires_grad, which ZeRO reads once, at "
                   "initialization)")
    if strategy_auto:
        out.append("strategy: auto (it chooses LLRD and a freezing policy)")
    decay, head_lr = getattr(llrd, "decay", 1.0), getattr(llrd, "head_lr", None)
    if decay != 1.0 or head_lr is not None:
        out.append(f"llrd (decay {decay}, head_lr {head_lr}: per-depth parameter groups, which a DeepSpeed "
                   "optimizer replaces)")
    if getattr(averaging, "enabled", False):
        out.append("averaging (it swaps the full weights, which ZeRO-3 partitions)")
    return out


def check_deepspeed(args: Any = None, *, environ: dict[str, str] | None = None, **features: Any) -> None:
    """Refuse DeepSpeed with any of tl_hf's features (:func:`deepspeed_unsupported`), before training, with a
    one-line :class:`~tl_hf._errors.ConfigError`; no-op when DeepSpeed is not requested."""
    if not deepspeed_requested(args, environ):
        return
    bad = deepspeed_unsupported(**features)
    if bad:
        raise ConfigError(f"DeepSpeed is not supported with tl_hf's {'; '.join(bad)}: {FIX}")
    logger.warning("DeepSpeed: no tl_hf feature is active (no regularizers, freezing policy full, no LLRD), so this "
                   "is the plain Trainer under DeepSpeed; tl_hf's tests do not cover DeepSpeed")


def check_same_checkpoint(args: Any, checkpoint: str | None) -> None:
    """Every process must resume from the same ``checkpoint-N`` (or all start fresh), else a one-line
    :class:`~tl_hf._errors.ConfigError` on every process, naming what each node found and the fix. Each process looks
    in its own ``output_dir``: on nodes without a shared filesystem and ``save_on_each_node=false`` only node 0 has
    the checkpoints, and a node starting fresh beside resumed ones would train a different run (or hang). A no-op in
    a single process. ``args``: the run's ``TrainingArguments`` (every process must call this)."""
    if getattr(args, "world_size", 1) < 2:  # (reading it sets up the process group, as the Trainer would)
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    name = "none"
    if checkpoint:
        name = os.path.basename(os.path.normpath(checkpoint))
        if not os.path.isfile(os.path.join(checkpoint, "trainer_state.json")):
            # e.g. only this process's rng_state_N.pth: every process writes its own, only saving processes the rest
            name += " without trainer_state.json"
    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, (_node(), name))
    if len({n for _, n in found}) == 1:
        return
    by_node: dict[int, set] = {}
    for nd, n in found:
        by_node.setdefault(nd, set()).add(n)
    seen = ", ".join(f"node {nd}: {'/'.join(sorted(v))}" for nd, v in sorted(by_node.items()))
    if getattr(args, "save_on_each_node", False):
        fix = ("with training.save_on_each_node=true each node resumes from its own copy in its output_dir: copy the "
               "checkpoint to the nodes that lack it, or set training.resume_from_checkpoint to one every node has")
    else:
        fix = ("with training.save_on_each_node=false only the global main process (node 0) writes checkpoints, so "
               "output_dir must be on a filesystem every node sees: put it there, or set "
               "training.save_on_each_node=true (each node keeps its own copy), or copy the checkpoint to every node")
    raise ConfigError(f"the processes of this launch found different checkpoints to resume from in "
                      f"training.output_dir ({seen}); {fix}")


def _node() -> int:
    return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0")))


def check_save_on_each_node(args: Any) -> None:
    """With ``save_on_each_node=true`` on several nodes, ``output_dir`` must not be one folder the nodes share (their
    local main processes would write the same checkpoint files at once). Each node's local main process drops a marker
    file there and looks for the other nodes' markers; a node that sees one refuses on every process with a one-line
    :class:`~tl_hf._errors.ConfigError`. A no-op without ``save_on_each_node`` or on one node. Every process must call
    this."""
    if not getattr(args, "save_on_each_node", False) or getattr(args, "world_size", 1) < 2:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    token = [os.urandom(6).hex() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(token, src=0)
    nodes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, _node())
    if len(set(nodes)) < 2:
        return
    mine = os.path.join(args.output_dir, f".tl_hf_node_{token[0]}_{_node()}")
    if args.should_save:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(mine, "w") as f:
            f.write(str(os.getpid()))
    dist.barrier()
    seen = sorted({n for n in nodes if n != _node() and os.path.exists(
        os.path.join(args.output_dir, f".tl_hf_node_{token[0]}_{n}"))}) if args.should_save else []
    dist.barrier()
    if args.should_save:
        os.remove(mine)
    shared: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shared, (_node(), seen))
    pairs = [(nd, s) for nd, s in shared if s]
    if pairs:
        nd, s = pairs[0]
        raise ConfigError(f"training.save_on_each_node=true, but training.output_dir {args.output_dir} is one folder "
                          f"the nodes share (node {nd} sees the files of node {s[0]}): every node would write the same "
                          "checkpoint files at once; set training.save_on_each_node=false on a shared filesystem (only "
                          "node 0 then writes), or give each node a local output_dir")
