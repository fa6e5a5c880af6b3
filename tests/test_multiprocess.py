"""Multi-process (2 x CPU, gloo) DDP test of gradual unfreezing in ``TransferTrainer``.

The worker (``tests/mp/gradual_unfreeze_worker.py``) trains a tiny 2-block BERT for 8 steps with a step-based gradual
schedule: head only for steps 1-4, plus the top block (``bert.encoder.layer.1``) from step 5 on. The known DDP traps
(facts note section 2) show up here as a top block that never trains, or as ranks whose parameters diverge because
the unfrozen block's gradients were never all-reduced.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mp" / "gradual_unfreeze_worker.py"
WORLD_SIZE = 2
MAX_STEPS = 8
UNFREEZE_AT = 4
TOP = "bert.encoder.layer.1."
LOWER = "bert.encoder.layer.0."
EMB = "bert.embeddings."
HEAD_TRAINABLE = ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"]
_DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "CUDA_VISIBLE_DEVICES")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:] if len(text) > n else text


def run_worker(outdir: Path, worker: Path = WORKER, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Launch ``worker`` on 2 local CPU processes; retries once on a port clash. Kills its process group on timeout."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for attempt in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(WORLD_SIZE),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(worker), str(outdir)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the session we started
            out, err = proc.communicate()
            pytest.fail(f"DDP worker timed out after {timeout:.0f} s\n--- stderr tail ---\n{_tail(err)}")
        res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if res.returncode == 0 or "address already in use" not in (err or "").lower() or attempt:
            return res
    return res


def load_results(outdir: Path) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    from safetensors.torch import load_file

    out = []
    for r in range(WORLD_SIZE):
        meta = json.loads((outdir / f"rank{r}.json").read_text())
        out.append((meta, load_file(str(outdir / f"rank{r}.safetensors"))))
    return out


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_results(outdir: Path) -> None:
    results = load_results(outdir)
    finals = []
    for rank, (meta, t) in enumerate(results):
        where = f"rank {rank}"
        assert meta["rank"] == rank
        assert meta["world_size"] == WORLD_SIZE and meta["dist_world_size"] == WORLD_SIZE, meta
        assert meta["wrapped"] == "DistributedDataParallel", f"{where}: the model was not DDP-wrapped: {meta['wrapped']}"
        assert meta["global_step"] == MAX_STEPS
        assert meta["steps_recorded"] == list(range(1, MAX_STEPS + 1))

        init, final = _section(t, "init/"), _section(t, "final/")
        top_init = {n: v for n, v in init.items() if n.startswith(TOP)}
        assert top_init, f"{where}: no {TOP}* parameters recorded"
        steps = {s: _section(t, f"step{s}/") for s in range(1, MAX_STEPS + 1)}
        for s, snap in steps.items():
            assert snap.keys() == top_init.keys(), f"{where}: step {s} snapshot has other keys"

        # which parameters required grad during each step
        trainable = meta["trainable_during_step"]
        for s in range(1, MAX_STEPS + 1):
            expect = set(HEAD_TRAINABLE) | (set(top_init) if s > UNFREEZE_AT else set())
            assert set(trainable[str(s)]) == expect, (
                f"{where}: step {s} trained {sorted(set(trainable[str(s)]) ^ expect)} unexpectedly (symmetric diff)")

        # phase 0 (steps 1-4): top block bitwise unchanged
        for s in range(1, UNFREEZE_AT + 1):
            moved = [n for n in top_init if not torch.equal(steps[s][n], top_init[n])]
            assert not moved, f"{where}: frozen top block moved during step {s}: {moved}"
        # phase 1 (steps 5-8): the top block trains on every step; every weight matrix has moved by the end
        for s in range(UNFREEZE_AT + 1, MAX_STEPS + 1):
            assert not _equal(steps[s], steps[s - 1]), f"{where}: unfrozen top block did not change in step {s}"
        unmoved = [n for n in top_init if n.endswith(".weight") and torch.equal(steps[MAX_STEPS][n], top_init[n])]
        assert not unmoved, f"{where}: top-block weights never trained after unfreezing: {unmoved}"
        assert _equal({n: final[n] for n in top_init}, steps[MAX_STEPS])

        # lower block and embeddings never change; the classifier does
        for prefix in (LOWER, EMB):
            names = [n for n in init if n.startswith(prefix)]
            assert names, f"{where}: no {prefix}* parameters"
            moved = [n for n in names if not torch.equal(final[n], init[n])]
            assert not moved, f"{where}: frozen {prefix}* parameters changed: {moved}"
        for n in ("classifier.weight", "classifier.bias"):
            assert not torch.equal(final[n], init[n]), f"{where}: {n} did not train"
        finals.append((init, steps, final))

    # every rank started from and ended at the same weights, and agreed after every step
    (init0, steps0, final0), (init1, steps1, final1) = finals
    assert _equal(init0, init1), "ranks started from different weights"
    for s in range(1, MAX_STEPS + 1):
        diff = [n for n in steps0[s] if not torch.equal(steps0[s][n], steps1[s][n])]
        assert not diff, f"top block differs across ranks after step {s}: {diff}"
    assert final0.keys() == final1.keys()
    diff = {n: (final0[n].double() - final1[n].double()).abs().max().item()
            for n in final0 if not torch.equal(final0[n], final1[n])}
    assert not diff, f"final parameters differ across ranks (max abs diff per tensor): {diff}"
    assert results[0][0]["init_top_block_sha256"] == results[1][0]["init_top_block_sha256"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_gradual_unfreezing_ddp_two_processes(tmp_path):
    t0 = time.monotonic()
    res = run_worker(tmp_path)
    assert res.returncode == 0, (
        f"DDP worker exited {res.returncode} after {time.monotonic() - t0:.1f} s\n"
        f"--- stderr tail ---\n{_tail(res.stderr)}\n--- stdout tail ---\n{_tail(res.stdout, 2000)}")
    check_results(tmp_path)
