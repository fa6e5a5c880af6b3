"""The text recipe's shared steps: strategy auto, early stopping, PEFT, regularizers, outputs, resume detection."""

import json

import pytest
from test_config_cli import TRAIN_ROWS, _tiny_run_config, tiny_data, tiny_model_dir  # noqa: F401  (fixtures)

from tl_hf._errors import ConfigError
from tl_hf.run.config import load_config
from tl_hf.run.sections import StrategyConfig
from tl_hf.run.strategy import choose_strategy


@pytest.mark.parametrize("n,shift,policy,k,decay", [
    (50, "none", "feature_extraction", None, 1.0),
    (50, "small", "top_k", 2, 0.9),
    (500, "none", "top_k", 2, 0.9),
    (500, "small", "top_k", 4, 0.9),
    (500, "large", "full", None, 0.9),
    (20000, "none", "full", None, 0.9),
])
def test_strategy_auto_follows_the_decision_guide(n, shift, policy, k, decay):
    llrd, freezing, reasons = choose_strategy(StrategyConfig(mode="auto", domain_shift=shift), n, num_blocks=6)
    assert (freezing.policy, freezing.k if policy == "top_k" else None, llrd.decay) == (policy, k, decay)
    assert reasons and str(n) in reasons[0]
    if shift != "none" and policy != "feature_extraction":
        assert any("domain_shift" in r for r in reasons)


def test_strategy_auto_can_cache_features_for_very_small_sets():
    _, freezing, reasons = choose_strategy(StrategyConfig(mode="auto", cache_features=True), 50, 6)
    assert (freezing.policy, freezing.cache_features) == ("feature_extraction", True)
    assert any("cache_features" in r for r in reasons)
    _, freezing, _ = choose_strategy(StrategyConfig(mode="auto", cache_features=True), 500, 6)
    assert (freezing.policy, freezing.cache_features) == ("top_k", False)  # only feature extraction caches
    _, freezing, _ = choose_strategy(StrategyConfig(mode="auto"), 50, 6)
    assert freezing.cache_features is False


def test_strategy_auto_with_cached_features_trains_end_to_end(tmp_path, tiny_model_dir, tiny_data,  # noqa: F811
                                                               caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tl_hf.core.feature_cache"):
        results = _run(tmp_path, tiny_model_dir, tiny_data, "strategy.mode=auto", "strategy.cache_features=true",
                       "training.num_train_epochs=3")
    assert results["eval_samples"] > 0
    assert any(r.getMessage().startswith("feature cache (") for r in caplog.records), "the backbone was not cached"


def test_strategy_thresholds_are_configurable_and_checked():
    llrd, freezing, _ = choose_strategy(StrategyConfig(mode="auto", small_max=10, medium_max=20), 15, 6)
    assert freezing.policy == "top_k"
    with pytest.raises(ConfigError, match="small_max < medium_max"):
        StrategyConfig(small_max=100, medium_max=50)
    with pytest.raises(ConfigError, match="domain_shift must be one of none, small, large"):
        StrategyConfig(domain_shift="huge")


def _run(tmp_path, model_dir, data_dir, *overrides):
    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, model_dir, data_dir)
    assert main(["run", str(cfg), *overrides]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


def test_run_writes_predictions_plots_and_config(tmp_path, tiny_model_dir, tiny_data):
    res = _run(tmp_path, tiny_model_dir, tiny_data, "strategy.mode=auto")
    out = tmp_path / "out"
    for name in ("eval_predictions.jsonl", "confusion_matrix.png", "learning_curve.png", "lr_per_group.png",
                 "run_config.json"):
        assert (out / name).stat().st_size > 0, name
    preds = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {"label", "prediction", "label_name"} <= set(preds[0])
    assert sum(map(sum, res["confusion_matrix"])) == 4
    assert res["eval_accuracy"] == pytest.approx(sum(p["label"] == p["prediction"] for p in preds) / 4)
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["strategy"]["mode"] == "auto" and cfg["task"] == "text_classification"


def test_run_with_peft_l2sp_and_early_stopping(tmp_path, tiny_model_dir, tiny_data):
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    text = cfg.read_text() + ("regularizers: [{name: l2sp, alpha: 0.1}]\npeft: {enabled: true, r: 2}\n"
                              "early_stopping: {patience: 1}\n")
    cfg.write_text(text.replace("max_steps: 3", "max_steps: 6\n  eval_strategy: steps\n  eval_steps: 1"))
    from tl_hf.cli import main

    assert main(["run", str(cfg)]) == 0
    res = json.loads((tmp_path / "out" / "all_results.json").read_text())
    state = json.loads(sorted((tmp_path / "out").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    assert any("penalty/l2sp" in h for h in state["log_history"])
    assert state["best_metric"] is not None
    assert 0 <= res["eval_accuracy"] <= 1


def test_rerun_resumes_from_the_last_checkpoint(tmp_path, tiny_model_dir, tiny_data, capsys):
    _run(tmp_path, tiny_model_dir, tiny_data, "training.save_strategy=steps", "training.save_steps=2")
    capsys.readouterr()
    _run(tmp_path, tiny_model_dir, tiny_data, "training.save_strategy=steps", "training.save_steps=2",
         "training.max_steps=4")
    assert "resuming from the last checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("override,match", [
    ("task=text_clasification", r"unknown config task .text_clasification.; did you mean text_classification"),
    ("early_stopping.patience=-1", r"early_stopping.patience must be >= 0"),
    ("peft.r=0", r"peft.r must be >= 1"),
    ("hub.push=true", r"hub.repo_id is not set"),
    ("strategy.mode=magic", r"strategy.mode must be one of manual, auto"),
])
def test_bad_new_sections(tmp_path, tiny_model_dir, tiny_data, override, match):
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    with pytest.raises(ConfigError, match=match):
        load_config(cfg, [override])


def test_bad_regularizer_in_config_is_named(tmp_path, tiny_model_dir, tiny_data):
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "regularizers: [{name: l2sp, alpha: -1}]\n")
    with pytest.raises(ConfigError, match=r"regularizers: l2sp alpha must be a number >= 0"):
        load_config(cfg)


def test_early_stopping_without_evaluation_is_refused(tmp_path, tiny_model_dir, tiny_data):
    from tl_hf.run.template import build_training_args

    cfg = load_config(_tiny_run_config(tmp_path, tiny_model_dir, tiny_data), ["early_stopping.patience=2"])
    with pytest.raises(ConfigError, match="needs evaluations: set training.eval_strategy"):
        build_training_args(cfg)


def test_push_offline_fails_fast_and_keeps_the_model(tmp_path, tiny_model_dir, tiny_data, capsys):
    import time

    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    t = time.monotonic()
    rc = main(["run", str(cfg), "hub.push=true", "hub.repo_id=me/tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # progress bars go to stderr too; the error is the final line
    assert last.startswith("tl-hf: error: ") and str(tmp_path / "out") in last
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "README.md").is_file()
    assert "Transfer learning" in (tmp_path / "out" / "README.md").read_text()
    assert time.monotonic() - t < 60


def test_regularizer_values_in_yaml_are_typed(tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    cfg.write_text(cfg.read_text() + "regularizers: [{name: ewc, lambda: 1e5, num_samples: 1e2}]\n")
    spec = load_config(cfg).regularizers[0]
    assert spec["lambda"] == 1e5 and isinstance(spec["lambda"], float) and spec["num_samples"] == 100


def test_remote_code_is_off_unless_the_config_asks(tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    from tl_hf.run.models import _from_pretrained

    seen = {}

    class Loader:
        @staticmethod
        def from_pretrained(location, **kw):
            seen.update(kw)
            return "ok"

    assert _from_pretrained(Loader, str(tiny_model_dir), "model") == "ok" and seen["trust_remote_code"] is False
    cfg = load_config(_tiny_run_config(tmp_path, tiny_model_dir, tiny_data), ["model.trust_remote_code=true"])
    assert cfg.model.trust_remote_code is True
    assert load_config(_tiny_run_config(tmp_path, tiny_model_dir, tiny_data)).model.trust_remote_code is False
