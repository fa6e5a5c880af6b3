"""FSDP2 (``fully_shard``) with TransferTrainer, 2 CPU processes (gloo), each check against one plain process.

Through which layer: Accelerate enables FSDP only for GPU processes (on CPU it builds a DDP state and drops the
plugin; tl_hf refuses that, see the refusal tests below). The worker (tests/mp/fsdp2_worker.py) therefore patches one
thing, Accelerate's state after ``Accelerator.__init__`` (``distributed_type = FSDP`` with the plugin the Trainer built
from ``TrainingArguments(fsdp=True, fsdp_config={"version": 2, ...})``); the sharding itself is Accelerate's
``fsdp2_prepare_model`` -> torch ``fully_shard`` (per ``BertLayer`` / ``ViTLayer`` and the root), and the Trainer's own
FSDP2 optimizer, checkpoint and full-state-dict code runs. It is not ``accelerate launch`` but
``torch.distributed.run`` with the Trainer's FSDP arguments.

The slow test launches the worker 3 times (main scenarios; a run SIGKILLed after checkpoint-3; its resume).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_multiprocess import _tail, run_worker

WORKER = Path(__file__).resolve().parent / "mp" / "fsdp2_worker.py"


def _launch(tmp_path, mode):
    import os
    import subprocess
    import sys

    from test_multiprocess import _DIST_ENV, REPO, _free_port

    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path), mode]
    return subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def _ranks(folder: Path):
    return [(json.loads((folder / f"rank{r}.json").read_text()), load_file(str(folder / f"rank{r}.safetensors")))
            for r in range(2)]


def _sub(tensors, prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _close(a, b, atol, what, rel=False):
    """The max difference of two tensor dicts (``rel``: relative to each tensor's largest value, at least 1e-6:
    a key bias's Fisher is 0 up to rounding, ~1e-20), checked."""
    assert set(a) == set(b), f"{what}: different keys {sorted(set(a) ^ set(b))[:4]}"
    worst, key = max((float((a[k].float() - b[k].float()).abs().max()
                            / (max(float(b[k].abs().max()), 1e-6) if rel else 1)), k) for k in a)
    assert worst <= atol, (f"{what}: max {'relative' if rel else 'abs'} diff {worst:.3g} > {atol} at {key} "
                           f"(max {float(b[key].abs().max()):.3g})")
    return worst


@pytest.mark.slow
@pytest.mark.multiprocess
def test_fsdp2_two_processes_match_one(tmp_path):
    from mp import fsdp2_worker as W

    res = run_worker(tmp_path, worker=WORKER, timeout=500)  # mode main
    assert res.returncode == 0, f"worker failed\n{_tail(res.stderr)}"
    (m0, t0), (m1, t1) = _ranks(tmp_path / "main")
    ref_dir = str(tmp_path / "ref")
    diffs = {}

    # -- LLRD + gradual unfreezing on BERT: groups, lrs per depth, frozen shards unchanged, same weights --------------
    meta, ref = W.bert_llrd_gradual(ref_dir, False)
    assert m0["bert"]["dtensor"] == "DTensor", "the model was not sharded"
    for m in (m0, m1):
        assert m["bert"]["groups"] == meta["groups"]
        for got, want in zip(m["bert"]["lr_logs"], meta["lr_logs"]):
            assert got == pytest.approx(want, rel=1e-12)
        assert m["bert"]["trainable"] == meta["trainable"]
    assert len({g[2] for g in meta["groups"]}) == 4  # embeddings, layer.0, layer.1, head: four lrs
    init, final = _sub(ref, "init/"), _sub(t0, "bert/final/")
    assert final.keys() == _sub(t1, "bert/final/").keys()
    assert all(torch.equal(final[k], _sub(t1, "bert/final/")[k]) for k in final), "ranks disagree after gathering"
    diffs["bert"] = _close(final, _sub(ref, "final/"), 1e-5, "BERT gradual weights vs one process")
    # phase 0: head + layer.1 train; from step 2 layer.0 too; the embeddings stay frozen (trainable 7944 -> 14733)
    assert meta["trainable"] == [7944, 7944, 14733, 14733]
    frozen = [k for k in final if k.startswith("bert.embeddings.") and k in init]
    assert frozen and all(torch.equal(final[k], init[k]) for k in frozen), "a frozen shard moved"
    for k in ("bert.encoder.layer.0.output.dense.weight", "bert.encoder.layer.1.output.dense.weight"):
        assert not torch.equal(final[k], init[k]), f"{k} was unfrozen but did not train"

    # -- ViT top-k + online EWC Fisher --------------------------------------------------------------------------------
    meta, ref = W.vit_topk_online_ewc(ref_dir, False)
    for m in (m0, m1):
        assert m["vit"]["groups"] == meta["groups"] and m["vit"]["trainable"] == meta["trainable"]
    init, final = _sub(ref, "init/"), _sub(t0, "vit/final/")
    diffs["vit"] = _close(final, _sub(ref, "final/"), 1e-5, "ViT top_k weights vs one process")
    moved = {k for k in final if not torch.equal(final[k], init[k])}
    assert moved == {k for k in init if not torch.equal(_sub(ref, "final/")[k], init[k])}
    assert moved and any(k.startswith("classifier") for k in moved) and not any("embeddings" in k for k in moved)
    for t in (t0, t1):
        diffs["online_ewc_fisher"] = _close(_sub(t, "vit/fisher/"), _sub(ref, "fisher/"), 1e-4, "online EWC Fisher",
                                             rel=True)

    # -- EWC + L2-SP penalties, replay and DER memories -------------------------------------------------------------
    meta, ref = W.bert_ewc_l2sp(ref_dir, False)
    for m, t in ((m0, t0), (m1, t1)):
        assert m["ewc"]["replay"] == meta["replay"] and len(meta["replay"]) == 6, "replay memories differ"
        assert m["ewc"]["der"] == meta["der"] and len(meta["der"]) == 5, "DER memories differ"
        _close(_sub(t, "ewc/der/"), _sub(ref, "der/"), 1e-5, "DER stored logits")
        diffs["ewc_fisher"] = _close(_sub(t, "ewc/fisher/"), _sub(ref, "fisher/"), 1e-4, "EWC Fisher", rel=True)
        for k in ("penalty/ewc", "penalty/l2sp"):  # counted once: the value equals the one-process value
            assert m["ewc"]["penalty"][k] == pytest.approx(meta["penalty"][k], rel=1e-4, abs=1e-9), k
        assert m["ewc"]["loss"] == pytest.approx(meta["loss"], rel=1e-5)
    assert meta["penalty"]["penalty/ewc"][-1] > 0 and meta["penalty"]["penalty/l2sp"][-1] > 0
    diffs["ewc_l2sp"] = _close(_sub(t0, "ewc/final/"), _sub(ref, "final/"), 1e-5, "EWC + L2-SP weights vs one")

    # -- SIGKILL after checkpoint-3, resume in fresh processes: equal to the uninterrupted 2-process run ------------
    crash = _launch(tmp_path, "crash")
    assert crash.returncode != 0, "the crash run was not killed"
    ckpt = tmp_path / "crashed" / "checkpoint-3"
    assert (ckpt / "tl_hf_state.json").exists()
    saved_ewc = load_file(str(ckpt / "tl_hf_reg_ewc.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in _sub(t0, "resume/final/").items()}
    for k, v in saved_ewc.items():  # written once, full (not a rank's shard)
        assert tuple(v.shape) == shapes[k.split(".", 2)[2]], k
    resumed = _launch(tmp_path, "resume")
    assert resumed.returncode == 0, f"resume failed\n{_tail(resumed.stderr)}"
    (r0, s0), (r1, s1) = _ranks(tmp_path / "resume")
    for r, s in ((r0, s0), (r1, s1)):
        diffs["resume"] = _close(_sub(s, "resume/final/"), _sub(t0, "resume/final/"), 1e-6, "resumed vs uninterrupted")
        _close(_sub(s, "resume/state/"), _sub(t0, "resume/state/"), 0.0, "restored Fisher / anchors")
        assert r["resume"]["phase"] == m0["resume"]["phase"] == 1
    # -- the saved model is a plain full state dict that from_pretrained loads ---------------------------------------
    from transformers import BertForSequenceClassification

    loaded = BertForSequenceClassification.from_pretrained(str(tmp_path / "crashed" / "saved"))
    _close({k: v for k, v in loaded.state_dict().items() if k in shapes}, _sub(s0, "resume/final/"), 0.0,
           "from_pretrained")
    print("FSDP2 max abs diffs:", {k: f"{v:.2e}" for k, v in diffs.items()})


# -- refusals (no processes needed) -----------------------------------------------------------------------------------
def _accel(version=None, **plugin):
    state = SimpleNamespace(num_processes=1, distributed_type="DistributedType.NO",
                            fsdp_plugin=None if version is None else SimpleNamespace(fsdp_version=version, **plugin))
    return SimpleNamespace(state=state)


def test_fsdp_asked_for_but_not_running_is_refused(monkeypatch):
    from tl_hf._errors import ConfigError
    from tl_hf.core.fsdp import check_fsdp

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    check_fsdp(SimpleNamespace(fsdp=False), _accel())  # nothing asked, nothing running
    with pytest.raises(ConfigError, match=r"Accelerate did not enable it.*NO with 1 process.*fsdp2\.yaml"):
        check_fsdp(SimpleNamespace(fsdp=True), _accel())
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="silently train without sharding"):
        check_fsdp(SimpleNamespace(fsdp=False), _accel())


def test_fsdp2_refusals_name_the_fix():
    from tiny import tiny_bert

    from tl_hf._errors import ConfigError
    from tl_hf.core.fsdp import check_fsdp

    args, acc = SimpleNamespace(fsdp=True), _accel(2, auto_wrap_policy="x")
    check_fsdp(args, acc, freezing_policy="gradual", model=tiny_bert(), regularizers=[SimpleNamespace(name="ewc")])
    with pytest.raises(ConfigError, match=r"averaging .* not supported under FSDP2.*ddp\.yaml"):
        check_fsdp(args, acc, averaging=True)
    lora = tiny_bert()
    lora.peft_config = {"default": object()}
    with pytest.raises(ConfigError, match=r"LoRA \(peft\) with freezing policy 'top_k' is not supported under FSDP2"):
        check_fsdp(args, acc, freezing_policy="top_k", model=lora)
    check_fsdp(args, acc, model=lora)  # LoRA alone: the adapter is the only trainable part, nothing of tl_hf's
    with pytest.raises(ConfigError, match=r"regularizers \(l2sp\) under FSDP2 need a transformers model"):
        check_fsdp(args, acc, model=torch.nn.Linear(2, 2), regularizers=[SimpleNamespace(name="l2sp")])
    # plain SGD keeps no optimizer state: its FSDP2 checkpoint could not be resumed
    with pytest.raises(ConfigError, match=r"sgd without momentum .*training\.optim_args: momentum=0\.9"):
        check_fsdp(SimpleNamespace(fsdp=True, optim="sgd", optim_args=None), acc)
    check_fsdp(SimpleNamespace(fsdp=True, optim="sgd", optim_args="momentum=0.9, nesterov=True"), acc)
    check_fsdp(SimpleNamespace(fsdp=True, optim="sgd", optim_args=None, save_strategy="no"), acc)  # nothing to resume
    check_fsdp(SimpleNamespace(fsdp=True, optim="adamw_torch", optim_args=None), acc)
    # FSDP1 keeps its refusal without use_orig_params
    with pytest.raises(ValueError, match=r"under FSDP \(version 1\) needs use_orig_params=True"):
        check_fsdp(args, _accel(1, use_orig_params=False), freezing_policy="top_k")
    check_fsdp(args, _accel(1, use_orig_params=True), freezing_policy="top_k")


def test_shard_helpers_are_no_ops_without_dtensors():
    from tiny import tiny_bert

    from tl_hf.core.fsdp import full_state, plain_replica, shard_state
    from tl_hf.regularizers import L2SP

    model = tiny_bert()
    reg = L2SP(alpha=1.0)
    reg.bind(model)
    before = {k: v.clone() for k, v in reg.state_dict()[0].items()}
    shard_state(reg, model)
    with full_state([reg]):
        pass
    after = reg.state_dict()[0]
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert plain_replica(model) is model
