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


@pytest.mark.slow
@pytest.mark.multiprocess
def test_under_accelerate_launch_only_the_main_process_writes_the_card_and_pushes(tmp_path, tiny_model_dir,  # noqa: F811
                                                                                  tiny_data):
    """2 gloo processes, hub.push=true against the local Hub stand-in: one repo creation, one commit carrying one
    model card (README.md with the transfer section), one 'pushed' report, and no token in anything uploaded."""
    from hub_server import LocalHub

    token = "hf_DdpTokenAbCdEfGh0123456789"
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "hub: {push: true, repo_id: tester/tl-hf-ddp}\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with LocalHub() as hub:
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        env.update(OMP_NUM_THREADS="1", HF_ENDPOINT=hub.url, HF_TOKEN=token, HF_HOME=str(tmp_path / "hf_home"),
                   NO_PROXY=no_proxy, no_proxy=no_proxy, HF_HUB_DISABLE_TELEMETRY="1")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_port()), str(REPO / "recipes" / "text_classification.py"), str(cfg), "training.max_steps=2"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        creates = [r for r in hub.requests if r[:2] == ("POST", "/api/repos/create")]
        commits = hub.commits.get("tester/tl-hf-ddp", [])
        files = hub.repos.get("tester/tl-hf-ddp", {})
    assert len(creates) == 1, hub.requests
    assert len(commits) == 1, f"expected one commit from the main process, got {len(commits)}"
    assert "README.md" in files and "model.safetensors" in files, sorted(files)
    card = files["README.md"].decode()
    assert card.count("## Transfer learning") == 1, card[:2000]
    pushed = [line for line in proc.stdout.splitlines() if "pushed to the Hub" in line]
    assert len(pushed) == 1, proc.stdout[-2000:]
    for name, data in files.items():
        assert token.encode() not in data, f"token in {name}"
    assert token not in proc.stdout and token not in proc.stderr
    local_card = (tmp_path / "out" / "README.md").read_text()
    assert local_card == card, "the pushed card is the one written locally, written once"
