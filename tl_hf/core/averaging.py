"""Weight averaging of the trainable weights during fine-tuning: an exponential moving average (EMA) or stochastic
weight averaging (SWA, Izmailov et al. 2018, https://arxiv.org/abs/1803.05407), with the update rules of
``torch.optim.swa_utils`` (``get_ema_multi_avg_fn`` / ``get_swa_multi_avg_fn``) applied to a list of tensors (not an
``AveragedModel``, which would deep-copy the whole model, frozen backbone included).

* **What is averaged:** every parameter that the freezing policy may train (``requires_grad`` when the trainer was
  built). The average starts at train begin from the weights (``avg_0 = theta_0``).
* **EMA:** ``avg_t = decay * avg_{t-1} + (1 - decay) * theta_t`` after every optimizer step ``t > start_step``;
  until ``start_step`` the average follows the weights (``avg_t = theta_t``).
* **SWA:** the equal mean of ``theta_t`` over the optimizer steps ``t >= max(start_step, 1)`` with
  ``(t - start_step) % every == 0``; before the first such step the average follows the weights.
* **Frozen, then unfrozen (gradual unfreezing, LP-FT):** a frozen parameter's weight does not change, so its average
  equals its weight while it is frozen; averaging it effectively starts when it is unfrozen (the EMA / SWA formulas over
  a constant prefix). A parameter that was frozen when the trainer was built (outside the policy) and trains later was
  never in the average: that is refused at the first step it trains.
* **Use:** with ``eval_with_average`` every evaluation runs on the averaged weights (swapped in, then back); with
  ``final_average`` the average is copied into the model when training ends, so the saved model is the averaged one.
* **Checkpoints:** ``tl_hf_averaging.safetensors`` + ``tl_hf_averaging.json`` in every checkpoint; restored on resume.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import get_ema_multi_avg_fn, get_swa_multi_avg_fn
from transformers import TrainerCallback

from tl_hf.core.state import CorruptStateError, atomic_write_json, read_json

__all__ = ["AVERAGING_METHODS", "AveragingConfig", "WeightAverager", "WeightAveragingCallback"]

AVERAGING_METHODS = ("none", "ema", "swa")
_PREFIX = "tl_hf_averaging"


@dataclass
class AveragingConfig:
    """Weight averaging of the trainable weights (``method: none`` = off)."""

    method: str = field(default="none", metadata={"help": f"One of {', '.join(AVERAGING_METHODS)}."})
    decay: float = field(default=0.999, metadata={"help": "ema: weight of the old average per step, in [0, 1)."})
    start_step: int = field(default=0, metadata={"help": "Optimizer step from which the average is taken; before "
                                                         "it, the average follows the weights."})
    every: int = field(default=1, metadata={"help": "swa: average the weights every this many steps."})
    eval_with_average: bool = field(default=True, metadata={"help": "Evaluate on the averaged weights."})
    final_average: bool = field(default=True, metadata={"help": "Copy the average into the model when training "
                                                                "ends (the saved model is the averaged one)."})

    def __post_init__(self) -> None:
        if self.method not in AVERAGING_METHODS:
            raise ValueError(f"averaging.method must be one of {', '.join(AVERAGING_METHODS)}, got {self.method!r}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0.0 <= self.decay < 1.0:
            raise ValueError(f"averaging.decay must be in [0, 1), got {self.decay!r}")
        for k in ("start_step", "every"):
            v = getattr(self, k)
            low = 1 if k == "every" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"averaging.{k} must be an int >= {low}, got {v!r}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"


class WeightAverager:
    """The running average of a fixed set of parameters (by name), updated after each optimizer step."""

    def __init__(self, config: AveragingConfig, names: list[str]) -> None:
        self.config = config
        self.names = sorted(names)
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_averaged = 0
        self.params: dict[str, torch.nn.Parameter] = {}
        self._fn = get_ema_multi_avg_fn(config.decay) if config.method == "ema" else get_swa_multi_avg_fn()

    def bind(self, model: torch.nn.Module) -> None:
        """Hold ``model``'s parameters; start the average from them unless a checkpoint restored it."""
        named = dict(model.named_parameters())
        missing = [n for n in self.names if n not in named]
        if missing:
            raise ValueError(f"weight averaging: the model has no parameter {missing[0]!r} (it changed after the "
                             "trainer was built)")
        self.params = {n: named[n] for n in self.names}
        self._outside = [(n, p) for n, p in named.items() if n not in self.params]
        if not self.shadow:
            self.shadow = {n: p.detach().clone() for n, p in self.params.items()}
            self.num_averaged = 0
        else:  # restored from a checkpoint (on the CPU)
            self.shadow = {n: t.to(self.params[n].device) for n, t in self.shadow.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step ``step`` (1-based)."""
        stray = next((n for n, p in self._outside if p.requires_grad), None)
        if stray is not None:
            raise ValueError(f"weight averaging: parameter {stray!r} trains at step {step} but was frozen when the "
                             "trainer was built, so the average never saw it; set requires_grad=True before building "
                             "the trainer (the freezing policy then manages it), or set averaging.method: none")
        c = self.config
        names = self.names
        avg = [self.shadow[n] for n in names]
        cur = [self.params[n].detach() for n in names]
        if step <= c.start_step and c.method == "ema" or step < c.start_step:
            torch._foreach_copy_(avg, cur)  # before the window: follow the weights
            return
        if c.method == "swa" and (step - c.start_step) % c.every:
            return
        self._fn(avg, cur, self.num_averaged)
        self.num_averaged += 1

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; its own come back afterwards."""
        if not self.params:
            yield
            return
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        self.copy_into_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])

    @torch.no_grad()
    def copy_into_model(self) -> None:
        for n, p in self.params.items():
            p.copy_(self.shadow[n])

    # -- state ----------------------------------------------------------------------------------------------------
    def save(self, folder: str) -> None:
        tmp = os.path.join(folder, f"_tmp_{_PREFIX}.safetensors")
        save_file({n: t.detach().contiguous().cpu() for n, t in self.shadow.items()}, tmp)
        os.replace(tmp, os.path.join(folder, f"{_PREFIX}.safetensors"))
        atomic_write_json(os.path.join(folder, f"{_PREFIX}.json"),
                          {"config": asdict(self.config), "num_averaged": self.num_averaged, "names": self.names})

    def load(self, folder: str) -> None:
        jpath, tpath = (os.path.join(folder, f"{_PREFIX}.{ext}") for ext in ("json", "safetensors"))
        if not os.path.exists(jpath):
            raise CorruptStateError(f"{folder} has no {_PREFIX}.json: it was written without weight averaging (or is "
                                    "incomplete); resume from another checkpoint or set averaging.method: none")
        doc = read_json(jpath)
        if doc.get("config", {}).get("method") != self.config.method or doc.get("names") != self.names:
            raise ValueError(f"{jpath} holds a {doc.get('config', {}).get('method')} average of "
                             f"{len(doc.get('names', []))} parameters; this run asks for {self.config.method} of "
                             f"{len(self.names)}: resume with the same averaging and freezing settings")
        try:
            tensors = load_file(tpath)
        except Exception as exc:  # safetensors raises its own error types for truncated files
            raise CorruptStateError(f"{tpath} is missing, truncated or corrupt ({exc}); resume from an earlier "
                                    "checkpoint") from None
        self.shadow = {n: tensors[n] for n in self.names}
        self.num_averaged = int(doc["num_averaged"])

    def card_line(self) -> str:
        c = self.config
        if c.method == "ema":
            s = f"- **EMA** of the trainable weights: decay `{c.decay:g}`, from step `{c.start_step}`"
        else:
            s = f"- **SWA** of the trainable weights: every `{c.every}` steps from step `{c.start_step}`"
        return s + (f"; evaluation on the average: `{c.eval_with_average}`, saved model = average: "
                    f"`{c.final_average}`")


class WeightAveragingCallback(TrainerCallback):
    """Drives a :class:`WeightAverager`: bind at train begin, update after each optimizer step, apply at the end."""

    def __init__(self, averager: WeightAverager) -> None:
        self.averager = averager

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "load_best_model_at_end", False):
            raise ValueError("weight averaging with load_best_model_at_end: the best checkpoint holds the raw weights, "
                             "not the average; set load_best_model_at_end=False or averaging.method: none")
        self.averager.bind(model)

    def on_step_end(self, args, state, control, **kwargs):
        self.averager.update(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.averager.config.final_average:
            self.averager.copy_into_model()
