"""The hook path on Conv2d (unfold, every groups / stride / padding / dilation setting), eval-mode BatchNorm and the
parameters other modules hold directly (a per-example vjp of that module alone): equal to the torch.func path and to
batch-1 autograd passes, and taken (no fallback) on tiny ViT / DINOv2 / MobileNetV2 / ConvNeXt."""

import logging

import pytest
import torch
from torch import nn

from test_fisher_fast import LOGGER, _assert_same, _brute_force, _no_hooks
from test_fisher_vision import _images, _model
from tl_hf.regularizers.fisher import estimate_fisher

CONVS = {
    "plain": dict(in_channels=3, out_channels=4, kernel_size=3),
    "stride2-pad1": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1),
    "groups3-dilation2": dict(in_channels=6, out_channels=9, kernel_size=3, groups=3, dilation=2, padding=2),
    "depthwise": dict(in_channels=6, out_channels=6, kernel_size=3, groups=6, padding=1, bias=False),
    "rect-stride-same": dict(in_channels=4, out_channels=6, kernel_size=(2, 3), groups=2, padding="same"),
    "pointwise-stride2": dict(in_channels=4, out_channels=5, kernel_size=1, stride=2),
    "patchify": dict(in_channels=3, out_channels=5, kernel_size=4, stride=4),
    "reflect-pad": dict(in_channels=3, out_channels=4, kernel_size=3, stride=(1, 2), padding=1,
                        padding_mode="reflect"),
}


class ConvNet(nn.Module):
    def __init__(self, conv, bn="eval"):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(**conv)
        c = conv["out_channels"]
        self.bn = nn.BatchNorm2d(c, track_running_stats=bn != "batch_stats")
        with torch.no_grad():
            self.bn.weight.normal_(1, 0.3), self.bn.bias.normal_(0, 0.3)
            if self.bn.running_mean is not None:
                self.bn.running_mean.normal_(0, 0.2), self.bn.running_var.uniform_(0.5, 2)
        self.head = nn.Linear(c, 3)

    def forward(self, pixel_values):
        return {"logits": self.head(torch.tanh(self.bn(self.conv(pixel_values))).mean((2, 3)))}


def _data(channels, size=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randn(b, channels, size, size, generator=g, dtype=torch.float64),
             "labels": torch.randint(0, 3, (b,), generator=g)} for b in (4, 3)]


def _took_hooks(caplog):
    return not any("torch.func" in r.message for r in caplog.records)


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_conv2d_hooks_equal_vmap_and_batch_of_one_passes(name, estimator, caplog):
    model = ConvNet(CONVS[name]).double()
    data = _data(CONVS[name]["in_channels"])
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        auto, n = estimate_fisher(model, data, estimator=estimator)
    assert n == 7 and _took_hooks(caplog)
    hooks, _ = estimate_fisher(model, data, estimator=estimator, per_example_impl="hooks")
    vmap, _ = estimate_fisher(model, data, estimator=estimator, per_example_impl="vmap")
    _assert_same(hooks, vmap, rtol=1e-6)
    _assert_same(hooks, _brute_force(model, data, estimator), rtol=1e-6)
    torch.testing.assert_close(auto, hooks, rtol=0, atol=0)
    assert all(v.abs().min() > 0 for v in hooks.values())
    assert _no_hooks(model)


def test_conv2d_in_float32_matches_vmap():
    model = ConvNet(CONVS["groups3-dilation2"])
    data = [{k: v.float() if v.is_floating_point() else v for k, v in b.items()} for b in _data(6)]
    hooks, _ = estimate_fisher(model, data, per_example_impl="hooks")
    vmap, _ = estimate_fisher(model, data, per_example_impl="vmap")
    _assert_same(hooks, vmap, rtol=1e-4)


@pytest.mark.parametrize("model_type,size", [("mobilenet_v2", 32), ("dinov2", 16), ("vit", 16), ("convnext", 32)])
@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_vision_backbones_take_the_hook_path(model_type, size, estimator, caplog):
    """Conv2d / depthwise Conv2d / BatchNorm2d (MobileNetV2), the patch-embedding conv, cls_token, position
    embeddings and LayerScale (ViT, DINOv2), ConvNeXt's layer scale: no torch.func fallback, same numbers."""
    model = _model(model_type, size)
    data = _images(size)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, n = estimate_fisher(model, data, estimator=estimator)
    assert n == 5 and _took_hooks(caplog), [r.message for r in caplog.records]
    vmap, _ = estimate_fisher(model, data, estimator=estimator, per_example_impl="vmap", chunk_size=2)
    _assert_same(got, vmap, rtol=1e-6)
    _assert_same(got, _brute_force(model, data, estimator), rtol=1e-6)
    assert _no_hooks(model)


class _Scaled(nn.Module):
    """A layer-scale-like module; with ``mixes`` its output depends on the other examples (the batch mean)."""

    def __init__(self, mixes):
        super().__init__()
        self.mixes = mixes
        self.scale = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, h):
        return h * self.scale / (h.mean(0).abs() + 1) if self.mixes else h * self.scale


class MixNet(nn.Module):
    def __init__(self, mode):
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.lin = nn.Linear(4, 4)
        self.mod = _Scaled(mode == "mixes")
        self.head = nn.Linear(4, 2)

    def forward(self, pixel_values):
        h = self.mod(self.lin(pixel_values))
        if self.mode == "outside":  # the module's parameter also used outside it
            h = h + self.mod.scale
        return {"logits": self.head(h)}


@pytest.mark.parametrize("mode,reason", [("mixes", "mixes the examples"), ("outside", "used outside its")])
def test_other_modules_fall_back_when_the_rule_does_not_hold(mode, reason, caplog):
    model = MixNet(mode).double()
    g = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(5, 4, generator=g, dtype=torch.float64),
             "labels": torch.randint(0, 2, (5,), generator=g)}]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, _ = estimate_fisher(model, data)
    assert any(reason in r.message for r in caplog.records), [r.message for r in caplog.records]
    if mode == "outside":  # examples independent: the fallback equals batch-1 passes
        _assert_same(got, _brute_force(model, data, "empirical"))
    assert _no_hooks(model)


def test_batchnorm_with_batch_statistics_falls_back(caplog):
    model = ConvNet(CONVS["plain"], bn="batch_stats").double()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        estimate_fisher(model, _data(3))
    assert any("batch statistics" in r.message for r in caplog.records)
