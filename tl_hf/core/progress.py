"""Progress bars for the long steps that run outside the Trainer's loop (Fisher estimation, feature caching,
continual evaluation, WiSE-FT sweeps): the one rule for "a tqdm bar on the local main process, unless disabled".

``TransferTrainer``, the continual runner and the WiSE-FT sweep wrap those steps in
``progress_bars(not args.disable_tqdm)``; a direct
call of a library function shows a bar unless a caller disabled them (or passes ``enabled=False``).
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from typing import Iterable, Iterator

from tqdm.auto import tqdm

__all__ = ["is_local_main_process", "progress_bar", "progress_bars"]

_ENABLED: ContextVar[bool | None] = ContextVar("tl_hf_progress_bars", default=None)


def is_local_main_process() -> bool:
    """Local rank 0: accelerate's state when it is set up (as under a Trainer), else ``$LOCAL_RANK`` (torchrun and
    ``accelerate launch`` set it), else a single process."""
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state:
            return bool(PartialState().is_local_main_process)
    except ImportError:  # pragma: no cover - accelerate is a dependency
        pass
    return int(os.environ.get("LOCAL_RANK", "0") or 0) == 0


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, bars are shown (on the local main process) only if ``enabled`` (``not disable_tqdm``)."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", enabled: bool | None = None) -> tqdm:
    """``tqdm(iterable)`` shown on the local main process when enabled (``enabled``, else the enclosing
    :func:`progress_bars`, else on); elsewhere a silent pass-through with the same interface (``update``, ``close``)."""
    on = enabled if enabled is not None else _ENABLED.get()
    show = (on is None or on) and is_local_main_process()
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        try:
            total = len(iterable)
        except TypeError:
            total = None
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=False, dynamic_ncols=True)
