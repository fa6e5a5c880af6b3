"""Bad-input matrix, library and process rows: regularizer state folders (EWC), ``tl-hf inspect``, the real
``python -m tl_hf.cli`` process (exit code 2, one line, no traceback) and the size of the whole matrix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from matrix_harness import (FAKE_TOKEN, Ctx, all_of, assert_one_line_refusal, ctx, seed_checkpoint, snapshot,  # noqa: F401
                            tiny_model_dir)

# ---------------------------------------------------------------------------------------------------------------------
# library rows: regularizer state files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tiny_model_dir):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)


def _saved_ewc(folder: Path, model, *, model_type: str = "bert", shapes: dict | None = None,
               names: list[str] | None = None) -> Path:
    import torch

    from tl_hf.regularizers import EWC

    params = dict(model.named_parameters())
    names = names or ["classifier.weight", "bert.encoder.layer.1.output.dense.weight"]
    shapes = shapes or {}
    fisher = {n: torch.ones(shapes.get(n, tuple(params[n].shape))) if n in params else torch.ones(shapes[n])
              for n in names}
    anchors = {n: torch.zeros_like(f) for n, f in fisher.items()}
    ewc = EWC(lambda_=1.0)
    ewc.tasks = [(fisher, anchors)]
    ewc.meta = {"model_type": model_type, "num_examples": 8, "num_tasks": 1}
    ewc.save(str(folder))
    return folder


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _lib_other_arch(tmp, model):
    _saved_ewc(tmp, model, model_type="distilbert")
    return "bind"


def _lib_shape_mismatch(tmp, model):
    _saved_ewc(tmp, model, shapes={"classifier.weight": (5, 32)})
    return "bind"


def _lib_uncovered(tmp, model):
    _saved_ewc(tmp, model, names=["vit.encoder.layer.0.output.dense.weight"],
               shapes={"vit.encoder.layer.0.output.dense.weight": (32, 37)})
    return "bind"


def _lib_truncated_tensors(tmp, model):
    _saved_ewc(tmp, model)
    _truncate(tmp / "tl_hf_ewc.safetensors")
    return "load"


def _lib_missing_tensors(tmp, model):
    _saved_ewc(tmp, model)
    (tmp / "tl_hf_ewc.safetensors").unlink()
    return "load"


def _lib_truncated_json(tmp, model):
    _saved_ewc(tmp, model)
    _truncate(tmp / "tl_hf_ewc.json")
    return "load"


def _lib_json_wrong_shape(tmp, model):
    _saved_ewc(tmp, model)
    (tmp / "tl_hf_ewc.json").write_text("[1, 2, 3]")
    return "load"


def _lib_wrong_regularizer(tmp, model):
    from tl_hf.regularizers import L2SP

    L2SP().save(str(tmp), prefix="tl_hf_ewc")
    return "load"


def _lib_no_state(tmp, model):
    return "load"


@pytest.mark.parametrize("prep, exc_type, expected", [
    pytest.param(_lib_other_arch, ValueError, ["computed on a distilbert model", "this model is bert",
                                               "Recompute the Fisher"], id="ewc-fisher-other-architecture"),
    pytest.param(_lib_shape_mismatch, ValueError, ["'classifier.weight'", "(2, 32) in the model", "(5, 32)",
                                                   "exempt=['classifier']"], id="ewc-fisher-shape-mismatch"),
    pytest.param(_lib_uncovered, ValueError, ["no parameter of the model is covered"], id="ewc-fisher-no-overlap"),
    pytest.param(_lib_truncated_tensors, ValueError, ["tl_hf_ewc.safetensors", "truncated or corrupt"],
                 id="ewc-truncated-safetensors"),
    pytest.param(_lib_missing_tensors, ValueError, ["tl_hf_ewc.safetensors", "missing"],
                 id="ewc-missing-safetensors"),
    pytest.param(_lib_truncated_json, ValueError, ["tl_hf_ewc.json", "truncated or corrupt"],
                 id="ewc-truncated-json"),
    pytest.param(_lib_json_wrong_shape, ValueError, ["tl_hf_ewc.json"], id="ewc-json-wrong-shape"),
    pytest.param(_lib_wrong_regularizer, ValueError, ["holds 'l2sp' state, not 'ewc'"], id="ewc-file-of-l2sp"),
    pytest.param(_lib_no_state, FileNotFoundError, ["tl_hf_ewc.json not found", "no saved ewc state"],
                 id="ewc-no-state-in-folder"),
])
def test_regularizer_state_errors(tmp_path, tiny_bert, prep, exc_type, expected):
    from tl_hf.regularizers import EWC

    folder = tmp_path / "ewc_state"
    folder.mkdir()
    stage = prep(folder, tiny_bert)
    before = snapshot(folder)
    ewc = EWC(lambda_=1.0)
    with pytest.raises(exc_type) as err:
        ewc.load(str(folder))
        assert stage == "bind", "load() accepted a broken state file"
        ewc.bind(tiny_bert)
    msg = str(err.value)
    assert "\n" not in msg.strip()
    for s in expected:
        assert s in msg, f"{s!r} not in {msg!r}"
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------------------------------
# the inspect command
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    pytest.param(["inspect", "/nonexistent/model"], ["model directory not found", "/nonexistent/model"],
                 id="inspect-model-missing"),
    pytest.param(["inspect", "{model}", "--decay", "0"], ["--decay", "must be > 0"], id="inspect-decay-zero"),
    pytest.param(["inspect", "{model}", "--lr", "fast"], ["--lr", "expected a number"], id="inspect-lr-not-a-number"),
    pytest.param(["inspect", "some-org/not-cached-model"], ["HF_HUB_OFFLINE"], id="inspect-hub-id-offline"),
    pytest.param(["inspect", "{model}/config.json"], ["config.json", "is a file"], id="inspect-model-is-a-file"),
    pytest.param(["train", "x.yaml"], ["invalid choice", "train"], id="cli-unknown-command"),
])
def test_cli_inspect_bad_input(tiny_model_dir, capsys, argv, expected, monkeypatch):  # noqa: F811
    from tl_hf.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_HF_DEBUG", raising=False)
    argv = [a.format(model=tiny_model_dir) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    assert_one_line_refusal(rc, capsys.readouterr().err, expected)


# ---------------------------------------------------------------------------------------------------------------------
# real processes: exit code 2, one error line, no traceback
# ---------------------------------------------------------------------------------------------------------------------

def _process(ctx: Ctx, *args: str) -> subprocess.CompletedProcess:  # noqa: F811
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TL_HF_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "tl_hf.cli", "run", str(ctx.cfg), *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False, cwd=ctx.tmp)


@pytest.mark.parametrize("prep, override, expected", [
    pytest.param(None, "llrd.decya=0.9", ["llrd.decya", "decay"], id="process-misspelled-key"),
    pytest.param(lambda c: c.drop_checkpoint(), "data.text_column=txt", ["'txt'", "sentence"],
                 id="process-missing-column"),  # without checkpoint-1: the resume refusal would come first
    pytest.param(lambda c: c.append("training: {learning_rate: 5e-4}\n"), "llrd.decay=0.8",
                 all_of("'training'", "(twice|duplicate)"), id="process-duplicate-section"),
    pytest.param(None, f"training.hub_tokn={FAKE_TOKEN}", rf"^(?!.*{FAKE_TOKEN[:8]}).*hub_tokn",
                 id="process-token-never-echoed"),
    pytest.param(lambda c: (c.out / "checkpoint-1" / "tl_hf_state.json").write_text('{"phase": '), "llrd.decay=0.8",
                 ["tl_hf_state.json", "truncated or corrupt"], id="process-truncated-checkpoint-state"),
])
def test_process_exit_code(ctx, prep, override, expected):  # noqa: F811
    if prep:
        prep(ctx)
    before = snapshot(ctx.out)
    proc = _process(ctx, override)
    assert_one_line_refusal(proc.returncode, proc.stderr, expected)
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    assert snapshot(ctx.out) == before


# ---------------------------------------------------------------------------------------------------------------------
# the size of the matrix (issue 16: at least 150 named rows of bad input)
# ---------------------------------------------------------------------------------------------------------------------

def test_matrix_has_at_least_150_named_rows():
    import test_config_rows
    import test_data_rows
    import test_model_checkpoint_rows

    rows = [p.id for rows in (test_config_rows.CONFIG_ROWS, test_data_rows.DATA_ROWS,
                              test_model_checkpoint_rows.MODEL_ROWS) for p in rows]
    assert len(rows) == len(set(rows)), "row names must be unique"
    assert len(rows) >= 150, f"{len(rows)} exit-2 CLI rows"
