"""LP-FT's linear-probe phase on the feature cache, and LP-FT resumed across the phase change."""

import pytest
import torch

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.core.freezing import FreezingConfig
from tl_hf.core.lp_ft import lp_ft_freezing


def _freezing(cache: bool) -> FreezingConfig:
    f = lp_ft_freezing(3, unit="step")
    f.cache_features = cache
    return f


def _trainer(out, cache=False, **kw):
    args = training_args(out, max_steps=6, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                         train_sampling_strategy="sequential", **kw)
    return TransferTrainer(tiny_bert(seed=0), args, train_dataset=TokenDataset(n=48), freezing=_freezing(cache),
                           llrd={"decay": 0.8})


def test_cached_linear_probe_phase_equals_the_uncached_run_and_the_cache_is_dropped_after_it(tmp_path):
    plain = _trainer(tmp_path / "plain")
    plain.train()
    cached = _trainer(tmp_path / "cached", cache=True)
    built = []
    orig = cached.feature_cache.build
    cached.feature_cache.build = lambda *a, **k: built.append(a[0]) or orig(*a, **k)
    cached.train()
    assert built == ["train"]  # built once, for the probe phase
    assert cached.feature_cache.stores == {} and cached.freezer.phase == 1  # dropped when the backbone trains
    for (n, p), (_, q) in zip(plain.model.named_parameters(), cached.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n  # tiny_bert has no dropout: the cache changes nothing
    # the fine-tuning phase really trained the backbone
    start = dict(tiny_bert(seed=0).named_parameters())
    assert not torch.equal(cached.model.bert.encoder.layer[0].attention.self.query.weight,
                           start["bert.encoder.layer.0.attention.self.query.weight"])


@pytest.mark.parametrize("cache", [False, True])
def test_lp_ft_resumed_after_the_phase_change_equals_the_uninterrupted_run(tmp_path, cache):
    full = _trainer(tmp_path / "full", cache=cache)
    full.train()
    part = _trainer(tmp_path / "part", cache=cache, save_strategy="steps", save_steps=4)
    part.train()
    resumed = _trainer(tmp_path / "part", cache=cache)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-4"))  # phase 1 began at step 3
    assert resumed.freezer.phase == 1
    if cache:
        assert resumed.feature_cache.stores == {}  # nothing cached: the probe phase was over
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_cache_with_a_schedule_that_does_not_start_head_only_is_refused(tmp_path):
    f = FreezingConfig(policy="gradual", cache_features=True,
                       schedule={"unit": "step", "phases": [{"start": 0, "depths": 1}, {"start": 3, "depths": 3}]})
    with pytest.raises(ValueError, match="needs a first phase that trains only the head"):
        TransferTrainer(tiny_bert(seed=0), training_args(tmp_path, max_steps=2), train_dataset=TokenDataset(n=8),
                        freezing=f)
    with pytest.raises(ValueError, match="or 'gradual' with a head-only first phase"):
        FreezingConfig(policy="top_k", k=1, cache_features=True)
