"""The task registry: what a ``task:`` value in a config means. Configs only name a task; they never point at code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TASKS", "TaskSpec", "register_task"]


@dataclass
class TaskSpec:
    """What a ``task:`` value means: the dataclass of its ``data`` section and the function that runs it."""

    data_cls: type
    runner: Any  # callable(RunConfig) -> dict of results
    description: str = ""


#: task name -> spec, filled by :func:`register_task` (the built-in tasks register when :mod:`tl_hf.run.tasks` is
#: imported)
TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, data_cls: type, runner, description: str = "") -> None:
    """Register task ``name``; a name that is already registered is refused (``ValueError``)."""
    if name in TASKS:
        old = TASKS[name].runner
        raise ValueError(f"task {name!r} is already registered (runner "
                         f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)!s}); "
                         "register a new task under a new name")
    TASKS[name] = TaskSpec(data_cls, runner, description)
