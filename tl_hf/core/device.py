"""What the machine offers: the one accelerator check (a CPU-only machine needs ``use_cpu`` for DDP over gloo and no
pinned memory)."""

from __future__ import annotations

__all__ = ["has_accelerator"]


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU, ...)."""
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()
