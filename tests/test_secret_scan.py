"""Secret scan (issue 16): every recipe kind (text, image, continual) run at tiny settings with a fake Hub token given
every way a user can -- ``$HF_TOKEN`` (and its older name), ``training.hub_token`` (refused), a ``hub`` section key
(refused), a misspelled key -- leaves the token in no file under ``output_dir`` (every byte of every file,
checkpoints and binary files included) and in no output: stdout, stderr (file-descriptor level, so the libraries'
own handlers count) and log records."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_config_cli import _tiny_run_config, tiny_data, tiny_model_dir  # noqa: F401  (fixtures)
from test_recipe_image import _cfg as _image_cfg
from test_recipe_image import image_folder, tiny_vit_dir  # noqa: F401  (fixtures)

TOKEN = "hf_SecretScanTokenAbCdEfGh0123456"  # shaped like a real token
PLAIN = "plain-secret-scan-token-98765"  # a token value that does not look like one: known from the environment


def _scan(out: Path, texts: list[str]) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files, f"nothing written under {out}"
    for p in files:
        data = p.read_bytes()
        for t in (TOKEN, PLAIN):
            assert t.encode() not in data, f"{t[:8]}... found in {p}"
    for text in texts:
        for t in (TOKEN, PLAIN):
            assert t not in text, f"{t[:8]}... found in the output: {text[-2000:]}"


def _run(cfg: Path, overrides: list[str], capfd, caplog) -> tuple[int, str]:
    from tl_hf.cli import main

    with caplog.at_level(logging.DEBUG):
        rc = main(["run", str(cfg), *overrides])
    out, err = capfd.readouterr()
    log = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    caplog.clear()
    return rc, out + "\n" + err + "\n" + log


def _attempts(cfg: Path, out: Path, capfd, caplog) -> list[str]:
    """The refused ways: hub_token in training, a token key in the hub section, a misspelled key with a token
    value. Each exits 2 with one line naming the key, without the value, and writes nothing."""
    texts = []
    for override, key in ((f"training.hub_token={TOKEN}", "training.hub_token"),
                          (f"hub.token={TOKEN}", "hub.token"),
                          (f"training.hub_tokn={TOKEN}", "hub_tokn")):
        rc, text = _run(cfg, [override], capfd, caplog)
        assert rc == 2, (override, text[-2000:])
        assert key in text and "Traceback" not in text, (override, text[-2000:])
        assert not out.exists(), f"{override}: output_dir created"
        texts.append(text)
    return texts


def _push_offline(cfg: Path, out: Path, capfd, caplog, extra=()) -> str:
    """A full run that saves checkpoints and the model and then pushes, offline: exit 2, everything saved."""
    rc, text = _run(cfg, ["hub.push=true", "hub.repo_id=me/secret-scan", *extra], capfd, caplog)
    assert rc == 2 and "cannot push to me/secret-scan" in text and "HF_HUB_OFFLINE" in text, text[-3000:]
    return text


@pytest.fixture(autouse=True)
def _tokens(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", PLAIN)


def test_text_recipe_leaves_no_token(tmp_path, tiny_model_dir, tiny_data, capfd, caplog):  # noqa: F811
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    out = tmp_path / "out"
    texts = _attempts(cfg, out, capfd, caplog)
    texts.append(_push_offline(cfg, out, capfd, caplog, ["training.save_strategy=steps", "training.save_steps=1",
                                                        "training.max_steps=2"]))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (out / "training_args.bin").is_file() and (out / "checkpoint-2" / "training_args.bin").is_file()
    assert (out / "run_config.json").is_file() and (out / "README.md").is_file()
    _scan(out, texts)


def test_image_recipe_leaves_no_token(tmp_path, tiny_vit_dir, image_folder, capfd, caplog):  # noqa: F811
    cfg = _image_cfg(tmp_path, tiny_vit_dir, f"{{train_dir: {image_folder / 'train'}, eval_dir: {image_folder / 'val'}}}",
                     extra="  save_strategy: steps\n  save_steps: 1\n")
    out = tmp_path / "out"
    texts = _attempts(cfg, out, capfd, caplog)
    texts.append(_push_offline(cfg, out, capfd, caplog))
    assert (out / "checkpoint-2" / "training_args.bin").is_file() and (out / "model.safetensors").is_file()
    _scan(out, texts)


def test_continual_recipe_leaves_no_token(tmp_path, capfd, caplog):
    from conftest import real_data_root

    root = real_data_root("mnist_t10k")
    out = tmp_path / "out"
    cfg = tmp_path / "continual.yaml"
    cfg.write_text(f"""
task: continual
model: {{name_or_path: "mlp:16", save_model: true}}
data: {{kind: mnist, scenario: class_incremental, pairs: [[0, 1], [2, 3]], max_per_task: 32, root: {root}}}
regularizers: [{{name: ewc, lambda: 5.0, num_samples: 8, batch_size: 8}}]
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 16, learning_rate: 1.0e-2, seed: 0,
           logging_steps: 1, disable_tqdm: true}}
""")
    texts = _attempts(cfg, out, capfd, caplog)
    texts.append(_push_offline(cfg, out, capfd, caplog))
    assert (out / "model" / "README.md").is_file() and (out / "all_results.json").is_file()
    assert any(out.rglob("*.safetensors"))
    _scan(out, texts)
