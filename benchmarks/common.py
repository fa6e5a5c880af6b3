"""Shared helpers for benchmarks: machine/version record, medians, results file, docs table update."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


def environment() -> dict:
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "machine": platform.machine(), "processor": platform.processor() or "unknown", "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "accelerate": accelerate.__version__, "peft": peft.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def median(xs):
    return statistics.median(xs)


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **payload}, indent=2) + "\n")
    return path


def update_docs_section(name: str, markdown: str) -> None:
    """Replace the section between <!-- name:start --> and <!-- name:end --> in docs/benchmarks.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)


def train_step(model, batch, opt, reg=None, extra_loss=None) -> None:
    """One optimizer step as TransferTrainer takes it: forward, backward, the regularizer's penalty gradient, clip,
    step, zero_grad. ``extra_loss(model)`` is added to the loss (the naive autograd penalty)."""
    import torch

    loss = model(**batch).loss
    if extra_loss is not None:
        loss = loss + extra_loss(model)
    loss.backward()
    if reg is not None:
        reg.add_penalty_grad([(n, p) for n, p in model.named_parameters() if p.grad is not None])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def read_jsonl(path: Path) -> list[dict]:
    """The rows a cell-by-cell benchmark appended so far (none when the file is missing)."""
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def append_jsonl(path: Path, row: dict) -> None:
    """Append one finished cell, so an interrupted benchmark keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def step_timer():
    """A ``TrainerCallback`` that stamps each step's start and the train end (``.stamps``): step times by difference."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_begin(self, args, state, control, **kw):
            self.stamps.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kw):
            self.stamps.append(time.perf_counter())

    return StepTimer()
