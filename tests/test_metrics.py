"""Metrics: the numpy implementations against scikit-learn (the oracle), tl_hf's evaluate modules loaded offline with
``evaluate.load(<path>)``, configs that name evaluate metrics (``evaluation.metrics``) and their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as sk
from test_config_cli import TRAIN_ROWS, _tiny_run_config, tiny_data, tiny_model_dir  # noqa: F401  (fixtures)

from tl_hf._errors import ConfigError
from tl_hf.run import metrics
from tl_hf.run.config import describe, load_config
from tl_hf.run.sections import EvaluationConfig

REPO = Path(__file__).resolve().parents[1]
SCORES = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}


def _cases():
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    preds[preds == 2] = 3  # class 2 never predicted
    yield preds, refs
    refs2 = refs.copy()
    refs2[refs2 == 1] = 0  # class 1 only predicted, never true
    yield preds, refs2
    yield np.array([0, 2, 1, 2, 2, 0, 1]), np.array([0, 1, 1, 2, 0, 0, 2])


def _binary():
    rng = np.random.default_rng(1)
    return rng.integers(0, 2, 40), rng.integers(0, 2, 40)


# ---------------------------------------------------------------------------------------------------------------------
# evaluate modules: loaded from their scripts, offline
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", metrics.LOCAL_METRICS)
def test_each_packaged_metric_is_an_evaluate_module_loaded_from_its_script(name):
    import evaluate

    path = metrics.local_metric_path(name)
    assert Path(path).is_file() and Path(path).parent == REPO / "tl_hf" / "run" / "metrics" / "modules"
    m = evaluate.load(path, keep_in_memory=True)
    assert isinstance(m, evaluate.Metric) and m.name == name and m.module_type == "metric"
    assert type(m).__module__.startswith("evaluate_modules.metrics.")  # evaluate's own dynamic-module import
    assert "Args:" in m.inputs_description


def test_packaged_metrics_load_in_a_fresh_offline_process(tmp_path):
    """HF_HUB_OFFLINE=1, an empty HF cache, no network: every packaged module loads and computes."""
    code = ("from tl_hf.run.metrics import LOCAL_METRICS, load_metric\n"
            "ok = [n for n in LOCAL_METRICS if load_metric(n) is not None]\n"
            "print(load_metric('accuracy').compute(predictions=[1, 0, 1], references=[1, 1, 1])['accuracy'])\n"
            "print(len(ok))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "hf" / "modules")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [repr(2 / 3), str(len(metrics.LOCAL_METRICS))]
    assert (tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics").is_dir()


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_score_modules_match_sklearn(name, average, case):
    preds, refs = list(_cases())[case]
    m = metrics.load_metric(name)
    m.add_batch(predictions=preds[:20], references=refs[:20])  # batches accumulate
    m.add_batch(predictions=preds[20:], references=refs[20:])
    got = m.compute(average=average)[name]
    want = SCORES[name](refs, preds, average=average, zero_division=0)
    assert got == pytest.approx(want.tolist() if average is None else float(want))


@pytest.mark.parametrize("pos_label", [1, 0])
@pytest.mark.parametrize("name", ["precision", "recall", "f1"])
def test_score_modules_default_to_binary_like_evaluate(name, pos_label):
    preds, refs = _binary()
    m = metrics.load_metric(name)
    kw = {} if pos_label == 1 else {"pos_label": 0}
    assert m.compute(predictions=preds, references=refs, **kw)[name] == pytest.approx(
        SCORES[name](refs, preds, pos_label=pos_label))
    with pytest.raises(ValueError, match="average='binary' needs at most 2 classes, the data has 3"):
        m.compute(predictions=[0, 1, 2], references=[0, 1, 2])


def test_accuracy_and_confusion_matrix_modules_match_sklearn():
    for preds, refs in _cases():
        assert metrics.load_metric("accuracy").compute(predictions=preds, references=refs) == {
            "accuracy": pytest.approx(sk.accuracy_score(refs, preds))}
        cm = metrics.load_metric("confusion_matrix")
        assert cm.compute(predictions=preds, references=refs)["confusion_matrix"] == sk.confusion_matrix(
            refs, preds).tolist()
        assert cm.compute(predictions=preds, references=refs, labels=[3, 0])["confusion_matrix"] == (
            sk.confusion_matrix(refs, preds, labels=[3, 0]).tolist())


def test_combine_of_packaged_modules():
    import evaluate

    preds, refs = [0, 2, 1, 2, 2, 0, 1], [0, 1, 1, 2, 0, 0, 2]
    both = evaluate.combine([metrics.load_metric("accuracy"), metrics.load_metric("confusion_matrix")])
    out = both.compute(predictions=preds, references=refs)
    assert out == {"accuracy": pytest.approx(sk.accuracy_score(refs, preds)),
                   "confusion_matrix": sk.confusion_matrix(refs, preds).tolist()}


def test_forgetting_module_is_the_continual_rule():
    from tl_hf.continual import accuracy_matrix_metrics

    R = [[0.9, None, None], [0.7, 0.8, None], [0.6, 0.75, 0.95]]
    whole = metrics.load_metric("forgetting").compute(accuracy_matrix=R)
    assert whole == accuracy_matrix_metrics(R)
    assert whole["BWT"] == pytest.approx(((0.6 - 0.9) + (0.75 - 0.8)) / 2)
    assert whole["forgetting"] == pytest.approx([0.9 - 0.6, 0.8 - 0.75])
    rows = metrics.load_metric("forgetting")
    for row in ([0.9], [0.7, 0.8], [0.6, 0.75, 0.95]):  # one row per task, each stopping at its diagonal
        rows.add(accuracy_matrix=row)
    assert rows.compute() == whole
    single = metrics.load_metric("forgetting").compute(accuracy_matrix=[[0.5]])
    assert single == {"ACC": 0.5, "BWT": None, "forgetting": [], "avg_forgetting": None, "n_tasks": 1}
    with pytest.raises(ValueError, match=r"R\[1\]\[1\]"):
        metrics.load_metric("forgetting").compute(accuracy_matrix=[[0.5], [0.4]])


# ---------------------------------------------------------------------------------------------------------------------
# compute_metrics: the recipes' default keys
# ---------------------------------------------------------------------------------------------------------------------

def test_compute_metrics_keys_and_numbers_match_sklearn():
    for preds, refs in _cases():
        out = metrics.compute_metrics((np.eye(4)[preds], refs))
        n = int(max(preds.max(), refs.max())) + 1
        assert list(out) == ["accuracy", "f1_micro", "precision_macro", "recall_macro", "f1_macro"] + [
            f"{k}_class{c}" for c in range(n) for k in ("precision", "recall")]
        assert out["accuracy"] == pytest.approx(sk.accuracy_score(refs, preds))
        assert out["f1_micro"] == pytest.approx(sk.f1_score(refs, preds, average="micro"))
        for k in ("precision", "recall", "f1"):
            assert out[f"{k}_macro"] == pytest.approx(SCORES[k](refs, preds, average="macro", zero_division=0))
        per = sk.precision_score(refs, preds, average=None, labels=range(n), zero_division=0)
        assert [out[f"precision_class{c}"] for c in range(n)] == pytest.approx(per.tolist())
    preds, refs = _binary()
    out = metrics.compute_metrics((np.eye(2)[preds], refs))
    assert list(out)[:6] == ["accuracy", "f1_micro", "precision_macro", "recall_macro", "f1_macro", "f1"]
    assert out["f1"] == pytest.approx(sk.f1_score(refs, preds))


# ---------------------------------------------------------------------------------------------------------------------
# configs naming metrics
# ---------------------------------------------------------------------------------------------------------------------

def test_evaluation_section_is_typed_and_validated(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evaluation:\n  metrics: [accuracy, {name: f1, average: macro}, matthews_correlation]\n")
    ev = load_config(cfg).evaluation
    assert ev.metric_specs() == [("accuracy", {}), ("f1", {"average": "macro"}), ("matthews_correlation", {})]
    assert load_config(None, ["evaluation.metrics=[precision, recall]"]).evaluation.metric_specs() == [
        ("precision", {}), ("recall", {})]
    assert load_config(None).evaluation.metrics == []
    assert "evaluation:" in describe() and "metrics (list[str | dict]): evaluate metrics" in describe("evaluation")
    assert load_config(cfg).to_dict()["evaluation"]["metrics"][1] == {"name": "f1", "average": "macro"}
    for bad, match in [("[accuracy, accuracy]", "lists 'accuracy' twice"),
                       ("[{average: macro}]", r"evaluation.metrics\[0\] must be a metric name or a mapping"),
                       ("[3]", r"evaluation.metrics\[0\]")]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [f"evaluation.metrics={bad}"])
    with pytest.raises(ConfigError, match="evaluation.metric"):
        load_config(None, ["evaluation.metric=[f1]"])
    with pytest.raises(ConfigError, match=r"metrics\[0\]"):
        EvaluationConfig(metrics=[""])


def test_run_metrics_add_the_configured_metrics_to_the_defaults():
    preds, refs = np.array([0, 2, 1, 2, 2, 0, 1]), np.array([0, 1, 1, 2, 0, 0, 2])
    rm = metrics.RunMetrics([("f1", {"average": "macro"}), ("recall", {"average": None}), ("confusion_matrix", {})])
    rm.check(3)
    out = rm((np.eye(3)[preds], refs))
    defaults = metrics.compute_metrics((preds, refs))
    assert "f1" not in defaults and {k: out[k] for k in defaults} == pytest.approx(defaults)
    assert list(out) == list(defaults) + ["f1", "recall", "confusion_matrix"]
    assert out["f1"] == pytest.approx(sk.f1_score(refs, preds, average="macro"))
    assert out["recall"] == pytest.approx(sk.recall_score(refs, preds, average=None).tolist())
    assert out["confusion_matrix"] == sk.confusion_matrix(refs, preds).tolist()
    json.dumps(out)  # plain Python values: all_results.json and the Trainer logs take them
    assert metrics.RunMetrics()((preds, refs)) == metrics.compute_metrics((preds, refs))


def test_run_metrics_refuse_before_training():
    with pytest.raises(ConfigError) as err:
        metrics.RunMetrics([("matthews_correlation", {})])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("evaluation.metrics: metric 'matthews_correlation' is not packaged")
    assert "HF_HUB_OFFLINE" in msg and "accuracy, precision, recall, f1, confusion_matrix" in msg
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        metrics.RunMetrics([("acurracy", {})])
    with pytest.raises(ConfigError, match="'forgetting' takes accuracy_matrix, not predictions and references"):
        metrics.RunMetrics([("forgetting", {})])
    rm = metrics.RunMetrics([("f1", {})])
    rm.check(2)
    with pytest.raises(ConfigError, match=r"evaluation.metrics: f1\(\) on 3 classes: average='binary' needs at most"):
        rm.check(3)
    with pytest.raises(ConfigError, match=r"f1\(avrage='macro'\) on 2 classes: .*avrage"):
        metrics.RunMetrics([("f1", {"avrage": "macro"})]).check(2)


def test_a_hub_metric_in_the_hf_cache_loads_offline(tmp_path):
    """A name that is not packaged goes to evaluate.load, which finds an earlier download in the HF modules cache."""
    cache = tmp_path / "modules"
    module = cache / "evaluate_modules" / "metrics" / "evaluate-metric--exact_hits" / ("ab" * 32)  # a 64-hex hash
    module.mkdir(parents=True)
    for d in (cache / "evaluate_modules", cache / "evaluate_modules" / "metrics", module.parent, module):
        (d / "__init__.py").write_text("")
    (module / "exact_hits.py").write_text(
        "import datasets\nimport evaluate\n\n\nclass ExactHits(evaluate.Metric):\n"
        "    def _info(self):\n        return evaluate.MetricInfo(description='', citation='', features=datasets."
        "Features({'predictions': datasets.Value('int64'), 'references': datasets.Value('int64')}))\n\n"
        "    def _compute(self, predictions, references):\n"
        "        return {'hits': sum(int(p == r) for p, r in zip(predictions, references))}\n")
    code = ("import numpy as np\nfrom tl_hf.run.metrics import RunMetrics\n"
            "rm = RunMetrics([('exact_hits', {})])\nprint(rm((np.array([1, 0, 1]), np.array([1, 1, 1])))['hits'])\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "2"


def test_a_metric_script_path_loads(tmp_path):
    script = tmp_path / "hits" / "hits.py"
    script.parent.mkdir()
    script.write_text(Path(metrics.local_metric_path("accuracy")).read_text().replace("Accuracy(", "Hits("))
    rm = metrics.RunMetrics([(str(script.parent), {})])
    assert rm((np.array([1, 0]), np.array([1, 1])))["accuracy"] == 0.5


# ---------------------------------------------------------------------------------------------------------------------
# a run that names metrics
# ---------------------------------------------------------------------------------------------------------------------

def test_cli_run_reports_the_configured_metrics(tmp_path, tiny_model_dir, tiny_data, capsys):  # noqa: F811
    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "evaluation: {metrics: [{name: f1, average: macro}, confusion_matrix]}\n")
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "out"
    results = json.loads((out / "all_results.json").read_text())
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    preds, refs = [r["prediction"] for r in rows], [r["label"] for r in rows]
    assert len(rows) == results["eval_samples"] == 4
    assert results["eval_f1"] == pytest.approx(sk.f1_score(refs, preds, average="macro"))
    assert results["eval_f1_macro"] == pytest.approx(results["eval_f1"])
    assert results["eval_confusion_matrix"] == sk.confusion_matrix(refs, preds).tolist()
    assert results["eval_accuracy"] == pytest.approx(sk.accuracy_score(refs, preds))


def test_cli_run_with_an_unavailable_metric_fails_before_training(tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tl_hf.cli", "run", str(cfg),
                           "evaluation.metrics=[accuracy, matthews_correlation]"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr[-2000:]
    assert "matthews_correlation" in err[0] and "packaged metrics (offline): accuracy, precision" in err[0]
    assert not (tmp_path / "out").exists(), "nothing is written before the metrics are loaded"
    assert time.monotonic() - t < 120
