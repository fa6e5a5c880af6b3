"""The feature cache under 2-process DDP (CPU, gloo; worker ``tests/mp/feature_cache_worker.py``): each rank computes
the frozen backbone's outputs for its own half of the examples only, the gathered cache equals the single-process one,
and training (and evaluating) from it equals the uncached run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_feature_cache import VarLenDataset, pad_collate
from test_multiprocess import WORLD_SIZE, load_results, run_worker
from tiny import tiny_bert, training_args
from tl_hf import FreezingConfig, TransferTrainer

WORKER = Path(__file__).resolve().parent / "mp" / "feature_cache_worker.py"
N = 30


def _single_process_cache(tmp_path) -> dict[str, torch.Tensor]:
    tr = TransferTrainer(tiny_bert(num_layers=2, seed=0), training_args(tmp_path / "single", max_steps=1,
                                                                        per_device_eval_batch_size=4),
                         freezing=FreezingConfig(policy="feature_extraction", cache_features=True),
                         train_dataset=VarLenDataset(n=N), data_collator=pad_collate)
    tr.train()
    store = tr.feature_cache.stores["train"]
    assert store.computed == N
    return store.export()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ddp_cache_is_sharded_gathered_and_trains_like_uncached(tmp_path):
    res = run_worker(tmp_path, worker=WORKER, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = load_results(tmp_path)
    single = _single_process_cache(tmp_path)
    for r, (meta, t) in enumerate(ranks):
        # each rank computed its own 15 training rows (and 6 eval rows): the backbone ran on those, plus, per set,
        # its first batch of 4 once more and one example alone (the checks)
        assert meta["computed"] == N // WORLD_SIZE and meta["filled"] == meta["n"] == N, meta
        # (a single process runs 30 + 12 rows plus the checks, 42+)
        assert meta["backbone_rows"] <= (N + 12) // WORLD_SIZE + 2 * (4 + 1), meta
        cache = {k[len("cache/"):]: v for k, v in t.items() if k.startswith("cache/")}
        assert cache.keys() == single.keys()
        order = torch.argsort(cache["rows"])
        assert torch.equal(cache["rows"][order], single["rows"])
        for k, v in single.items():
            if k == "rows" or k.endswith("/len"):
                assert torch.equal(cache[k][order] if k.endswith("/len") else cache[k], v), k
            else:
                assert cache[k].shape == v.shape and torch.allclose(cache[k], v, atol=1e-6), (r, k)
        for k in (k for k in t if k.startswith("cached/")):
            plain = t["plain/" + k[len("cached/"):]]
            assert torch.allclose(t[k], plain, atol=1e-6), (r, k)  # training from the cache = uncached training
        assert abs(meta["eval_cached"] - meta["eval_plain"]) < 1e-6, meta
    a, b = ranks[0][1], ranks[1][1]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("cached/"))  # DDP keeps the ranks in sync
    moved = [k for k in a if k.startswith("cached/classifier") and not torch.equal(
        a[k], dict(tiny_bert(num_layers=2, seed=0).named_parameters())[k[len("cached/"):]])]
    assert moved, "the head did not train"
