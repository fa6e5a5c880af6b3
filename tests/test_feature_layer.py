"""freezing.feature_layer / feature_pooling (ViT family) and the ``blocks`` policy (surgical fine-tuning)."""

import pytest
import torch
import transformers as T
from torch.utils import _pytree as pytree

from tiny import params_snapshot, tiny_model, training_args
from tl_hf import TransferTrainer, get_layer_map
from tl_hf._errors import ConfigError
from tl_hf.core.feature_layer import apply_feature_layer, restore_feature_pooling
from tl_hf.core.freezing import FreezingConfig, FreezingController

SIZE = 16  # tiny ViT / DINOv2: 16 px, patch 8 -> 4 patch tokens + [CLS]


class Images(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def _pool(seq, model_type, pooling):
    cls, mean = seq[:, 0], seq[:, 1:].mean(1)
    if pooling == "cls":
        return torch.cat([cls, cls], 1) if model_type == "dinov2" else cls
    if pooling == "mean":
        return torch.cat([mean, mean], 1) if model_type == "dinov2" else mean
    return torch.cat([cls, mean], 1) if model_type == "dinov2" else cls  # the model's own head


def _classifier_input(model, x):
    seen = []
    h = model.classifier.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    h.remove()
    return seen[0], logits


@pytest.mark.parametrize("model_type,k", [("dinov2", 2), ("dinov2", 1), ("vit", 1)])
@pytest.mark.parametrize("pooling", ["model", "cls", "mean"])
def test_head_reads_block_k_pooled_as_configured(model_type, k, pooling):
    ref = tiny_model(model_type, num_labels=2).eval()
    model = tiny_model(model_type, num_labels=2).eval()  # same seed: same weights
    x = Images().x[:3]
    with torch.no_grad():
        out = ref(pixel_values=x, output_hidden_states=True)
        norm = ref.dinov2.layernorm if model_type == "dinov2" else ref.vit.layernorm
        expected = _pool(norm(out.hidden_states[k]), model_type, pooling)
    note = apply_feature_layer(model, k, pooling)
    assert "block" in note or "last block" in note
    got, _ = _classifier_input(model, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    lmap = get_layer_map(model)
    assert lmap.num_blocks == k == model.config.num_hidden_layers  # the blocks above k are gone
    blocks = [n for n, _ in model.named_parameters() if f".{k}." in n and "layer" in n]
    assert not blocks, blocks[:2]


def test_saved_model_reloads_with_its_layer_and_pooling(tmp_path):
    model = tiny_model("dinov2", num_labels=2).eval()
    apply_feature_layer(model, 2, "mean")
    x = Images().x[:2]
    _, logits = _classifier_input(model, x)
    model.save_pretrained(tmp_path)
    again = T.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert again.config.num_hidden_layers == 2 and len(again.dinov2.encoder.layer) == 2
    assert restore_feature_pooling(again)
    _, logits2 = _classifier_input(again, x)
    torch.testing.assert_close(logits2, logits)


def test_feature_cache_stores_the_chosen_layer(tmp_path):
    model = tiny_model("dinov2", num_labels=2)
    ref = tiny_model("dinov2", num_labels=2).eval()
    data = Images()
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                         train_dataset=data,
                         freezing={"policy": "feature_extraction", "cache_features": True, "feature_layer": 2})
    tr.train()
    store = tr.feature_cache.stores["train"]
    assert len(model.dinov2.encoder.layer) == 2  # block 3 is gone: never computed
    outs = store.gather(list(range(len(data))), None, {r: "cpu" for r in store.roots + store.placeholders})
    stored = [t for r in store.roots for t in pytree.tree_leaves(outs[r]) if isinstance(t, torch.Tensor)]
    with torch.no_grad():
        hs = ref(pixel_values=data.x, output_hidden_states=True).hidden_states
    assert any(t.shape == hs[2].shape and torch.allclose(t, hs[2], rtol=1e-5, atol=1e-6) for t in stored)
    assert not any(t.shape == hs[3].shape and torch.allclose(t, hs[3], rtol=1e-3, atol=1e-4) for t in stored)


def test_feature_layer_outside_the_blocks_and_cnn_options_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^freezing.feature_layer=4 is outside this dinov2 model's blocks: "
                                          r"valid 1\.\.3"):
        apply_feature_layer(tiny_model("dinov2"), 4)
    for kw, key in (({"layer": 3}, "freezing.feature_layer"), ({"layer": None, "pooling": "mean"},
                                                               "freezing.feature_pooling")):
        with pytest.raises(ConfigError, match=rf"^{key} is for ViT-family models \(vit, dinov2\).*not mobilenet_v2"):
            apply_feature_layer(tiny_model("mobilenet_v2"), **kw)
    with pytest.raises(ValueError, match="feature_pooling must be one of model, cls, mean"):
        FreezingConfig(feature_pooling="max")
    with pytest.raises(ValueError, match="feature_layer must be a block number >= 1"):
        FreezingConfig(feature_layer=0)
    for msg in (str(e) for e in [ConfigError("x")]):
        assert "\n" not in msg


def test_blocks_policy_trains_only_the_chosen_range(tmp_path):
    model = tiny_model("dinov2", num_labels=2)
    lmap = get_layer_map(model)
    fc = FreezingController(model, lmap, FreezingConfig(policy="blocks", blocks=[2, 3]))
    assert fc.trainable_depths() == {2, 3, 4}
    with pytest.raises(ValueError, match=r"blocks: \[2, 4\] is outside this dinov2 model's blocks: valid 0\.\.3"):
        FreezingController(model, lmap, FreezingConfig(policy="blocks", blocks=[2, 4]))
    with pytest.raises(ValueError, match=r"needs blocks: \[first, last\]"):
        FreezingConfig(policy="blocks", blocks=[3, 2])
    # surgical fine-tuning: only block 2 (depth 2) and the head move
    before = params_snapshot(model)
    TransferTrainer(model, training_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                    train_dataset=Images(), freezing={"policy": "blocks", "blocks": [2, 2]}).train()
    depths = lmap.assign(model)
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        if depths[n] in (0, 1, 3):
            assert not moved, n
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if depths[n] == 2)


def test_feature_layer_with_blocks_policy_in_the_trainer(tmp_path):
    """Read block 2 of 3 and train only it: block 3 is not part of the model at all."""
    model = tiny_model("dinov2", num_labels=2)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=1, per_device_train_batch_size=4),
                         train_dataset=Images(), freezing={"policy": "blocks", "blocks": [2, 2], "feature_layer": 2})
    assert tr.layer_map.num_blocks == 2 and tr.freezer.trainable_depths() == {2, 3}
    assert "block 2 of 3" in tr.feature_layer_note
    tr.train()
