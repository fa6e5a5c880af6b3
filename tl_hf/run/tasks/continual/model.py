"""The model of a continual run: the Split-MNIST MLP (``model.name_or_path: mlp`` / ``mlp:HIDDEN``), a grey 28 x 28
image classifier, or a sequence classifier for text tasks, with the head the scenario needs."""

from __future__ import annotations

import re

from tl_hf._errors import ConfigError
from tl_hf.continual import MLP_LAYER_MAP
from tl_hf.run.sections import RunConfig

__all__ = ["MLP_LAYER_MAP", "build_mlp", "build_model"]

_MLP_SPEC = re.compile(r"^mlp(?::(\d+))?$", re.IGNORECASE)


def build_mlp(num_labels: int, hidden: int = 256, seed: int = 0):
    """The Split-MNIST MLP (:class:`tl_hf.continual.SmallMLP`); its layer map is :data:`MLP_LAYER_MAP`."""
    from tl_hf.continual import SmallMLP

    return SmallMLP(num_labels, hidden=hidden, seed=seed)


def build_model(cfg: RunConfig, num_labels: int, label_names: list[str], seed: int):
    """``(model, layer_map or None)`` for ``cfg.data.kind`` with a head of ``num_labels`` outputs."""
    name = cfg.model.name_or_path.strip()
    m = _MLP_SPEC.match(name)
    if cfg.data.kind == "mnist" and m:
        hidden = int(m.group(1)) if m.group(1) else 256
        if hidden < 1:
            raise ConfigError(f"model.name_or_path {name!r}: the hidden size must be >= 1")
        return build_mlp(num_labels, hidden=hidden, seed=seed), dict(MLP_LAYER_MAP)
    if m:
        raise ConfigError("model.name_or_path=mlp is the Split-MNIST MLP (data.kind: mnist); text tasks need a "
                          "sequence-classification model, e.g. bundled:all-MiniLM-L6-v2")
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from tl_hf.run.models import _from_pretrained

    if cfg.data.kind == "mnist":
        _check_grey28(cfg, name)
    loader = AutoModelForImageClassification if cfg.data.kind == "mnist" else AutoModelForSequenceClassification
    id2label = dict(enumerate(label_names))
    model = _from_pretrained(loader, name, "model", trust_remote_code=cfg.model.trust_remote_code,
                             num_labels=num_labels, id2label=id2label, label2id={n: i for i, n in id2label.items()},
                             ignore_mismatched_sizes=True)
    return model, None


def _check_grey28(cfg: RunConfig, name: str) -> None:
    """Split-MNIST examples are grey 1 x 28 x 28: refuse a model config that takes anything else."""
    from transformers import AutoConfig

    from tl_hf.run.models import _from_pretrained

    conf = _from_pretrained(AutoConfig, name, "model config", trust_remote_code=cfg.model.trust_remote_code)
    channels = getattr(conf, "num_channels", 1)
    size = getattr(conf, "image_size", 28)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if channels != 1 or size != (28, 28):
        raise ConfigError(f"model {name!r} takes {channels}-channel {size[0]} x {size[1]} images, but Split-MNIST "
                          "examples are grey 1 x 28 x 28; use a model with num_channels 1 (and image_size 28), "
                          "or model.name_or_path=mlp")
