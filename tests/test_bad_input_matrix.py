"""Bad-input matrix: every wrong config / data / model / state / checkpoint / Hub input ends with a clear, specific
message, a non-zero exit (CLI rows), no traceback, and leaves existing outputs and checkpoints untouched.

Each CLI row runs ``tl_hf.cli.main(["run", CONFIG, *overrides])`` in process against an output_dir that already holds
a sentinel file and a real ``checkpoint-1/`` (copied from one tiny run done once per module), and checks that the
bytes and mtimes of everything that was there before are unchanged afterwards. Library rows call the library and
check the exception type and message. A few rows run the real ``python -m tl_hf.cli`` to prove the exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from test_config_cli import TRAIN_ROWS, _tiny_run_config, _write, tiny_model_dir  # noqa: F401  (fixture)

# ---------------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------------


def _make_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in TRAIN_ROWS]
    (root / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def seed_checkpoint(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811
    """A real ``checkpoint-1`` written by one 1-step tiny run (done once for the module)."""
    from tl_hf.cli import main

    base = tmp_path_factory.mktemp("seed_run")
    data = _make_data(base / "data")
    cfg = _tiny_run_config(base, tiny_model_dir, data)
    assert main(["run", str(cfg), "training.max_steps=1", "training.save_strategy=steps",
                 "training.save_steps=1"]) == 0
    ckpt = base / "out" / "checkpoint-1"
    assert (ckpt / "tl_hf_state.json").is_file() and (ckpt / "trainer_state.json").is_file()
    return ckpt


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 1-layer ViT image classifier (16x16 inputs) saved with save_pretrained."""
    import torch
    import transformers as T

    out = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                      image_size=16, patch_size=8, num_labels=2)
    T.ViTForImageClassification(cfg).save_pretrained(out)
    return out


@dataclass
class Ctx:
    tmp: Path
    model: Path
    data: Path
    out: Path
    cfg: Path
    vit: Path | None = None
    extra: dict = field(default_factory=dict)


@pytest.fixture
def ctx(tmp_path, tiny_model_dir, seed_checkpoint, request) -> Ctx:  # noqa: F811
    data = _make_data(tmp_path / "data")
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "SENTINEL.txt").write_text("existing results that must survive a failed run\n")
    shutil.copytree(seed_checkpoint, out / "checkpoint-1")  # copy2: bytes and mtimes as in the seed run
    return Ctx(tmp=tmp_path, model=tiny_model_dir, data=data, out=out, cfg=cfg)


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    snap = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            snap[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return snap


def _append(ctx: Ctx, text: str) -> None:
    ctx.cfg.write_text(ctx.cfg.read_text() + text)


def _replace(ctx: Ctx, old: str, new: str) -> None:
    text = ctx.cfg.read_text()
    assert old in text
    ctx.cfg.write_text(text.replace(old, new))


# ---------------------------------------------------------------------------------------------------------------------
# preparations of CLI rows (each may edit the config / files and return extra overrides)
# ---------------------------------------------------------------------------------------------------------------------

def _bad_yaml(c: Ctx):
    c.cfg.write_text("training: {output_dir: [unclosed\n  learning_rate: 1e-3\n")


def _yaml_list(c: Ctx):
    c.cfg.write_text("- model\n- data\n")


def _missing_cfg(c: Ctx):
    c.cfg.unlink()


def _regs(spec: str):
    return lambda c: _append(c, f"regularizers: {spec}\n")


def _l2sp_missing_source(c: Ctx):
    # checkpoint-1 was written without regularizers: with it in place the run stops on that mismatch first
    # (row ckpt-other-regularizers), so this row keeps only the sentinel
    shutil.rmtree(c.out / "checkpoint-1")
    _append(c, "regularizers: [{name: l2sp, source: /nonexistent/pretrained}]\n")


def _gradual_bad_depths(c: Ctx):
    _append(c, "freezing: {policy: gradual, schedule: {unit: step, phases: [{start: 0, depths: [7]}]}}\n")


def _labels_outside_set(c: Ctx):
    rows = [{"review": "good", "sentiment": "pos"}, {"review": "bad", "sentiment": "neg"},
            {"review": "meh", "sentiment": "neutral"}, {"review": "fine", "sentiment": "pos"}]
    (c.data / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return ["data.train_file=s.jsonl", "data.eval_file=s.jsonl", "data.text_column=review",
            "data.label_column=sentiment", "data.label_names=[neg, pos]"]


def _eval_label_unseen(c: Ctx):
    (c.data / "t.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in
                                              [("good", "pos"), ("bad", "neg")]) + "\n")
    (c.data / "e.jsonl").write_text(json.dumps({"text": "so so", "label": "mixed"}) + "\n")
    return ["data.train_file=t.jsonl", "data.eval_file=e.jsonl", "data.text_column=text"]


def _empty_train_split(c: Ctx):
    (c.data / "train.tsv").write_text("sentence\tlabel\n")


def _image_cfg(c: Ctx, data_lines: str) -> None:
    c.cfg.write_text(f"""
task: image_classification
model: {{name_or_path: {c.vit}}}
data: {{{data_lines}}}
training: {{output_dir: {c.out}, max_steps: 2, per_device_train_batch_size: 2, use_cpu: true, disable_tqdm: true}}
""")


def _bad_image_fail(c: Ctx):
    import numpy as np
    from PIL import Image

    root = c.tmp / "imgs"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i + (100 if cls == "bees" else 0), np.uint8)).save(
                root / cls / f"{i}.png")
    (root / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    _image_cfg(c, f"train_dir: {root}, on_bad_image: fail, image_size: 16")


def _unknown_image_dataset(c: Ctx):
    _image_cfg(c, "dataset: hymenopter")


def _not_a_model_dir(c: Ctx):
    d = c.tmp / "not_a_model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"\0" * 16)
    return [f"model.name_or_path={d}"]


def _model_is_file(c: Ctx):
    return [f"model.name_or_path={c.model / 'config.json'}"]


def _model_copy(c: Ctx) -> Path:
    d = c.tmp / "model_copy"
    shutil.copytree(c.model, d)
    return d


def _truncated_model_weights(c: Ctx):
    d = _model_copy(c)
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    return [f"model.name_or_path={d}"]


def _corrupt_model_config(c: Ctx):
    d = _model_copy(c)
    (d / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    return [f"model.name_or_path={d}"]


def _truncate_ckpt_file(name: str, keep: int = 40):
    def prep(c: Ctx):
        p = c.out / "checkpoint-1" / name
        p.write_bytes(p.read_bytes()[:keep])
    return prep


def _empty_eval_split(c: Ctx):
    (c.data / "dev.tsv").write_text("sentence\tlabel\n")


def _corrupt_jsonl(c: Ctx):
    (c.data / "t.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "lab\n')
    return ["data.train_file=t.jsonl", "data.eval_file=null", "data.text_column=text"]


def _truncate_ckpt_state(c: Ctx):
    p = c.out / "checkpoint-1" / "tl_hf_state.json"
    p.write_text(p.read_text()[:25])


def _ckpt_other_model(c: Ctx):
    p = c.out / "checkpoint-1" / "tl_hf_state.json"
    state = json.loads(p.read_text())
    state["layer_map"]["num_blocks"] = 6
    p.write_text(json.dumps(state))


def _ckpt_other_regularizers(c: Ctx):
    _append(c, "regularizers: [{name: l2sp, alpha: 0.1}]\n")


# ---------------------------------------------------------------------------------------------------------------------
# the CLI matrix: id, preparation, overrides, substrings the error line must contain
# ---------------------------------------------------------------------------------------------------------------------

def row(id_, prep: Callable | None, overrides: list[str], expected: list[str], *, vit: bool = False, marks=()):
    return pytest.param(prep, overrides, expected, vit, id=id_, marks=marks)


CLI_ROWS = [
    # -- config -------------------------------------------------------------------------------------------------------
    row("config-unknown-section", lambda c: _append(c, "optimiser: {lr: 1}\n"), [],
        ["unknown config section 'optimiser'", "Valid sections", "training"]),
    row("config-misspelled-key-override", None, ["training.learnin_rate=1e-4"], ["learnin_rate", "learning_rate"]),
    row("config-misspelled-key-in-file", lambda c: _replace(c, "llrd: {decay: 0.8}", "llrd: {decya: 0.8}"), [],
        ["llrd.decya", "did you mean llrd.decay"]),
    row("config-misspelled-bare-key", None, ["max_train_sample=5"], ["max_train_sample", "data.max_train_samples"]),
    row("config-wrong-type-int", None, ["data.max_length=abc"], ["data.max_length", "expected int", "'abc'"]),
    row("config-wrong-type-bool", None, ["model.save_model=maybe"], ["model.save_model", "expected bool"]),
    row("config-wrong-type-section", lambda c: _append(c, "hub: [push]\n"), [], ["hub", "must be a mapping"]),
    row("config-out-of-range-samples", None, ["data.max_train_samples=0"], ["data.max_train_samples must be >= 1"]),
    row("config-out-of-range-lr", None, ["training.learning_rate=-1"], ["training.learning_rate must be > 0"]),
    row("config-bad-scheduler-choice", None, ["training.lr_scheduler_type=cosin"], ["lr_scheduler_type", "cosine"]),
    row("config-bad-yaml", _bad_yaml, [], ["run.yaml", "is not valid YAML", "line"]),
    row("config-yaml-not-mapping", _yaml_list, [], ["top level must be a mapping", "got list"]),
    row("config-missing-file", _missing_cfg, [], ["config file not found", "run.yaml"]),
    row("config-override-not-key-value", None, ["noequals"], ["'noequals'", "key=value"]),
    row("config-ambiguous-bare-key", None, ["weight_decay=0.1"], ["ambiguous", "write the section explicitly"]),
    row("config-bad-task", None, ["task=text_clasification"],
        ["unknown config task 'text_clasification'", "did you mean text_classification"]),
    row("reg-unknown-name", _regs("[{name: l2sq}]"), [], ["unknown regularizer 'l2sq'", "l2sp"]),
    row("reg-misspelled-key", _regs("[{name: ewc, lamda: 1.0}]"), [], ["unknown ewc key 'lamda'", "lambda"]),
    row("reg-not-a-list", _regs("{name: l2sp}"), [], ["regularizers must be a list", "[{name: l2sp"]),
    row("reg-negative-lambda", _regs("[{name: ewc, lambda: -1}]"), [], ["ewc lambda must be a number >= 0", "-1"]),
    row("reg-negative-alpha", _regs("[{name: l2sp, alpha: -0.5}]"), [], ["l2sp alpha must be a number >= 0"]),
    row("reg-negative-beta", _regs("[{name: l2sp, beta: -2}]"), [], ["l2sp beta must be a number >= 0"]),
    row("reg-negative-gamma", _regs("[{name: online_ewc, gamma: -0.1}]"), [],
        ["online_ewc gamma must be a number >= 0"]),
    row("reg-l2sp-source-missing", _l2sp_missing_source, [],
        ["l2sp source", "/nonexistent/pretrained", "does not exist"]),
    row("freezing-unknown-policy", None, ["freezing.policy=top_j"],
        ["'top_j'", "valid policies", "top_k"]),
    row("freezing-top-k-too-large", None, ["freezing.policy=top_k", "freezing.k=5"],
        ["k=5", "only 2 blocks"]),
    row("freezing-gradual-depths-missing", _gradual_bad_depths, [],
        ["gradual phase 0", "depths [7]", "depths 0..3"]),
    row("llrd-decay-above-1", None, ["llrd.decay=1.5"], ["llrd.decay", "1.5"]),
    row("llrd-decay-zero", None, ["llrd.decay=0"], ["llrd.decay"]),
    row("early-stopping-without-eval", None, ["early_stopping.patience=2"],
        ["early_stopping.patience > 0 needs evaluations", "training.eval_strategy"]),
    row("hub-push-without-repo-id", None, ["hub.push=true"], ["hub.repo_id is not set", "hub.repo_id=user/"]),
    # -- data ---------------------------------------------------------------------------------------------------------
    row("data-root-missing", None, ["data.root={tmp}/no_such_root"],
        ["data root", "no_such_root", "is not a directory", "set data.root=PATH"]),
    row("data-train-file-missing", None, ["data.train_file=nope.tsv"], ["data file not found", "nope.tsv"]),
    row("data-missing-text-column", None, ["data.text_column=txt"],
        ["column 'txt' (data.text_column) not found", "sentence, label"]),
    row("data-missing-label-column", None, ["data.label_column=lbl"],
        ["column 'lbl' (data.label_column) not found", "sentence, label"]),
    row("data-labels-outside-label-set", _labels_outside_set, [], ["['neutral']", "outside the label set"]),
    row("data-eval-label-unseen", _eval_label_unseen, [], ["e.jsonl", "['mixed']", "do not occur in the training"]),
    row("data-empty-train-split", _empty_train_split, [], ["train.tsv", "empty"]),
    row("data-empty-eval-split", _empty_eval_split, [], ["dev.tsv", "empty"]),
    row("data-corrupt-jsonl", _corrupt_jsonl, [], ["t.jsonl", "could not read"]),
    row("data-unknown-builtin-dataset", None, ["data.dataset=sst3", "data.train_file=null", "data.eval_file=null"],
        ["unknown dataset 'sst3'", "did you mean 'sst2'"]),
    row("data-bad-file-format", None, ["data.file_format=xlsx"], ["data.file_format must be one of", "xlsx"]),
    row("data-unreadable-image-fail", _bad_image_fail, [], ["broken.jpg", "unreadable", "on_bad_image=skip"],
        vit=True),
    row("data-unknown-image-dataset", _unknown_image_dataset, [],
        ["unknown image dataset 'hymenopter'", "did you mean 'hymenoptera'"], vit=True),
    # -- model --------------------------------------------------------------------------------------------------------
    row("model-dir-without-config", _not_a_model_dir, [], ["not_a_model", "has no config.json"]),
    row("model-path-is-a-file", _model_is_file, [], ["config.json", "is a file", "expected a model directory"]),
    row("model-path-missing", None, ["model.name_or_path=/nonexistent/model"],
        ["model directory not found", "/nonexistent/model"]),
    row("model-unknown-bundled-alias", None, ["model.name_or_path=bundled:nope"],
        ["unknown bundled model 'bundled:nope'", "bundled:all-MiniLM-L6-v2"]),
    row("model-hub-id-offline", None, ["model.name_or_path=some-org/not-cached-model"],
        ["some-org/not-cached-model", "HF_HUB_OFFLINE", "bundled:all-MiniLM-L6-v2"]),
    row("model-bad-tokenizer-path", None, ["model.tokenizer=/nonexistent/tok"], ["/nonexistent/tok", "not found"]),
    row("model-truncated-weights", _truncated_model_weights, [], ["model_copy", "model.safetensors"]),
    row("model-corrupt-config-json", _corrupt_model_config, [], ["model_copy", "config.json"]),
    # -- checkpoints ----------------------------------------------------------------------------------------------------
    row("ckpt-truncated-tl-hf-state", _truncate_ckpt_state, [],
        ["checkpoint-1/tl_hf_state.json", "truncated or corrupt", "earlier checkpoint"]),
    row("ckpt-resume-dir-missing", None, ["training.resume_from_checkpoint={tmp}/gone/checkpoint-9"],
        ["training.resume_from_checkpoint", "gone/checkpoint-9", "not a directory"]),
    row("ckpt-truncated-trainer-state", _truncate_ckpt_file("trainer_state.json"), [],
        ["checkpoint-1", "trainer_state.json"]),
    row("ckpt-truncated-model-weights", _truncate_ckpt_file("model.safetensors", 1000), [],
        ["checkpoint-1", "model.safetensors"]),
    row("ckpt-truncated-optimizer", _truncate_ckpt_file("optimizer.pt", 100), [],
        ["checkpoint-1", "optimizer.pt"]),
    row("ckpt-from-other-model", _ckpt_other_model, [], ["checkpoint-1", "6 blocks", "this model has 2"]),
    row("ckpt-other-regularizers", _ckpt_other_regularizers, [],
        ["checkpoint-1 was written with regularizers []", "['l2sp']"]),
    # -- Hub ----------------------------------------------------------------------------------------------------------
    row("hub-push-offline", None, ["hub.push=true", "hub.repo_id=me/tiny"],
        ["cannot push to me/tiny", "HF_HUB_OFFLINE", "hf upload me/tiny"]),
]


@pytest.mark.parametrize("prep, overrides, expected, vit", CLI_ROWS)
def test_cli_bad_input(ctx, prep, overrides, expected, vit, capsys, request, monkeypatch):
    from tl_hf.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_HF_DEBUG", raising=False)
    if vit:
        ctx.vit = request.getfixturevalue("tiny_vit_dir")
    extra = (prep(ctx) if prep else None) or []
    argv = ["run", str(ctx.cfg), *[o.replace("{tmp}", str(ctx.tmp)) for o in overrides + extra]]
    before = _snapshot(ctx.out)
    assert "SENTINEL.txt" in before
    assert "checkpoint-1/tl_hf_state.json" in before or prep is _l2sp_missing_source
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0, f"exit code 0 for {argv}"
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("tl-hf: error: ")]
    assert lines, err[-2000:]
    msg = lines[-1]
    for s in expected:
        assert s.replace("{tmp}", str(ctx.tmp)) in msg, f"{s!r} not in {msg!r}"
    after = _snapshot(ctx.out)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"existing outputs modified or removed: {changed}"


# ---------------------------------------------------------------------------------------------------------------------
# real processes: exit code 2, one error line, no traceback
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("llrd.decya=0.9", ["llrd.decya", "decay"]),
    ("data.text_column=txt", ["'txt'", "sentence"]),
])
def test_subprocess_exit_code(ctx, override, expected):
    before = _snapshot(ctx.out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TL_HF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "tl_hf.cli", "run", str(ctx.cfg), override],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tl-hf: error: ")
    for s in expected:
        assert s in last
    assert _snapshot(ctx.out) == before


def test_subprocess_truncated_checkpoint_state(ctx):
    _truncate_ckpt_state(ctx)
    before = _snapshot(ctx.out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TL_HF_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "tl_hf.cli", "run", str(ctx.cfg)],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tl-hf: error: ") and "tl_hf_state.json" in last and "truncated or corrupt" in last
    assert _snapshot(ctx.out) == before


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
    pytest.param(_lib_wrong_regularizer, ValueError, ["holds 'l2sp' state, not 'ewc'"], id="ewc-file-of-l2sp"),
    pytest.param(_lib_no_state, FileNotFoundError, ["tl_hf_ewc.json not found", "no saved ewc state"],
                 id="ewc-no-state-in-folder"),
])
def test_regularizer_state_errors(tmp_path, tiny_bert, prep, exc_type, expected):
    from tl_hf.regularizers import EWC

    folder = tmp_path / "ewc_state"
    folder.mkdir()
    stage = prep(folder, tiny_bert)
    before = _snapshot(folder)
    ewc = EWC(lambda_=1.0)
    with pytest.raises(exc_type) as err:
        ewc.load(str(folder))
        assert stage == "bind", "load() accepted a broken state file"
        ewc.bind(tiny_bert)
    msg = str(err.value)
    assert "\n" not in msg.strip() or "Traceback" not in msg
    for s in expected:
        assert s in msg, f"{s!r} not in {msg!r}"
    assert _snapshot(folder) == before


# ---------------------------------------------------------------------------------------------------------------------
# library rows: config objects and the inspect command
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    pytest.param(["inspect", "/nonexistent/model"], ["model directory not found", "/nonexistent/model"],
                 id="inspect-model-missing"),
    pytest.param(["inspect", "{model}", "--decay", "0"], ["--decay", "must be > 0"], id="inspect-decay-zero"),
    pytest.param(["inspect", "some-org/not-cached-model"], ["HF_HUB_OFFLINE"], id="inspect-hub-id-offline"),
])
def test_cli_inspect_bad_input(tiny_model_dir, capsys, argv, expected, monkeypatch):  # noqa: F811
    from tl_hf.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [a.format(model=tiny_model_dir) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    for s in expected:
        assert s in err
