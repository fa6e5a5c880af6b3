"""The text recipe under `accelerate launch` with 2 CPU processes (gloo): it trains with gradual unfreezing, the
evaluation covers the whole eval set (gathered, not one shard), and only the main process writes and reports."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_config_cli import TRAIN_ROWS, _tiny_run_config, tiny_data, tiny_model_dir  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_text_recipe_under_accelerate_launch(tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "freezing: {policy: gradual, schedule: {unit: step, every: 1}}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_port()), str(REPO / "recipes" / "text_classification.py"), str(cfg), "training.max_steps=4"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("dev accuracy: ")]
    assert len(reports) == 1, proc.stdout[-2000:]
    out = tmp_path / "out"
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 4
    preds = (out / "eval_predictions.jsonl").read_text().splitlines()
    assert len(preds) == 4, "predictions must cover the whole eval set, written once"
    state = json.loads((out / "train_results.json").read_text())
    assert state["epoch"] > 0
