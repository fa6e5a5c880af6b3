"""Exact resume after a real crash: a worker process SIGKILLs itself right after checkpoint-K is on disk, a fresh
process (fresh model, regularizers with no state) resumes with ``resume_from_checkpoint=True``, and the result must
equal an uninterrupted run: final weights within 1e-6, logged losses / penalties / lrs after the resume point rel 1e-5.

Also: a crash *while* writing the newest checkpoint (simulated by truncating its ``tl_hf_state.json`` after a real
SIGKILL) leaves the previous checkpoint usable. "Usable" means: reading the broken state file raises
``CorruptStateError`` naming the file and pointing to an earlier checkpoint (the trainer-level refusal of such a
checkpoint is covered in-process by test_trainer.py::test_corrupt_state_file_is_a_clear_error), and resuming
explicitly from the previous checkpoint in a fresh process ends equal to the uninterrupted reference.

All processes are run by one module fixture, two at a time (most of each is the ~6 s transformers import), each resume
as soon as its crash is over, so the whole file takes about a minute on two idle cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mp" / "crash_worker.py"
CONFIGS = ("gradual", "ewc", "online_ewc", "replay_term", "replay_interleave", "lora", "token")
N, SAVE, K = 9, 3, 3  # 9 steps, a checkpoint every 3, crash right after checkpoint-3
TRUNCATED = '{"format": 1, "freez'

pytestmark = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _cmd(config: str, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(WORKER), config, str(run_dir), "--max-steps", str(N), "--save-steps", str(SAVE),
            *extra]


class _Job:
    def __init__(self, name, cmd, after=None, prepare=None):
        self.name, self.cmd, self.after, self.prepare = name, cmd, after, prepare


def _run_jobs(jobs: list[_Job], parallel: int = 2, timeout: float = 300) -> dict[str, tuple[int, str]]:
    """Run the jobs ``parallel`` at a time, in order; a job with ``after`` starts once that job has died by SIGKILL
    (after its ``prepare()``), and is skipped if it ended any other way. name -> (returncode, stderr tail)."""
    pending, running, done = list(jobs), {}, {}
    deadline = time.monotonic() + timeout
    while pending or running:
        for job in list(pending):
            if len(running) >= parallel:
                break
            if job.after is not None:
                if job.after not in done:
                    continue
                pending.remove(job)
                if done[job.after][0] != -signal.SIGKILL:
                    continue
            else:
                pending.remove(job)
            if job.prepare:
                job.prepare()
            err = open(Path(job.cmd[3]).parent / f"{job.name}.stderr", "w+")  # noqa: SIM115 (closed when it ends)
            proc = subprocess.Popen(job.cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
            running[job.name] = (proc, err)
        for name, (proc, err) in list(running.items()):
            if proc.poll() is not None:
                err.seek(0)
                done[name] = (proc.returncode, err.read()[-4000:])
                err.close()
                del running[name]
        if time.monotonic() > deadline:
            for proc, _ in running.values():
                proc.kill()
            pytest.fail(f"crash/resume workers still running after {timeout} s: {sorted(running)}")
        time.sleep(0.05)
    return done


def _left_behind(run_dir: Path) -> dict:
    return {"checkpoints": sorted(p.name for p in run_dir.glob("checkpoint-*")),
            "final": (run_dir / "final.safetensors").exists(),
            "files": {p.name: sorted(os.listdir(p)) for p in run_dir.glob("checkpoint-*")}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One reference process for all configs; per config a run SIGKILLed after checkpoint-3 and, as soon as it died,
    a fresh process resuming it; a gradual run killed after checkpoint-6 whose checkpoint-6 is then broken (truncated
    tl_hf_state.json: resumed from checkpoint-3; missing tl_hf_state.json: resumed with resume_from_checkpoint=True)."""
    base = tmp_path_factory.mktemp("crash")
    ref, crash = base / "ref", base / "crash"
    crash.mkdir()
    left = {}

    def snapshot(name):
        def prepare():  # what the killed run left behind, before the resumed run adds to it
            left[name] = _left_behind(crash / name)
        return prepare

    def break_checkpoint_6():
        left["broken"] = _left_behind(crash / "broken")
        shutil.copytree(crash / "broken", crash / "no_state")
        # killed after trainer_state.json but before tl_hf_state.json (written last, atomically): the file is missing
        os.remove(crash / "no_state" / "checkpoint-6" / "tl_hf_state.json")
        # a truncated state file (not something tl_hf's atomic writes leave, but a damaged copy could)
        (crash / "broken" / "checkpoint-6" / "tl_hf_state.json").write_text(TRUNCATED)
        shutil.copy(crash / "broken" / "checkpoint-6" / "tl_hf_state.json", base / "truncated_state.json")

    broken = crash / "broken"
    jobs = [_Job("ref", _cmd(",".join(CONFIGS), ref)),
            _Job("kill6", _cmd("gradual", broken, "--kill-after-checkpoint", "6"))]
    for c in CONFIGS:
        jobs.append(_Job(f"kill-{c}", _cmd(c, crash / c, "--kill-after-checkpoint", str(K))))
        jobs.append(_Job(f"resume-{c}", _cmd(c, crash / c, "--resume"), after=f"kill-{c}", prepare=snapshot(c)))
    jobs.append(_Job("broken-prev", _cmd("gradual", broken, "--resume", str(broken / "checkpoint-3")), after="kill6",
                     prepare=break_checkpoint_6))
    jobs.append(_Job("no-state", _cmd("gradual", crash / "no_state", "--resume"), after="kill6"))
    done = _run_jobs(jobs)
    assert done["ref"][0] == 0, f"reference run failed\n{done['ref'][1]}"
    return {"ref": ref, "crash": crash, "base": base, "res1": done, "res2": done, "left": left}  # res1/res2: same


def _load(run_dir: Path):
    meta = json.loads((run_dir / "logs.json").read_text())
    return load_file(str(run_dir / "final.safetensors")), meta


def _assert_same_run(ref_dir: Path, res_dir: Path, first_step: int) -> dict:
    ref_w, ref_m = _load(ref_dir)
    res_w, res_m = _load(res_dir)
    assert sorted(res_w) == sorted(ref_w)
    for n, p in ref_w.items():
        torch.testing.assert_close(res_w[n], p, rtol=0, atol=1e-6, msg=n)
    ref_logs = {h["step"]: h for h in ref_m["logs"] if h["step"] >= first_step}
    res_logs = {h["step"]: h for h in res_m["logs"] if h["step"] >= first_step}
    assert sorted(res_logs) == sorted(ref_logs) == list(range(first_step, N + 1))
    for step, h in ref_logs.items():
        keys = [k for k in h if k == "loss" or k.startswith(("lr/", "penalty/", "replay/"))]
        assert "loss" in keys
        for k in keys:
            assert k in res_logs[step], (step, k)
            assert res_logs[step][k] == pytest.approx(h[k], rel=1e-5, abs=1e-12), (step, k)
    assert res_m["reg_state"] == ref_m["reg_state"]
    assert res_m["phase"] == ref_m["phase"]
    return ref_m


@pytest.mark.parametrize("config", CONFIGS)
def test_sigkill_after_checkpoint_then_resume_is_exact(runs, config):
    rc, err = runs["res1"][f"kill-{config}"]
    assert rc == -signal.SIGKILL, f"the run was meant to die by SIGKILL after checkpoint-{K}, rc={rc}\n{err}"
    crashed, left = runs["crash"] / config, runs["left"][config]
    # it died right there: checkpoint-K complete (our state included), nothing later, no final weights
    assert left["checkpoints"] == [f"checkpoint-{K}"] and not left["final"]
    files = left["files"][f"checkpoint-{K}"]
    assert {"tl_hf_state.json", "trainer_state.json", "model.safetensors" if config != "lora"
            else "adapter_model.safetensors", "optimizer.pt", "rng_state.pth"} <= set(files), files
    assert not [f for f in files if f.startswith("_tmp_")]
    rc, err = runs["res2"][f"resume-{config}"]
    assert rc == 0, f"resume failed\n{err}"
    ref_m = _assert_same_run(runs["ref"] / config, crashed, first_step=K + 1)
    if config == "gradual":
        assert ref_m["phase"] == 2
        lr1 = {h["step"]: h["lr/layer.1"] for h in ref_m["logs"]}
        assert lr1[K + 1] < lr1[K + 2], "the lr re-warm of layer.1 should span the resume point"
    if config in ("ewc", "online_ewc", "token"):  # token: a token-classification head, EWC on its token loss
        reg = "ewc" if config == "token" else config
        assert ref_m["reg_state"][reg], "no Fisher/anchors in the regularizer state"
        assert all(h.get(f"penalty/{reg}", 0) > 0 for h in ref_m["logs"] if h["step"] > 1)
    if config == "replay_term":
        assert all("replay/loss" in h for h in ref_m["logs"])


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one_usable(runs):
    from tl_hf.core.state import CorruptStateError, read_json

    rc, err = runs["res1"]["kill6"]
    assert rc == -signal.SIGKILL, f"rc={rc}\n{err}"
    assert runs["left"]["broken"]["checkpoints"] == ["checkpoint-3", "checkpoint-6"]
    truncated = runs["base"] / "truncated_state.json"
    with pytest.raises(CorruptStateError, match="truncated or corrupt.*resume from an earlier checkpoint") as e:
        read_json(str(truncated))
    assert str(truncated) in str(e.value)
    # checkpoint-3 still resumes exactly (it passes the gradual phase change at step 6 again, and overwrites the
    # broken checkpoint-6 with a good one)
    rc, err = runs["res2"]["broken-prev"]
    assert rc == 0, f"resume from the previous checkpoint failed\n{err}"
    _assert_same_run(runs["ref"] / "gradual", runs["crash"] / "broken", first_step=4)
    assert read_json(str(runs["crash"] / "broken" / "checkpoint-6" / "tl_hf_state.json"))["freezing"]["phase"] == 2


@pytest.mark.slow
def test_checkpoint_missing_our_state_is_not_resumed_silently(runs):
    """A checkpoint without tl_hf_state.json (TransferTrainer writes it before transformers' own files, so this one was
    not written by tl_hf or had it removed). Resuming must either be exact or refuse: for a step schedule the phase,
    its start and the re-warmed depths are derived from the schedule, and the run ends equal to the reference."""
    rc, err = runs["res2"]["no-state"]
    if rc != 0:
        assert "tl_hf_state.json" in err, err  # refused, naming what is missing: fine
        return
    _assert_same_run(runs["ref"] / "gradual", runs["crash"] / "no_state", first_step=7)
