"""The continual recipe (``task: continual``): resuming an interrupted run (between tasks and inside a task), refusing a
changed config or damaged state, the model card of a continual run, and pushing it (offline: fail fast; online: end to
end over HTTP against the local Hub stand-in tests/hub_server.py, in a subprocess because huggingface_hub reads
HF_ENDPOINT / HF_HUB_OFFLINE when it is imported).

Every run is Split-MNIST (real t10k images from the shared data root) with the small MLP, a few steps per task."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tl_hf.cli import main
from tl_hf.run.config import load_config

HERE = Path(__file__).resolve().parent
TOKEN = "hf_ContinualTokenAbCdEfGh0123"  # $HF_TOKEN: must never reach a file (training.hub_token is refused)
TOKEN_LIKE = re.compile(rb"hf_[A-Za-z0-9]{10,}")
_COUNT = itertools.count()

if __name__ != "__main__":  # (the push worker runs this file as a script: test_config_cli would set HF_HUB_OFFLINE)
    from test_config_cli import tiny_model_dir  # noqa: F401  (fixture)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def data_root() -> Path:
    from conftest import real_data_root  # (not at import: the push worker runs this file without conftest's env)

    return real_data_root("mnist_t10k")


# 3 tasks, class-incremental, every kind of regularizer state with one shared head (replay memory, EWC Fisher +
# anchors, L2-SP anchors)
CI_REGS = ("[{name: replay, budget: 24, selection: class_balanced, ratio: 0.5, seed: 0}, "
           "{name: ewc, lambda: 50.0, num_samples: 16, batch_size: 8}, {name: l2sp, alpha: 0.01}]")
# 2 tasks, task-incremental: per-task heads, online EWC, and gradual unfreezing by step (so that which parameters are
# still frozen after task 1 matters for task 2)
TI_REGS = "[{name: online_ewc, lambda: 20.0, gamma: 0.5, num_samples: 16, batch_size: 8}, {name: l2sp, alpha: 0.01}]"


def _config(tmp: Path, out: Path, data_root: Path, *, scenario="class_incremental", regs=CI_REGS,
            pairs="[[0, 1], [2, 3], [4, 5]]", extra="", training="", steps="max_steps: 4", per_task=80) -> Path:
    path = tmp / f"cfg_{out.name}_{next(_COUNT)}.yaml"
    path.write_text(f"""
task: continual
model: {{name_or_path: "mlp:32", save_model: true}}
data: {{kind: mnist, scenario: {scenario}, pairs: {pairs}, max_per_task: {per_task}, root: {data_root}}}
regularizers: {regs}
training: {{output_dir: {out}, {steps}, per_device_train_batch_size: 16, learning_rate: 1.0e-2, seed: 0,
           logging_steps: 100, disable_tqdm: true{training}}}
{extra}
""")
    return path


class ContinualInterrupted(RuntimeError):
    """A run stopped on purpose by the hooks below, after its state was saved; rerunning resumes it."""


def _interrupt_hooks(interrupt: dict) -> dict:
    """``run_continual_recipe`` hooks that stop a run as a crash would: ``{"after_task": k}`` once task ``k`` (not the
    last) is finished and saved; ``{"task": k, "step": s}`` inside task ``k`` right after its checkpoint at step
    ``s`` (needs ``training.save_strategy=steps``)."""
    from transformers import TrainerCallback

    class _InterruptAt(TrainerCallback):
        def __init__(self, task: int, step: int) -> None:
            self.task, self.step = task, step

        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= self.step:
                raise ContinualInterrupted(f"stopped in task {self.task} after its checkpoint at step "
                                           f"{state.global_step}; run again with the same output folder to resume")

    def task_callbacks(k: int) -> list:
        return [_InterruptAt(k, int(interrupt["step"]))] if interrupt.get("task") == k else []

    def on_task_end(k: int) -> None:
        if interrupt.get("after_task") == k:
            raise ContinualInterrupted(f"stopped after task {k}; run again with the same output folder to resume")

    return {"task_callbacks": task_callbacks, "on_task_end": on_task_end}


def _run(cfg_path: Path, *overrides, interrupt=None, log=None):
    from tl_hf.run.tasks.continual.run import run_continual_recipe

    cfg = load_config(cfg_path, list(overrides))
    lines = [] if log is None else log
    if interrupt is None:
        return run_continual_recipe(cfg, log=lambda *a: lines.append(" ".join(map(str, a))))
    with pytest.raises(ContinualInterrupted):
        run_continual_recipe(cfg, log=lambda *a: lines.append(" ".join(map(str, a))), **_interrupt_hooks(interrupt))
    return None


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs: max {float((wa[k] - wb[k]).abs().max())}"


def _assert_same_R(ra, rb) -> None:
    assert [[v is None for v in row] for row in ra] == [[v is None for v in row] for row in rb]
    for row_a, row_b in zip(ra, rb):
        for x, y in zip(row_a, row_b):
            if x is not None:
                assert abs(x - y) <= 1e-6, (ra, rb)


# ---------------------------------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------------------------------

def test_resume_between_and_inside_tasks_equals_the_uninterrupted_run(tmp_path, data_root):
    # one epoch per task: task 1 has 48 examples (3 steps), tasks 2 and 3 48 + 48 replayed (6 steps); a checkpoint
    # every 2 steps (so a task can be interrupted and resumed mid-way); gradual unfreezing every 2 steps, so the
    # embedding layer is still frozen when task 1 ends -- and stays frozen afterwards (the runner keeps what is frozen
    # at a task's end frozen), which a resume must reproduce
    kw = dict(steps="num_train_epochs: 1", per_task=60, training=", save_strategy: steps, save_steps: 2",
              extra="freezing: {policy: gradual, schedule: {unit: step, every: 2}}")
    full = _run(_config(tmp_path, tmp_path / "full", data_root, **kw))
    out = tmp_path / "resumed"
    cfg = _config(tmp_path, out, data_root, **kw)
    # 1st attempt: stopped once task 1 is finished and saved
    _run(cfg, interrupt={"after_task": 1})
    state = out / "continual_state"
    assert sorted(p.name for p in state.iterdir()) == ["after_task1", "run.json"]
    doc = json.loads((state / "after_task1" / "state.json").read_text())
    assert doc["completed"] == 1 and doc["R"] == [full["R"][0]] and len(doc["train_metrics"]) == 1
    assert doc["frozen"] == ["embed.bias", "embed.weight"]
    saved = sorted(p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file())
    assert saved == ["after_task1/model.safetensors", "after_task1/regularizers/tl_hf_reg_ewc.json",
                     "after_task1/regularizers/tl_hf_reg_ewc.safetensors",
                     "after_task1/regularizers/tl_hf_reg_l2sp.json",
                     "after_task1/regularizers/tl_hf_reg_l2sp.safetensors",
                     "after_task1/regularizers/tl_hf_reg_replay.json",
                     "after_task1/regularizers/tl_hf_reg_replay.safetensors", "after_task1/state.json", "run.json"]
    # 2nd attempt: resumes after task 1, then "crashes" inside task 2 right after its checkpoint at step 2
    log2: list[str] = []
    _run(cfg, interrupt={"task": 2, "step": 2}, log=log2)
    assert any(line.startswith("resuming after task 1/3 (task1): restored the model weights") for line in log2), log2
    assert (out / "task2" / "checkpoint-2").is_dir() and not (out / "task2" / "checkpoint-4").exists()
    assert [full["per_task"][j]["train_runtime_s"] is not None for j in range(3)] == [True] * 3
    # a save interrupted half-way leaves a checkpoint without trainer_state.json (written last): it is skipped
    (out / "task2" / "checkpoint-3").mkdir()
    (out / "task2" / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    # 3rd attempt: task 2 goes on from its checkpoint-2 (Trainer resume), then task 3
    log3: list[str] = []
    res = _run(cfg, log=log3)
    assert any("task 2/3 'task2': resuming from its checkpoint" in line and line.endswith("task2/checkpoint-2")
               for line in log3), log3
    assert res["resumed_after_task"] == 1 and full["resumed_after_task"] == 0
    _assert_same_R(full["R"], res["R"])
    assert res["ACC"] == pytest.approx(full["ACC"], abs=1e-9) and res["BWT"] == pytest.approx(full["BWT"], abs=1e-9)
    _assert_same_weights(tmp_path / "full" / "model" / "model.safetensors", out / "model" / "model.safetensors")
    assert res["replay_memory"] == full["replay_memory"]
    # the regularizer states after task 3 are identical too (Fisher, anchors, memory and its provenance)
    fa = _weights(tmp_path / "full" / "continual_state" / "after_task3" / "regularizers" / "tl_hf_reg_ewc.safetensors")
    fb = _weights(state / "after_task3" / "regularizers" / "tl_hf_reg_ewc.safetensors")
    assert set(fa) == set(fb) and any(k.startswith("task1.fisher.") for k in fa)
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    ra = json.loads((tmp_path / "full" / "continual_state" / "after_task3" / "regularizers" /
                     "tl_hf_reg_replay.json").read_text())
    rb = json.loads((state / "after_task3" / "regularizers" / "tl_hf_reg_replay.json").read_text())
    assert ra["meta"]["provenance"] == rb["meta"]["provenance"] and ra["meta"]["seen"] == rb["meta"]["seen"] == 144
    assert sorted(p.name for p in state.iterdir()) == ["after_task3", "run.json"]  # older states dropped
    am = json.loads((out / "accuracy_matrix.json").read_text())
    assert am["R"] == res["R"] and len(am["train_metrics"]) == 3
    # a rerun of the finished run restores everything and trains nothing
    log4: list[str] = []
    again = _run(cfg, log=log4)
    assert again["resumed_after_task"] == 3 and again["R"] == res["R"]
    assert any("every task is finished" in line for line in log4)
    assert not any(line.startswith("[continual] task ") for line in log4)


def test_resume_task_incremental_restores_heads_frozen_parameters_and_online_ewc(tmp_path, data_root):
    kw = dict(scenario="task_incremental", regs=TI_REGS, pairs="[[0, 1], [2, 3]]",
              extra="freezing: {policy: gradual, schedule: {unit: step, every: 3}}")
    full = _run(_config(tmp_path, tmp_path / "full", data_root, **kw))
    out = tmp_path / "resumed"
    cfg = _config(tmp_path, out, data_root, **kw)
    _run(cfg, interrupt={"after_task": 1})
    doc = json.loads((out / "continual_state" / "after_task1" / "state.json").read_text())
    # gradual unfreezing every 3 steps, 4 steps: the embedding layer is still frozen when task 1 ends (and so stays
    # frozen in task 2, in the uninterrupted run as in the resumed one)
    assert doc["frozen"] == ["embed.bias", "embed.weight"]
    heads = _weights(out / "continual_state" / "after_task1" / "heads.safetensors")
    assert set(heads) == {"initial/classifier.weight", "initial/classifier.bias", "task0/classifier.weight",
                          "task0/classifier.bias"}
    res = _run(cfg)
    assert res["resumed_after_task"] == 1
    _assert_same_R(full["R"], res["R"])
    _assert_same_weights(tmp_path / "full" / "model" / "model.safetensors", out / "model" / "model.safetensors")
    for name in ("task1", "task2"):
        _assert_same_weights(tmp_path / "full" / "heads" / f"{name}.safetensors", out / "heads" / f"{name}.safetensors")
    w = _weights(out / "model" / "model.safetensors")
    w0 = _weights(out / "continual_state" / "after_task2" / "model.safetensors")
    assert torch.equal(w["embed.weight"], w0["embed.weight"])
    oa = _weights(tmp_path / "full" / "continual_state" / "after_task2" / "regularizers" /
                  "tl_hf_reg_online_ewc.safetensors")
    ob = _weights(out / "continual_state" / "after_task2" / "regularizers" / "tl_hf_reg_online_ewc.safetensors")
    assert set(oa) == set(ob) and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert not any("classifier" in k for k in oa)  # the head is exempt (swapped per task)


def test_changed_config_is_refused_and_damaged_state_is_named(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    cfg = _config(tmp_path, out, data_root, pairs="[[0, 1], [2, 3]]")
    _run(cfg, interrupt={"after_task": 1})
    state = out / "continual_state"
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))

    def refused(*overrides, config=cfg) -> str:
        assert main(["run", str(config), *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("tl-hf: error: ")
        return err

    err = refused("data.scenario=domain_incremental")
    assert 'data.scenario was "class_incremental", now "domain_incremental"' in err
    assert f"use a fresh training.output_dir, or delete {out} to start over" in err
    err = refused("data.pairs=[[0, 1], [2, 3], [4, 5]]")
    assert "data.pairs was [[0, 1], [2, 3]], now [[0, 1], [2, 3], [4, 5]]" in err
    other = _config(tmp_path, out, data_root, pairs="[[0, 1], [2, 3]]", regs="[{name: ewc, lambda: 50.0}]")
    err = refused(config=other)
    assert 'regularizers was ["replay", "ewc", "l2sp"], now ["ewc"]' in err
    err = refused("training.learning_rate=0.02")
    assert "training.learning_rate was 0.01, now 0.02" in err
    assert "resume_from_checkpoint is not used by task: continual" in refused(
        f"training.resume_from_checkpoint={out}")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # nothing touched

    # damaged state files: named, one line
    for rel, cut in (("after_task1/state.json", 20), ("after_task1/model.safetensors", 100),
                     ("after_task1/regularizers/tl_hf_reg_replay.safetensors", 60), ("run.json", 10)):
        path = state / rel
        good = path.read_bytes()
        path.write_bytes(good[:cut])
        err = refused()
        assert f"{path} is truncated or corrupt" in err and "start over" in err, err
        path.write_bytes(good)
    ewc_json = state / "after_task1" / "regularizers" / "tl_hf_reg_ewc.json"
    good = ewc_json.read_bytes()
    ewc_json.unlink()
    err = refused()
    assert "the ewc state in" in err and "tl_hf_reg_ewc.json not found" in err
    ewc_json.write_bytes(good)

    # checkpoints without run.json were not written by a resumable run: refused, not mixed in
    out2 = tmp_path / "foreign"
    (out2 / "task1" / "checkpoint-3").mkdir(parents=True)
    err = refused(config=_config(tmp_path, out2, data_root, pairs="[[0, 1], [2, 3]]"))
    assert "holds checkpoints (checkpoint-3)" in err and "continual_state has no run.json" in err

    # what a resume may change: logging and output settings
    res = _run(cfg, "training.logging_steps=7", "model.save_model=false")
    assert res["resumed_after_task"] == 1 and len(res["R"]) == 2

    # an earlier run that finished no task and left no checkpoint has nothing to resume: a new config starts over
    shutil.rmtree(state / "after_task2")
    res = _run(cfg, "training.learning_rate=0.02")
    assert res["resumed_after_task"] == 0
    assert json.loads((state / "run.json").read_text())["fingerprint"]["config"]["training"]["learning_rate"] == 0.02


def test_resume_text_class_incremental_with_a_replay_source(tmp_path, tiny_model_dir):  # noqa: F811
    """Text: a tokenized replay memory (variable-length token ids, stored padded with their lengths), a replay source
    offered before task 1 only (not again on resume), EWC, a 2-layer BERT saved with save_pretrained."""
    from conftest import real_data_root

    root = real_data_root("trec")
    real_data_root("sst2")

    def cfg(out: Path) -> Path:
        path = tmp_path / f"text_{out.name}.yaml"
        path.write_text(f"""
task: continual
model: {{name_or_path: {tiny_model_dir}, save_model: true}}
data: {{root: {root}, scenario: class_incremental, tasks: [trec, emotion], replay_source: {{dataset: sst2,
       max_samples: 12}}, max_train_samples: 16, max_eval_samples: 8, max_length: 16}}
regularizers: [{{name: replay, budget: 8, ratio: 0.25, seed: 0}}, {{name: ewc, lambda: 10.0, num_samples: 8,
               batch_size: 8}}]
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 8, learning_rate: 1.0e-3, seed: 0,
           logging_steps: 100, disable_tqdm: true}}
""")
        return path

    full = _run(cfg(tmp_path / "full"))
    out = tmp_path / "resumed"
    _run(cfg(out), interrupt={"after_task": 1})
    log: list[str] = []
    res = _run(cfg(out), log=log)
    assert res["resumed_after_task"] == 1
    assert not any("replay memory filled from" in line for line in log)
    assert "replay memory restored: 8 examples (filled from sst2 before task 1)" in log
    _assert_same_R(full["R"], res["R"])
    assert res["replay_memory"] == full["replay_memory"] and "replay_source:sst2" in full["replay_memory"]["by_source"]
    _assert_same_weights(tmp_path / "full" / "model" / "model.safetensors", out / "model" / "model.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# model card; push offline (fails fast) and online (end to end against the local Hub)
# ---------------------------------------------------------------------------------------------------------------------

def _card_checks(readme: str, res: dict, regs_needles) -> None:
    from huggingface_hub import ModelCard

    names, R = res["task_names"], res["R"]
    assert readme.count("## Continual learning") == 1
    header = "| after training ↓ / evaluated on → | " + " | ".join(names) + " |"
    assert header in readme
    for i, row in enumerate(R):
        cells = " | ".join("–" if v is None else f"{v:.4f}" for v in row)
        assert f"| {names[i]} | {cells} |" in readme, (i, readme)
    assert f"| ACC (mean final accuracy over all tasks) | {res['ACC']:.4f} |" in readme
    assert f"| BWT (backward transfer; negative = forgetting) | {res['BWT']:+.4f} |" in readme
    for t in res["tasks"]:
        assert f"| {t['name']} | MNIST t10k digits {', '.join(map(str, t['digits']))} | {t['train_samples']} | " \
               f"{t['eval_samples']} |" in readme
    for needle in regs_needles:
        assert needle in readme, (needle, readme)
    card = ModelCard(readme)
    # model-index: one Hub dataset (Split-MNIST's tasks all come from ylecun/mnist's test split), the task in the
    # metric's name -- never task names as dataset configs, never a made-up split
    got = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert got == {f"final accuracy on task {name} (after all {len(names)} tasks)": pytest.approx(R[-1][j])
                   for j, name in enumerate(names)}
    assert {(r.metric_type, r.dataset_type, r.dataset_split, r.dataset_config) for r in card.data.eval_results} == {
        ("accuracy", "ylecun/mnist", "test", None)}
    assert card.data.datasets == ["ylecun/mnist"]
    from tl_hf.core.card_meta import check_card

    check_card(readme)
    assert {"tl_hf", "continual-learning", res["scenario"].replace("_", "-")} <= set(card.data.tags)
    assert TOKEN not in readme and not TOKEN_LIKE.search(readme.encode())


def test_card_and_offline_push_fail_fast_with_the_model_saved(tmp_path, data_root, capsys, monkeypatch):
    import huggingface_hub.constants as hc

    assert hc.is_offline_mode(), "this test runs with HF_HUB_OFFLINE=1 (conftest)"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "offline"
    cfg = _config(tmp_path, out, data_root, pairs="[[0, 1], [2, 3]]",
                  extra="hub: {push: true, repo_id: me/cl-offline}\nllrd: {decay: 0.8}")
    t0 = time.monotonic()
    assert main(["run", str(cfg)]) == 2
    assert time.monotonic() - t0 < 60
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot push to me/cl-offline" in err and "HF_HUB_OFFLINE" in err
    assert str(out / "model") in err
    res = json.loads((out / "all_results.json").read_text())
    assert (out / "model" / "model.safetensors").is_file()
    _card_checks((out / "model" / "README.md").read_text(encoding="utf-8"), res,
                 ["scenario: `class_incremental`", "**replay**: budget `24` examples, selection `class_balanced`",
                  "**EWC**: λ = `50`", "**L2-SP**: α = `0.01`", "decay ξ = `0.8`", "policy: `full`",
                  "- base model: `mlp:32`", "replay memory after the last task: 24 examples"])
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".md", ".txt"):
            assert TOKEN.encode() not in p.read_bytes(), p


def _push_worker(cfg: str) -> None:
    import huggingface_hub.constants as hc

    assert not hc.HF_HUB_OFFLINE and hc.ENDPOINT == os.environ["HF_ENDPOINT"], "worker must run online vs local hub"
    sys.exit(main(["run", cfg]))


def test_push_end_to_end_against_the_local_hub(tmp_path, data_root):
    from hub_server import LocalHub

    out = tmp_path / "pushed"
    cfg = _config(tmp_path, out, data_root, scenario="task_incremental", regs=TI_REGS, pairs="[[0, 1], [2, 3]]",
                  extra="hub: {push: true, repo_id: cl-mnist}")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with LocalHub() as hub:
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), NO_PROXY=no_proxy,
                   no_proxy=no_proxy, HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
                   TL_HF_DATA_ROOT=str(data_root))
        proc = subprocess.run([sys.executable, __file__, "--push-worker", str(cfg)], env=env, cwd=HERE.parent,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"push worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        assert "pushed to the Hub: cl-mnist" in proc.stdout
        files = hub.repos["tester/cl-mnist"]
        requests, unhandled = list(hub.requests), list(hub.unhandled)
    res = json.loads((out / "all_results.json").read_text())
    assert set(files) == {"README.md", "model.safetensors", "heads/task1.safetensors", "heads/task2.safetensors"}
    assert files["model.safetensors"] == (out / "model" / "model.safetensors").read_bytes()
    for name in ("task1", "task2"):
        assert files[f"heads/{name}.safetensors"] == (out / "heads" / f"{name}.safetensors").read_bytes()
    readme = files["README.md"].decode()
    assert readme == (out / "model" / "README.md").read_text(encoding="utf-8")
    _card_checks(readme, res, ["scenario: `task_incremental`", "**online EWC**: λ = `20`, γ = `0.5`",
                               "policy: `full`", "### Per-task heads", "heads/task1.safetensors"])
    assert "model_name" not in readme and "- name: cl-mnist" in readme
    for name, data in files.items():
        assert TOKEN.encode() not in data, name
    auth = {a for m, p, a in requests if "cl-mnist" in p}
    assert auth == {f"Bearer {TOKEN}"}, auth
    assert ("POST", "/api/repos/create") in {(m, p) for m, p, _ in requests}
    assert len([p for m, p, _ in requests if "/commit/" in p]) == 1  # model + heads in one commit
    assert not [u for u in unhandled if u != ("GET", "/api/agent-harnesses")], unhandled


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--push-worker":
        _push_worker(sys.argv[2])
    else:
        sys.exit("usage: test_continual_resume_card.py --push-worker CONFIG (run the tests with pytest)")
