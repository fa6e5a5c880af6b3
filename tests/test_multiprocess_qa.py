"""QA evaluation gathered from 2 CPU processes (gloo) equals the 1-process evaluation: every eval window is scored
once (accelerate's gather_for_metrics drops the windows it repeated to even out the last batch), the windows are
regrouped by question, and the predictions, n-best lists and SQuAD scores are identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from qa_tiny import flat_rows, save_tiny_qa_model
from test_multiprocess import _DIST_ENV, REPO, _free_port

WORKER = Path(__file__).resolve().parent / "mp" / "qa_predict_worker.py"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_qa_predictions_equal_one_process(tmp_path):
    model = save_tiny_qa_model(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    one = tmp_path / "one"
    one.mkdir()
    proc = subprocess.run([sys.executable, str(WORKER), str(one), str(model)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    two.mkdir()
    res = _run_two(two, model, env)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((one / "qa_predictions.json").read_text())
    b = json.loads((two / "qa_predictions.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    # 20 windows, 3 per process and step: the last step repeats windows, which must not be scored twice
    assert a["n_features"] == b["n_features"] == a["rows"] == b["rows"] and a["n_features"] % 6 != 0
    assert sorted(b["predictions"]) == sorted(r["id"] for r in flat_rows())
    assert b["predictions"] == a["predictions"]
    assert [[c["text"] for c in b["nbest"][k]] for k in a["nbest"]] == [[c["text"] for c in a["nbest"][k]]
                                                                        for k in a["nbest"]]
    for k in a["nbest"]:
        assert [c["score"] for c in b["nbest"][k]] == pytest.approx([c["score"] for c in a["nbest"][k]], abs=1e-4)
    for key in ("eval_exact_match", "eval_f1"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-9)
    # eval_loss is the Trainer's mean of per-batch losses: other batches (and the repeated windows of the last one)
    # give another mean, so it is only checked to be a number here
    assert b["metrics"]["eval_loss"] > 0


def _run_two(outdir: Path, model: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(outdir), str(model)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
