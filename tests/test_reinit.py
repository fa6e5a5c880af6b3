"""Re-initialising the top k blocks (Zhang et al. 2021): the model's own _init_weights, seeded, nothing else moves."""

import pytest
import torch

from tiny import TokenDataset, params_snapshot, tiny_bert, training_args
from tl_hf import TransferTrainer
from tl_hf.core.reinit import ReinitConfig, reinit_top_blocks


def test_reinit_equals_init_weights_on_a_fresh_block():
    model = tiny_bert(num_layers=3, seed=0)
    before = params_snapshot(model)
    names = reinit_top_blocks(model, 2, seed=7)
    assert names == ["bert.encoder.layer.1", "bert.encoder.layer.2"]
    fresh = tiny_bert(num_layers=3, seed=123)  # other weights: only _init_weights + the seed decide the result
    torch.manual_seed(7)
    for i in (1, 2):
        fresh.bert.encoder.layer[i].apply(fresh._init_weights)
    after = params_snapshot(model)
    ref = params_snapshot(fresh)
    moved = [n for n in after if not torch.equal(after[n], before[n])]
    assert moved and all(".layer.1." in n or ".layer.2." in n for n in moved)
    for n in after:
        if ".layer.1." in n or ".layer.2." in n:
            assert torch.equal(after[n], ref[n]), n
        else:
            assert torch.equal(after[n], before[n]), n
    # BERT's _init_weights: normal(0, initializer_range) weights, zero biases, LayerNorm (1, 0)
    blk = model.bert.encoder.layer[2]
    assert torch.all(blk.output.dense.bias == 0) and torch.all(blk.output.LayerNorm.weight == 1)
    assert abs(float(blk.intermediate.dense.weight.detach().std()) - 0.02) < 0.005


def test_reinit_is_seeded_and_leaves_the_callers_rng_alone():
    a, b = tiny_bert(seed=0), tiny_bert(seed=0)
    torch.manual_seed(1)
    reinit_top_blocks(a, 1, seed=3)
    x = torch.rand(1)
    torch.manual_seed(1)
    reinit_top_blocks(b, 1, seed=3)
    assert torch.equal(torch.rand(1), x)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_pooler_is_optional():
    model = tiny_bert(seed=0)
    w = model.bert.pooler.dense.weight.detach().clone()
    reinit_top_blocks(model, 1, seed=0)
    assert torch.equal(model.bert.pooler.dense.weight, w)
    names = reinit_top_blocks(model, 1, pooler=True, seed=0)
    assert "bert.pooler" in names and not torch.equal(model.bert.pooler.dense.weight, w)
    assert torch.all(model.bert.pooler.dense.bias == 0)


def test_k_larger_than_the_blocks_is_refused():
    with pytest.raises(ValueError, match=r"reinit.top_k=3 but this bert model has only 2 blocks"):
        reinit_top_blocks(tiny_bert(num_layers=2), 3)
    with pytest.raises(ValueError, match="reinit.top_k must be an int >= 0"):
        ReinitConfig(top_k=-1)


def test_loaded_weights_marked_initialised_are_still_reinitialised(tmp_path):
    from transformers import BertForSequenceClassification

    tiny_bert(seed=0).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path)
    w = model.bert.encoder.layer[1].attention.self.query.weight.detach().clone()
    reinit_top_blocks(model, 1, seed=0)
    assert not torch.equal(model.bert.encoder.layer[1].attention.self.query.weight, w)


def test_trainer_reinit_before_training_and_in_config(tmp_path):
    model = tiny_bert(seed=0)
    ref = tiny_bert(seed=0)
    reinit_top_blocks(ref, 1, seed=5)
    TransferTrainer(model, training_args(tmp_path), train_dataset=TokenDataset(n=8), reinit={"top_k": 1, "seed": 5})
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="unknown reinit key 'topk'"):
        TransferTrainer(tiny_bert(), training_args(tmp_path), train_dataset=TokenDataset(n=8), reinit={"topk": 1})
