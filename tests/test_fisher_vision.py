"""Per-example Fisher on vision backbones: MobileNetV2 (Conv2d, depthwise Conv2d, BatchNorm2d) and DINOv2 (patch
conv, cls / position embeddings, LayerScale) take the hook path (tests/test_fisher_conv.py has the layer cases), and
equal batch-1 autograd passes."""

import logging

import pytest
import torch

from test_fisher_fast import LOGGER, _assert_same, _brute_force, _no_hooks
from tiny import tiny_model
from tl_hf.regularizers.fisher import estimate_fisher


def _images(size, n=(3, 2), classes=2):
    g = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(b, 3, size, size, generator=g, dtype=torch.float64),
             "labels": torch.arange(b) % classes} for b in n]


def _model(model_type, size):
    """A tiny model in float64 whose BatchNorm layers hold non-trivial affine parameters and running statistics
    fitted to the data (a fresh model's may leave whole blocks without gradient)."""
    model = tiny_model(model_type, num_labels=2).double()
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        with torch.no_grad():
            m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
            m.bias.copy_(0.2 + 0.2 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
        m.momentum = None  # cumulative average over the passes below
    if bns:
        model.train()
        with torch.no_grad():
            for b in _images(size, n=(8, 8)):
                model(pixel_values=b["pixel_values"])
    return model


@pytest.mark.parametrize("model_type,size", [("mobilenet_v2", 32), ("dinov2", 16)])
@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_per_example_fisher_equals_batch_of_one_passes(model_type, size, estimator, caplog):
    model = _model(model_type, size)
    data = _images(size)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got, n = estimate_fisher(model, data, estimator=estimator, chunk_size=2)
    assert n == 5
    assert not any("torch.func" in r.message for r in caplog.records)  # the hook path, no fallback
    ref = _brute_force(model, data, estimator)
    _assert_same(got, ref, rtol=1e-5)
    assert all(v.abs().sum() > 0 for k, v in got.items() if "mask_token" not in k)
    assert _no_hooks(model)


def test_frozen_batchnorm_statistics_untouched_by_fisher():
    """The Fisher runs in eval mode: BatchNorm running statistics are used, never updated."""
    model = tiny_model("mobilenet_v2", num_labels=2).double()
    before = {n: b.clone() for n, b in model.named_buffers()}
    estimate_fisher(model, _images(32))
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
