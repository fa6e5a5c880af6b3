"""Sentence pairs and regression in the text task (issue 11, families 1 and 2): the GLUE RTE / MRPC / STS-B readers,
problem-type detection, pair tokenization with counted truncation, Pearson / Spearman / MSE against scipy and
scikit-learn, and tiny end-to-end runs (regression outputs, model card, LLRD + top_k, LoRA, L2-SP, strategy auto;
EWC refused on a regression head)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root
from test_config_cli import tiny_model_dir  # noqa: F401  (fixture)

from tl_hf._errors import ConfigError
from tl_hf.run.data.paths import DataError

# -- the GLUE readers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, n_train, n_dev, kind", [("rte", 2490, 277, "class"), ("mrpc", 3668, 408, "class"),
                                                        ("stsb", 5749, 1500, "score")])
def test_glue_pair_datasets_read_every_row(name, n_train, n_dev, kind):
    from tl_hf.run.data.text import DataConfig, load_text_classification

    real_data_root(f"glue_{name}")
    data = load_text_classification(DataConfig(dataset=name), allow_regression=True)
    assert (len(data.train), len(data.eval)) == (n_train, n_dev)
    assert data.train.column_names == ["text", "text_pair", "label"] and data.is_pair
    if kind == "score":
        y = np.asarray(data.train["label"])
        assert data.problem_type == "regression" and data.label_names == []
        assert (y.min(), y.max()) == (0.0, 5.0) and abs(y.mean() - 2.7010) < 1e-3  # SOURCE.md's measured counts
    else:
        assert data.problem_type == "single_label_classification" and len(data.label_names) == 2
    if name == "mrpc":  # the BOM is not part of the first column; the quotes are text (QUOTE_NONE)
        assert data.label_names == ["not_equivalent", "equivalent"] and sum(data.train["label"]) == 2474
        assert data.eval[0]["text_pair"].startswith('"The foodservice pie business')
    if name == "rte":
        assert data.label_names == ["entailment", "not_entailment"]
        assert data.train[0] == {"text": "No Weapons of Mass Destruction Found in Iraq Yet.",
                                 "text_pair": "Weapons of Mass Destruction Found in Iraq.", "label": 1}


def test_a_classification_only_loader_refuses_regression_data():
    from tl_hf.run.data.text import DataConfig, load_text_classification

    real_data_root("glue_stsb")
    with pytest.raises(ConfigError, match="regression targets"):
        load_text_classification(DataConfig(dataset="stsb", max_train_samples=8))


# -- problem type ------------------------------------------------------------------------------------------------------

def _ds(labels):
    from datasets import Dataset

    return Dataset.from_dict({"label": labels})


@pytest.mark.parametrize("labels, expected", [
    (["0", "1", "1", "2"], "single_label_classification"),
    (["pos", "neg", "pos"], "single_label_classification"),
    ([0.0, 1.0, 1.0], "single_label_classification"),  # 0.0 / 1.0: binary classes, as before
    ([1.0, 2.0, 0.0, 3.0], "single_label_classification"),  # up to 4 integer-valued floats: class ids
    (["4.8", "0.4", "3.9", "5", "0"], "regression"),
    ([0.25, 1.5, 2.75], "regression"),
])
def test_auto_problem_type(labels, expected):
    from tl_hf.run.data.labels import detect_problem_type

    assert detect_problem_type(_ds(labels), "label", "f.tsv") == expected


@pytest.mark.parametrize("labels, match", [
    (["0.5", "1.5", "0.5"], r"f.tsv: label 0.5 is not a class .* only 2 distinct finite numbers.*data.problem_type"),
    (["1.0", "2.0", "3.0", "4.0", "5.0"], r"5 integer-valued numbers written as floats .* set data.problem_type: "
                                          "regression"),
])
def test_auto_refuses_what_could_be_either(labels, match):
    from tl_hf.run.data.labels import detect_problem_type

    with pytest.raises(DataError, match=match):
        detect_problem_type(_ds(labels), "label", "f.tsv")
    assert detect_problem_type(_ds(labels), "label", "f.tsv", "regression") == "regression"


def test_scores_are_float32_and_non_finite_ones_are_named():
    from tl_hf.run.data.labels import encode_scores

    ds = encode_scores(_ds(["4.8", "0", "3.25"]), "label", "f.tsv")
    assert ds.features["label"].dtype == "float32" and np.allclose(ds["label"], [4.8, 0.0, 3.25])
    for bad, what in (("nan", "is 'nan', not a finite number"), ("-inf", "is '-inf', not a finite number"),
                      ("high", "is 'high', not a number"), ("", "is empty")):
        with pytest.raises(DataError, match=f"f.tsv: row 2 of column 'label' {what}"):
            encode_scores(_ds(["1.5", bad]), "label", "f.tsv")


def test_problem_type_values_are_checked():
    from tl_hf.run.data.text import DataConfig

    with pytest.raises(ConfigError, match="task: text_multilabel"):
        DataConfig(dataset="sst2", problem_type="multi_label_classification")
    with pytest.raises(ConfigError, match="stsb is a regression dataset"):
        DataConfig(dataset="stsb", problem_type="single_label_classification")
    assert DataConfig(dataset="stsb").problem_type == "auto"


# -- pair tokenization -------------------------------------------------------------------------------------------------

def test_pairs_are_tokenized_as_pairs_and_truncation_is_counted(tiny_model_dir):  # noqa: F811
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tl_hf.run.data.text import TextClassificationData, tokenize_datasets

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = " ".join(["word"] * 30)
    ds = Dataset.from_dict({"text": [long, "short one"], "text_pair": ["a hypothesis", "b"], "label": [0, 1]})
    data = tokenize_datasets(TextClassificationData(train=ds, eval=ds.select([1])), tok, 16)
    assert data.truncation == {"max_length": 16, "truncation": "longest_first", "pairs": True, "truncated_train": 1,
                               "truncated_eval": 0}
    first = data.train[0]
    assert len(first["input_ids"]) == 16 and first["input_ids"].count(tok.sep_token_id) == 2
    assert sum(first["token_type_ids"]) == 3  # longest_first cut the long premise, kept "a hypothesis [SEP]"


# -- metrics -----------------------------------------------------------------------------------------------------------

def test_regression_metrics_equal_scipy_and_sklearn():
    from scipy import stats
    from sklearn.metrics import mean_squared_error

    from tl_hf.run.metrics import load_metric

    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(0, 5, 200), 1)  # ties, as in STS-B
    p = y + rng.normal(0, 1.0, 200)
    p[:20] = 2.5  # tied predictions
    got = {n: load_metric(n).compute(predictions=p.tolist(), references=y.tolist())[n]
           for n in ("pearsonr", "spearmanr", "mse")}
    assert got["pearsonr"] == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-12)
    assert got["spearmanr"] == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-12)
    assert got["mse"] == pytest.approx(mean_squared_error(y, p), abs=1e-12)
    assert math.isnan(load_metric("pearsonr").compute(predictions=[1.0, 1.0, 1.0], references=[0.0, 1.0, 2.0])
                      ["pearsonr"])


def test_regression_compute_metrics_and_class_metrics_refused():
    from tl_hf.run.metrics.regression import RegressionMetrics

    m = RegressionMetrics()
    m.check(1)
    out = m((np.array([[0.0], [1.0], [2.5]]), np.array([0.0, 1.0, 2.0])))
    assert out["pearsonr"] == pytest.approx(np.corrcoef([0, 1, 2.5], [0, 1, 2])[0, 1]) and out["spearmanr"] == 1.0
    assert out["mse"] == pytest.approx(0.25 / 3)
    with pytest.raises(ConfigError, match="'f1' scores class ids, but this is a regression run"):
        RegressionMetrics([("f1", {})])


# -- tiny end-to-end runs ----------------------------------------------------------------------------------------------

def _config(tmp_path: Path, model: Path, dataset: str, *extra: str) -> Path:
    body = f"""model: {{name_or_path: {model}, ignore_mismatched_sizes: true, save_model: true}}
data: {{dataset: {dataset}, max_train_samples: 24, max_eval_samples: 12, max_length: 24}}
training:
  output_dir: {tmp_path / 'out'}
  max_steps: 3
  per_device_train_batch_size: 8
  learning_rate: 1e-3
  logging_steps: 1
  disable_tqdm: true
  use_cpu: true
""" + "".join(f"{line}\n" for line in extra)
    path = tmp_path / "run.yaml"
    path.write_text(body)
    return path


def _run(tmp_path, model, dataset, *overrides, extra=()):
    from tl_hf.cli import main

    real_data_root(f"glue_{dataset}")
    assert main(["run", str(_config(tmp_path, model, dataset, *extra)), *overrides]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


def test_stsb_regression_run_writes_unclipped_predictions_and_a_regression_card(tmp_path, tiny_model_dir,  # noqa: F811
                                                                                capsys):
    from huggingface_hub import ModelCard

    res = _run(tmp_path, tiny_model_dir, "stsb", "llrd.decay=0.8")
    out = tmp_path / "out"
    assert res["problem_type"] == "regression" and res["pairs"] is True and res["truncation"] == "longest_first"
    assert res["max_length"] == 24 and 0 <= res["truncated_train"] <= 24
    assert {"eval_pearsonr", "eval_spearmanr", "eval_mse"} <= set(res) and "confusion_matrix" not in res
    lo, hi = res["train_label_range"]
    assert 0.0 <= lo < hi <= 5.0
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    p = np.array([r["prediction"] for r in rows])
    y = np.array([r["label"] for r in rows])
    assert len(rows) == 12 and res["eval_predictions_below_train_range"] == int((p < lo).sum())
    assert res["eval_predictions_above_train_range"] == int((p > hi).sum())
    assert res["eval_mse"] == pytest.approx(float(np.mean((p - y) ** 2)), rel=1e-5)  # the whole set, unclipped
    assert (out / "eval_scatter.png").is_file() and not (out / "confusion_matrix.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    results = {r.metric_type: r for r in card.data.eval_results}
    assert {"pearsonr", "spearmanr", "mse"} <= set(results)
    r = results["pearsonr"]
    assert (r.task_type, r.dataset_type, r.dataset_config) == ("text-classification", "nyu-mll/glue", "stsb")
    assert r.metric_value == pytest.approx(res["eval_pearsonr"])
    assert "Pearson" in capsys.readouterr().out.strip().splitlines()[-1]


def test_rte_pairs_run_with_llrd_and_top_k_freezing(tmp_path, tiny_model_dir):  # noqa: F811
    import torch
    from safetensors.torch import load_file

    res = _run(tmp_path, tiny_model_dir, "rte", "llrd.decay=0.8", "freezing.policy=top_k", "freezing.k=1")
    assert res["problem_type"] == "single_label_classification" and res["pairs"] is True and "eval_accuracy" in res
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    frozen = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(before[frozen], after[frozen])
    assert not torch.equal(before["bert.encoder.layer.1.attention.self.query.weight"],
                           after["bert.encoder.layer.1.attention.self.query.weight"])


def test_regression_run_with_llrd_top_k_and_strategy_auto(tmp_path, tiny_model_dir):  # noqa: F811
    res = _run(tmp_path, tiny_model_dir, "stsb", "strategy.mode=auto", "strategy.small_max=10",
               "model.save_model=false")
    assert res["problem_type"] == "regression" and math.isfinite(res["eval_mse"])
    rc = json.loads((tmp_path / "out" / "run_config.json").read_text())
    assert rc["strategy"]["mode"] == "auto"


def test_regression_run_with_lora(tmp_path, tiny_model_dir):  # noqa: F811
    pytest.importorskip("peft")
    res = _run(tmp_path, tiny_model_dir, "stsb", "peft.enabled=true", "peft.target_modules=[query,value]")
    out = tmp_path / "out"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]
    assert res["problem_type"] == "regression" and math.isfinite(res["eval_pearsonr"] or 0.0)


def test_regression_run_with_l2sp_and_ewc_is_refused(tmp_path, tiny_model_dir):  # noqa: F811
    res = _run(tmp_path, tiny_model_dir, "stsb", "model.save_model=false", extra=(
        "regularizers: [{name: l2sp, alpha: 0.01}]",))
    assert res["problem_type"] == "regression" and math.isfinite(res["eval_mse"])
    from tiny import tiny_bert

    from tl_hf.regularizers.ewc import EWC

    with pytest.raises(ValueError, match="ewc: .* one-output regression head .* use l2sp"):
        EWC().end_task(tiny_bert(num_labels=1), [])


def test_inspect_a_regression_head(capsys, tiny_model_dir):  # noqa: F811
    from tl_hf.cli import main

    assert main(["inspect", str(tiny_model_dir), "--num-labels", "1"]) == 0
    out = capsys.readouterr().out
    assert "BertForSequenceClassification" in out and "head" in out
