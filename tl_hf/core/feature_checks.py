"""The checks and data wrappers of the feature cache (:mod:`tl_hf.core.feature_cache`): which modules are cached,
what the trainer setup must be, datasets and collators that carry each example's index, and the determinism check of
the data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from tl_hf.core.feature_store import _FIX, _err

__all__ = ["INDEX_KEY", "IndexCollator", "IndexedDataset", "check_deterministic_data", "check_trainer_setup",
           "frozen_modules"]

#: batch key carrying each example's position in its dataset (added and removed by TransferTrainer)
INDEX_KEY = "tl_hf_example_index"

# ---------------------------------------------------------------------------------------------------------------------
# Which modules are cached
# ---------------------------------------------------------------------------------------------------------------------

def frozen_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that have parameters, all frozen. The outermost of them that the forward pass calls are cached."""
    return [(n, m) for n, m in model.named_modules()
            if (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)]


def _trainable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


def check_trainer_setup(model: nn.Module, depths: Mapping[str, int], head_depth: int, *, regularizers=(),
                        args=None, freeze_norm_stats: bool = True) -> None:
    """Refuse (one line) what the cache cannot reproduce: trainable backbone, regularizers, BN in train mode, ..."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and depths.get(n) != head_depth]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise _err(f"needs the backbone entirely frozen, but {bad[0]!r}{more} outside the head is trainable; freeze "
                   f"it (policy feature_extraction trains only the head) {_FIX}")
    if regularizers:
        names = ", ".join(getattr(r, "name", type(r).__name__) for r in regularizers)
        raise _err(f"cannot be combined with regularizers ({names}): they need full forward passes; remove them "
                   f"{_FIX}")
    if args is not None and getattr(args, "torch_compile", False):
        raise _err(f"does not work with torch_compile (a compiled graph ignores the cached modules); set "
                   f"torch_compile: false {_FIX}")
    if args is not None and (getattr(args, "fsdp", None) or getattr(args, "deepspeed", None)):
        raise _err(f"does not work with FSDP or DeepSpeed (they rewrap the modules it caches); use DDP (torchrun) "
                   f"{_FIX}")
    if args is not None and getattr(args, "n_gpu", 1) > 1:
        raise _err(f"does not work with torch.nn.DataParallel ({args.n_gpu} GPUs in one process); launch one process "
                   f"per GPU (torchrun / accelerate launch) {_FIX}")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            has_params = any(True for _ in m.parameters(recurse=False))
            if not (freeze_norm_stats and has_params and m.track_running_stats):
                raise _err(f"frozen BatchNorm {name!r} normalizes with batch statistics when training without the "
                           f"cache (freeze_norm_stats off, or no affine parameters or running statistics), which a "
                           f"per-example cache cannot reproduce; set freezing.freeze_norm_stats: true {_FIX}")


# ---------------------------------------------------------------------------------------------------------------------
# Datasets that carry each example's index
# ---------------------------------------------------------------------------------------------------------------------

class IndexedDataset(torch.utils.data.Dataset):
    """``base[i]`` plus ``{INDEX_KEY: i}``; ``base`` must be map-style with dict examples."""

    def __init__(self, base, what: str = "training") -> None:
        if isinstance(base, torch.utils.data.IterableDataset) or not (hasattr(base, "__len__")
                                                                      and hasattr(base, "__getitem__")):
            raise _err(f"needs a map-style {what} dataset (with __len__ and __getitem__), got "
                       f"{type(base).__name__}; materialize it (e.g. datasets.Dataset.from_generator) {_FIX}")
        self.base = base
        self.what = what

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        if not isinstance(item, Mapping):
            raise _err(f"{self.what} examples must be dicts of model inputs, got {type(item).__name__} {_FIX}")
        return {**item, INDEX_KEY: int(i)}


class IndexCollator:
    """Runs ``collator`` on the examples without their index, then adds the indices as a tensor."""

    def __init__(self, collator: Callable) -> None:
        self.collator = collator

    def __call__(self, features: list) -> dict:
        idx = [f[INDEX_KEY] for f in features]
        batch = self.collator([{k: v for k, v in f.items() if k != INDEX_KEY} for f in features])
        batch[INDEX_KEY] = torch.tensor(idx, dtype=torch.long)
        return batch


def _same(a: Any, b: Any) -> bool:
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    if sa != sb:
        return False
    for x, y in zip(la, lb):
        try:
            if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
                if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
                        and x.dtype == y.dtype and torch.equal(x, y)):
                    return False
            elif hasattr(x, "shape") and hasattr(x, "dtype"):  # numpy
                import numpy as np

                if not np.array_equal(x, y):
                    return False
            elif x != y:
                return False
        except Exception:  # noqa: BLE001 - an object we cannot compare: assume it is the same
            continue
    return True


def check_deterministic_data(dataset, collate: Callable, what: str, n: int = 2) -> None:
    """Refuse data whose first ``n`` examples (or their collated batch) differ between two reads."""
    k = min(n, len(dataset))
    a = [dataset[i] for i in range(k)]
    if not _same(a, [dataset[i] for i in range(k)]):
        raise _err(f"the {what} dataset returned different values for the same example twice (random augmentation "
                   f"or transform?); caching needs deterministic data: remove the randomness {_FIX}")
    if k and not _same(collate([dict(x) for x in a]), collate([dict(x) for x in a])):
        raise _err(f"the data collator returned different batches for the same {what} examples (random masking or "
                   f"augmentation?); caching needs a deterministic collator {_FIX}")
