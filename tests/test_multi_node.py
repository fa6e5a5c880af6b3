"""Multi-node launch, proven on one machine: 2 "nodes" of 1 CPU process each on 127.0.0.1 (gloo), each node its own
``accelerate launch --config_file recipes/configs/accelerate/multi_node.yaml --machine_rank 0|1`` (the shipped
config; the command line sets what differs here: 2 processes in all, 127.0.0.1, a free port, no mixed precision).
Accelerate hands the launch to torch.distributed.run with a c10d rendezvous at 127.0.0.1:PORT. Each run is the real
``tl-hf run`` path (tests/mp/multi_node_run.py) on a tiny 2-layer BERT with L2-SP and gradual unfreezing, so
tl_hf's own checkpoint state (tl_hf_state.json, tl_hf_reg_l2sp*.safetensors) is written and restored.

- shared filesystem (one output_dir, save_on_each_node false): the run is killed right after checkpoint-3, the two
  nodes are relaunched, it resumes and ends equal to a single-node 2-process run of the same config;
- no shared filesystem, emulated by a different output_dir per node: with save_on_each_node true each node's local
  main process writes a full resumable copy (the card only on node 0), and both resume from their own copy (on one
  shared output_dir it is refused: both nodes would write the same files); with
  save_on_each_node false node 1 writes only its own rng_state_1.pth, and the relaunch is refused before training
  (node 1's checkpoint-3 is not complete, node 0's is) instead of node 1 failing or starting fresh beside a resumed
  node 0.

Measured (2 CPU cores, whole file about 2 minutes): final weights equal to the single-node run bitwise (max |dw| 0;
the test allows 1e-6).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_config_cli import TRAIN_ROWS, tiny_model_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "accelerate" / "multi_node.yaml"
SCRIPT = Path(__file__).resolve().parent / "mp" / "multi_node_run.py"
MAX_STEPS, CRASH_AT = 6, 3
TOL = 1e-6  # max |w_multi_node - w_single_node| over every weight of the final model
_DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID", "NODE_RANK", "CUDA_VISIBLE_DEVICES")
COMMON = ["--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no"]
# what the global main process alone writes (the card; the Hub push would be too), and what every writer writes
CARD = "README.md"
RESULTS = ("all_results.json", "run_config.json", "model.safetensors", "config.json")
CHECKPOINT_FILES = ("tl_hf_state.json", "tl_hf_reg_l2sp.safetensors", "trainer_state.json", "model.safetensors")


def test_multi_node_config_opens_with_its_launch_commands():
    import yaml

    first = CONFIG.read_text().splitlines()[0]
    assert first.startswith("# Run: accelerate launch --config_file recipes/configs/accelerate/multi_node.yaml "
                            "--machine_rank 0 --main_process_ip NODE0_IP ")
    assert "--machine_rank 1" in first
    doc = yaml.safe_load(CONFIG.read_text())
    assert doc["num_machines"] == 2 and doc["machine_rank"] == 0 and doc["rdzv_backend"] == "c10d"
    assert doc["distributed_type"] == "MULTI_GPU" and doc["num_processes"] % doc["num_machines"] == 0
    assert doc["same_network"] is False  # accelerate then passes --rdzv_endpoint IP:PORT to torch.distributed.run
    assert {"main_process_ip", "main_process_port"} <= set(doc)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV and not k.startswith("ACCELERATE_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), **extra)
    return env


def _communicate(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:  # the launchers we started, with their workers (each its own session)
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            o, e = p.communicate()
            pytest.fail(f"a launch timed out after {timeout:.0f} s\n{e[-3000:]}")
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def launch_nodes(cfg: Path, out_dirs: tuple[Path, Path], *overrides: str, crash_at: int = 0,
                 timeout: float = 300.0) -> list[subprocess.CompletedProcess]:
    """Both nodes, each its own launcher (node 1 started first: the rendezvous, not the start order, ranks them)."""
    port = _port()
    procs = []
    for rank in (1, 0):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--machine_rank",
               str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), *COMMON, str(SCRIPT),
               str(cfg), f"training.output_dir={out_dirs[rank]}", *overrides]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(TL_HF_TEST_CRASH_AT=str(crash_at)),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    node1, node0 = _communicate(procs, timeout)
    return [node0, node1]


def launch_single_node(cfg: Path, out: Path, timeout: float = 300.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
           "--main_process_port", str(_port()), *COMMON, str(SCRIPT), str(cfg), f"training.output_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return _communicate([proc], timeout)[0]


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811
    base = tmp_path_factory.mktemp("multi_node")
    data = base / "data"
    data.mkdir()
    lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in TRAIN_ROWS]
    (data / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "dev.tsv").write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    cfg = base / "run.yaml"
    cfg.write_text(f"""model: {{name_or_path: {tiny_model_dir}, save_model: true}}
data: {{root: {data}, train_file: train.tsv, eval_file: dev.tsv, text_column: sentence, max_length: 16}}
training:
  output_dir: {base / 'unused'}
  max_steps: {MAX_STEPS}
  per_device_train_batch_size: 2
  learning_rate: 1e-3
  logging_steps: 1
  save_strategy: steps
  save_steps: {CRASH_AT}
  disable_tqdm: true
  use_cpu: true
  seed: 3
llrd: {{decay: 0.8}}
freezing: {{policy: gradual, schedule: {{unit: step, every: 2}}}}
regularizers: [{{name: l2sp, alpha: 0.01}}]
""")
    return cfg


@pytest.fixture(scope="module")
def reference(run_cfg) -> dict:
    """The same config, one node, 2 processes, uninterrupted."""
    out = run_cfg.parent / "single_node"
    res = launch_single_node(run_cfg, out)
    assert res.returncode == 0, res.stderr[-3000:]
    return _weights(out)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _ok(results: list[subprocess.CompletedProcess]) -> None:
    for rank, r in enumerate(results):
        assert r.returncode == 0, f"node {rank}: exit {r.returncode}\n{r.stderr[-3000:]}"


def _crashed(results: list[subprocess.CompletedProcess]) -> None:
    for rank, r in enumerate(results):
        assert r.returncode != 0, f"node {rank} was meant to die after checkpoint-{CRASH_AT}\n{r.stdout[-2000:]}"


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []


def _assert_full_copy(folder: Path, steps: list[int], card: bool) -> None:
    assert _checkpoints(folder) == [f"checkpoint-{s}" for s in steps], _checkpoints(folder)
    for s in steps:
        ck = folder / f"checkpoint-{s}"
        missing = [f for f in CHECKPOINT_FILES if not (ck / f).is_file()]
        assert not missing, f"{ck}: missing {missing} (has {sorted(p.name for p in ck.iterdir())})"
        state = json.loads((ck / "tl_hf_state.json").read_text())
        assert state["regularizers"] == ["l2sp"] and "freezing" in state
    missing = [f for f in RESULTS if not (folder / f).is_file()]
    assert not missing, f"{folder}: missing {missing}"
    assert (folder / CARD).is_file() is card, f"{folder}: the card belongs to the global main process only"
    assert json.loads((folder / "all_results.json").read_text())["eval_samples"] == 4


def _resumed(results, step: int = CRASH_AT) -> None:
    text = "".join(r.stdout + r.stderr for r in results)
    assert f"checkpoint-{step}" in text and "resuming from the last checkpoint" in text, text[-3000:]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_shared_filesystem_kill_resume_equals_single_node(run_cfg, reference):
    out = run_cfg.parent / "shared"
    _crashed(launch_nodes(run_cfg, (out, out), crash_at=CRASH_AT))
    assert _checkpoints(out) == [f"checkpoint-{CRASH_AT}"]
    assert not (out / "model.safetensors").exists()
    assert {p.name for p in (out / f"checkpoint-{CRASH_AT}").glob("rng_state_*")} == {"rng_state_0.pth",
                                                                                         "rng_state_1.pth"}
    second = launch_nodes(run_cfg, (out, out))
    _ok(second)
    _resumed(second)
    _assert_full_copy(out, [CRASH_AT, MAX_STEPS], card=True)
    reports = [ln for r in second for ln in r.stdout.splitlines() if ln.startswith("dev accuracy: ")]
    assert len(reports) == 1, "one report, from the global main process"
    diff = _max_diff(_weights(out), reference)
    print(f"multi-node (killed + resumed) vs single-node max |dw| = {diff:.3g}")
    assert diff <= TOL
    assert _max_diff(_weights(out / f"checkpoint-{MAX_STEPS}"), reference) <= TOL


@pytest.mark.slow
@pytest.mark.multiprocess
def test_save_on_each_node_true_each_node_keeps_a_resumable_copy(run_cfg, reference):
    dirs = (run_cfg.parent / "node0_each", run_cfg.parent / "node1_each")
    _crashed(launch_nodes(run_cfg, dirs, "training.save_on_each_node=true", crash_at=CRASH_AT))
    for d in dirs:
        assert _checkpoints(d) == [f"checkpoint-{CRASH_AT}"], d
    second = launch_nodes(run_cfg, dirs, "training.save_on_each_node=true")
    _ok(second)
    _resumed(second)
    for rank, d in enumerate(dirs):
        _assert_full_copy(d, [CRASH_AT, MAX_STEPS], card=rank == 0)
        diff = _max_diff(_weights(d), reference)
        print(f"save_on_each_node node {rank} vs single-node max |dw| = {diff:.3g}")
        assert diff <= TOL


@pytest.mark.slow
@pytest.mark.multiprocess
def test_save_on_each_node_false_only_node0_writes_and_a_split_resume_is_refused(run_cfg):
    dirs = (run_cfg.parent / "node0_main", run_cfg.parent / "node1_main")
    _crashed(launch_nodes(run_cfg, dirs, crash_at=CRASH_AT))
    assert _checkpoints(dirs[0]) == [f"checkpoint-{CRASH_AT}"]
    written = sorted(str(p.relative_to(dirs[1])) for p in dirs[1].rglob("*")) if dirs[1].exists() else []
    # node 1 is no saving process: of a checkpoint it writes only its own RNG state (every process does: a resume
    # restores each process's RNG), no weights, optimizer, tl_hf state, results or card
    assert written == [f"checkpoint-{CRASH_AT}", f"checkpoint-{CRASH_AT}/rng_state_1.pth"], written
    again = launch_nodes(run_cfg, dirs)
    for rank, r in enumerate(again):
        assert r.returncode != 0
        assert "found different checkpoints to resume from" in r.stderr, r.stderr[-3000:]
        assert f"node 0: checkpoint-{CRASH_AT}, node 1: checkpoint-{CRASH_AT} without trainer_state.json" in r.stderr
        assert "save_on_each_node=false only the global main process" in r.stderr
    assert _checkpoints(dirs[0]) == [f"checkpoint-{CRASH_AT}"], "nothing trained after the refusal"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_save_on_each_node_true_on_a_shared_output_dir_is_refused(run_cfg):
    """Both nodes' local main processes would write the same files of one folder at once: refused before training
    (tl_hf.core.distributed_checks.check_save_on_each_node), every marker file removed."""
    out = run_cfg.parent / "shared_each"
    res = launch_nodes(run_cfg, (out, out), "training.save_on_each_node=true")
    for rank, r in enumerate(res):
        assert r.returncode != 0
        assert "training.save_on_each_node=true, but training.output_dir" in r.stderr, r.stderr[-3000:]
        assert "is one folder the nodes share" in r.stderr and "set training.save_on_each_node=false" in r.stderr
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in left if n.startswith("checkpoint-") or n.startswith(".tl_hf_node_")], left
