import math

import pytest
import torch

from tiny import TokenDataset, tiny_bert, tiny_model, training_args
from tl_hf import LLRDConfig, TransferTrainer, no_weight_decay_names, param_groups_layer_decay


def test_lr_per_depth_follows_the_formula():
    model = tiny_bert(num_layers=3)  # L = 3: depths 0..4
    groups = param_groups_layer_decay(model, lr=1e-3, decay=0.5, weight_decay=0.01)
    lr_by_name = {g["name"]: g["lr"] for g in groups}
    assert list(dict.fromkeys(g["name"] for g in groups)) == ["embeddings", "layer.0", "layer.1", "layer.2", "head"]
    for depth, name in enumerate(["embeddings", "layer.0", "layer.1", "layer.2", "head"]):
        assert lr_by_name[name] == pytest.approx(1e-3 * 0.5 ** (4 - depth))
    # every parameter in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(len(g["params"]) == len(g["param_names"]) for g in groups)


def test_head_lr_and_floor():
    model = tiny_bert(num_layers=3)
    groups = param_groups_layer_decay(model, lr=1e-3, decay=0.5, head_lr=5e-3, min_lr_scale=0.2)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head"] == pytest.approx(5e-3)
    assert lr["layer.2"] == pytest.approx(5e-4)  # 0.5**1, from base lr not head lr
    assert lr["layer.1"] == pytest.approx(2.5e-4)
    assert lr["layer.0"] == pytest.approx(2e-4)  # 0.125 floored to 0.2
    # the one formula the groups (and the model card's table) use
    from tl_hf.core.optim import lr_for_depth

    for g in groups:
        assert g["lr"] == lr_for_depth(g["depth"], 4, 1e-3, 0.5, head_lr=5e-3, min_lr_scale=0.2)
    assert lr["embeddings"] == pytest.approx(2e-4)


def test_no_weight_decay_on_biases_norms_positions_and_tokens():
    model = tiny_model("vit")
    groups = param_groups_layer_decay(model, lr=1e-3, decay=0.8, weight_decay=0.05)
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    for n, v in wd.items():
        if n.endswith(".bias") or "layernorm" in n or n.endswith(("cls_token", "position_embeddings")):
            assert v == 0.0, n
    assert wd["vit.layers.0.attention.q_proj.weight"] == 0.05
    assert wd["vit.embeddings.patch_embeddings.projection.weight"] == 0.05
    assert wd["classifier.weight"] == 0.05
    bert_nd = no_weight_decay_names(tiny_bert())
    assert "bert.embeddings.position_embeddings.weight" in bert_nd
    assert "bert.embeddings.LayerNorm.weight" in bert_nd
    assert "bert.embeddings.word_embeddings.weight" not in bert_nd
    deit_nd = no_weight_decay_names(tiny_model("deit"))
    assert "deit.embeddings.distillation_token" in deit_nd


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan"), "0.9"])
def test_decay_outside_unit_interval_is_rejected(decay):
    with pytest.raises(ValueError, match=r"decay \(xi\) must be in \(0, 1\]"):
        LLRDConfig(decay=decay)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        param_groups_layer_decay(tiny_bert(), lr=1e-3, decay=decay)


SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "reduce_lr_on_plateau"]


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_every_scheduler_keeps_the_layer_ratios(sched, tmp_path):
    """Warmup and decay scale each group's own initial lr: lr(group)/lr(head) stays xi**(L+1-depth) at every step."""
    kwargs = {}
    if sched == "cosine_with_min_lr":
        kwargs = {"min_lr_rate": 0.1}
    if sched == "warmup_stable_decay":
        kwargs = {"num_decay_steps": 2}
    extra = {}
    if sched == "reduce_lr_on_plateau":  # needs evaluation; patience 0 and a huge threshold force reductions
        kwargs = {"patience": 0, "factor": 0.5, "threshold": 10.0}
        extra = {"eval_strategy": "steps", "eval_steps": 1}
    args = training_args(tmp_path, max_steps=6, warmup_steps=2, lr_scheduler_type=sched, lr_scheduler_kwargs=kwargs,
                         **extra)
    model = tiny_bert(num_layers=2)
    tr = TransferTrainer(model, args, train_dataset=TokenDataset(n=48), eval_dataset=TokenDataset(n=8, seed=1),
                         llrd=LLRDConfig(decay=0.5))
    tr.train()
    logs = [h for h in tr.state.log_history if "lr/head" in h]
    assert len(logs) == 6
    saw_change = set()
    for h in logs:
        head = h["lr/head"]
        saw_change.add(round(head, 12))
        for name, depth in [("embeddings", 0), ("layer.0", 1), ("layer.1", 2)]:
            assert h[f"lr/{name}"] == pytest.approx(head * 0.5 ** (3 - depth), rel=1e-9, abs=1e-15)
        assert h["learning_rate"] == pytest.approx(h["lr/embeddings"], rel=1e-9, abs=1e-15)
    if sched != "constant":
        assert len(saw_change) > 1, "the scheduler did change the learning rate"
    if "warmup" in sched or sched in ("linear", "cosine"):
        assert logs[0]["lr/head"] < 1e-3  # warmup starts below the base lr


def test_trainer_optimizer_holds_every_parameter_in_named_groups(tmp_path):
    model = tiny_bert(num_layers=2)
    tr = TransferTrainer(model, training_args(tmp_path, weight_decay=0.01), train_dataset=TokenDataset(),
                         llrd={"decay": 0.8}, freezing={"policy": "top_k", "k": 1})
    opt = tr.create_optimizer()
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert {g["name"] for g in opt.param_groups} == {"embeddings", "layer.0", "layer.1", "head"}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}
    assert math.isclose(max(g["lr"] for g in opt.param_groups), 1e-3)


def test_optimizer_factory_and_prebuilt_optimizer_are_refused(tmp_path):
    model = tiny_bert()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
        TransferTrainer(model, training_args(tmp_path), train_dataset=TokenDataset(), optimizers=(opt, None))
