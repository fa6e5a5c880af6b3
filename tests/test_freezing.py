import pytest
import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model

from tiny import TokenDataset, params_snapshot, tiny_bert, tiny_model, training_args
from tl_hf import FreezingConfig, FreezingController, GradualSchedule, TransferTrainer, get_layer_map


def _trainable_depths(model):
    d = get_layer_map(model).assign(model)
    return {d[n] for n, p in model.named_parameters() if p.requires_grad}


def _controller(model, **cfg):
    return FreezingController(model, get_layer_map(model), FreezingConfig(**cfg))


@pytest.mark.parametrize("cfg,expected", [
    ({"policy": "full"}, {0, 1, 2, 3, 4}),
    ({"policy": "feature_extraction"}, {4}),
    ({"policy": "top_k", "k": 1}, {3, 4}),
    ({"policy": "top_k", "k": 2}, {2, 3, 4}),
    ({"policy": "top_k", "k": 0}, {4}),
    ({"policy": "top_k", "k": 1, "train_embeddings": True}, {0, 3, 4}),
])
def test_static_policies_select_depths(cfg, expected):
    model = tiny_bert(num_layers=3)
    _controller(model, **cfg).apply()
    assert _trainable_depths(model) == expected


def test_patterns_policy_include_and_exclude():
    model = tiny_bert(num_layers=2)
    _controller(model, policy="patterns", include=[r"classifier", r"layer\.1\."], exclude=[r"\.bias$"]).apply()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in trainable and "classifier.bias" not in trainable
    assert "bert.encoder.layer.1.attention.self.query.weight" in trainable
    assert not any("layer.0" in n or "embeddings" in n or n.endswith(".bias") for n in trainable)


@pytest.mark.parametrize("cfg,match", [
    ({"policy": "freeze_all"}, r"unknown freezing policy 'freeze_all'; valid policies: full, feature_extraction, "
                               r"top_k, patterns, blocks, gradual"),
    ({"policy": "top_k"}, r"needs k"),
    ({"policy": "top_k", "k": -1}, r"needs k"),
    ({"policy": "patterns"}, r"needs include and/or exclude"),
    ({"policy": "patterns", "include": ["("]}, r"not a valid regex"),
])
def test_bad_policy_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        FreezingConfig(**cfg)


def test_policy_that_leaves_nothing_trainable_is_refused():
    with pytest.raises(ValueError, match="leaves nothing trainable"):
        _controller(tiny_bert(), policy="patterns", include=[r"no_such_parameter"])
    with pytest.raises(ValueError, match="only 2 blocks"):
        _controller(tiny_bert(num_layers=2), policy="top_k", k=3)


def test_gradual_schedules_resolve_top_down_and_bottom_up():
    lmap = get_layer_map(tiny_bert(num_layers=3))  # depths 0..4, head 4
    top = GradualSchedule(unit="epoch").resolve(lmap)
    assert top == [(0, {4}), (1, {3, 4}), (2, {2, 3, 4}), (3, {1, 2, 3, 4}), (4, {0, 1, 2, 3, 4})]
    up = GradualSchedule(unit="step", every=5, depths_per_phase=2, direction="bottom_up").resolve(lmap)
    assert up == [(0, {4}), (5, {0, 1, 4}), (10, {0, 1, 2, 3, 4})]
    explicit = GradualSchedule(phases=[{"start": 2, "depths": 1}, {"start": 4, "depths": [1, 2, 3]}]).resolve(lmap)
    assert explicit == [(0, {4}), (2, {3, 4}), (4, {1, 2, 3, 4})]


@pytest.mark.parametrize("phases,match", [
    ([{"start": 0, "depths": 9}], r"unfreezes 9 depth levels, but this bert model has only 4"),
    ([{"start": 0, "depths": [7]}], r"names depths \[7\], but this bert model has depths 0..4"),
    ([{"start": 0, "depths": 2}, {"start": 3, "depths": 1}], r"would freeze depths \[2\]"),
])
def test_schedule_phases_that_do_not_fit_the_model(phases, match):
    lmap = get_layer_map(tiny_bert(num_layers=3))
    with pytest.raises(ValueError, match=match):
        GradualSchedule(phases=phases).resolve(lmap)


def test_schedule_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        GradualSchedule(phases=[{"start": 2, "depths": 1}, {"start": 2, "depths": 2}])
    with pytest.raises(ValueError, match="unit must be 'epoch' or 'step'"):
        GradualSchedule(unit="batch")
    with pytest.raises(ValueError, match="rewarm_steps"):
        GradualSchedule(rewarm_steps=-1)


def _record_block_input(model, block, key):
    """Remember whether the first training forward's input to a block requires grad (i.e. autograd reaches it)."""
    seen = {}

    def hook(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        if module.training:
            seen.setdefault(key, h.requires_grad)

    model.bert.encoder.layer[block].register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_frozen_parameters_get_no_gradient_no_update_no_state(tmp_path):
    model = tiny_bert(num_layers=3)
    before = params_snapshot(model)
    seen = _record_block_input(model, 2, "top_in")
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=3, weight_decay=0.1), train_dataset=TokenDataset(),
                         freezing={"policy": "top_k", "k": 1})
    tr.train()
    depths = get_layer_map(model).assign(model)
    for n, p in model.named_parameters():
        if depths[n] < 3:
            assert torch.equal(p, before[n]), f"frozen {n} moved"
            assert p.grad is None
            assert len(tr.optimizer.state[p]) == 0, f"frozen {n} has optimizer state"
        elif n.endswith("weight") and "LayerNorm" not in n:
            assert not torch.equal(p, before[n]), f"trainable {n} did not move"
    # autograd never entered the frozen part: the input of the top block does not require grad
    assert seen == {"top_in": False}


def test_full_policy_builds_graph_through_everything(tmp_path):
    model = tiny_bert(num_layers=2)
    seen = _record_block_input(model, 1, "in")
    TransferTrainer(model, training_args(tmp_path, max_steps=1), train_dataset=TokenDataset()).train()
    assert seen == {"in": True}


def test_gradual_unfreezing_by_step_with_rewarm(tmp_path):
    model = tiny_bert(num_layers=2)
    snaps = []
    tr = TransferTrainer(
        model, training_args(tmp_path, max_steps=6, lr_scheduler_type="constant"), train_dataset=TokenDataset(),
        llrd={"decay": 0.5},
        freezing={"policy": "gradual", "schedule": {"unit": "step", "rewarm_steps": 3,
                                                     "phases": [{"start": 0, "depths": 0}, {"start": 2, "depths": 1}]}})

    from transformers import TrainerCallback

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            snaps.append(model.bert.encoder.layer[1].output.dense.weight.detach().clone())

    tr.add_callback(Snap())
    w0 = model.bert.encoder.layer[1].output.dense.weight.detach().clone()
    emb0 = model.bert.embeddings.word_embeddings.weight.detach().clone()
    tr.train()
    assert torch.equal(snaps[0], w0) and torch.equal(snaps[1], w0), "top block frozen during steps 1-2"
    assert not torch.equal(snaps[2], w0), "top block trains from step 3"
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb0)
    logs = [h for h in tr.state.log_history if "lr/head" in h]
    head = 32 * 32 + 32 + 2 * 32 + 2  # pooler + classifier
    block = sum(p.numel() for p in model.bert.encoder.layer[1].parameters())
    assert [h["trainable_params"] for h in logs] == [head, head] + [head + block] * 4
    # constant lr 1e-3; layer.1 (depth 2) has 1e-3 * 0.5; re-warm over 3 steps: 1/3, 2/3, then full
    lr_l1 = [h["lr/layer.1"] for h in logs]
    assert lr_l1[2] == pytest.approx(5e-4 / 3) and lr_l1[3] == pytest.approx(5e-4 * 2 / 3)
    assert lr_l1[4] == pytest.approx(5e-4) and lr_l1[5] == pytest.approx(5e-4)
    assert all(h["lr/head"] == pytest.approx(1e-3) for h in logs)


def test_gradual_unfreezing_by_epoch(tmp_path):
    model = tiny_bert(num_layers=2)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=-1, num_train_epochs=3),
                         train_dataset=TokenDataset(n=16), freezing={"policy": "gradual"})  # 2 steps per epoch
    tr.train()
    logs = [h["trainable_params"] for h in tr.state.log_history if "lr/head" in h]
    assert len(logs) == 6
    assert logs[0] == logs[1] < logs[2] == logs[3] < logs[4] == logs[5]
    assert tr.freezer.phase == 3 and tr.freezer.trainable_depths(3) == {0, 1, 2, 3}  # epoch 3 reached at the end


def test_frozen_batchnorm_keeps_its_statistics(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
            self.block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
            self.head = nn.Linear(8, 2)

        def forward(self, x, labels=None):
            logits = self.head(torch.relu(self.block(torch.relu(self.stem(x)))))
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"x": torch.randn(4, generator=g) * 3 + 1, "labels": torch.tensor(i % 2)}

    torch.manual_seed(0)
    net = Net()
    stem_mean = net.stem[1].running_mean.clone()
    block_mean = net.block[1].running_mean.clone()
    tr = TransferTrainer(net, training_args(tmp_path, max_steps=3), train_dataset=DS(),
                         layer_map={r"^stem\.": "embeddings", r"^block\.": 1, r"^head\.": "head"},
                         freezing={"policy": "top_k", "k": 1})
    tr.train()
    assert torch.equal(net.stem[1].running_mean, stem_mean), "frozen BatchNorm statistics changed"
    assert not torch.equal(net.block[1].running_mean, block_mean), "trainable BatchNorm statistics updated"


def test_peft_lora_with_top_k_keeps_base_weights_frozen(tmp_path):
    base = tiny_model("bert", num_labels=2)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"],
                                            task_type="SEQ_CLS"))
    before = params_snapshot(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=3), train_dataset=TokenDataset(),
                         llrd={"decay": 0.8}, freezing={"policy": "top_k", "k": 1})
    tr.train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("layer.1" in n and "lora_B" in n for n in moved)
    assert not any("layer.0" in n for n in moved), "LoRA in a frozen block trained"
    assert not any("base_layer" in n or "original_module" in n for n in moved), "PEFT base weights moved"
    assert any("modules_to_save" in n for n in moved)
    assert {g["name"] for g in tr.optimizer.param_groups} == {"embeddings", "layer.0", "layer.1", "head"}


def test_gradual_refuses_ddp_settings_that_break_it(tmp_path):
    with pytest.raises(ValueError, match="static_graph"):
        TransferTrainer(tiny_bert(), training_args(tmp_path, ddp_static_graph=True), train_dataset=TokenDataset(),
                        freezing={"policy": "gradual"})
    with pytest.raises(ValueError, match="ddp_find_unused_parameters=True"):
        TransferTrainer(tiny_bert(), training_args(tmp_path, ddp_find_unused_parameters=False),
                        train_dataset=TokenDataset(), freezing={"policy": "gradual"})


def test_rewarm_needs_a_lambda_scheduler(tmp_path):
    tr = TransferTrainer(tiny_bert(), training_args(tmp_path, lr_scheduler_type="reduce_lr_on_plateau",
                                                    eval_strategy="steps", eval_steps=1),
                         train_dataset=TokenDataset(), eval_dataset=TokenDataset(n=8),
                         freezing={"policy": "gradual", "schedule": {"rewarm_steps": 2}})
    before = params_snapshot(tr.model)
    with pytest.raises(ValueError, match="rewarm_steps=2 needs a LambdaLR-based"):
        tr.train()
    assert all(torch.equal(p, before[n]) for n, p in tr.model.named_parameters()), "no step was taken"


def test_unknown_config_key_suggests_the_right_one(tmp_path):
    with pytest.raises(ValueError, match=r"unknown freezing key 'polcy'; did you mean 'policy'\?"):
        TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(), freezing={"polcy": "full"})
