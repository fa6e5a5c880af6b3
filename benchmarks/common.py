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


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A docs table: the header, the ``|---|`` rule, one line per row (cells as ``str``)."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def yes_no(flag: bool) -> str:
    """A docs table's "met" cell."""
    return "yes" if flag else "no"


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


class Lockstep:
    """Runs several trainers in threads that take turns one optimizer step at a time (a baton passed at every
    ``on_step_begin``), so their steps interleave within milliseconds and a slow drift of the machine hits every
    variant alike. A step's time runs from getting the baton to the next ``on_step_begin``: forward, backward,
    optimizer, callbacks, logging and the next batch's loading, nothing of the other trainers. ``cpu_times`` holds the
    same steps' CPU time of the trainer's thread (``time.thread_time``): with one torch thread all of a step's work
    runs there, and time the thread spends descheduled by other processes does not count."""

    def __init__(self, names) -> None:
        import threading

        self.names, self.active, self.turn = list(names), set(names), names[0]
        self.cond = threading.Condition()
        self.times = {n: [] for n in names}
        self.cpu_times = {n: [] for n in names}

    def callback(self, name: str):
        from transformers import TrainerCallback

        lock, start = self, {}

        def stamp():
            now, cpu = time.perf_counter(), time.thread_time()
            if name in start:
                lock.times[name].append(now - start[name][0])
                lock.cpu_times[name].append(cpu - start[name][1])

        class Turn(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                stamp()
                lock._pass(name)
                start[name] = (time.perf_counter(), time.thread_time())

            def on_train_end(self, args, state, control, **kw):
                stamp()
                lock._pass(name, done=True)

        return Turn()

    def _pass(self, name: str, done: bool = False) -> None:
        with self.cond:
            if done:
                self.active.discard(name)
            order = self.names[self.names.index(name) + 1:] + self.names[:self.names.index(name) + 1]
            self.turn = next((n for n in order if n in self.active), None)
            self.cond.notify_all()
            if not done:
                self.cond.wait_for(lambda: self.turn == name)

    def run(self, trainers: dict) -> dict[str, list[float]]:
        import threading

        errors = []

        def go(n):
            try:
                with self.cond:
                    self.cond.wait_for(lambda: self.turn == n)
                trainers[n].train()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                self._pass(n, done=True)

        threads = [threading.Thread(target=go, args=(n,)) for n in self.names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return self.times


def paired_ratios(base: list[float], other: list[float]) -> list[float]:
    """``other[i] / base[i]``: step i of two variants that ran next to each other (:class:`Lockstep`)."""
    return [b / a for a, b in zip(base, other)]


def bootstrap_median_ci(xs: list[float], n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``xs`` (resampled with replacement, ``n`` times)."""
    import random

    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    lo = int((1 - level) / 2 * n)
    return meds[lo], meds[n - 1 - lo]


def task_mask(pairs, n_out: int):
    """Bool ``[tasks, n_out]``: row ``t`` marks the output units of task ``t``'s classes (task-incremental masking)."""
    import torch

    mask = torch.zeros(len(pairs), n_out, dtype=torch.bool)
    for t, classes in enumerate(pairs):
        mask[t, list(classes)] = True
    return mask


def masked_outputs(logits, labels=None, task_ids=None, mask=None) -> dict:
    """van de Ven's "multi-headed" task-IL on one output layer: with ``task_ids`` every example only sees its own
    task's units (the others are set to -1e9); ``loss`` = cross-entropy when ``labels`` are given."""
    import torch

    if task_ids is not None:
        logits = logits.masked_fill(~mask.to(logits.device)[task_ids], -1e9)
    out = {"logits": logits}
    if labels is not None:
        out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
    return out


def with_task_ids(tasks):
    """The same tasks with a ``task_ids`` column (the task's index) in every train / eval example."""
    import torch

    from tl_hf.continual import Task, TensorDictDataset

    def add(ds, k):
        return TensorDictDataset(**ds.columns, task_ids=torch.full((len(ds),), k, dtype=torch.long))

    return [Task(name=t.name, train=add(t.train, k), eval=add(t.eval, k), labels=t.labels, class_names=t.class_names)
            for k, t in enumerate(tasks)]
