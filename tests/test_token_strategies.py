"""Token-classification heads on tl_hf's strategies, with tiny models built from configs: the layer map of every
built-in text architecture, LLRD, every freezing policy, EWC (the Fisher of the per-sentence token loss, -100
ignored), L2-SP, replay and LoRA (TOKEN_CLS, the classifier in modules_to_save)."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from tiny import TagDataset, params_snapshot, tag_collator, tiny_configs, training_args

from tl_hf import TransferTrainer, get_layer_map

TEXT = [t for t, (cls, _, _) in sorted(tiny_configs().items()) if cls.__name__.endswith("ForSequenceClassification")]
TAGS = 5


def token_model(model_type: str = "bert", seed: int = 0):
    torch.manual_seed(seed)
    _, cfg, n_blocks = tiny_configs(TAGS)[model_type]
    for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)
    return T.AutoModelForTokenClassification.from_config(cfg), n_blocks


@pytest.fixture(scope="module")
def collate():
    return tag_collator()


@pytest.mark.parametrize("model_type", TEXT)
def test_token_heads_are_in_the_layer_map_like_the_sequence_heads(model_type):
    model, n_blocks = token_model(model_type)
    assert type(model).__name__.endswith("ForTokenClassification")
    lmap = get_layer_map(model)
    assert lmap.model_type == model_type and lmap.num_blocks == n_blocks
    depths = lmap.assign(model)
    assert sorted(depths) == sorted(n for n, _ in model.named_parameters())
    assert set(depths.values()) == set(range(n_blocks + 2)), "every depth level has parameters"
    head = [n for n in depths if n.startswith("classifier.")]
    assert head and all(depths[n] == n_blocks + 1 for n in head)
    seq = tiny_configs(TAGS)[model_type][0](tiny_configs(TAGS)[model_type][1])
    seq_depths = get_layer_map(seq).assign(seq)
    shared = [n for n in depths if n in seq_depths and not n.startswith(("classifier", "pooler"))]
    assert len(shared) > 10 and all(depths[n] == seq_depths[n] for n in shared), "the backbone maps alike"


def test_llrd_groups_of_a_token_model():
    from tl_hf.core.optim import param_groups_layer_decay

    model, n_blocks = token_model("bert")
    groups = param_groups_layer_decay(model, lr=1e-3, decay=0.5, weight_decay=0.0)
    lr = {g["depth"]: g["lr"] for g in groups}
    assert lr[n_blocks + 1] == pytest.approx(1e-3) and lr[0] == pytest.approx(1e-3 * 0.5 ** (n_blocks + 1))
    head = next(g for g in groups if g["depth"] == n_blocks + 1)
    assert any(p is model.classifier.weight for p in head["params"])


@pytest.mark.parametrize("freezing,trainable_depths", [
    ({"policy": "full"}, {0, 1, 2, 3}),
    ({"policy": "feature_extraction"}, {3}),
    ({"policy": "top_k", "k": 1}, {2, 3}),
    ({"policy": "patterns", "include": [r"encoder\.layer\.0\."]}, {1}),
    ({"policy": "gradual", "schedule": {"unit": "step", "phases": [{"start": 0, "depths": 0},
                                                                   {"start": 2, "depths": 1}]}}, {2, 3}),
])
def test_every_freezing_policy_on_a_token_model(tmp_path, collate, freezing, trainable_depths):
    model, _ = token_model("bert")
    before = params_snapshot(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=4, per_device_train_batch_size=4),
                         train_dataset=TagDataset(), data_collator=collate, llrd={"decay": 0.8}, freezing=freezing)
    tr.train()
    depths = get_layer_map(model).assign(model)
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        if depths[n] not in trainable_depths:
            assert not moved, f"{freezing['policy']}: frozen {n} moved"
        elif n.endswith(".weight") and "LayerNorm" not in n and "embeddings" not in n and "pooler" not in n:
            assert moved, f"{freezing['policy']}: trainable {n} did not move"


def test_ewc_fisher_is_the_per_sentence_token_loss_with_ignored_positions(collate):
    from tl_hf.regularizers.fisher import estimate_fisher

    model, _ = token_model("bert")
    model.eval()
    data = TagDataset(n=6)
    data.rows[3]["labels"] = [-100] * len(data.rows[3]["labels"])  # no labelled token: adds 0, not NaN
    batch = collate([data[i] for i in range(len(data))])
    names = ["classifier.weight", "bert.encoder.layer.1.output.dense.weight", "bert.embeddings.word_embeddings.weight"]
    ref = {n: torch.zeros_like(dict(model.named_parameters())[n]) for n in names}
    for i in range(len(data)):
        one = collate([data[i]])
        if (one["labels"] != -100).any():
            model.zero_grad()
            model(**one).loss.backward()  # the model's own loss of sentence i alone: mean over its labelled tokens
            for n in names:
                ref[n] += dict(model.named_parameters())[n].grad.square()
    for impl in ("hooks", "vmap"):
        fisher, count = estimate_fisher(model, [batch], param_names=names, per_example_impl=impl)
        assert count == len(data)
        for n in names:
            assert torch.isfinite(fisher[n]).all()
            torch.testing.assert_close(fisher[n], ref[n] / len(data), rtol=1e-4, atol=1e-9, msg=f"{impl} {n}")
    with pytest.raises(ValueError, match="token-classification head is not supported"):
        estimate_fisher(model, [batch], param_names=names, estimator="sampled")


@pytest.mark.parametrize("reg", [{"name": "ewc", "lambda": 100.0, "num_samples": 8},
                                 {"name": "l2sp", "alpha": 0.5}])
def test_ewc_and_l2sp_train_a_token_model(tmp_path, collate, reg):
    model, _ = token_model("bert")
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                         train_dataset=TagDataset(), data_collator=collate, regularizers=[reg])
    if reg["name"] == "ewc":
        tr.end_task()  # the Fisher of this task (per-sentence token loss), then train on with its penalty
    anchor = params_snapshot(model)
    tr.train()
    logs = [h for h in tr.state.log_history if f"penalty/{reg['name']}" in h]
    assert logs and all(h[f"penalty/{reg['name']}"] >= 0 for h in logs)
    assert any(h[f"penalty/{reg['name']}"] > 0 for h in logs)
    assert any(not torch.equal(p, anchor[n]) for n, p in model.named_parameters())


def test_replay_term_on_a_token_model(tmp_path, collate):
    from tl_hf.regularizers import Replay

    model, _ = token_model("bert")
    replay = Replay(budget=8, mode="term", batch_size=4, weight=1.0)
    replay.end_task(model, TagDataset(n=8, seed=1))
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                         train_dataset=TagDataset(), data_collator=collate, regularizers=[replay])
    tr.train()
    assert replay.last_loss is not None and replay.last_loss > 0 and torch.isfinite(torch.tensor(replay.last_loss))


def test_lora_token_cls_keeps_the_classifier_trainable(tmp_path, collate):
    from peft import PeftModelForTokenClassification

    from tl_hf.run.config import load_config
    from tl_hf.run.template import maybe_wrap_peft

    cfg = load_config(None, ["peft.enabled=true", "peft.r=2"])
    base, _ = token_model("bert")
    model = maybe_wrap_peft(base, cfg, task_type="TOKEN_CLS")
    assert isinstance(model, PeftModelForTokenClassification)
    before = params_snapshot(model)
    tr = TransferTrainer(model, training_args(tmp_path, max_steps=3, per_device_train_batch_size=4),
                         train_dataset=TagDataset(), data_collator=collate, llrd={"decay": 0.8})
    tr.train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("classifier.modules_to_save" in n for n in moved), "the token head did not train"
    assert any("lora_B" in n for n in moved)
    assert not any("base_layer" in n or "original_module" in n or "word_embeddings" in n for n in moved)
    depths = get_layer_map(model).assign(model)
    head = max(depths.values())
    assert all(depths[n] == head for n in depths if "classifier" in n)
