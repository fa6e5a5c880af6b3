"""Experience replay (Rolnick et al. 2019, https://arxiv.org/abs/1811.11682; Chaudhry et al. 2019,
https://arxiv.org/abs/1902.10486): keep a small memory of earlier examples and train on them alongside the new task.

* Memory: a fixed ``budget`` of examples, chosen by ``reservoir`` sampling (every example seen so far equally likely)
  or ``class_balanced`` (an equal share per class; within a class, reservoir), with a seeded generator, so every
  process builds the same memory.
* Mixing: ``interleave`` builds one training set of the new data plus ``ratio`` replayed examples, each memory example
  used before any repeats (like ``datasets.interleave_datasets(stopping_strategy="all_exhausted")``; never
  ``first_exhausted``, which would drop most new data); or ``term`` adds ``weight × loss(replay batch)`` to every
  micro-batch's loss, with a replay batch drawn per (step, micro-batch, process) from a seeded generator.
* Saved as ``safetensors`` (padded tensors + lengths) and JSON (provenance: source name and index of every example).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tl_hf.regularizers.base import (CONTINUAL_TAG, Regularizer, RegularizerConfig, StepContext, card_code,
                                     check_non_negative, register_regularizer)

__all__ = ["Replay", "ReplayConfig", "ReplayMemory", "MixedDataset", "check_replay_budget", "check_replay_scenario",
           "REPLAY_TASK_IL"]

#: why replay is refused with one head per task (the runner's wording; the recipe passes its own)
REPLAY_TASK_IL = (
    "replay is not supported in the task_incremental scenario: the runner swaps one head per task into the model, so "
    "replayed examples of earlier tasks would be trained through the current task's head with labels that belong to "
    "their own head. Use replay with class_incremental or domain_incremental (one shared head)")


def check_replay_scenario(scenario: str, message: str = REPLAY_TASK_IL, *, error: type[Exception] = ValueError) -> None:
    """The one rule for replay and its sources in a ``task_incremental`` run (one head per task): refused, with
    ``message`` (the caller's wording) as an ``error``. A replayed example would go through the current task's head
    with a label that belongs to its own task's head."""
    if scenario == "task_incremental":
        raise error(message)


def check_replay_budget(budget: int, available: int, source: str, lower: str | None = None, *, prefix: str = "",
                        error: type[Exception] = ValueError) -> None:
    """The one replay-budget rule: a memory of ``budget`` examples must be fillable from the ``available`` ones.

    The message is ``{prefix}replay budget {budget} is larger than {source}; lower {lower}``; ``lower`` defaults to
    ``the replay budget to at most {available}``."""
    if budget > available:
        lower = f"the replay budget to at most {available}" if lower is None else lower
        raise error(f"{prefix}replay budget {budget} is larger than {source}; lower {lower}")


@dataclass
class ReplayConfig(RegularizerConfig):
    budget: int = field(default=200, metadata={"help": "Number of examples kept in memory."})
    selection: Literal["reservoir", "class_balanced"] = field(default="reservoir", metadata={
        "help": "How examples enter the memory."})
    mode: Literal["interleave", "term"] = field(default="interleave", metadata={
        "help": "interleave: mix memory into the training set; term: add a replay loss to every step."})
    ratio: float = field(default=0.2, metadata={"help": "interleave: fraction of replayed examples in the mix."})
    weight: float = field(default=1.0, metadata={"help": "term: weight of the replay loss."})
    batch_size: int = field(default=16, metadata={"help": "term: replayed examples per micro-batch."})
    seed: int = field(default=0, metadata={"help": "Seed of selection and mixing."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("budget", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"replay {k} must be an int >= 1, got {v!r}")
        if self.selection not in ("reservoir", "class_balanced"):
            raise ValueError(f"replay selection must be 'reservoir' or 'class_balanced', got {self.selection!r}")
        if self.mode not in ("interleave", "term"):
            raise ValueError(f"replay mode must be 'interleave' or 'term', got {self.mode!r}")
        if not isinstance(self.ratio, (int, float)) or not 0.0 < self.ratio < 1.0:
            raise ValueError(f"replay ratio must be in (0, 1), got {self.ratio!r}")
        check_non_negative("replay weight", self.weight)


def _to_tensor_dict(example: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in example.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().cpu()
        elif isinstance(v, (int, float, bool)) or (isinstance(v, list) and v and isinstance(v[0], (int, float, list))):
            out[k] = torch.tensor(v)
        # strings and other non-tensor columns are not kept
    return out


class ReplayMemory:
    """A seeded, fixed-budget memory of examples (dicts of tensors), with provenance."""

    def __init__(self, budget: int, selection: str = "reservoir", seed: int = 0) -> None:
        self.budget, self.selection = budget, selection
        self.rng = random.Random(seed)
        self.examples: list[dict[str, torch.Tensor]] = []
        self.provenance: list[tuple[str, int]] = []
        self.seen = 0
        self.seen_per_class: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def add_dataset(self, dataset, source: str = "task") -> None:
        """Offer every example of ``dataset`` (in order) to the memory. Refuses, before adding anything, a budget
        that all examples seen so far could not fill."""
        n = self.seen + len(dataset)
        check_replay_budget(self.budget, n, f"the data it draws from ({n} examples so far)", "replay.budget")
        for i in range(len(dataset)):
            self.add(dataset[i], (source, i))

    def add(self, example: dict, origin: tuple[str, int]) -> None:
        ex = _to_tensor_dict(example)
        self.seen += 1
        if self.selection == "reservoir":
            if len(self.examples) < self.budget:
                self._append(ex, origin)
            else:
                j = self.rng.randrange(self.seen)
                if j < self.budget:
                    self.examples[j], self.provenance[j] = ex, origin
            return
        # class-balanced: every class seen gets budget // n_classes slots; reservoir within a class
        if "labels" not in ex:
            raise ValueError("class_balanced replay needs a 'labels' column")
        y = int(ex["labels"])
        self.seen_per_class[y] = self.seen_per_class.get(y, 0) + 1
        per_class = self._by_class()
        if len(self.examples) < self.budget:
            self._append(ex, origin)
            return
        quota = self.budget // len(self.seen_per_class)
        mine = per_class.get(y, [])
        if len(mine) < quota:  # evict from the class with most examples
            big = max(per_class, key=lambda c: (len(per_class[c]), c))
            victim = per_class[big][self.rng.randrange(len(per_class[big]))]
            self.examples[victim], self.provenance[victim] = ex, origin
        else:
            j = self.rng.randrange(self.seen_per_class[y])
            if j < len(mine):
                self.examples[mine[j]], self.provenance[mine[j]] = ex, origin

    def _append(self, ex, origin) -> None:
        self.examples.append(ex)
        self.provenance.append(origin)

    def _by_class(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, ex in enumerate(self.examples):
            out.setdefault(int(ex["labels"]), []).append(i)
        return out

    def class_counts(self) -> dict[int, int]:
        return {c: len(v) for c, v in sorted(self._by_class().items())}

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        keys = sorted({k for ex in self.examples for k in ex})
        for k in keys:
            vals = [ex[k] for ex in self.examples]
            if any(v.shape != vals[0].shape for v in vals):  # variable length (token ids): pad, keep the lengths
                lengths = torch.tensor([v.shape[0] for v in vals])
                width = int(lengths.max())
                padded = torch.zeros((len(vals), width) + tuple(vals[0].shape[1:]), dtype=vals[0].dtype)
                for i, v in enumerate(vals):
                    padded[i, : v.shape[0]] = v
                tensors[f"{k}"] = padded
                tensors[f"{k}.__len__"] = lengths
            else:
                tensors[k] = torch.stack(vals) if vals else torch.zeros(0)
        meta = {"budget": self.budget, "selection": self.selection, "seen": self.seen,
                "seen_per_class": {str(c): n for c, n in self.seen_per_class.items()},
                "provenance": [list(p) for p in self.provenance], "keys": keys,
                "rng_state": _rng_to_json(self.rng.getstate())}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        n = len(meta.get("provenance", []))
        self.examples = [{} for _ in range(n)]
        for k in meta.get("keys", []):
            t = tensors[k]
            lengths = tensors.get(f"{k}.__len__")
            for i in range(n):
                self.examples[i][k] = t[i, : int(lengths[i])].clone() if lengths is not None else t[i].clone()
        self.provenance = [tuple(p) for p in meta.get("provenance", [])]
        self.seen = int(meta.get("seen", n))
        self.seen_per_class = {int(c): int(v) for c, v in meta.get("seen_per_class", {}).items()}
        if "rng_state" in meta:
            self.rng.setstate(_rng_from_json(meta["rng_state"]))


def _rng_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class MixedDataset(torch.utils.data.Dataset):
    """New data plus replayed memory examples in a seeded, fixed order (same on every process)."""

    def __init__(self, new, memory: list[dict], ratio: float, seed: int = 0) -> None:
        self.new, self.memory = new, memory
        n_new = len(new)
        n_rep = math.ceil(n_new * ratio / (1.0 - ratio)) if memory else 0
        rng = random.Random(seed)
        rep: list[int] = []
        while len(rep) < n_rep:  # every memory example once before any repeats
            perm = list(range(len(memory)))
            rng.shuffle(perm)
            rep.extend(perm)
        plan = [(0, i) for i in range(n_new)] + [(1, j) for j in rep[:n_rep]]
        rng.shuffle(plan)
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i):
        src, j = self.plan[i]
        return self.new[j] if src == 0 else dict(self.memory[j])


@register_regularizer
class Replay(Regularizer):
    """Replay as a regularizer: ``end_task`` fills the memory; training mixes it in (see module docstring)."""

    name = "replay"
    config_cls = ReplayConfig

    def __init__(self, config=None, **kwargs) -> None:
        super().__init__(config, **kwargs)
        c = self.config
        self.memory = ReplayMemory(c.budget, c.selection, c.seed)

    def end_task(self, model, dataset, *, source: str = "task", **kwargs) -> None:  # noqa: ARG002
        self.memory.add_dataset(dataset, source)

    @property
    def active(self) -> bool:
        return len(self.memory) > 0

    def card_summary(self) -> str:
        c = self.config
        s = (f"**replay**: budget {card_code(c.budget)} examples, selection {card_code(c.selection)}, "
             f"mode {card_code(c.mode)}")
        return s + (f", ratio {card_code(c.ratio)}" if c.mode == "interleave" else f", weight {card_code(c.weight)}")

    def card_tags(self) -> list[str]:
        return ["replay", CONTINUAL_TAG]

    def bind(self, model) -> None:
        if not len(self.memory):
            raise ValueError("replay memory is empty: call replay.end_task(model, previous_task_data) or "
                             "replay.load(folder) before training with it")

    def wrap_train_dataset(self, dataset):
        if self.config.mode != "interleave":
            return dataset
        return MixedDataset(dataset, self.memory.examples, self.config.ratio, self.config.seed)

    def extra_loss(self, model, inputs, step: StepContext):
        if self.config.mode != "term" or self.config.weight == 0:
            return None
        g = random.Random(hash((self.config.seed, step.global_step, step.micro_index, step.process_index)) & 0xFFFFFFFF)
        idx = [g.randrange(len(self.memory)) for _ in range(self.config.batch_size)]
        batch = step.prepare(step.collate([dict(self.memory.examples[i]) for i in idx]))
        out = step.unwrap(model)(**batch)
        loss = out["loss"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]
        self.record_loss(loss)
        return self.config.weight * loss

    def state_dict(self):
        return self.memory.state_dict()

    def load_state_dict(self, tensors, meta) -> None:
        self.memory.load_state_dict(tensors, meta)
