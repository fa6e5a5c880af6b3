"""Issue 16, run layer and trainer: duplicate YAML keys, YAML 1.1 booleans, empty / directory configs, non-finite
numbers, inactive keys (strict mode), dict-valued TrainingArguments fields, output_dir vs the input model, memory
estimates, the resume fingerprint, fresh all_results.json, the output_dir lock, the save guard against non-finite
weights, checkpoint state files of the wrong shape, untrusted pickles, L2-SP sources of another architecture and
condensed worker tracebacks."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from test_config_cli import TRAIN_ROWS, _write, tiny_model_dir  # noqa: E402,F401  (fixture)

from tl_hf._errors import ConfigError, condense_traceback, one_line  # noqa: E402
from tl_hf.run.config import load_config  # noqa: E402


def _cfg(tmp_path: Path, text: str) -> Path:
    return _write(tmp_path / "run.yaml", text)


# -- YAML -------------------------------------------------------------------------------------------------------------
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    p = _cfg(tmp_path, "training:\n  output_dir: o\n  learning_rate: 1e-3\nllrd: {decay: 0.8}\ntraining:\n"
                       "  learning_rate: 5e-4\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'training' at line 1 and line 5"):
        load_config(p)
    p = _cfg(tmp_path, "llrd: {decay: 0.8, decay: 0.5}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'decay' at line 1 and line 1"):
        load_config(p)
    p = _cfg(tmp_path, "freezing:\n  policy: gradual\n  schedule:\n    every: 1\n    every: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'every' at line 4 and line 5"):
        load_config(p)


def test_merge_keys_and_python_tags(tmp_path):
    p = _cfg(tmp_path, "training: &t {output_dir: o, learning_rate: 1e-3}\nllrd: {decay: 0.5}\n"
                       "x: {<<: *t, learning_rate: 2e-3}\n")
    with pytest.raises(ConfigError, match="unknown config section 'x'"):  # merge keys load; overriding is no duplicate
        load_config(p)
    p = _cfg(tmp_path, "hub: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


@pytest.mark.parametrize("line, key, word, value", [("  eval_strategy: no", "training.eval_strategy", "no", "false"),
                                                    ("  save_strategy: off", "training.save_strategy", "off", "false"),
                                                    ("  run_name: yes", "training.run_name", "yes", "true")])
def test_yaml_11_booleans_say_what_yaml_did(tmp_path, line, key, word, value):
    p = _cfg(tmp_path, f"training:\n  output_dir: o\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(key) and f"boolean {value}" in msg and word in msg and "quote" in msg


def test_empty_config_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="is empty"):
        load_config(_cfg(tmp_path, "# nothing\n"))
    (tmp_path / "confdir").mkdir()
    with pytest.raises(ConfigError, match="confdir is a directory"):
        load_config(tmp_path / "confdir")


# -- numbers and keys ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["training.learning_rate=inf", "training.learning_rate=nan",
                                      "training.max_grad_norm=-inf", "llrd.decay=nan",
                                      "training.num_train_epochs=1e999", "early_stopping.threshold=nan"])
def test_non_finite_numbers_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: expected a finite float"):
        load_config(None, [override])


def test_non_finite_yaml_float(tmp_path):
    with pytest.raises(ConfigError, match="training.learning_rate: expected a finite float, got inf"):
        load_config(_cfg(tmp_path, "training: {output_dir: o, learning_rate: .inf}\n"))


def test_inactive_keys_warn_and_strict_refuses():
    from tl_hf.run.validate import check_inactive_keys, inactive_keys

    cfg = load_config(None, ["freezing.k=2", "freezing.schedule.every=2", "peft.r=4"])
    keys = inactive_keys(cfg)
    assert [k.split(" ")[0] for k in keys] == ["freezing.k", "freezing.schedule", "peft.r"]
    said = []
    check_inactive_keys(cfg, said.append)
    assert len(said) == 3 and "freezing.k" in said[0] and "ignored" in said[0]
    assert inactive_keys(load_config(None, ["freezing.policy=top_k", "freezing.k=1", "llrd.head_lr=1e-3"])) == []
    with pytest.raises(ConfigError, match=r"strict: 3 key\(s\) set but ignored.*freezing\.k"):
        check_inactive_keys(load_config(None, ["strict=true", "freezing.k=2", "freezing.schedule.every=2",
                                               "peft.r=4"]))
    auto = inactive_keys(load_config(None, ["strategy.mode=auto", "llrd.decay=0.5"]))
    assert auto == ["llrd (strategy.mode auto chooses llrd and freezing itself)"]


@pytest.mark.parametrize("overrides, pattern", [
    (["training.lr_scheduler_kwargs={bogus_arg: 1}"], r"training\.lr_scheduler_kwargs\.bogus_arg: not a key of "
                                                      r"lr_scheduler_type linear"),
    (["training.lr_scheduler_type=cosine", "training.lr_scheduler_kwargs={cycles: 2}"],
     r"lr_scheduler_kwargs\.cycles.*did you mean training\.lr_scheduler_kwargs\.num_cycles"),
    (["training.accelerator_config={no_such_option: true}"], r"training\.accelerator_config\.no_such_option"),
    (["training.gradient_checkpointing_kwargs={use_reentrnt: false}"], r"use_reentrnt.*use_reentrant"),
    (["training.fsdp_config={min_num_param: 3}"], r"fsdp_config\.min_num_param.*min_num_params"),
    (["training.lr_scheduler_type=cosine", "training.lr_scheduler_kwargs={num_cycles: .inf}"], r"finite"),
])
def test_keys_inside_dict_valued_training_fields(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_valid_dict_fields_pass():
    from tl_hf.run.validate import check_training_dicts

    check_training_dicts(load_config(None, ["training.lr_scheduler_type=cosine",
                                            "training.lr_scheduler_kwargs={num_cycles: 0.5}",
                                            "training.fsdp_config={fsdp_min_num_params: 10}"]).training)


def test_output_dir_must_not_be_the_input_model(tmp_path, tiny_model_dir):  # noqa: F811
    from tl_hf.run.validate import check_output_dir

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}"])
    for out, how in ((tiny_model_dir, "is the folder"), (tiny_model_dir / "out", "is inside the folder"),
                     (tiny_model_dir.parent, "contains the folder")):
        with pytest.raises(ConfigError, match=f"training.output_dir .* {how} of model.name_or_path"):
            check_output_dir(cfg, str(out))
    check_output_dir(cfg, str(tmp_path / "elsewhere"))
    link = tmp_path / "link"
    link.symlink_to(tiny_model_dir)
    with pytest.raises(ConfigError, match="is the folder"):
        check_output_dir(cfg, str(link))


def test_memory_estimate_refuses_absurd_sizes(tiny_model_dir):  # noqa: F811
    from tl_hf.run.template import build_training_args
    from tl_hf.run.validate import check_memory

    ok = load_config(None, [f"model.name_or_path={tiny_model_dir}"])
    check_memory(ok, build_training_args(ok))
    # the message leads with the largest part, the key that sets it
    lead = r"^training would need at least about [\d,]+ GiB \("
    for override, pattern in (("training.per_device_train_batch_size=1000000000000",
                               lead + r"training\.per_device_train_batch_size=1000000000000 .*: [\d,.]+ GiB"),
                              ("model.num_labels=100000000000", lead + r"model\.num_labels=100000000000 .*GiB"),
                              ("model.name_or_path=mlp:10000000", lead + r"model\.name_or_path=mlp:10000000 \(.*GiB")):
        cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", override])
        with pytest.raises(ConfigError, match=pattern):
            check_memory(cfg, build_training_args(cfg))


# -- lock -------------------------------------------------------------------------------------------------------------
def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    from tl_hf.run.lock import LOCK_FILE, OutputDirLocked, output_dir_lock

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputDirLocked, match=rf"in use by another run \(pid {holder.pid} on "):
            with output_dir_lock(str(out)):
                pass
    finally:
        holder.kill()
        holder.wait()
    with output_dir_lock(str(out)):  # the holder is gone: its lock is stale
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()
    fresh = tmp_path / "new"
    with output_dir_lock(str(fresh)):
        assert fresh.is_dir()
    assert not fresh.exists(), "a run that wrote nothing leaves no empty output folder"


# -- state files, pickles, tracebacks ---------------------------------------------------------------------------------
def _ckpt(tmp_path: Path) -> Path:
    d = tmp_path / "checkpoint-1"
    d.mkdir()
    (d / "tl_hf_state.json").write_text(json.dumps({"format": 1, "freezing": {}, "regularizers": []}))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    return d


@pytest.mark.parametrize("name, doc, pattern", [
    ("tl_hf_state.json", [1, 2], r"tl_hf_state\.json is valid JSON but not an object"),
    ("tl_hf_state.json", {"layer_map": "bert"}, r"tl_hf_state\.json is valid JSON of the wrong shape: 'layer_map' is "
                                                r"str, expected dict"),
    ("trainer_state.json", {"global_step": "many"}, r"trainer_state\.json .*'global_step' is str, expected int"),
    ("trainer_state.json", {"log_history": 7}, r"'log_history' is int, expected list"),
])
def test_state_files_of_the_wrong_shape(tmp_path, name, doc, pattern):
    from tl_hf.core.state import CorruptStateError, validate_checkpoint

    d = _ckpt(tmp_path)
    validate_checkpoint(str(d))
    (d / name).write_text(json.dumps(doc))
    with pytest.raises(CorruptStateError, match=pattern):
        validate_checkpoint(str(d))


class _Untrusted:
    pass


def test_untrusted_pickles_are_not_trusted_checkpoints(tmp_path):
    import torch

    from tl_hf.core.state import CorruptStateError, refuse_untrusted_pickles, validate_checkpoint

    d = _ckpt(tmp_path)
    (d / "optimizer.pt").write_bytes(pickle.dumps({"x": _Untrusted()}))
    with pytest.raises(CorruptStateError, match=r"optimizer\.pt is not a trusted checkpoint") as e:
        validate_checkpoint(str(d))
    assert "weights_only" not in str(e.value)
    (d / "optimizer.pt").unlink()
    torch.save({"x": _Untrusted()}, d / "scheduler.pt")  # a complete torch archive naming a foreign class
    with pytest.raises(CorruptStateError, match=r"checkpoint-1/scheduler\.pt is not a trusted checkpoint file") as e:
        with refuse_untrusted_pickles(str(d)):
            torch.load(d / "scheduler.pt", weights_only=True)
    assert "weights_only" not in str(e.value)


def test_worker_tracebacks_become_one_short_line():
    text = ("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "/x/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n    data = fetch(index)\n'
            '  File "/w/tl_hf/run/data/images.py", line 120, in __getitem__\n    raise ValueError("bad")\n'
            + "    " + "x" * 1500 + "\nValueError: cannot read image a.png: truncated\n")
    line = one_line(ValueError(text))
    assert line == ("Caught ValueError in DataLoader worker process 0: cannot read image a.png: truncated (at "
                    "images.py:120 in __getitem__)")
    assert condense_traceback("plain message") == "plain message"


# -- L2-SP ------------------------------------------------------------------------------------------------------------
def test_l2sp_refuses_a_source_of_another_architecture(tmp_path):
    from tiny import tiny_model

    from tl_hf.regularizers.l2sp import L2SP

    bert = tiny_model("bert", num_labels=2)
    other = tiny_model("distilbert", num_labels=2)
    assert other.classifier.weight.shape == bert.classifier.weight.shape  # only the head has the same name and shape
    other.save_pretrained(tmp_path / "distil")
    reg = L2SP(alpha=0.1, source=str(tmp_path / "distil"))
    with pytest.raises(ValueError, match=r"l2sp: source .*distil matches only [\d,]+ of [\d,]+ parameters .*another "
                                         r"architecture"):
        reg.bind(bert)
    bert.save_pretrained(tmp_path / "same")
    L2SP(alpha=0.1, source=str(tmp_path / "same")).bind(bert)  # its own checkpoint: fine
    p = tmp_path / "same" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"l2sp source .*model\.safetensors is truncated"):
        L2SP(alpha=0.1, source=str(tmp_path / "same")).bind(bert)
