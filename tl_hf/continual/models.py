"""The small models and tensor datasets of the Split-MNIST experiments."""

from __future__ import annotations

import torch

__all__ = ["MLP_LAYER_MAP", "SmallMLP", "TensorDictDataset"]

#: layer map of :class:`SmallMLP` (it has no ``config.model_type``)
MLP_LAYER_MAP = {r"^embed\.": "embeddings", r"^blocks\.(\d+)\.": "block", r".*": "head"}


class SmallMLP(torch.nn.Module):
    """``784 -> hidden -> hidden -> num_labels`` with ReLU for Split-MNIST: ``embed`` (depth 0), ``blocks.0``,
    ``classifier`` (the head the task-incremental runner swaps). ``forward(pixel_values, labels=None)`` returns
    ``{"logits", "loss"}``. Use :data:`MLP_LAYER_MAP` as its layer map."""

    def __init__(self, num_labels: int, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Linear(28 * 28, hidden)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(hidden, hidden)])
        self.classifier = torch.nn.Linear(hidden, num_labels)

    def forward(self, pixel_values, labels=None):
        h = torch.relu(self.embed(pixel_values.flatten(1)))
        for b in self.blocks:
            h = torch.relu(b(h))
        logits = self.classifier(h)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


class TensorDictDataset(torch.utils.data.Dataset):
    """Columns of equal-length tensors -> dict examples (``{"pixel_values": ..., "labels": ...}``)."""

    def __init__(self, **columns: torch.Tensor) -> None:
        lens = {k: len(v) for k, v in columns.items()}
        if len(set(lens.values())) != 1:
            raise ValueError(f"columns of different lengths: {lens}")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}
