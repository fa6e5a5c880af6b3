"""DeepSpeed with tl_hf's features is refused before training (tl_hf.core.distributed_checks): DeepSpeed is not
installed here, so the tests set ``TrainingArguments.deepspeed`` after construction (what transformers would turn
into a DeepSpeed plugin when the Trainer builds its Accelerator) or ``ACCELERATE_USE_DEEPSPEED`` (what
``accelerate launch`` with a DeepSpeed config sets). The refusal must come before the Trainer is built, with the
model's weights untouched."""

from __future__ import annotations

import pytest
import torch
from tiny import TokenDataset, params_snapshot, tiny_bert, training_args

from tl_hf._errors import ConfigError
from tl_hf.core.distributed_checks import check_deepspeed, deepspeed_requested, deepspeed_unsupported
from tl_hf.core.freezing import FreezingConfig
from tl_hf.core.optim import LLRDConfig


def test_deepspeed_requested_by_args_dict_or_launcher_env():
    class Args:
        deepspeed = None
        deepspeed_plugin = None

    a = Args()
    assert not deepspeed_requested(a, environ={})
    a.deepspeed = "ds_zero2.json"
    assert deepspeed_requested(a, environ={})
    assert deepspeed_requested({"deepspeed": {"zero_optimization": {"stage": 2}}}, environ={})
    assert not deepspeed_requested({"learning_rate": 1e-3}, environ={"ACCELERATE_USE_DEEPSPEED": "false"})
    assert deepspeed_requested({}, environ={"ACCELERATE_USE_DEEPSPEED": "true"})
    assert deepspeed_requested(None, environ={"ACCELERATE_USE_DEEPSPEED": "1"})


def test_unsupported_features_are_each_named():
    assert deepspeed_unsupported() == []
    assert deepspeed_unsupported(freezing=FreezingConfig(), llrd=LLRDConfig(decay=1.0)) == []
    bad = deepspeed_unsupported(regularizers=[{"name": "ewc"}, {"name": "replay"}],
                                freezing=FreezingConfig(policy="top_k", k=1), llrd=LLRDConfig(decay=0.9),
                                strategy_auto=True)
    assert len(bad) == 4
    assert bad[0].startswith("regularizers (ewc, replay")
    assert bad[1].startswith("freezing policy 'top_k'")
    assert bad[2].startswith("strategy: auto")
    assert bad[3].startswith("llrd (decay 0.9")
    assert deepspeed_unsupported(llrd=LLRDConfig(decay=1.0, head_lr=1e-3))[0].startswith("llrd (decay 1.0, head_lr")


def test_check_is_one_line_naming_the_fix_and_a_no_op_without_deepspeed():
    check_deepspeed({"learning_rate": 1e-3}, environ={}, regularizers=[{"name": "ewc"}])  # no DeepSpeed: fine
    check_deepspeed({"deepspeed": "ds.json"}, environ={}, freezing=FreezingConfig())  # nothing of tl_hf's: logged
    with pytest.raises(ConfigError) as exc:
        check_deepspeed({"deepspeed": "ds.json"}, environ={}, regularizers=[{"name": "l2sp"}])
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("DeepSpeed is not supported with tl_hf's regularizers (l2sp")
    assert "use DDP" in msg and "FSDP2" in msg


@pytest.mark.parametrize("how", ["args", "env"])
@pytest.mark.parametrize("feature", ["ewc", "gradual", "llrd"])
def test_transfer_trainer_refuses_deepspeed_before_the_trainer_is_built(tmp_path, monkeypatch, how, feature):
    from tl_hf.core.trainer import TransferTrainer

    model = tiny_bert()
    before = params_snapshot(model)
    args = training_args(tmp_path)
    if how == "args":
        args.deepspeed = str(tmp_path / "ds_zero2.json")  # as TrainingArguments(deepspeed=...) with deepspeed present
    else:
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    kw = {"ewc": {"regularizers": [{"name": "ewc", "lambda": 1.0}]},
          "gradual": {"freezing": {"policy": "gradual", "schedule": {"unit": "step", "every": 1}}},
          "llrd": {"llrd": {"decay": 0.8}}}[feature]
    built = []
    monkeypatch.setattr("transformers.Trainer.__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(ConfigError, match=r"^DeepSpeed is not supported with tl_hf's .*use DDP"):
        TransferTrainer(model=model, args=args, train_dataset=TokenDataset(8), **kw)
    assert not built, "the Trainer (and its Accelerator / DeepSpeed engine) must not be built"
    after = params_snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.requires_grad for p in model.parameters()), "nothing frozen by a refused run"


def test_same_checkpoint_check_is_a_no_op_in_one_process(tmp_path):
    from tl_hf.core.distributed_checks import check_same_checkpoint

    args = training_args(tmp_path)
    check_same_checkpoint(args, None)
    check_same_checkpoint(args, str(tmp_path / "checkpoint-3"))  # one process: nothing to agree with


def test_save_on_each_node_lets_the_model_write_where_args_should_save(tmp_path):
    """transformers 5.24's save_pretrained writes only on torch.distributed rank 0; under save_on_each_node the
    model's rank test is replaced by args.should_save while the Trainer saves, and restored afterwards."""
    from types import SimpleNamespace

    from tl_hf.core.node_save import weights_where_should_save

    model = tiny_bert()
    assert "should_save_on_this_rank" not in vars(model)
    acc = SimpleNamespace(unwrap_model=lambda m, keep_torch_compile=False: m)
    for each_node, patched in ((False, False), (True, True)):
        trainer = SimpleNamespace(model=model, accelerator=acc,
                                  args=SimpleNamespace(save_on_each_node=each_node, should_save=True))
        with weights_where_should_save(trainer):
            assert ("should_save_on_this_rank" in vars(model)) is patched
            assert model.should_save_on_this_rank(True) is True and model.should_save_on_this_rank(False) is False
        assert "should_save_on_this_rank" not in vars(model)
    trainer = SimpleNamespace(model=model, accelerator=acc, args=SimpleNamespace(save_on_each_node=True,
                                                                                 should_save=False))
    with weights_where_should_save(trainer):  # not a saving process: untouched
        assert "should_save_on_this_rank" not in vars(model)
    model.save_pretrained(tmp_path / "m")  # the real method is back
    assert (tmp_path / "m" / "model.safetensors").is_file()
