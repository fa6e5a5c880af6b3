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
from test_recipe_image import _cfg as _image_cfg
from test_recipe_image import image_folder, tiny_vit_dir  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_text_recipe_under_accelerate_launch(tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "freezing: {policy: gradual, schedule: {unit: step, every: 1}}\n"
                   "evaluation: {metrics: [{name: f1, average: macro}, confusion_matrix]}\n")
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
    import sklearn.metrics as sk

    rows = [json.loads(line) for line in preds]
    y, p = [r["label"] for r in rows], [r["prediction"] for r in rows]
    # every metric, the configured evaluate ones included, is computed over the gathered set, not one shard
    assert results["eval_accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert results["eval_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert results["eval_confusion_matrix"] == sk.confusion_matrix(y, p, labels=sorted(set(y) | set(p))).tolist()
    assert sum(map(sum, results["eval_confusion_matrix"])) == 4
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


def _launch(script: str, *args: str, env_extra=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_port()), str(REPO / "recipes" / script), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_image_recipe_under_accelerate_launch(tmp_path, tiny_vit_dir, image_folder):  # noqa: F811
    cfg = _image_cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}, eval_dir: "
                                             f"{image_folder / 'val'}, image_size: 32}}")
    proc = _launch("image_classification.py", str(cfg), "training.max_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [line for line in proc.stdout.splitlines() if line.startswith("val accuracy: ")]
    assert len(reports) == 1, proc.stdout[-2000:]
    res = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert res["eval_samples"] == 4 and sum(map(sum, res["confusion_matrix"])) == 4
    assert len((tmp_path / "out" / "eval_predictions.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
@pytest.mark.multiprocess
def test_continual_recipe_under_accelerate_launch(tmp_path):
    """Split-MNIST, 2 tasks with replay and EWC, 2 processes: both ranks train every task, the accuracy matrix is
    reported once and the per-task state is written once (a rerun then resumes the finished run: nothing trains)."""
    from conftest import real_data_root

    root = real_data_root("mnist_t10k")
    out = tmp_path / "cont"
    import yaml

    raw = yaml.safe_load((REPO / "recipes" / "configs" / "continual_mnist_pairs.yaml").read_text())
    raw["regularizers"] = [{"name": "replay", "budget": 40, "selection": "class_balanced"},
                           {"name": "ewc", "lambda": 10.0, "num_samples": 32}]
    cfg = tmp_path / "cont.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    args = [str(cfg), f"data.root={root}", "data.max_per_task=200", "data.pairs=[[0, 1], [2, 3]]",
            "training.num_train_epochs=1", f"training.output_dir={out}"]
    proc = _launch("continual.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc_lines = [line for line in proc.stdout.splitlines() if line.startswith("ACC=")]
    assert len(acc_lines) == 1, proc.stdout[-2000:]
    res = json.loads((out / "all_results.json").read_text())
    assert len(res["R"]) == 2 and res["R"][0][0] > 0.8 and res["replay_memory"]["size"] == 40
    again = _launch("continual.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after task 2/2" in again.stdout, again.stdout[-2000:]
    assert json.loads((out / "all_results.json").read_text())["R"] == res["R"]
