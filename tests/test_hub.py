"""Model cards and Hub pushes (tl_hf.hub), end to end over HTTP against a local Hub stand-in (tests/hub_server.py).

The pushes run in a subprocess: huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when it is imported, and this
process runs offline (conftest). The subprocess is this file run as a script (``--push-worker``).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

ARGS_TOKEN = "hf_ArgsTokenAbCdEfGhIjKlMn0123"  # TrainingArguments(hub_token=...)
ENV_TOKEN = "hf_EnvTokenZyXwVuTsRqPoNm98765"  # $HF_TOKEN
TOKENS = (ARGS_TOKEN, ENV_TOKEN)
TOKEN_LIKE = re.compile(rb"hf_[A-Za-z0-9]{10,}")
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------------
# The subprocess: train and push a full model and a LoRA adapter to $HF_ENDPOINT
# ---------------------------------------------------------------------------------------------------------------------

def _push_worker(out: str) -> None:
    sys.path.insert(0, str(HERE))
    import huggingface_hub.constants as hc
    from peft import LoraConfig, get_peft_model

    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer
    from tl_hf.hub import push
    from tl_hf.regularizers import L2SP

    assert not hc.HF_HUB_OFFLINE and hc.ENDPOINT == os.environ["HF_ENDPOINT"], "worker must run online vs local hub"
    result = {}

    # full model: LLRD + gradual unfreezing by step + L2-SP; the token comes from TrainingArguments
    tr = TransferTrainer(tiny_bert(), training_args(Path(out) / "full", max_steps=2, hub_token=ARGS_TOKEN),
                         train_dataset=TokenDataset(16), eval_dataset=TokenDataset(8, seed=1),
                         llrd={"decay": 0.75}, freezing={"policy": "gradual", "schedule": {"unit": "step"}},
                         regularizers=[L2SP(alpha=0.25, beta=0.01)])
    tr.train()
    metrics = tr.evaluate()
    t0 = time.monotonic()
    commit = push(tr, repo_id="tl-hf-full", dataset_name="tiny-tokens", results=metrics)
    result["full"] = {"output_dir": tr.args.output_dir, "metrics": metrics, "commit": str(commit),
                      "seconds": time.monotonic() - t0, "hub_token_after": tr.args.hub_token,
                      "hub_model_id": tr.hub_model_id}

    # LoRA adapter; no hub_token: the token comes from $HF_TOKEN
    pm = get_peft_model(tiny_bert(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"],
                                                task_type="SEQ_CLS"))
    tr2 = TransferTrainer(pm, training_args(Path(out) / "lora", max_steps=2), train_dataset=TokenDataset(16),
                          llrd={"decay": 0.9}, freezing={"policy": "top_k", "k": 1})
    tr2.train()
    commit = push(tr2, repo_id="tester/tl-hf-lora", results={"eval_accuracy": 0.75}, tags=["my-tag"])
    result["lora"] = {"output_dir": tr2.args.output_dir, "commit": str(commit)}
    Path(out, "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_hub():
    from hub_server import LocalHub

    hub = LocalHub().start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("push")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env.update(HF_ENDPOINT=local_hub.url, HF_TOKEN=ENV_TOKEN, HF_HOME=str(out / "hf_home"), NO_PROXY=no_proxy,
               no_proxy=no_proxy, HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--push-worker", str(out)], env=env, cwd=HERE.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"push worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads((out / "result.json").read_text())
    result["wall"] = time.monotonic() - t0
    return local_hub, result


def _trained(tmp_path, **kw):
    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer

    args_kw = kw.pop("args", {})
    tr = TransferTrainer(tiny_bert(), training_args(tmp_path / "run", max_steps=2, **args_kw),
                         train_dataset=TokenDataset(16), **kw)
    tr.train()
    return tr


def _assert_no_tokens(name: str, data: bytes) -> None:
    for t in TOKENS:
        assert t.encode() not in data, f"token {t[:6]}... found in {name}"
    assert not TOKEN_LIKE.search(data) or name.endswith(".safetensors"), f"token-like string in {name}"


# ---------------------------------------------------------------------------------------------------------------------
# (a) full model, (b) LoRA adapter: pushed over HTTP
# ---------------------------------------------------------------------------------------------------------------------

def test_full_model_push_end_to_end(pushed):
    import torch
    from safetensors.torch import load as load_safetensors

    hub, result = pushed
    files = hub.repos["tester/tl-hf-full"]
    assert {"model.safetensors", "config.json", "README.md"} <= set(files), sorted(files)
    assert not any(p.startswith(("checkpoint-", "_")) for p in files)
    assert result["full"]["commit"].startswith(hub.url + "/tester/tl-hf-full/commit/")
    assert result["full"]["hub_model_id"] == "tester/tl-hf-full"
    out = Path(result["full"]["output_dir"])
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes(), "pushed weights != saved ones"
    assert "classifier.weight" in load_safetensors(files["model.safetensors"])
    assert json.loads(files["config.json"])["model_type"] == "bert"

    readme = files["README.md"].decode()
    assert readme == (out / "README.md").read_text(encoding="utf-8")
    assert readme.count("## Transfer learning") == 1
    for needle in ("decay ξ = `0.75`", "policy: `gradual`", "unit: `step`", "| phase | starts at step |",
                   "| 1 | 1 | layer.1, head |", "**L2-SP**: α = `0.25`", "β = `0.01`", "dataset: `tiny-tokens`",
                   "train examples: 16", "eval examples: 8", "| eval_loss |",
                   "- tl_hf", "- transfer-learning", "- llrd", "- gradual-unfreezing", "- l2-sp"):
        assert needle in readme, f"{needle!r} missing from README.md:\n{readme}"
    from huggingface_hub import ModelCard

    card = ModelCard(readme)
    (res,) = [r for r in card.data.eval_results if r.metric_type == "loss"]
    assert res.metric_value == pytest.approx(result["full"]["metrics"]["eval_loss"])
    assert res.dataset_name == "tiny-tokens" and res.task_type == "text-classification"
    assert "model-index:" in readme

    # tokens: sent as request headers, never in any pushed file (training_args.bin is pushed, without hub_token)
    for repo, repo_files in hub.repos.items():
        for name, data in repo_files.items():
            _assert_no_tokens(f"{repo}/{name}", data)
    assert "training_args.bin" in files
    args = torch.load(io.BytesIO(files["training_args.bin"]), weights_only=False)
    assert args.hub_token is None and args.learning_rate == 1e-3
    assert result["full"]["hub_token_after"] == ARGS_TOKEN, "push must restore trainer.args.hub_token"
    auth = {a for m, p, a in hub.requests if "tl-hf-full" in p}
    assert auth == {f"Bearer {ARGS_TOKEN}"}, auth
    assert ("POST", "/api/repos/create") in {(m, p) for m, p, _ in hub.requests}
    assert not [u for u in hub.unhandled if u != ("GET", "/api/agent-harnesses")], hub.unhandled


def test_peft_adapter_push_sends_adapter_only(pushed):
    from safetensors.torch import load as load_safetensors

    hub, result = pushed
    files = hub.repos["tester/tl-hf-lora"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files), sorted(files)
    assert not {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"} & set(files)
    cfg = json.loads(files["adapter_config.json"])
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == ["query", "value"]
    keys = set(load_safetensors(files["adapter_model.safetensors"]))
    assert any("lora_A" in k for k in keys) and not any("base_layer" in k or "embeddings" in k for k in keys)
    readme = files["README.md"].decode()
    for needle in ("library_name: peft", "## Transfer learning", "### PEFT", "LoRA r = `4`, alpha = `8`, "
                   "dropout = `0.1`", "target modules: `query, value`", "policy: `top_k`", "top k = `1`",
                   "| eval_accuracy | 0.75 |", "- my-tag", "- peft"):
        assert needle in readme, f"{needle!r} missing from README.md:\n{readme}"
    auth = {a for m, p, a in hub.requests if "tl-hf-lora" in p}
    assert auth == {f"Bearer {ENV_TOKEN}"}, auth
    for name, data in files.items():
        _assert_no_tokens(name, data)


# ---------------------------------------------------------------------------------------------------------------------
# (c) offline / unreachable: fail fast, model saved locally
# ---------------------------------------------------------------------------------------------------------------------

def test_offline_push_fails_fast_and_keeps_the_model(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from transformers import BertForSequenceClassification

    from tl_hf.hub import HubUnavailableError, push

    assert hc.is_offline_mode(), "this test runs with HF_HUB_OFFLINE=1 (conftest)"
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    tr = _trained(tmp_path, args={"hub_token": ARGS_TOKEN}, llrd={"decay": 0.8})
    out = Path(tr.args.output_dir)
    t0 = time.monotonic()
    plain = "plain-secret-0123456789"  # an explicit token not shaped like hf_...: scrubbed as a known value
    with pytest.raises(HubUnavailableError) as ei:
        push(tr, repo_id="me/offline-run", dataset_name=f"tiny-{plain}", token=plain)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert isinstance(ei.value, RuntimeError) and "\n" not in msg
    assert str(out) in msg and "HF_HUB_OFFLINE" in msg and "me/offline-run" in msg and "push it later" in msg
    for f in ("model.safetensors", "config.json", "README.md", "training_args.bin"):
        assert (out / f).is_file(), f
    reloaded = BertForSequenceClassification.from_pretrained(out)
    for (n, a), b in zip(tr.model.state_dict().items(), reloaded.state_dict().values()):
        assert a.cpu().equal(b), n
    readme = (out / "README.md").read_text()
    assert "## Transfer learning" in readme and "dataset: `tiny-<redacted>`" in readme
    for p in out.iterdir():
        if p.is_file():
            _assert_no_tokens(p.name, p.read_bytes())
            assert plain.encode() not in p.read_bytes(), p.name
    assert tr.args.hub_token == ARGS_TOKEN


def test_unreachable_hub_fails_fast_without_retries(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from huggingface_hub import HfApi

    from tl_hf import _hub_access
    from tl_hf.hub import HubUnavailableError, push

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", dead)
    monkeypatch.setattr(_hub_access, "endpoint", lambda: dead)
    tr = _trained(tmp_path)
    out = tr.args.output_dir
    t0 = time.monotonic()
    with pytest.raises(HubUnavailableError, match="unreachable") as ei:
        push(tr, repo_id="me/run")  # caught by the TCP pre-check
    assert str(out) in str(ei.value) and time.monotonic() - t0 < 5
    # past the pre-check, huggingface_hub's own connection error is mapped too (create_repo does not retry)
    monkeypatch.setattr(_hub_access, "unreachable_reason", lambda timeout: None)
    with mock.patch("transformers.trainer.hf_api", return_value=HfApi(endpoint=dead)):
        t0 = time.monotonic()
        with pytest.raises(HubUnavailableError, match="ConnectError") as ei:
            push(tr, repo_id="me/run")
    assert str(out) in str(ei.value) and "\n" not in str(ei.value) and time.monotonic() - t0 < 5
    assert (Path(out) / "model.safetensors").is_file()


def test_push_refuses_files_that_contain_a_token(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from tl_hf import _hub_access
    from tl_hf.hub import TokenLeakError, push

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")  # nothing may reach a real Hub (hf_api is mocked)
    monkeypatch.setattr(_hub_access, "unreachable_reason", lambda timeout: None)
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    tr = _trained(tmp_path)
    out = Path(tr.args.output_dir)
    (out / "_private_notes.txt").write_text(ENV_TOKEN)  # never uploaded ("_*"): allowed
    api = mock.MagicMock()
    with mock.patch("transformers.trainer.hf_api", return_value=api):
        push(tr, repo_id="me/run")
        assert api.upload_folder.call_count == 1
        assert api.upload_folder.call_args.kwargs["ignore_patterns"] == ["_*", "checkpoint-*"]
        (out / "notes.txt").write_text(f"login with {ENV_TOKEN}")
        with pytest.raises(TokenLeakError, match="notes.txt"):
            push(tr, repo_id="me/run")
        assert api.upload_folder.call_count == 1, "nothing may be uploaded once a token is found"


# ---------------------------------------------------------------------------------------------------------------------
# (d) the card section: gradual schedules, EWC, online EWC, replay; write_model_card offline
# ---------------------------------------------------------------------------------------------------------------------

def _trainer(tmp_path, **kw):
    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer

    args_kw = kw.pop("args", {})
    return TransferTrainer(tiny_bert(), training_args(tmp_path, **args_kw), train_dataset=TokenDataset(16),
                           eval_dataset=TokenDataset(8), **kw)


def test_card_section_gradual_ewc_replay(tmp_path):
    from tl_hf.hub import SECTION_END, SECTION_START, transfer_card_section
    from tl_hf.regularizers import EWC, Replay

    tr = _trainer(tmp_path, llrd={"decay": 0.4, "head_lr": 5e-3, "min_lr_scale": 0.1},
                  freezing={"policy": "gradual", "schedule": {
                      "unit": "epoch", "rewarm_steps": 5,
                      "phases": [{"start": 0, "depths": 0}, {"start": 1, "depths": 1},
                                 {"start": 3, "depths": [0, 1, 2]}]}},
                  regularizers=[EWC(lambda_=250.0, estimator="exact", num_samples=64),
                                Replay(budget=32, mode="term", weight=0.5)])
    s = transfer_card_section(tr, dataset_name="glue/sst2", results={"eval_accuracy": 0.875, "eval_runtime": 1.5})
    assert s.startswith(SECTION_START) and s.rstrip().endswith(SECTION_END)
    for needle in ("base model: none", "`BertForSequenceClassification` (model_type `bert`",
                   "depth levels: 4 (0 = embeddings, 1..2 = 2 blocks, 3 = head)",
                   "decay ξ = `0.4`", "head lr: `0.005`", "floor (min lr scale): `0.1`",
                   "| 0 | embeddings | 0.0001 |", "| 1 | layer.0 | 0.00016 |", "| 3 | head | 0.005 |",
                   "policy: `gradual`", "unit: `epoch`", "explicit phases: 3",
                   "re-warm of newly unfrozen groups: `5` steps",
                   "| phase | starts at epoch | trainable depths |", "| 0 | 0 | head |", "| 1 | 1 | layer.1, head |",
                   "| 2 | 3 | embeddings, layer.0, layer.1, head |",
                   "**EWC**: λ = `250`, Fisher estimator `exact`", "`64` samples",
                   "**replay**: budget `32` examples", "mode `term`", "weight `0.5`",
                   "dataset: `glue/sst2`", "train examples: 16", "eval examples: 8", "| eval_accuracy | 0.875 |"):
        assert needle in s, f"{needle!r} missing:\n{s}"
    assert "eval_runtime" not in s and "### PEFT" not in s


def test_card_section_online_ewc_generated_schedule_and_static_policies(tmp_path):
    from tl_hf.hub import transfer_card_section
    from tl_hf.regularizers import OnlineEWC

    tr = _trainer(tmp_path / "a", freezing={"policy": "gradual", "schedule": {"every": 2, "direction": "bottom_up"}},
                  regularizers=[OnlineEWC(lambda_=10.0, gamma=0.9, estimator="sampled")])
    s = transfer_card_section(tr)
    for needle in ("LLRD off: decay ξ = `1`", "direction: `bottom_up`", "a new phase every `2` epoch(s)",
                   "| 1 | 2 | embeddings, head |", "| 3 | 6 | embeddings, layer.0, layer.1, head |",
                   "**online EWC**: λ = `10`, γ = `0.9`, Fisher estimator `sampled`", "dataset: not specified"):
        assert needle in s, f"{needle!r} missing:\n{s}"
    s = transfer_card_section(_trainer(tmp_path / "b", freezing={"policy": "top_k", "k": 1, "train_embeddings": True}))
    assert "top k = `1` blocks and the head train; embeddings train" in s and "- none" in s
    s = transfer_card_section(_trainer(tmp_path / "c", freezing={"policy": "patterns", "exclude": [r"embeddings\."]}))
    assert "exclude (frozen): `embeddings\\.`" in s and "include (trainable): all parameters" in s


def test_write_model_card_offline_tags_model_index_and_scrubbing(tmp_path):
    from huggingface_hub import EvalResult, ModelCard

    from tl_hf.hub import scrub_tokens, write_model_card
    from tl_hf.regularizers import EWC, Replay

    tr = _trainer(tmp_path, args={"hub_token": ARGS_TOKEN}, llrd={"decay": 0.9},
                  freezing={"policy": "gradual"}, regularizers=[EWC(lambda_=5.0), Replay(budget=8)])
    extra = EvalResult(task_type="text-classification", dataset_type="glue", dataset_name="GLUE SST-2",
                       dataset_config="sst2", dataset_split="validation", metric_type="f1", metric_value=0.5)
    for _ in range(2):  # rewriting keeps one section
        path = write_model_card(tr, dataset_name="sst2", results={"eval_accuracy": 0.9, "epoch": 1.0},
                                eval_results=[extra], language="en", license="apache-2.0",
                                finetuned_from=f"me/{ARGS_TOKEN}")
    text = Path(path).read_text(encoding="utf-8")
    assert text.count("## Transfer learning") == 1
    card = ModelCard(text)
    assert {"tl_hf", "transfer-learning", "llrd", "gradual-unfreezing", "ewc", "replay",
            "continual-learning"} <= set(card.data.tags)
    assert card.data.language in ("en", ["en"]) and card.data.license == "apache-2.0"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("f1", 0.5)]
    assert "**EWC**: λ = `5`" in text and "**replay**: budget `8`" in text and "| eval_accuracy | 0.9 |" in text
    assert ARGS_TOKEN not in text and "<redacted>" in text
    # model-index from a metrics dict when eval_results is not given
    write_model_card(tr, dataset_name="sst2", results={"eval_accuracy": 0.9, "eval_runtime": 2.0, "epoch": 1.0})
    card = ModelCard.load(path)
    assert [(r.metric_type, r.metric_value, r.dataset_name) for r in card.data.eval_results] == [
        ("accuracy", 0.9, "sst2")]
    assert scrub_tokens(f"a {ENV_TOKEN} b hf_short", [ENV_TOKEN]) == "a <redacted> b hf_short"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--push-worker":
        _push_worker(sys.argv[2])
    else:
        sys.exit("usage: test_hub.py --push-worker OUT_DIR (run the tests with pytest)")
