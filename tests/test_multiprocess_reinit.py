"""Re-initialising the top blocks under 2-process DDP (CPU, gloo) happens identically on every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_multiprocess import WORLD_SIZE, run_worker

WORKER = Path(__file__).resolve().parent / "mp" / "reinit_worker.py"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_reinit_is_identical_on_every_rank(tmp_path):
    from safetensors.torch import load_file

    res = run_worker(tmp_path, worker=WORKER, timeout=240)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD_SIZE)]
    reinit = [{k: v for k, v in t.items() if k.startswith("reinit/")} for t in ranks]
    assert reinit[0] and reinit[0].keys() == reinit[1].keys()
    for k in reinit[0]:
        assert torch.equal(reinit[0][k], reinit[1][k]), k  # the same weights on both ranks despite different RNGs
    moved = [k for k in reinit[0] if not torch.equal(reinit[0][k], ranks[0]["pre/" + k[len("reinit/"):]])]
    assert moved, "the top block was not re-initialised"
    for k in (k for k in ranks[0] if k.startswith("final/")):
        assert torch.allclose(ranks[0][k], ranks[1][k], atol=1e-6), k  # and DDP keeps them in sync
