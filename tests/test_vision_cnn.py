"""Convolutional networks (MobileNetV2, ResNet, ConvNeXt) in the layer map, LLRD and freezing; frozen BatchNorm keeps
its running statistics under every freezing policy (also across a gradual-unfreezing phase change and a resume)."""

import re

import pytest
import torch

from tiny import tiny_model, training_args
from tl_hf import TransferTrainer, get_layer_map
from tl_hf.core.freezing import FreezingConfig, FreezingController
from tl_hf.core.optim import param_groups_layer_decay


def test_mobilenet_v2_blocks_each_a_depth():
    model = tiny_model("mobilenet_v2", num_labels=2)
    lmap = get_layer_map(model)
    d = lmap.assign(model)
    assert lmap.num_blocks == 16 and lmap.head_depth == 17
    assert d["mobilenet_v2.conv_stem.first_conv.convolution.weight"] == 0
    assert d["mobilenet_v2.conv_stem.conv_3x3.normalization.weight"] == 0  # the first inverted-residual block
    for i in range(16):
        assert d[f"mobilenet_v2.layer.{i}.conv_3x3.convolution.weight"] == i + 1
    assert d["mobilenet_v2.conv_1x1.convolution.weight"] == 16  # the final 1x1 conv is backbone, with layer.15
    assert d["classifier.weight"] == d["classifier.bias"] == 17


def test_resnet_and_convnext_stages_flattened_in_order():
    r = tiny_model("resnet", num_labels=2)  # depths [1, 2] -> blocks 1, 2, 3
    d = get_layer_map(r).assign(r)
    assert d["resnet.embedder.embedder.convolution.weight"] == 0
    assert d["resnet.encoder.stages.0.layers.0.layer.0.convolution.weight"] == 1
    assert d["resnet.encoder.stages.1.layers.0.shortcut.convolution.weight"] == 2
    assert d["resnet.encoder.stages.1.layers.1.layer.1.normalization.bias"] == 3
    assert d["classifier.1.weight"] == 4
    c = tiny_model("convnext", num_labels=2)
    d = get_layer_map(c).assign(c)
    assert d["convnext.embeddings.patch_embeddings.weight"] == 0
    assert d["convnext.encoder.stages.0.layers.0.dwconv.weight"] == 1
    assert d["convnext.encoder.stages.1.downsampling_layer.1.weight"] == 2  # runs before stage 1's first block
    assert d["convnext.encoder.stages.1.layers.1.pwconv2.weight"] == 3
    assert d["convnext.layernorm.weight"] == d["classifier.weight"] == 4


@pytest.mark.parametrize("model_type,head", [("mobilenet_v2", 17), ("resnet", 4), ("convnext", 4)])
def test_llrd_groups_one_per_depth(model_type, head):
    model = tiny_model(model_type, num_labels=2)
    groups = param_groups_layer_decay(model, lr=1e-2, decay=0.5, weight_decay=0.1)
    depths = get_layer_map(model).assign(model)
    assert sorted({g["depth"] for g in groups}) == list(range(head + 1))
    for g in groups:
        assert g["lr"] == pytest.approx(1e-2 * 0.5 ** (head - g["depth"]))
        assert {depths[n] for n in g["param_names"]} == {g["depth"]}
        # conv kernels decay, BatchNorm / LayerNorm weights and biases do not
        assert all((g["weight_decay"] > 0) == (p.ndim > 1) for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("model_type,k,first", [("mobilenet_v2", 3, 14), ("resnet", 2, 2), ("convnext", 1, 3)])
def test_top_k_freezes_exactly_the_lower_blocks(model_type, k, first):
    model = tiny_model(model_type, num_labels=2)
    lmap = get_layer_map(model)
    fc = FreezingController(model, lmap, FreezingConfig(policy="top_k", k=k))
    fc.apply()
    depths = lmap.assign(model)
    for n, p in model.named_parameters():
        assert p.requires_grad == (depths[n] >= first), n
    assert fc.trainable_depths() == set(range(first, lmap.head_depth + 1))


# ---------------------------------------------------------------------------------------------------------------------
# Frozen BatchNorm
# ---------------------------------------------------------------------------------------------------------------------

class Images(torch.utils.data.Dataset):
    def __init__(self, n=16, size=32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g) * 2 + 0.5
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def _bn_stats(model):
    return {n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
            for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def _check_stats(model, before, frozen: re.Pattern):
    """BN layers whose name matches ``frozen`` are bit-identical, all others changed."""
    after = _bn_stats(model)
    n_frozen = 0
    for n, (mean, var, count) in before.items():
        if frozen.search(n):
            n_frozen += 1
            assert torch.equal(after[n][0], mean) and torch.equal(after[n][1], var) and after[n][2] == count, n
        else:
            assert not torch.equal(after[n][0], mean) and after[n][2] > count, n
    return n_frozen


@pytest.mark.parametrize("freezing,frozen", [
    ({"policy": "top_k", "k": 2}, r"conv_stem|layer\.(\d|1[0-3])\."),
    ({"policy": "feature_extraction"}, r"."),
    ({"policy": "patterns", "exclude": [r"layer\.[0-7]\.", r"conv_stem"]}, r"conv_stem|layer\.[0-7]\."),
])
def test_frozen_batchnorm_statistics_are_bit_identical(tmp_path, freezing, frozen):
    model = tiny_model("mobilenet_v2", num_labels=2)
    before = _bn_stats(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=3), train_dataset=Images(), freezing=freezing)
    tr.train()
    n = _check_stats(model, before, re.compile(frozen))
    assert n >= 10


def test_frozen_batchnorm_across_gradual_phase_change_and_resume(tmp_path):
    """Phase 0 trains the head only; from step 2 the top 2 depths (layer.14, layer.15 + conv_1x1) train. A run
    stopped at step 2 and resumed to step 4 keeps every other block's statistics bit-identical."""
    sched = {"unit": "step", "phases": [{"start": 0, "depths": 0}, {"start": 2, "depths": 2}]}
    freezing = {"policy": "gradual", "schedule": sched}
    model = tiny_model("mobilenet_v2", num_labels=2)
    before = _bn_stats(model)
    args = training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, per_device_train_batch_size=4)
    TransferTrainer(model, args, train_dataset=Images(), freezing=freezing).train()
    assert _check_stats(model, before, re.compile(r".")) == len(before)  # phase 0: every BN frozen
    resumed = tiny_model("mobilenet_v2", num_labels=2, seed=1)  # other weights: the checkpoint must restore them
    args = training_args(tmp_path, max_steps=4, save_strategy="no", per_device_train_batch_size=4)
    tr = TransferTrainer(resumed, args, train_dataset=Images(), freezing=freezing)
    tr.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert tr.freezer.phase == 1
    _check_stats(resumed, before, re.compile(r"conv_stem|layer\.(\d|1[0-3])\."))


def test_static_policy_resume_keeps_frozen_statistics(tmp_path):
    model = tiny_model("mobilenet_v2", num_labels=2)
    before = _bn_stats(model)
    args = training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, per_device_train_batch_size=4)
    TransferTrainer(model, args, train_dataset=Images(), freezing={"policy": "top_k", "k": 1}).train()
    resumed = tiny_model("mobilenet_v2", num_labels=2, seed=1)
    args = training_args(tmp_path, max_steps=4, save_strategy="no", per_device_train_batch_size=4)
    TransferTrainer(resumed, args, train_dataset=Images(), freezing={"policy": "top_k", "k": 1}).train(
        resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    _check_stats(resumed, before, re.compile(r"conv_stem|layer\.(\d|1[0-4])\."))


def test_batchnorm_without_affine_parameters_follows_its_parent(tmp_path):
    """A BatchNorm with no parameters of its own is frozen when the module around it is."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, affine=False))
            self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4, affine=False))
            self.head = torch.nn.Linear(4, 2)

        def forward(self, pixel_values, labels=None):
            h = self.block(torch.relu(self.stem(pixel_values))).mean((2, 3))
            logits = self.head(h)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    torch.manual_seed(0)
    net = Net()
    before = _bn_stats(net)
    tr = TransferTrainer(net, training_args(tmp_path, max_steps=2), train_dataset=Images(),
                         layer_map={r"^stem\.": "embeddings", r"^block\.": 1, r"^head\.": "head"},
                         freezing={"policy": "top_k", "k": 1})
    tr.train()
    _check_stats(net, before, re.compile(r"^stem"))


def test_freeze_norm_stats_off_lets_frozen_statistics_move(tmp_path):
    """The control: without freeze_norm_stats the same run changes the frozen blocks' statistics."""
    model = tiny_model("mobilenet_v2", num_labels=2)
    before = _bn_stats(model)
    TransferTrainer(model, training_args(tmp_path, max_steps=2), train_dataset=Images(),
                    freezing={"policy": "top_k", "k": 2, "freeze_norm_stats": False}).train()
    _check_stats(model, before, re.compile(r"^$"))


@pytest.mark.slow
def test_real_mobilenet_v2_frozen_blocks_keep_running_means(tmp_path):
    """The pretrained ImageNet MobileNetV2 (../shared/models), new 2-class head, top 3 depths trained for 3 steps on
    hymenoptera-sized (224 px) images: every frozen block's BatchNorm statistics are bit-identical, the trained
    blocks' moved."""
    from pathlib import Path

    import transformers as T

    path = Path(__file__).resolve().parents[2] / "shared" / "models" / "mobilenetv2-imagenet"
    if not path.exists():
        pytest.fail(f"{path} not found: the shared backbones are part of the test environment")
    model = T.AutoModelForImageClassification.from_pretrained(path, num_labels=2, ignore_mismatched_sizes=True)
    assert get_layer_map(model).num_blocks == 16
    before = _bn_stats(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=3, per_device_train_batch_size=4),
                         train_dataset=Images(n=12, size=224), freezing={"policy": "top_k", "k": 3})
    tr.train()
    frozen = _check_stats(model, before, re.compile(r"conv_stem|layer\.(\d|1[0-2])\."))
    assert frozen == 3 + 13 * 3  # conv_stem: 3 BatchNorms, layer.0..12: 3 each
