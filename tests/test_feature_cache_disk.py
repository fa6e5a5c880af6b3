"""freezing.feature_cache_dir: the cached backbone outputs are saved (safetensors + JSON) and a fresh trainer reuses
them without running the backbone; a changed weight, data row or preprocessing setting makes it recompute; a
truncated file is recomputed with a warning."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tiny import TokenDataset, tiny_bert, training_args
from tl_hf import FreezingConfig, TransferTrainer


class Truncate:
    """A collator with one preprocessing setting: the sequences are cut to ``max_length`` tokens."""

    def __init__(self, max_length: int = 8) -> None:
        self.max_length = max_length

    def __call__(self, features):
        m = self.max_length
        return {"input_ids": torch.stack([f["input_ids"][:m] for f in features]),
                "attention_mask": torch.stack([f["attention_mask"][:m] for f in features]),
                "labels": torch.stack([f["labels"] for f in features])}


def _run(tmp_path, cache_dir, *, model=None, data=None, collator=None, cached=True):
    """Train 4 steps; the number of times the backbone's first block ran, the head after training, the trainer."""
    model = model or tiny_bert(num_layers=2, seed=0)
    calls = []
    model.bert.encoder.layer[0].register_forward_hook(lambda *a: calls.append(1))
    freezing = FreezingConfig(policy="feature_extraction", cache_features=cached,
                              feature_cache_dir=str(cache_dir) if cached else None)
    tr = TransferTrainer(model, training_args(tmp_path / "run", per_device_eval_batch_size=16), freezing=freezing,
                         train_dataset=data or TokenDataset(n=32), data_collator=collator or Truncate())
    tr.train()
    head = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return len(calls), head, tr


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_saved_cache_is_reused_without_a_backbone_forward(tmp_path):
    cache = tmp_path / "fc"
    n1, head1, tr1 = _run(tmp_path, cache)
    assert n1 == 3  # 32 rows in 2 batches of 16, the first one run twice (its determinism check)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    info = json.loads(next(cache.glob("*.json")).read_text())
    assert info["examples"] == 32 and info["roots"] == tr1.feature_cache.stores["train"].roots
    n2, head2, tr2 = _run(tmp_path, cache)
    assert n2 == 0  # read from disk: the backbone never ran
    assert tr2.feature_cache.stores["train"].computed == 0
    assert _same(head1, head2)  # the same training
    _, head_plain, _ = _run(tmp_path, cache, cached=False)
    assert all(torch.allclose(head1[k], head_plain[k], atol=1e-6) for k in head1)  # and the same as uncached


def _change_weight(model, data, collator):
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[0, 0] += 1e-3  # one frozen weight
    return model, data, collator


def _change_row(model, data, collator):
    data.ids[5, 3] = data.ids[5, 3] % 98 + 1  # one token of one row, always another one
    return model, data, collator


def _change_preprocessing(model, data, collator):
    return model, data, Truncate(max_length=6)


@pytest.mark.parametrize("change", [_change_weight, _change_row, _change_preprocessing],
                         ids=["weight", "data-row", "preprocessing"])
def test_a_changed_input_recomputes(tmp_path, change):
    cache = tmp_path / "fc"
    n1, head1, _ = _run(tmp_path, cache)
    model, data, collator = change(tiny_bert(num_layers=2, seed=0), TokenDataset(n=32), Truncate())
    n2, head2, tr = _run(tmp_path, cache, model=model, data=data, collator=collator)
    assert n2 == n1  # recomputed, not read
    assert tr.feature_cache.stores["train"].computed == 32
    assert len(list(cache.glob("*.safetensors"))) == 2  # a second entry beside the first
    assert not _same(head1, head2)  # the change shows in the training


def test_truncated_cache_file_is_recomputed_with_a_warning(tmp_path, caplog):
    cache = tmp_path / "fc"
    _, head1, _ = _run(tmp_path, cache)
    path = next(cache.glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="tl_hf.core.feature_disk"):
        n2, head2, _ = _run(tmp_path, cache)
    assert "truncated or corrupt" in caplog.text and path.name in caplog.text
    assert n2 > 0 and _same(head1, head2)
    n3, _, _ = _run(tmp_path, cache)  # the entry was replaced by a whole one
    assert n3 == 0


def test_foreign_bytes_are_recomputed(tmp_path, caplog):
    cache = tmp_path / "fc"
    _run(tmp_path, cache)
    next(cache.glob("*.safetensors")).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with caplog.at_level(logging.WARNING, logger="tl_hf.core.feature_disk"):
        n2, _, _ = _run(tmp_path, cache)
    assert n2 > 0 and "truncated or corrupt" in caplog.text


@pytest.mark.parametrize("kw, msg", [
    ({"policy": "feature_extraction", "feature_cache_dir": "fc"}, "cache_features is false"),
    ({"policy": "feature_extraction", "cache_features": True, "feature_cache_dir": 3}, "must be a folder path"),
    ({"policy": "feature_extraction", "cache_features": True, "feature_cache_dir": " "}, "must be a folder path"),
])
def test_feature_cache_dir_is_validated(kw, msg):
    with pytest.raises(ValueError, match=msg):
        FreezingConfig(**kw)


def test_feature_cache_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        FreezingConfig(policy="feature_extraction", cache_features=True, feature_cache_dir=str(f))
