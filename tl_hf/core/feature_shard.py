"""The feature cache in a multi-process (DDP) run: each process computes the frozen backbone's outputs for its own
shard of the examples only (every ``world``-th one, from its rank: shards stay balanced on a length-sorted dataset),
then the processes exchange their rows so that every process holds the whole cache. Every process needs every
example: the distributed sampler deals a new permutation each epoch.

The exchange is an all-gather of each process's rows in the store's serialized form (safetensors bytes with a JSON
header, :func:`tl_hf.core.feature_store.store_to_bytes`): no pickle. A process whose pass failed sends its error, so
every process raises it instead of waiting for the others."""

from __future__ import annotations

from typing import Any

import torch

from tl_hf.core.feature_store import _FIX, FeatureStore, _err, store_from_bytes, store_to_bytes

__all__ = ["all_gather_bytes", "gather_store", "process_grid", "shard_rows"]


def process_grid() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_rows(n: int, rank: int, world: int) -> list[int]:
    """The examples process ``rank`` of ``world`` computes: ``rank, rank + world, ...``."""
    return list(range(rank, n, world))


def all_gather_bytes(blob: bytes) -> list[bytes]:
    """Every process's ``blob``, in rank order (one all-gather of the sizes, one of the padded bytes)."""
    import torch.distributed as dist

    rank, world = process_grid()
    if world == 1:
        return [blob]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    size = torch.tensor([len(blob)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(s) for s in sizes)
    mine = torch.zeros(longest, dtype=torch.uint8, device=device)
    if blob:
        mine[:len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    parts = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    return [bytes(p[:int(s)].cpu().numpy().tobytes()) for p, s in zip(parts, sizes)]


def gather_store(dataset, local: FeatureStore | None, error: BaseException | None, fingerprint: tuple,
                 what: str, **extra: Any) -> tuple[FeatureStore | None, list[dict[str, Any]]]:
    """Every process's rows of ``dataset`` merged into one store (``None`` when no process had a row), and each
    process's ``extra`` (e.g. the batch widths it saw). Raises on every process when one failed (``error``)."""
    message = None if error is None else f"{type(error).__name__}: {error}"
    blobs = all_gather_bytes(store_to_bytes(None if error else local, error=message, **extra))
    parts = [store_from_bytes(b) for b in blobs]
    failed = [(r, m["error"]) for r, (m, _) in enumerate(parts) if m.get("error")]
    if failed:
        if error is not None:
            raise error
        rank, msg = failed[0]
        raise _err(f"process {rank} failed to compute its shard of the {what} features: {msg}") from None
    infos = [{k: m.get(k) for k in extra} for m, _ in parts]
    shaped = [(r, m, t) for r, (m, t) in enumerate(parts) if "roots" in m]
    if not shaped:
        return None, infos
    _, meta, _ = shaped[0]
    for r, m, _ in shaped[1:]:
        if (m["roots"], m["placeholders"]) != (meta["roots"], meta["placeholders"]):
            raise _err(f"processes 0 and {r} chose different modules to cache ({meta['roots']} vs {m['roots']}): "
                       f"the model's outputs depend on the batch {_FIX}")
    meta = {**meta, "padding_dependent": any(m["padding_dependent"] for _, m, _ in shaped)}
    store = FeatureStore.from_meta(dataset, meta, fingerprint)
    for _, _, tensors in shaped:
        store.load(tensors)
    return store, infos
