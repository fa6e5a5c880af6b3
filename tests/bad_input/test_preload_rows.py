"""Bad-input matrix, the pre-load rule (issue 16): every refusal that needs neither the data nor the weights comes
before any data loader or ``from_pretrained`` is called (here they raise if reached), from the one validation
(:func:`tl_hf.run.validate.check_run`), with exit 2, one line and the output folder untouched. Also: an invalid
``hub.repo_id`` is refused with the config, a fresh run leaves no earlier run's predictions / plots, a run whose model
diverged writes none, and the memory bound.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
from matrix_harness import (Ctx, assert_one_line_refusal, ctx, expect_refusal, seed_checkpoint,  # noqa: F401
                            snapshot, tiny_model_dir, tiny_vit_dir)


class Reached(BaseException):
    """A data loader or from_pretrained was called (BaseException: the CLI does not turn it into exit 2)."""


@pytest.fixture
def no_loading(monkeypatch):
    """Every data loader and ``from_pretrained`` (models, tokenizers) raises :class:`Reached`."""
    import importlib

    import transformers

    import tl_hf.run.tasks  # noqa: F401  (every task and its data modules)

    def reached(*args, **kwargs):
        raise Reached()

    loaders = [getattr(importlib.import_module(m), n) for m, n in (
        ("tl_hf.run.data.text", "load_text_classification"), ("tl_hf.run.data.images", "load_image_classification"))]
    for name, mod in list(sys.modules.items()):
        if name.startswith("tl_hf") and mod is not None:
            for attr, value in list(vars(mod).items()):
                if any(value is f for f in loaders):
                    monkeypatch.setattr(mod, attr, reached)
    for cls in (transformers.PreTrainedModel, transformers.AutoTokenizer, transformers.PreTrainedTokenizerBase,
                transformers.AutoModelForSequenceClassification, transformers.AutoModelForImageClassification):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, *a, **k: reached()))


@pytest.mark.parametrize("overrides, expected", [
    (["training.learning_rate=5e-4"], r"checkpoint-1 was written by a run with another config.*learning_rate"),
    (["evaluation.metrics=[{name: f1, averag: macro}]"], r"evaluation\.metrics: f1\(averag='macro'\).*averag"),
    (["evaluation.metrics=[{name: precision, average: sideways}]"], r"evaluation\.metrics: precision"),
    (["model.num_labels=3", "evaluation.metrics=[{name: f1, average: binary}]", "model.ignore_mismatched_sizes=true"],
     r"f1\(average='binary'\) on 3 classes"),
    (["training.per_device_train_batch_size=100000000"], r"training would need at least.*per_device_train"),
], ids=["resume-other-config", "metric-unknown-argument", "metric-bad-average", "metric-binary-on-3-classes",
        "memory-batch"])
def test_refused_before_any_data_or_model_is_loaded(ctx, no_loading, capsys, overrides, expected):  # noqa: F811
    expect_refusal(ctx, ["run", str(ctx.cfg), *overrides], expected, capsys)


def test_missing_peft_is_refused_before_loading(ctx, no_loading, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    expect_refusal(ctx, ["run", str(ctx.cfg), "peft.enabled=true"], ["peft.enabled needs the 'peft' extra"], capsys)


def test_a_valid_config_reaches_the_loaders_only_after_validation(ctx, no_loading):  # noqa: F811
    from tl_hf.cli import main

    ctx.drop_checkpoint()
    with pytest.raises(Reached):  # nothing refused it: the run goes on to load the data
        main(["run", str(ctx.cfg), "evaluation.metrics=[{name: f1, average: macro}]"])


# -- hub.repo_id ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("repo", ["bad repo", "me/x.git", "a/b/c", "me/--x", "-lead"])
def test_invalid_repo_id_is_refused_with_the_config(repo):
    from tl_hf._errors import ConfigError
    from tl_hf.run.config import load_config

    with pytest.raises(ConfigError, match=r"hub\.repo_id is not a valid Hub repo id: .*hub\.repo_id=user/my-model"):
        load_config(None, [f"hub.repo_id={repo}"])
    assert load_config(None, ["hub.repo_id=me/my-model.v2"]).hub.repo_id == "me/my-model.v2"


# -- outputs of an earlier run ----------------------------------------------------------------------------------------
FAST = ["training.max_steps=1", "training.save_strategy=no"]


def test_fresh_run_removes_an_earlier_runs_predictions_and_plots(ctx):  # noqa: F811
    from tl_hf.cli import main

    ctx.drop_checkpoint()
    stale = {"eval_predictions.jsonl": "{}\n", "confusion_matrix.png": "old", "wise_ft.json": "{}",
             "custom_scores.jsonl": "old"}
    for name, text in stale.items():
        (ctx.out / name).write_text(text)
    (ctx.out / "all_results.json").write_text(json.dumps({"outputs": {"x": str(ctx.out / "custom_scores.jsonl")}}))
    # this run has no eval set: it writes no predictions or confusion matrix
    assert main(["run", str(ctx.cfg), *FAST, "data.eval_file=null"]) == 0
    left = {p.name for p in ctx.out.iterdir()}
    assert not left & set(stale), f"stale outputs of the earlier run left: {sorted(left & set(stale))}"
    assert {"SENTINEL.txt", "all_results.json", "learning_curve.png"} <= left
    assert "eval_accuracy" not in json.loads((ctx.out / "all_results.json").read_text())


def test_resume_keeps_the_outputs(ctx):  # noqa: F811
    from tl_hf.cli import main

    (ctx.out / "wise_ft.json").write_text("{}")  # a run output that this resumed run does not write again
    (ctx.out / "note.png").write_text("user file")
    assert main(["run", str(ctx.cfg), "training.max_steps=2", "training.save_strategy=no"]) == 0
    assert (ctx.out / "wise_ft.json").read_text() == "{}"  # a resume is not a fresh run: nothing removed
    assert (ctx.out / "note.png").read_text() == "user file"
    assert json.loads((ctx.out / "all_results.json").read_text())["train_samples"] == 8


def test_a_diverged_eval_writes_no_predictions_or_plots(ctx, capsys, monkeypatch):  # noqa: F811
    import math

    from tl_hf.cli import main
    from tl_hf.core.trainer import TransferTrainer

    ctx.drop_checkpoint()
    real = TransferTrainer.evaluation_loop

    def nan_loss(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        key = [k for k in out.metrics if k.endswith("_loss")][0]
        out.metrics[key] = math.nan
        return out

    monkeypatch.setattr(TransferTrainer, "evaluation_loop", nan_loss)
    (ctx.out / "confusion_matrix.png").write_text("from an earlier run")
    before = {p.name for p in ctx.out.iterdir()}
    capsys.readouterr()
    rc = main(["run", str(ctx.cfg), *FAST])
    assert_one_line_refusal(rc, capsys.readouterr().err, r"not saving the model and results.*eval loss is nan")
    after = {p.name for p in ctx.out.iterdir()}
    written = after - before
    assert not written & {"eval_predictions.jsonl", "confusion_matrix.png", "learning_curve.png", "lr_per_group.png",
                          "all_results.json", "model.safetensors"}, sorted(written)
    assert not (ctx.out / "confusion_matrix.png").exists()  # the stale one went at the start of this fresh run


# -- memory -----------------------------------------------------------------------------------------------------------
def _args(**kw):
    base = dict(per_device_train_batch_size=8, per_device_eval_batch_size=8, bf16=False, fp16=False,
                gradient_checkpointing=False)
    return SimpleNamespace(**{**base, **kw})


def test_memory_bound_counts_the_real_parameters(tiny_model_dir):  # noqa: F811
    import torch
    import transformers as T

    from tl_hf.run.config import load_config
    from tl_hf.run.memory import estimate_bytes, model_parameters

    conf = json.loads((tiny_model_dir / "config.json").read_text())
    n = sum(p.numel() for p in T.BertModel(T.BertConfig(**conf)).parameters())
    assert model_parameters(str(tiny_model_dir), conf) == n
    # ALBERT shares its layers: the count is the model's, not layers x a layer (a formula would say ~2.4e9)
    albert = T.AlbertConfig(hidden_size=4096, num_hidden_layers=12, intermediate_size=16384, num_attention_heads=64)
    with torch.device("meta"):
        real = sum(p.numel() for p in T.AlbertModel(albert).parameters())
    assert real < 3e8
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "data.max_length=16", "data.dataset=sst2"])
    est = estimate_bytes(cfg, _args())
    (what, model_bytes), (act_what, act_bytes) = est["training"]
    assert model_bytes == 16 * n and "weights, gradients, 2 AdamW states" in what  # fp32 x (1 + 1 + 2)
    hidden, layers = conf["hidden_size"], conf["num_hidden_layers"]
    assert act_bytes == 4 * 4 * layers * 8 * 16 * hidden and "rough" in act_what
    assert est["evaluation"][0][1] == 4 * n
    frozen = estimate_bytes(load_config(None, [f"model.name_or_path={tiny_model_dir}", "freezing.policy=top_k",
                                               "freezing.k=1", "data.dataset=sst2"]), _args())
    assert frozen["training"][0][1] == 4 * n  # only the weights are a sure need when parts are frozen
    ckpt = estimate_bytes(cfg, _args(gradient_checkpointing=True))["training"][1][1]
    assert ckpt == act_bytes / 4


def test_memory_refusal_names_the_parts(tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    import shutil

    from tl_hf._errors import ConfigError
    from tl_hf.run import memory
    from tl_hf.run.config import load_config

    big = tmp_path / "big"
    shutil.copytree(tiny_model_dir, big)
    conf = json.loads((big / "config.json").read_text())
    conf.update(hidden_size=8192, intermediate_size=32768, num_hidden_layers=64, num_attention_heads=64)
    (big / "config.json").write_text(json.dumps(conf))  # ~5e10 parameters: 16 bytes each is ~800 GB
    cfg = load_config(None, [f"model.name_or_path={big}", "data.dataset=sst2"])
    with pytest.raises(ConfigError, match=r"training would need at least about [\d,]+ GiB \(the model in .*big "
                                          r"\([\d,]+ parameters x 16 bytes.*more than this machine"):
        memory.check_memory(cfg, _args())
    monkeypatch.setattr(memory, "machine_bytes", lambda: 2 ** 50)  # a machine that has it: no refusal
    memory.check_memory(cfg, _args())
