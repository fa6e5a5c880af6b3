"""Where :mod:`tl_hf.core.feature_cache` keeps the recorded backbone outputs: one :class:`FeatureStore` per dataset,
float32 on the CPU, sequence outputs trimmed to each example's ``attention_mask`` and put back at the example's
positions in each later batch.

A store (or the rows of it one process computed) travels as safetensors bytes with its structure as JSON in the
header's metadata (:func:`store_to_bytes` / :func:`store_from_bytes`): the same form goes between processes
(:mod:`tl_hf.core.feature_shard`) and to disk (:mod:`tl_hf.core.feature_disk`). Never pickle."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree

__all__ = ["FeatureCacheError", "FeatureStore", "Spans", "store_from_bytes", "store_to_bytes"]

#: the serialized form's version: a file of another version is recomputed, never misread
STORE_FORMAT = 1

#: how every cache refusal ends (feature_cache raises through _err and ends with _FIX too)
_FIX = "or set freezing.cache_features: false"


class FeatureCacheError(ValueError):
    """``freezing.cache_features`` cannot be used with this model, data or trainer setup."""


def _err(msg: str) -> FeatureCacheError:
    return FeatureCacheError(f"freezing.cache_features: {msg}")


class _Leaf:
    """One tensor (or constant) of a cached module output, for every example of the dataset; with ``n=None`` only its
    shape (a placeholder: zeros of that shape are returned)."""

    def __init__(self, root: str, x: Any, batch: int, spans: "Spans | None", n: int | None) -> None:
        self.root = root
        self.placeholder = n is None
        if not isinstance(x, torch.Tensor):
            if x is not None and not isinstance(x, (bool, int, float, str)):
                raise _err(f"the output of frozen module {root!r} holds a {type(x).__name__}, not a tensor, so it "
                           f"cannot be cached {_FIX}")
            self.kind, self.const = "const", x
            return
        if x.dim() == 0 or x.shape[0] != batch:
            raise _err(f"the output of frozen module {root!r} has a tensor of shape {tuple(x.shape)} that is not "
                       f"batched (batch size {batch}), so it cannot be cached per example {_FIX}")
        self.dtype = x.dtype
        self.store_dtype = torch.float32 if x.is_floating_point() else x.dtype
        if spans is not None and x.dim() >= 3 and x.shape[1] == spans.width:
            self.kind, self.rest = "seq", tuple(x.shape[2:])
            self.items = None if self.placeholder else [None] * n  # per example: the positions its mask covers
        else:
            self.kind, self.rest = "dense", tuple(x.shape[1:])
            self.data = None if self.placeholder else torch.empty((n, *self.rest), dtype=self.store_dtype)

    def add(self, idx: list[int], x: Any, spans: "Spans | None") -> None:
        if self.kind == "const":
            if x != self.const:
                raise _err(f"the output of frozen module {self.root!r} holds a value that changes between batches "
                           f"({self.const!r} then {x!r}) {_FIX}")
            return
        if self.kind == "dense":
            if tuple(x.shape[1:]) != self.rest:
                raise _err(f"outputs of frozen module {self.root!r} have different shapes in different batches "
                           f"({self.rest} vs {tuple(x.shape[1:])}) and no attention_mask says which positions are "
                           f"padding; pad the inputs to a fixed length {_FIX}")
            if not self.placeholder:
                self.data[torch.as_tensor(idx)] = x.detach().to("cpu", self.store_dtype)
            return
        if spans is None or spans.width != x.shape[1] or tuple(x.shape[2:]) != self.rest:
            raise _err(f"a sequence output of frozen module {self.root!r} does not match the batch's attention_mask "
                       f"{_FIX}")
        if self.placeholder:
            return
        x = x.detach()
        for k, i in enumerate(idx):
            self.items[i] = x[k, spans.starts[k]:spans.ends[k]].to("cpu", self.store_dtype, copy=True)

    def gather(self, idx: list[int], spans: "Spans | None", device) -> Any:
        if self.kind == "const":
            return self.const
        if self.placeholder:  # zeros of the right shape, without allocating them
            size = (len(idx), *((spans.width,) if self.kind == "seq" else ()), *self.rest)
            return torch.zeros((), dtype=self.dtype, device=device).expand(size)
        if self.kind == "dense":
            return self.data.index_select(0, torch.as_tensor(idx)).to(device, self.dtype, non_blocking=True)
        if spans is None:
            raise _err(f"the batch has no attention_mask, but the cached output of {self.root!r} was trimmed with one "
                       f"{_FIX}")
        out = torch.zeros((len(idx), spans.width, *self.rest), dtype=self.store_dtype)
        for k, i in enumerate(idx):
            seg, s, e = self.items[i], spans.starts[k], spans.ends[k]
            if e - s != seg.shape[0]:
                raise _err(f"example {idx[k]} covers {e - s} positions in this batch but {seg.shape[0]} when its "
                           f"features were cached: the dataset changed after caching {_FIX}")
            out[k, s:e] = seg
        return out.to(device, self.dtype, non_blocking=True)

    # -- the serialized form ---------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        if self.kind == "const":
            return {"kind": "const", "value": self.const}
        return {"kind": self.kind, "dtype": str(self.dtype).removeprefix("torch."), "rest": list(self.rest)}

    @classmethod
    def from_meta(cls, root: str, m: Mapping[str, Any], n: int | None) -> "_Leaf":
        leaf = cls.__new__(cls)
        leaf.root, leaf.placeholder, leaf.kind = root, n is None, m["kind"]
        if leaf.kind == "const":
            leaf.const = m["value"]
            return leaf
        leaf.dtype, leaf.rest = getattr(torch, m["dtype"]), tuple(m["rest"])
        leaf.store_dtype = torch.float32 if leaf.dtype.is_floating_point else leaf.dtype
        if leaf.kind == "seq":
            leaf.items = None if leaf.placeholder else [None] * n
        else:
            leaf.data = None if leaf.placeholder else torch.empty((n, *leaf.rest), dtype=leaf.store_dtype)
        return leaf

    def export(self, rows: torch.Tensor, name: str, out: dict[str, torch.Tensor]) -> None:
        if self.kind == "const" or self.placeholder:
            return
        if self.kind == "dense":
            out[name] = self.data.index_select(0, rows)
            return
        segs = [self.items[i] for i in rows.tolist()]
        out[name + "/len"] = torch.tensor([t.shape[0] for t in segs], dtype=torch.long)
        out[name] = torch.cat(segs) if segs else torch.empty((0, *self.rest), dtype=self.store_dtype)

    def load(self, rows: torch.Tensor, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
        if self.kind == "const" or self.placeholder:
            return
        x = tensors[name]
        if x.dtype != self.store_dtype or tuple(x.shape[1:]) != self.rest:
            raise ValueError(f"tensor {name!r} has shape {tuple(x.shape)} / {x.dtype}, expected (*, {self.rest}) / "
                             f"{self.store_dtype}")
        if self.kind == "dense":
            self.data[rows] = x
            return
        for i, seg in zip(rows.tolist(), torch.split(x, tensors[name + "/len"].tolist())):
            self.items[i] = seg.clone()

    @property
    def nbytes(self) -> int:
        if self.kind == "const" or self.placeholder:
            return 0
        if self.kind == "dense":
            return self.data.numel() * self.data.element_size()
        return sum(t.numel() * t.element_size() for t in self.items if t is not None)


class Spans:
    """Per example of a batch, the first and one-past-last position its attention mask covers."""

    def __init__(self, mask: torch.Tensor) -> None:
        m = mask.detach().cpu().bool()
        self.width = m.shape[1]
        any_ = m.any(1)
        starts = torch.where(any_, m.int().argmax(1), 0)
        ends = torch.where(any_, self.width - m.flip(1).int().argmax(1), 0)
        self.starts, self.ends = starts.tolist(), ends.tolist()

    @classmethod
    def of(cls, mask: Any) -> "Spans | None":
        return cls(mask) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


class FeatureStore:
    """The recorded outputs of the cached frozen modules for every example of one dataset."""

    def __init__(self, dataset, roots: list[str], fingerprint: tuple, what: str,
                 placeholders: list[str] = ()) -> None:
        self.dataset = dataset
        self.n = len(dataset)
        self.roots = list(roots)  # their outputs are stored
        self.placeholders = list(placeholders)  # outputs only feed stored roots: zeros of the right shape stand in
        self.fingerprint = fingerprint
        self.what = what
        self.specs: dict[str, Any] = {}
        self.leaves: dict[str, list[_Leaf]] = {}
        self.filled = torch.zeros(self.n, dtype=torch.bool)
        self.seconds = 0.0
        self.computed = 0  # how many of the rows this process computed (the others were gathered or read)
        self.padding_dependent = False  # outputs depend on the batch's padded length: all batches must match width
        self.width: int | None = None

    def add(self, idx: list[int], outputs: Mapping[str, Any], mask: torch.Tensor | None) -> None:
        spans = Spans.of(mask)
        for root in self.roots + self.placeholders:
            leaves, spec = pytree.tree_flatten(outputs[root])
            if root not in self.specs:
                self.specs[root] = spec
                n = None if root in self.placeholders else self.n
                self.leaves[root] = [_Leaf(root, x, len(idx), spans, n) for x in leaves]
            elif spec != self.specs[root]:
                raise _err(f"the output structure of frozen module {root!r} changed between batches {_FIX}")
            for leaf, x in zip(self.leaves[root], leaves):
                leaf.add(idx, x, spans)
        self.filled[torch.as_tensor(idx)] = True

    def gather(self, idx: list[int], mask: torch.Tensor | None, devices: Mapping[str, Any]) -> dict[str, Any]:
        """The outputs of every cached module (``devices``: root -> device) for the examples ``idx``."""
        spans = Spans.of(mask)
        if self.width is not None and spans is not None and spans.width != self.width:
            raise _err(f"the cached outputs of {', '.join(self.roots)} depend on the batch's padded length "
                       f"({self.width} when cached), but this batch has length {spans.width}; pad every batch to the "
                       f"same length {_FIX}")
        return {root: pytree.tree_unflatten([leaf.gather(idx, spans, devices[root]) for leaf in self.leaves[root]],
                                            self.specs[root]) for root in self.roots + self.placeholders}

    @property
    def nbytes(self) -> int:
        return sum(leaf.nbytes for leaves in self.leaves.values() for leaf in leaves)

    # -- the serialized form ---------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The structure (JSON): everything but the tensors."""
        return {"format": STORE_FORMAT, "n": self.n, "what": self.what, "roots": self.roots,
                "placeholders": self.placeholders, "padding_dependent": self.padding_dependent, "width": self.width,
                "specs": {r: pytree.treespec_dumps(s) for r, s in self.specs.items()},
                "leaves": {r: [leaf.meta() for leaf in ls] for r, ls in self.leaves.items()}}

    def export(self, rows: list[int] | None = None) -> dict[str, torch.Tensor]:
        """The tensors of the examples ``rows`` (default: every filled one), ``rows`` under the key ``rows``."""
        idx = self.filled.nonzero().flatten() if rows is None else torch.as_tensor(rows, dtype=torch.long)
        out = {"rows": idx}
        for root, leaves in self.leaves.items():
            for j, leaf in enumerate(leaves):
                leaf.export(idx, f"{root}/{j}", out)
        return out

    @classmethod
    def from_meta(cls, dataset, meta: Mapping[str, Any], fingerprint: tuple) -> "FeatureStore":
        """An empty store of the structure ``meta`` (from :meth:`meta`) for ``dataset``; fill it with :meth:`load`."""
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this version reads {STORE_FORMAT}")
        if meta["n"] != len(dataset):
            raise ValueError(f"{meta['n']} examples, the dataset has {len(dataset)}")
        store = cls(dataset, meta["roots"], fingerprint, meta["what"], meta["placeholders"])
        store.padding_dependent, store.width = bool(meta["padding_dependent"]), meta["width"]
        for root in store.roots + store.placeholders:
            store.specs[root] = pytree.treespec_loads(meta["specs"][root])
            n = None if root in store.placeholders else store.n
            store.leaves[root] = [_Leaf.from_meta(root, m, n) for m in meta["leaves"][root]]
        return store

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Fill the rows that ``tensors`` (from :meth:`export`) hold."""
        rows = tensors["rows"].long()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.n):
            raise ValueError(f"row indices outside 0..{self.n - 1}")
        for root, leaves in self.leaves.items():
            for j, leaf in enumerate(leaves):
                leaf.load(rows, f"{root}/{j}", tensors)
        self.filled[rows] = True


def store_to_bytes(store: "FeatureStore | None", rows: list[int] | None = None, **extra: Any) -> bytes:
    """``store``'s rows as safetensors bytes, its structure (and ``extra``) as JSON in the header's metadata;
    ``store=None`` sends only ``extra`` (a process with nothing to send, or its error)."""
    from safetensors.torch import save

    tensors = {} if store is None else store.export(rows)
    meta = {**({} if store is None else store.meta()), **extra}
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata={"tl_hf_feature_store": json.dumps(meta)})


def store_from_bytes(blob: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON structure and the tensors of :func:`store_to_bytes`' bytes; ``ValueError`` when they are not that."""
    from safetensors.torch import load

    try:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + size])
        meta = json.loads(header["__metadata__"]["tl_hf_feature_store"])
        return meta, load(blob)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign bytes fail in json, safetensors or a KeyError
        raise ValueError(f"not a feature store ({type(exc).__name__}: {exc})") from None
