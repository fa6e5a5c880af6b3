"""Dark Experience Replay (Buzzega et al. 2020, https://arxiv.org/abs/2004.07211): replay that also keeps the model's
logits of every example at the time it entered the memory, and matches them.

* **Memory:** the replay memory (:class:`~tl_hf.regularizers.replay.ReplayMemory`: budget, reservoir or
  class-balanced selection, seeded, the same on every process). ``end_task`` offers the task's examples to it, then
  computes the model's logits (eval mode, no gradient) for the examples that just entered; examples kept from earlier
  tasks keep the logits of their own insertion time. The logits are one more tensor of the memory, saved in its
  safetensors file with the examples.
* **Loss** (``mode: term``, every micro-batch): a replay batch of ``batch_size`` memory examples, drawn from a generator
  seeded by (seed, step, micro-batch, process), gives ``alpha * MSE(z, z_stored)`` (``F.mse_loss``, mean over all
  logit entries, as the authors' code) plus, for DER++, ``beta * CE(z, y_stored)`` on the same batch (the paper draws a
  second batch for the label term; one batch halves the extra forward). ``beta: 0`` is DER.
* Refused: ``mode: interleave`` (the stored logits need the replay term), and stored logits of another head size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from tl_hf.regularizers.base import CONTINUAL_TAG, StepContext, card_code, check_non_negative, register_regularizer
from tl_hf.regularizers.replay import Replay, ReplayConfig

__all__ = ["DER", "DERConfig", "LOGITS_KEY"]

#: the memory key of the stored logits (never passed to the model)
LOGITS_KEY = "der_logits"


@dataclass
class DERConfig(ReplayConfig):
    mode: Literal["term"] = field(default="term", metadata={"help": "DER trains on the memory through a loss term."})
    alpha: float = field(default=0.3, metadata={"help": "Weight of the logit-matching MSE."})
    beta: float = field(default=0.0, metadata={"help": "Weight of the label CE on the replay batch (0: DER; > 0: "
                                                       "DER++)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "term":
            raise ValueError(f"der mode must be 'term' (the stored logits are matched by a loss term), got "
                             f"{self.mode!r}")
        if self.weight != 1.0:
            raise ValueError("der takes alpha (logit MSE) and beta (label CE) instead of weight; remove weight")
        check_non_negative("der alpha", self.alpha)
        check_non_negative("der beta", self.beta)


def _logits(out) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) or hasattr(out, "keys") else out[0]


def _num_labels(model) -> int | None:
    cfg = getattr(getattr(model, "module", model), "config", None)
    return getattr(cfg, "num_labels", None)


@register_regularizer
class DER(Replay):
    """DER / DER++ (see the module docstring)."""

    name = "der"
    config_cls = DERConfig

    # -- filling the memory -----------------------------------------------------------------------------------------
    def end_task(self, model, dataset, *, source: str = "task", collate_fn=None, device=None, **kwargs) -> None:
        super().end_task(model, dataset, source=source)
        todo = [i for i, ex in enumerate(self.memory.examples) if LOGITS_KEY not in ex]
        if not todo:
            return
        if collate_fn is None:
            from transformers import default_data_collator as collate_fn
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(todo), 64):
                    part = todo[start:start + 64]
                    batch = collate_fn([{k: v for k, v in self.memory.examples[i].items() if k != "labels"}
                                        for i in part])
                    z = _logits(model(**{k: v.to(device) for k, v in batch.items()})).float().cpu()
                    for i, zi in zip(part, z):
                        self.memory.examples[i][LOGITS_KEY] = zi.clone()
        finally:
            model.train(was_training)
        self._check_head(z.shape[-1], "the model of this task")

    def _check_head(self, num_labels: int | None, what: str) -> None:
        sizes = {int(ex[LOGITS_KEY].shape[-1]) for ex in self.memory.examples if LOGITS_KEY in ex}
        if num_labels is not None and sizes - {num_labels} or len(sizes) > 1:
            raise ValueError(f"der: the memory holds logits of head size {sorted(sizes)}, {what} has {num_labels} "
                             "outputs; DER needs one head of a fixed size for all tasks (class_incremental with the "
                             "full label set, or domain_incremental)")

    def bind(self, model) -> None:
        super().bind(model)
        if any(LOGITS_KEY not in ex for ex in self.memory.examples):
            raise ValueError("der: the memory has examples without stored logits (filled by replay, not der?); fill "
                             "it with der.end_task(model, data) or load a der state")
        self._check_head(_num_labels(model), "this model")

    # -- the loss -------------------------------------------------------------------------------------------------
    def sample(self, step: StepContext) -> list[int]:
        """The memory indices of the replay batch of this (step, micro-batch, process)."""
        g = random.Random(hash((self.config.seed, step.global_step, step.micro_index, step.process_index))
                          & 0xFFFFFFFF)
        return [g.randrange(len(self.memory)) for _ in range(self.config.batch_size)]

    def extra_loss(self, model, inputs, step: StepContext):
        c = self.config
        if c.alpha == 0 and c.beta == 0:
            return None
        exs = [dict(self.memory.examples[i]) for i in self.sample(step)]
        stored = torch.stack([ex.pop(LOGITS_KEY) for ex in exs])
        batch = step.prepare(step.collate(exs))
        labels = batch.pop("labels", None)
        z = _logits(step.unwrap(model)(**batch))
        if z.shape != stored.shape:
            self._check_head(int(z.shape[-1]), "this model")
        loss = c.alpha * F.mse_loss(z.float(), stored.to(z.device))
        if c.beta:
            if labels is None:
                raise ValueError("der++ (beta > 0) needs a 'labels' column in the memory")
            loss = loss + c.beta * F.cross_entropy(z.float(), labels.to(z.device))
        self.record_loss(loss)
        return loss

    def card_summary(self) -> str:
        c = self.config
        method = "DER++" if c.beta else "DER"
        s = (f"**{method}** (replay with stored logits): budget {card_code(c.budget)} examples, selection "
             f"{card_code(c.selection)}, logit MSE weight α {card_code(c.alpha)}")
        return s + (f", label CE weight β {card_code(c.beta)}" if c.beta else "") + \
            f", replay batch {card_code(c.batch_size)}"

    def card_tags(self) -> list[str]:
        return ["dark-experience-replay" if not self.config.beta else "der-plus-plus", "replay", CONTINUAL_TAG]
