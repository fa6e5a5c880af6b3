"""Bad-input matrix, model and checkpoint rows: model folders, weights and configs, sizes that cannot be
allocated, resuming into an output folder written by a different config, checkpoint files that are truncated, of
the wrong JSON shape or untrusted pickles, an output folder that is the input model, L2-SP sources that are truncated
or of another architecture.

Each row: the input, exit code 2, a pattern for the one error line; the output folder stays as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from matrix_harness import (Ctx, all_of, ctx, fresh, model_copy, row, run_cli_row, seed_checkpoint, snapshot,  # noqa: F401
                            tiny_model_dir, tiny_vit_dir)

UNTRUSTED = r"(?i)^(?!.*weights_only=False)(?=.*checkpoint-1/{})(?=.*not a trusted checkpoint)"
RESUME = r"(?i)checkpoint-1.*{}.*(overwrite_output_dir|new training\.output_dir|another output_dir|new output)"


def _not_a_model_dir(c: Ctx):
    d = c.tmp / "not_a_model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"\0" * 16)
    return [f"model.name_or_path={d}"]


def _truncated_model_weights(c: Ctx):
    d = model_copy(c)
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    return [f"model.name_or_path={d}"]


def _edit_model_config(**changes):
    def prep(c: Ctx):
        d = model_copy(c)
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
        return [f"model.name_or_path={d}"]
    return prep


def _corrupt_model_config(c: Ctx):
    d = model_copy(c)
    (d / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    return [f"model.name_or_path={d}"]


def _config_json_wrong_shape(c: Ctx):
    d = model_copy(c)
    (d / "config.json").write_text("[1, 2, 3]")
    return [f"model.name_or_path={d}"]


def _ckpt_file(name: str, edit):
    def prep(c: Ctx):
        edit(c.out / "checkpoint-1" / name)
    return prep


def _truncate(keep: int):
    return lambda p: p.write_bytes(p.read_bytes()[:keep])


def _json(value):
    return lambda p: p.write_text(json.dumps(value))


def _patch_json(**changes):
    def edit(p: Path):
        state = json.loads(p.read_text())
        for k, v in changes.items():
            state[k] = v
        p.write_text(json.dumps(state))
    return edit


def _other_blocks(p: Path):
    state = json.loads(p.read_text())
    state["layer_map"]["num_blocks"] = 6
    p.write_text(json.dumps(state))


class _Untrusted:
    """Pickled by reference to this test module: a global that no weights-only unpickler allows."""


class _Malicious:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_into(name: str, malicious: bool = False):
    def prep(c: Ctx):
        import torch

        obj = _Malicious(c.tmp / "PWNED") if malicious else {"state": _Untrusted()}
        torch.save(obj, c.out / "checkpoint-1" / name)  # a complete torch archive whose pickle needs a foreign global
    return prep


def _other_data_file(c: Ctx):
    text = (c.data / "train.tsv").read_text().replace("wonderful acting", "wonderful, moving acting")
    (c.data / "train2.tsv").write_text(text)
    return ["data.train_file=train2.tsv"]


def _other_model(c: Ctx):
    import torch
    import transformers as T

    d = model_copy(c, "other_model")
    torch.manual_seed(123)
    T.BertForSequenceClassification(T.BertConfig.from_pretrained(d)).save_pretrained(d)
    return [f"model.name_or_path={d}"]


def _output_is_model(c: Ctx):
    d = model_copy(c, "model_as_output")
    c.out = d  # the snapshot now covers the model folder: it must come through unchanged
    return [f"model.name_or_path={d}", f"training.output_dir={d}"]


def _l2sp_source(make):
    def prep(c: Ctx):
        c.drop_checkpoint()
        src = make(c)
        c.append(f"regularizers: [{{name: l2sp, alpha: 0.1, source: {src}}}]\n")
    return prep


def _truncated_source(c: Ctx) -> Path:
    d = model_copy(c, "l2sp_source")
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    return d


def _distilbert_source(c: Ctx) -> Path:
    import torch
    import transformers as T

    d = c.tmp / "distil_source"
    torch.manual_seed(0)
    T.DistilBertForSequenceClassification(T.DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                                             hidden_dim=37)).save_pretrained(d)
    return d


MODEL_ROWS = [
    # -- the model ----------------------------------------------------------------------------------------------------
    row("model-dir-without-config", _not_a_model_dir, [], ["not_a_model", "has no config.json"]),
    row("model-path-is-a-file", lambda c: [f"model.name_or_path={c.model / 'config.json'}"], [],
        ["config.json", "is a file", "expected a model directory"]),
    row("model-path-missing", None, ["model.name_or_path=/nonexistent/model"],
        ["model directory not found", "/nonexistent/model"]),
    row("model-path-empty", None, ["model.name_or_path= "], r"model\.name_or_path must not be empty"),
    row("model-unknown-bundled-alias", None, ["model.name_or_path=bundled:nope"],
        ["unknown bundled model 'bundled:nope'", "bundled:all-MiniLM-L6-v2"]),
    row("model-hub-id-offline", fresh(), ["model.name_or_path=some-org/not-cached-model"],
        ["some-org/not-cached-model", "HF_HUB_OFFLINE", "bundled:all-MiniLM-L6-v2"]),
    row("model-bad-tokenizer-path", None, ["model.tokenizer=/nonexistent/tok"], ["/nonexistent/tok", "not found"]),
    row("model-truncated-weights", fresh(_truncated_model_weights), [], ["model_copy", "model.safetensors"]),
    row("model-corrupt-config-json", _corrupt_model_config, [], ["model_copy", "config.json"]),
    row("model-config-json-not-object", _config_json_wrong_shape, [], r"model_copy.*config\.json"),
    row("model-unknown-model-type", _edit_model_config(model_type="no_such_arch"), [],
        r"(?i)model_copy.*no_such_arch"),
    row("model-huge-hidden-size", _edit_model_config(hidden_size=65536, intermediate_size=262144,
                                                     num_hidden_layers=48, num_attention_heads=64), [],
        r"(?i)model_copy.*\d[\d,.]* ?[GT]i?B"),
    row("model-huge-vocab", _edit_model_config(vocab_size=10 ** 11), [], r"(?i)model_copy.*\d[\d,.]* ?[GT]i?B"),
    row("training-huge-batch-size", None, ["training.per_device_train_batch_size=1000000000000"],
        all_of("per_device_", "1000000000000", r"\bGi?B\b")),
    row("training-huge-eval-batch-size", None, ["training.per_device_eval_batch_size=1000000000000"],
        all_of("per_device_", "1000000000000", r"\bGi?B\b")),
    row("output-dir-is-input-model", _output_is_model, [], r"(?i)training\.output_dir.*model"),
    # -- resuming into an output folder of another config ------------------------------------------------------------
    row("resume-other-learning-rate", None, ["training.learning_rate=5e-4"], RESUME.format("learning_rate")),
    row("resume-other-data-file", _other_data_file, [], RESUME.format("train")),
    row("resume-other-model", _other_model, [], RESUME.format("model")),
    row("resume-other-llrd", None, ["llrd.decay=0.5"], RESUME.format("decay")),
    row("resume-other-freezing", None, ["freezing.policy=top_k", "freezing.k=1"], RESUME.format("freezing")),
    row("resume-other-max-length", None, ["data.max_length=12"], RESUME.format("max_length")),
    row("ckpt-from-other-model", _ckpt_file("tl_hf_state.json", _other_blocks), [],
        ["checkpoint-1", "6 blocks", "this model has 2"]),
    row("ckpt-other-regularizers", lambda c: c.append("regularizers: [{name: l2sp, alpha: 0.1}]\n"), [],
        r"checkpoint-1.*regularizers.*l2sp"),
    row("ckpt-resume-dir-missing", None, ["training.resume_from_checkpoint={tmp}/gone/checkpoint-9"],
        ["training.resume_from_checkpoint", "gone/checkpoint-9", "not a directory"]),
    # -- damaged checkpoint files -------------------------------------------------------------------------------------
    row("ckpt-truncated-tl-hf-state", _ckpt_file("tl_hf_state.json", _truncate(25)), [],
        ["checkpoint-1/tl_hf_state.json", "truncated or corrupt", "earlier checkpoint"]),
    row("ckpt-truncated-trainer-state", _ckpt_file("trainer_state.json", _truncate(40)), [],
        ["checkpoint-1", "trainer_state.json"]),
    row("ckpt-truncated-model-weights", _ckpt_file("model.safetensors", _truncate(1000)), [],
        ["checkpoint-1", "model.safetensors"]),
    row("ckpt-truncated-optimizer", _ckpt_file("optimizer.pt", _truncate(100)), [],
        ["checkpoint-1", "optimizer.pt"]),
    row("ckpt-truncated-scheduler", _ckpt_file("scheduler.pt", _truncate(10)), [], r"checkpoint-1.*scheduler\.pt"),
    row("ckpt-empty-model-weights", _ckpt_file("model.safetensors", _truncate(0)), [],
        r"checkpoint-1.*model\.safetensors"),
    row("ckpt-tl-hf-state-list", _ckpt_file("tl_hf_state.json", _json([1, 2])), [],
        r"checkpoint-1.*tl_hf_state\.json"),
    row("ckpt-tl-hf-state-bad-layer-map", _ckpt_file("tl_hf_state.json", _patch_json(layer_map="bert")), [],
        r"checkpoint-1.*tl_hf_state\.json"),
    row("ckpt-tl-hf-state-string", _ckpt_file("tl_hf_state.json", _json("state")), [],
        r"checkpoint-1.*tl_hf_state\.json"),
    row("ckpt-trainer-state-list", _ckpt_file("trainer_state.json", _json([])), [],
        r"checkpoint-1.*trainer_state\.json"),
    row("ckpt-trainer-state-bad-step", _ckpt_file("trainer_state.json", _patch_json(global_step="many")), [],
        r"checkpoint-1.*trainer_state\.json"),
    row("ckpt-trainer-state-bad-log-history", _ckpt_file("trainer_state.json", _patch_json(log_history=7)), [],
        r"checkpoint-1.*trainer_state\.json"),
    row("ckpt-untrusted-pickle-optimizer", _pickle_into("optimizer.pt"), [],
        UNTRUSTED.format("optimizer\\.pt")),
    row("ckpt-untrusted-pickle-scheduler", _pickle_into("scheduler.pt"), [],
        UNTRUSTED.format("scheduler\\.pt")),
    row("ckpt-malicious-pickle-rng-state", _pickle_into("rng_state.pth", malicious=True), [],
        UNTRUSTED.format("rng_state\\.pth")),
    # -- L2-SP sources ------------------------------------------------------------------------------------------------
    row("l2sp-source-truncated-safetensors", _l2sp_source(_truncated_source), [],
        r"(?i)l2sp.*source.*model\.safetensors.*(truncated|corrupt)"),
    row("l2sp-source-other-architecture", _l2sp_source(_distilbert_source), [],
        r"(?i)l2sp.*source.*(distilbert|architecture|no parameter|overlap)"),
    row("l2sp-source-image-model", _l2sp_source(lambda c: c.vit), [], r"(?i)l2sp.*source.*(vit|architecture|no "
                                                                        r"parameter|overlap)", vit=True),
    row("l2sp-source-not-a-model", _l2sp_source(lambda c: (c.tmp / "empty_src").mkdir() or c.tmp / "empty_src"), [],
        r"(?i)l2sp.*source.*empty_src"),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", MODEL_ROWS)
def test_model_checkpoint_row(ctx, prep, overrides, expected, opts, capsys, request):
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
    assert not (ctx.tmp / "PWNED").exists(), "a pickle in a checkpoint was executed"
