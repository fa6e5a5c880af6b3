"""Multi-label text classification (task text_multilabel): scores against scikit-learn, threshold tuning on the
validation split only, GoEmotions and user files with several labels per row, BCE with logits, and every strategy
(LLRD, freezing, EWC / L2-SP, LoRA) on the multi-label head of a tiny BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import real_data_root
from test_config_cli import tiny_model_dir  # noqa: F401  (fixture)
from tiny import params_snapshot, tiny_bert, training_args

NAMES = ["joy", "anger", "fear", "love"]
_WORDS = {"joy": "happy", "anger": "angry", "fear": "scared", "love": "adore"}


# -- scores ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_scikit_learn(seed):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    from tl_hf.run.metrics.multilabel import MultiLabelMetrics

    rng = np.random.default_rng(seed)
    y = (rng.random((120, 7)) < 0.25).astype(int)
    p = (rng.random((120, 7)) < 0.3).astype(int)
    y[:4], p[:2] = 0, 0  # rows with no true / no predicted label; the last label never occurs
    y[:, 6], p[:, 6] = 0, 0
    got = MultiLabelMetrics().compute(p, y)  # through the packaged evaluate module
    for avg in ("micro", "macro", "samples"):
        assert got[f"f1_{avg}"] == pytest.approx(f1_score(y, p, average=avg, zero_division=0), abs=1e-12)
    for avg in ("micro", "macro"):
        assert got[f"precision_{avg}"] == pytest.approx(precision_score(y, p, average=avg, zero_division=0))
        assert got[f"recall_{avg}"] == pytest.approx(recall_score(y, p, average=avg, zero_division=0))
    assert got["f1"] == pytest.approx(f1_score(y, p, average=None, zero_division=0).tolist())
    assert got["precision"] == pytest.approx(precision_score(y, p, average=None, zero_division=0).tolist())
    assert got["recall"] == pytest.approx(recall_score(y, p, average=None, zero_division=0).tolist())
    assert got["support"] == y.sum(0).tolist() and got["subset_accuracy"] == accuracy_score(y, p)


def test_threshold_tuning_global_and_per_label():
    from tl_hf.run.metrics.multilabel import apply_thresholds, multilabel_scores, tune_thresholds

    y = np.array([[1, 0], [0, 1], [0, 0], [1, 1]] * 5)
    probs = np.where(y == 1, [0.7, 0.2], [0.3, 0.1]).astype(float)  # label 0 separable at (0.3, 0.7], label 1 at
    per = tune_thresholds(probs, y, per_label=True)                  # (0.1, 0.2]: no one threshold fits both
    assert per == [0.5, 0.2]  # ties go to the value closest to 0.5
    assert multilabel_scores(apply_thresholds(probs, per), y)["f1_macro"] == 1.0
    best = tune_thresholds(probs, y)
    assert multilabel_scores(apply_thresholds(probs, best), y)["f1_macro"] < 1.0
    micro = tune_thresholds(probs, y, objective="f1_micro")
    assert 0.05 <= micro <= 0.95 and round(micro, 2) == micro
    with pytest.raises(ValueError, match="objective"):
        tune_thresholds(probs, y, objective="accuracy")


# -- data -----------------------------------------------------------------------------------------------------------

def test_goemotions_splits_labels_and_quoted_texts():
    from tl_hf.run.data.multilabel import MultiLabelDataConfig, load_multilabel

    root = real_data_root("goemotions")
    data = load_multilabel(MultiLabelDataConfig(dataset="goemotions", root=str(root)))
    assert (len(data.train), len(data.eval), len(data.test)) == (43410, 5426, 5427)  # SOURCE.md's counts
    assert len(data.label_names) == 28 and data.label_names[0] == "admiration" and data.label_names[27] == "neutral"
    ids = data.train["label_ids"]
    counts = np.bincount([i for r in ids for i in r], minlength=28)
    assert counts[27] == 14219 and counts[16] == 77  # neutral, grief (SOURCE.md)
    assert sum(len(r) > 1 for r in ids) == 7102 and data.unlabelled == {"train": 0, "eval": 0, "test": 0}
    texts = data.train["text"]
    naive = [line.split("\t")[0] for line in (root / "goemotions" / "train.tsv").read_text("utf-8").splitlines()]
    assert sum(a != b for a, b in zip(naive, texts)) == 1097  # the CSV-quoted rows (SOURCE.md) lose their quotes
    assert all(a == '"' + b.replace('"', '""') + '"' for a, b in zip(naive, texts) if a != b)


def _files(root: Path):
    """train/dev/test rows in four forms: csv with quoted id lists, tsv with names, jsonl lists, parquet lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("happy happy", "0"), ("angry now", "1"), ("scared and angry", "1,2"), ("i adore it", "3"),
            ("so happy i adore", "0,3"), ("the weather", "")]
    (root / "t.csv").write_text("text,labels\n" + "".join(f'{t},"{y}"\n' for t, y in rows), encoding="utf-8")
    (root / "t.tsv").write_text("text\tlabels\n" + "".join(f"{t}\t{','.join(NAMES[int(i)] for i in y.split(',') if i)}"
                                                         f"\n" for t, y in rows), encoding="utf-8")
    (root / "t.jsonl").write_text("".join(json.dumps({"text": t, "labels": [NAMES[int(i)] for i in y.split(",") if i]})
                                          + "\n" for t, y in rows), encoding="utf-8")
    pq.write_table(pa.table({"text": [t for t, _ in rows], "labels": [[int(i) for i in y.split(",") if i]
                                                                      for _, y in rows]}), root / "t.parquet")
    (root / "names.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    return rows


@pytest.mark.parametrize("name, extra", [
    ("t.csv", {"labels_file": "names.txt"}), ("t.tsv", {"label_names": NAMES}), ("t.jsonl", {"label_names": NAMES}),
    ("t.parquet", {"labels_file": "names.txt"}), ("t.csv", {})])
def test_label_forms_in_files(tmp_path, name, extra):
    from tl_hf.run.data.multilabel import MultiLabelDataConfig, load_multilabel

    _files(tmp_path)
    cfg = MultiLabelDataConfig(root=str(tmp_path), train_file=name, eval_file=name, test_file=None, **extra)
    data = load_multilabel(cfg)
    assert data.train["label_ids"] == [[0], [1], [1, 2], [3], [0, 3], []]
    assert data.unlabelled["train"] == 1 and data.unlabelled["eval"] == 1
    assert data.label_names == (NAMES if extra else ["0", "1", "2", "3"])  # ids without names: 0..max


def test_no_validation_split_holds_out_a_fraction_of_train(tmp_path):
    from tl_hf.run.data.multilabel import MultiLabelDataConfig, load_multilabel

    _files(tmp_path)
    (tmp_path / "big.jsonl").write_text((tmp_path / "t.jsonl").read_text() * 5, encoding="utf-8")
    data = load_multilabel(MultiLabelDataConfig(root=str(tmp_path), train_file="big.jsonl", test_file="t.jsonl",
                                                eval_fraction=0.2, label_names=NAMES))
    assert (len(data.train), len(data.eval), len(data.test)) == (24, 6, 6)
    assert data.sources["eval_split"] == "held-out" and "held-out 20%" in data.sources["eval"]


# -- the head: BCE with logits, strategies ----------------------------------------------------------------------------

class MultiHot(torch.utils.data.Dataset):
    """Random token rows; label j is on when token j+1 occurs in the row (learnable)."""

    def __init__(self, n=48, length=8, num_labels=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 12, (n, length), generator=g)
        self.labels = torch.stack([(self.ids == j + 1).any(1) for j in range(num_labels)], 1).float()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def _ml_bert(num_labels=4, **kw):
    model = tiny_bert(num_labels=num_labels, **kw)
    model.config.problem_type = "multi_label_classification"
    return model


def test_the_loss_is_bce_with_logits_on_multi_hot_labels(tmp_path):
    from tl_hf.core.trainer import TransferTrainer

    model, data = _ml_bert(), MultiHot()
    trainer = TransferTrainer(model=model, args=training_args(tmp_path, gradient_accumulation_steps=2,
                                                              per_device_train_batch_size=4), train_dataset=data)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in data[0]}
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 4 and all(0.3 < v < 1.0 for v in logged)  # a mean BCE (ln 2 at the start), not x GA


@pytest.mark.parametrize("case", ["llrd_top_k", "gradual", "l2sp", "ewc"])
def test_strategies_train_the_multi_label_head(tmp_path, case):
    from tl_hf.core.trainer import TransferTrainer

    model, data = _ml_bert(), MultiHot()
    kw = {"llrd_top_k": dict(llrd={"decay": 0.5}, freezing={"policy": "top_k", "k": 1}),
          "gradual": dict(freezing={"policy": "gradual", "schedule": {"unit": "step", "every": 2}}),
          "l2sp": dict(regularizers=[{"name": "l2sp", "alpha": 0.1}]),
          "ewc": dict(regularizers=[{"name": "ewc", "lambda": 100.0, "num_samples": 16}])}[case]
    if case == "ewc":  # a first task without it, then its Fisher (BCE of the true label sets) anchors the second
        from tl_hf.regularizers.ewc import EWC

        TransferTrainer(model=model, args=training_args(tmp_path / "a"), train_dataset=data).train()
        reg = EWC(lambda_=100.0, num_samples=16)
        reg.end_task(model, data)
        fisher = reg.tasks[0][0]
        assert fisher and all(bool(torch.isfinite(t).all()) for t in fisher.values())
        assert float(fisher["classifier.weight"].sum()) > 0
        kw = dict(regularizers=[reg])
        data = MultiHot(seed=1)
    before = params_snapshot(model)
    trainer = TransferTrainer(model=model, args=training_args(tmp_path), train_dataset=data, **kw)
    trainer.train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert {"classifier.weight", "classifier.bias"} <= moved
    if case == "llrd_top_k":
        assert not any(n.startswith(("bert.embeddings", "bert.encoder.layer.0.")) for n in moved)
        assert any(n.startswith("bert.encoder.layer.1.") for n in moved)
        lrs = sorted({g["initial_lr"] for g in trainer.optimizer.param_groups})
        assert len(lrs) >= 2 and lrs[-1] / lrs[-2] == pytest.approx(2.0)  # decay 0.5 between depths
    elif case == "gradual":
        assert any(n.startswith("bert.encoder.layer.1.") for n in moved)  # unfrozen from the top over 4 steps
    if case in ("l2sp", "ewc"):
        assert any(k.startswith("penalty/") for h in trainer.state.log_history for k in h)


def test_prior_bias_starts_each_label_at_its_training_frequency():
    from tl_hf.run.tasks.text_multilabel import head_linear, init_prior_bias

    model = _ml_bert(num_labels=3)
    f = init_prior_bias(model, [[0], [0, 2], [], [0]], 3)
    assert f == pytest.approx([4 / 6, 1 / 6, 2 / 6])  # (count + 1) / (n + 2)
    name, layer = head_linear(model, 3)
    assert name == "classifier" and torch.sigmoid(layer.bias).tolist() == pytest.approx(f, rel=1e-5)


def test_multilabel_fisher_is_the_squared_per_example_bce_gradient():
    from tl_hf.regularizers.fisher import estimate_fisher

    model, data = _ml_bert(num_labels=3, num_layers=1), MultiHot(n=6, num_labels=3)
    batch = {k: torch.stack([data[i][k] for i in range(6)]) for k in data[0]}
    names = ["classifier.weight", "bert.encoder.layer.0.output.dense.weight"]
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    for i in range(6):
        model.zero_grad()
        out = model(input_ids=batch["input_ids"][i:i + 1], attention_mask=batch["attention_mask"][i:i + 1])
        torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["labels"][i:i + 1],
                                                             reduction="sum").backward()
        for n, p in model.named_parameters():
            if n in names:
                want[n] += p.grad.pow(2) / 6
    model.eval()
    for impl in ("hooks", "vmap"):
        got, n = estimate_fisher(model, [batch], per_example_impl=impl, param_names=names)
        assert n == 6
        for name in names:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="multi-label"):
        estimate_fisher(model, [batch], estimator="exact", param_names=names)


# -- end to end -------------------------------------------------------------------------------------------------------

def _ml_files(root: Path) -> None:
    import random

    rnd = random.Random(0)
    rows = []
    for i in range(72):
        labels = rnd.sample(NAMES, rnd.choice([0, 1, 1, 2]))
        rows.append({"text": " ".join(_WORDS[n] for n in labels) + f" row {i}", "labels": ",".join(labels)})
    for name, part in (("train.jsonl", rows[:48]), ("dev.jsonl", rows[48:60]), ("test.jsonl", rows[60:])):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")


def _run_tiny(tmp_path, model_dir, *overrides):
    from tl_hf.cli import main

    (tmp_path / "data").mkdir(exist_ok=True)
    _ml_files(tmp_path / "data")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""task: text_multilabel
model: {{name_or_path: {model_dir}, save_model: true, ignore_mismatched_sizes: true}}
data: {{root: {tmp_path / 'data'}, train_file: train.jsonl, eval_file: dev.jsonl, test_file: test.jsonl,
        label_names: [{', '.join(NAMES)}], max_length: 16}}
training: {{output_dir: {tmp_path / 'out'}, max_steps: 4, per_device_train_batch_size: 8, learning_rate: 1e-3,
           logging_steps: 1, disable_tqdm: true, use_cpu: true}}
""")
    assert main(["run", str(cfg), *overrides]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


def _read(path: Path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    probs = np.array([[r["scores"][n] for n in NAMES] for r in rows])
    refs = np.array([[int(n in r["labels"]) for n in NAMES] for r in rows])
    return rows, probs, refs


def test_tiny_run_tunes_on_dev_scores_test_and_writes_outputs(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    from sklearn.metrics import f1_score

    from tl_hf.run.metrics.multilabel import apply_thresholds, tune_thresholds

    res = _run_tiny(tmp_path, tiny_model_dir, "data.threshold=tune_per_label")
    out = tmp_path / "out"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("eval_file F1 micro ")
    for name in ("eval_predictions.jsonl", "test_predictions.jsonl", "per_label_f1.png", "learning_curve.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "per_label_f1.png").read_bytes()[:4] == b"\x89PNG"
    _, dev_p, dev_y = _read(out / "eval_predictions.jsonl")
    rows, test_p, test_y = _read(out / "test_predictions.jsonl")
    assert len(rows) == 12 and res["test_samples"] == 12 and res["eval_samples"] == 12
    # the thresholds are the ones tuned on dev (scores rounded to 4 digits in the file: compare loosely) ...
    thr = [res["threshold"][n] for n in NAMES]
    assert res["threshold_mode"] == "tune_per_label" and "dev.jsonl" in res["threshold_split"]
    redo = tune_thresholds(dev_p, dev_y, per_label=True)
    assert np.abs(np.array(redo) - thr).max() <= 0.02
    # ... and the test scores are scikit-learn's at those thresholds
    pred = apply_thresholds(test_p, thr)
    assert res["test_f1_macro"] == pytest.approx(f1_score(test_y, pred, average="macro", zero_division=0), abs=0.02)
    assert res["test_f1_micro"] == pytest.approx(f1_score(test_y, pred, average="micro", zero_division=0), abs=0.02)
    assert set(res["test_per_label"]) == set(NAMES) and rows[0]["predicted"] == [n for n, t in zip(NAMES, pred[0])
                                                                                  if t]
    assert res["rows_without_labels"]["train"] == sum(1 for line in (tmp_path / "data" / "train.jsonl").read_text()
                                                      .splitlines() if not json.loads(line)["labels"])
    assert res["head_bias"] == "label log-odds of the training split"  # a new 4-label head (the folder's had 2)
    card = (out / "README.md").read_text()
    assert "Transfer learning" in card and "BertForSequenceClassification" in card
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"]["3"] == "love"


def test_tiny_run_with_lora_and_strategy_auto(tmp_path, tiny_model_dir):  # noqa: F811
    from safetensors.torch import load_file

    res = _run_tiny(tmp_path, tiny_model_dir, "peft.enabled=true", "peft.r=2", "strategy.mode=auto",
                    "strategy.small_max=10", "data.threshold=0.4")  # 48 rows: top blocks + LLRD, adapters train
    assert res["threshold"] == 0.4 and res["threshold_mode"] == "fixed"
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert "classifier" in adapter["modules_to_save"] and adapter["task_type"] == "SEQ_CLS"
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert any("lora_B" in k and float(v.abs().sum()) > 0 for k, v in weights.items())  # B starts at 0: it trained
    assert any(k.endswith("classifier.weight") for k in weights)


def test_card_model_index_names_f1_micro_and_macro_on_go_emotions():
    from tl_hf.core.card_meta import model_index_results
    from tl_hf.run.outputs import DATASET_HUB_IDS

    assert DATASET_HUB_IDS["goemotions"] == "google-research-datasets/go_emotions"
    found = model_index_results({"eval_f1_micro": 0.5, "test_f1_macro": 0.4, "test_f1_samples": 0.45,
                                 "threshold": 0.3, "test_loss": 0.1}, task="text-classification",
                                dataset_id=DATASET_HUB_IDS["goemotions"],
                                dataset_config="simplified")  # the 43,410 / 5,426 / 5,427 split of SOURCE.md
    got = {(r.metric_type, (r.metric_args or {}).get("average"), r.dataset_split, r.dataset_config) for r in found}
    assert got == {("f1", "micro", "validation", "simplified"), ("f1", "macro", "test", "simplified"),
                   ("f1", "samples", "test", "simplified")}


def test_inspect_builds_the_multi_label_head(tiny_model_dir):  # noqa: F811
    from tl_hf.cli import inspect_model

    rows, cls_name, lmap = inspect_model(str(tiny_model_dir), num_labels=28, head="multi-label-classification")
    assert cls_name == "BertForSequenceClassification" and lmap.num_blocks == 2
    assert rows[-1]["name"] == "head" and rows[-1]["params"] == 32 * 28 + 28 + 32 * 32 + 32  # classifier + pooler
