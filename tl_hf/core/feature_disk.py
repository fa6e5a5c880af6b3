"""The feature cache on disk: ``freezing.feature_cache_dir`` saves each cached dataset's backbone outputs and a later
run with the same frozen weights, data and preprocessing reads them instead of running the backbone.

**The key** is a SHA-256 over three fingerprints, so that a changed input never reuses a stale cache:

* the *model*: its class, its config (``feature_layer`` and ``feature_pooling`` are recorded there; the checkpoint
  path is left out), its module structure (``repr``), the torch and transformers versions, every frozen parameter's
  and every buffer's name, dtype, shape and bytes, and the names of the trainable ones (their values train and do not
  enter the cached outputs);
* the *data*: each example exactly as the model receives it, i.e. collated alone by the trainer's data collator
  (tokenizer or image-processor settings, ``max_length``, truncation and fixed-length padding all show there);
  hashed per example in index order, so the key does not depend on the batch size or the number of processes (in a
  multi-process run each process hashes its shard and the digests are gathered);
* the format version of the stored form.

**The files** in the folder, per key: ``<key>.safetensors`` (the tensors, with the store's structure as JSON in the
header; never pickle) and ``<key>.json`` (the key's parts, the number of examples, when and how fast it was built),
each written atomically, the JSON last: a folder holds whole entries only. The main process writes them; every
process reads them (a folder not shared between machines: the processes that miss it make all of them recompute).

**A truncated or corrupt file** (or one of another format) is not an error: the cache is derived data, so the run
logs a warning, recomputes the features and replaces the entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Callable, Iterable

import torch
from torch.utils import _pytree as pytree

from tl_hf.core.feature_checks import INDEX_KEY
from tl_hf.core.feature_store import STORE_FORMAT, FeatureStore, store_from_bytes, store_to_bytes
from tl_hf.core.state import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["data_digests", "load_store", "model_digest", "save_store", "store_key"]


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: torch.nn.Module) -> str:
    """The fingerprint of everything in ``model`` that its frozen modules' outputs depend on."""
    import transformers

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    config = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"} if config is not None else {}
    h.update(json.dumps([type(model).__module__, type(model).__qualname__, torch.__version__,
                         transformers.__version__, config], sort_keys=True, default=str).encode())
    h.update(repr(model).encode())
    for name, p in model.named_parameters():
        h.update(f"\0{'trainable' if p.requires_grad else 'frozen'} {name}".encode())
        if not p.requires_grad:
            _hash_tensor(h, p)
    for name, b in model.named_buffers():
        h.update(f"\0buffer {name}".encode())
        _hash_tensor(h, b)
    return h.hexdigest()


def _example_digest(batch: dict) -> bytes:
    h = hashlib.sha256()
    for key in sorted(k for k in batch if k != INDEX_KEY):
        h.update(f"\0{key}".encode())
        leaves, spec = pytree.tree_flatten(batch[key])
        h.update(str(spec).encode())
        for x in leaves:
            if isinstance(x, torch.Tensor):
                _hash_tensor(h, x)
            elif hasattr(x, "dtype") and hasattr(x, "tobytes"):  # numpy
                h.update(f"{x.dtype}{x.shape}".encode() + x.tobytes())
            else:
                h.update(repr(x).encode())
    return h.digest()


def data_digests(dataset, collate: Callable[[list], dict], rows: Iterable[int]) -> bytes:
    """The 32-byte digests of the examples ``rows``, each collated alone, concatenated in order."""
    return b"".join(_example_digest(collate([dataset[i]])) for i in rows)


def store_key(model_fp: str, per_rank: list[bytes], n: int) -> str:
    """The cache key from the model fingerprint and each process's example digests (process ``r`` of ``w`` hashed
    examples ``r, r + w, ...``), combined in example order."""
    world = len(per_rank)
    h = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "model": model_fp, "n": n}).encode())
    for i in range(n):
        r, k = i % world, i // world
        h.update(per_rank[r][32 * k:32 * (k + 1)])
    return h.hexdigest()


def _paths(folder: str, key: str) -> tuple[str, str]:
    base = os.path.join(folder, key[:40])
    return base + ".safetensors", base + ".json"


def save_store(folder: str, key: str, store: FeatureStore, model_fp: str) -> None:
    """Write ``store`` under ``key`` (tensors first, the JSON that marks the entry complete last)."""
    tensors_path, json_path = _paths(folder, key)
    atomic_write_bytes(tensors_path, store_to_bytes(store))
    atomic_write_json(json_path, {"format": STORE_FORMAT, "key": key, "model": model_fp, "examples": store.n,
                                  "what": store.what, "roots": store.roots, "build_seconds": round(store.seconds, 3),
                                  "bytes": os.path.getsize(tensors_path), "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    logger.info("feature cache (%s): saved to %s", store.what, tensors_path)


def load_store(folder: str, key: str, dataset, fingerprint: tuple) -> FeatureStore | None:
    """The store saved under ``key`` for ``dataset``, or ``None`` (not there; or unreadable: warned, recomputed)."""
    tensors_path, json_path = _paths(folder, key)
    if not os.path.exists(json_path):
        return None
    t0 = time.perf_counter()
    try:
        with open(json_path) as f:
            info = json.load(f)
        if not isinstance(info, dict) or info.get("key") != key:
            raise ValueError("its JSON does not name this key")
        with open(tensors_path, "rb") as f:
            meta, tensors = store_from_bytes(f.read())
        store = FeatureStore.from_meta(dataset, meta, fingerprint)
        store.load(tensors)
        if not bool(store.filled.all()):
            raise ValueError(f"{int((~store.filled).sum())} of {store.n} examples missing")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        logger.warning("feature cache: %s is truncated or corrupt (%s: %s); recomputing the features and replacing "
                       "it", tensors_path, type(exc).__name__, exc)
        return None
    store.seconds = time.perf_counter() - t0
    return store

