"""The continual recipe (``task: continual``): config validation, and Split-MNIST / text runs end to end through
``tl-hf run`` at tiny settings (real data from the shared data root; a 2-layer BERT saved in a temp folder)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_data_root
from test_config_cli import tiny_model_dir  # noqa: F401  (fixture)

from tl_hf.cli import main
from tl_hf._errors import ConfigError
from tl_hf.run.config import load_config

REPO = Path(__file__).resolve().parents[1]
MNIST_CONFIG = REPO / "recipes" / "configs" / "continual_mnist_pairs.yaml"
TEXT_CONFIG = REPO / "recipes" / "configs" / "continual_text_minilm.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = real_data_root("mnist_t10k")
    for name in ("trec", "emotion", "sst2"):
        real_data_root(name)
    return root


def _cfg(*overrides):
    return load_config(None, ["task=continual", *overrides])


def _write_csv(path: Path, rows) -> Path:
    path.write_text("sentence,y\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# config validation (no data read, no model loaded)
# ---------------------------------------------------------------------------------------------------------------------

def test_defaults_and_shipped_configs():
    cfg = _cfg()
    assert cfg.data.kind == "text" and cfg.data.scenario == "task_incremental"
    assert cfg.data.tasks == ["trec", "emotion", "sst2"]
    assert [s.name for s in cfg.data.text_sources()] == ["trec", "emotion", "sst2"]
    mn = _cfg("data.kind=mnist")
    assert mn.data.pairs == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for path in (MNIST_CONFIG, TEXT_CONFIG):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Run: tl-hf run ") and f"recipes/configs/{path.name}" in first
        assert "MEASURED" in path.read_text()
        assert load_config(path).task == "continual"


def test_bad_scenario_and_kind_suggest_the_valid_one():
    with pytest.raises(ConfigError, match=r"data\.scenario: unknown continual-learning scenario 'class-incremental'; "
                                          r"did you mean 'class_incremental'\?"):
        _cfg("data.scenario=class-incremental")
    with pytest.raises(ConfigError, match=r"data\.kind: unknown kind 'mnsit'; did you mean 'mnist'"):
        _cfg("data.kind=mnsit")


def test_unknown_task_dataset_and_keys():
    with pytest.raises(ConfigError, match=r"data\.tasks\[1\]: unknown dataset 'emotions'; did you mean 'emotion'\?"):
        _cfg("data.tasks=[trec, emotions]")
    with pytest.raises(ConfigError, match=r"data\.tasks\[0\]: unknown dataset 'sst-2'; did you mean 'sst2'"):
        _cfg("data.tasks=[{dataset: sst-2}]")
    with pytest.raises(ConfigError, match=r"data\.tasks\[0\]: unknown key 'max_train_sample'; did you mean "
                                          r"'max_train_samples'"):
        _cfg("data.tasks=[{dataset: sst2, max_train_sample: 5}]")
    with pytest.raises(ConfigError, match=r"data\.tasks\[1\]: train_file 'a.csv' has no eval_file"):
        _cfg("data.tasks=[trec, {train_file: a.csv}]")
    with pytest.raises(ConfigError, match=r"names must be unique, \['sst2'\]"):
        _cfg("data.tasks=[sst2, sst2]")
    with pytest.raises(ConfigError, match=r"data\.pairs is for kind: mnist"):
        _cfg("data.pairs=[[0, 1]]")
    with pytest.raises(ConfigError, match=r"data\.pairs\[1\] = \[2, 2\] repeats a digit"):
        _cfg("data.kind=mnist", "data.pairs=[[0, 1], [2, 2]]")


def test_domain_incremental_needs_one_label_set_naming_tasks_and_labels():
    with pytest.raises(ConfigError, match=r"domain_incremental needs one label set shared by every task, but task "
                                          r"'trec' has labels \[ABBR, DESC, ENTY, HUM, LOC, NUM\] and task 'sst2' "
                                          r"has \[negative, positive\]"):
        _cfg("data.scenario=domain_incremental", "data.tasks=[trec, sst2]")
    with pytest.raises(ConfigError, match="same number of digits"):
        _cfg("data.kind=mnist", "data.scenario=domain_incremental", "data.pairs=[[0, 1], [2, 3, 4]]")


def test_domain_incremental_file_tasks_are_checked_after_reading(tmp_path, tiny_model_dir):  # noqa: F811
    from tl_hf.run.tasks.continual.run import run_continual_recipe

    a = [("good", "pos"), ("bad", "neg")] * 3
    b = [("fine", "pos"), ("meh", "neutral")] * 3
    for name, rows in (("a", a), ("b", b)):
        _write_csv(tmp_path / f"{name}_train.csv", rows)
        _write_csv(tmp_path / f"{name}_dev.csv", rows[:2])
    tasks = ", ".join(f"{{name: {n}, train_file: {tmp_path}/{n}_train.csv, eval_file: {tmp_path}/{n}_dev.csv, "
                      f"text_column: sentence, label_column: y}}" for n in "ab")
    cfg = _cfg("data.scenario=domain_incremental", f"data.tasks=[{tasks}]", f"model.name_or_path={tiny_model_dir}",
               f"training.output_dir={tmp_path / 'out'}")
    with pytest.raises(ConfigError, match=r"task 'a' has labels \[neg, pos\] and task 'b' has \[neutral, pos\]"):
        run_continual_recipe(cfg, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_replay_source_misuse(tmp_path):
    from tl_hf.run.tasks.continual.run import run_continual_recipe

    with pytest.raises(ConfigError, match=r"replay_source .*task_incremental"):
        _cfg("data.replay_source=sst2")
    with pytest.raises(ConfigError, match=r"data\.replay_source is for kind: text"):
        _cfg("data.kind=mnist", "data.scenario=class_incremental", "data.replay_source=sst2")
    with pytest.raises(ConfigError, match=r"replay_source: 'trec' is also task 'trec'"):
        _cfg("data.scenario=class_incremental", "data.replay_source=trec")
    with pytest.raises(ConfigError, match=r"replay_source: unknown dataset 'sst'; did you mean 'sst2'"):
        _cfg("data.scenario=class_incremental", "data.tasks=[trec]", "data.replay_source=sst")
    with pytest.raises(ConfigError, match=r"task 'sst2' has labels \[negative, positive\] and replay source 'trec' "
                                          r"has \[ABBR"):
        _cfg("data.scenario=domain_incremental", "data.tasks=[sst2]", "data.replay_source=trec")
    with pytest.raises(ConfigError, match=r"unknown key 'max_sample'; did you mean 'max_samples'"):
        _cfg("data.scenario=class_incremental", "data.tasks=[trec]", "data.replay_source={dataset: sst2, "
             "max_sample: 3}")
    # checked at run time, before any data is read: a source needs a replay regularizer
    cfg = _cfg("data.scenario=class_incremental", "data.tasks=[trec]", "data.replay_source=sst2",
               f"training.output_dir={tmp_path / 'out'}")
    with pytest.raises(ConfigError, match="no replay regularizer is configured"):
        run_continual_recipe(cfg, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_replay_with_per_task_heads_is_refused_before_reading_data(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"task: continual\ndata: {{root: {tmp_path / 'nowhere'}}}\n"
                        "regularizers: [{name: replay, budget: 10}]\n"
                        f"training: {{output_dir: {tmp_path / 'out'}}}\n")
    from tl_hf.run.tasks.continual.run import run_continual_recipe

    with pytest.raises(ConfigError, match="replay is not supported with data.scenario task_incremental"):
        run_continual_recipe(load_config(cfg_file), log=lambda *_: None)


def test_replay_budget_larger_than_task1_data(tmp_path, data_root, capsys):
    # the shipped config keeps 500 examples; 100 per pair leaves 80 training examples in task 1
    out = tmp_path / "out"
    assert main(["run", str(MNIST_CONFIG), "data.max_per_task=100", f"data.root={data_root}",
                 f"training.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "replay budget 500 is larger than the data available to fill it: task 'task1' (task 1) has 80 training " \
           "examples" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------------

def _check_outputs(out: Path, names):
    from tl_hf.continual import accuracy_matrix_metrics

    doc = json.loads((out / "accuracy_matrix.json").read_text())
    res = json.loads((out / "all_results.json").read_text())
    assert (out / "accuracy_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["task_names"] == res["task_names"] == names
    n = len(names)
    assert [[v is None for v in row] for row in res["R"]] == [[j > i for j in range(n)] for i in range(n)]
    m = accuracy_matrix_metrics(res["R"])
    assert res["ACC"] == pytest.approx(m["ACC"]) == pytest.approx(doc["ACC"])
    assert res["BWT"] == pytest.approx(m["BWT"]) and res["avg_forgetting"] == pytest.approx(m["avg_forgetting"])
    assert res["forgetting"] == pytest.approx(dict(zip(names[:-1], m["forgetting"])))
    assert [t["name"] for t in res["per_task"]] == names and res["wall_time_s"] > 0
    assert json.loads((out / "run_config.json").read_text())["task"] == "continual"
    return res


def test_mnist_config_end_to_end(tmp_path, data_root, capsys):
    out = tmp_path / "mnist"
    assert main(["run", str(MNIST_CONFIG), "data.max_per_task=700", "data.pairs=[[0, 1], [2, 3], [4, 5]]",
                 "training.num_train_epochs=1", f"data.root={data_root}", f"training.output_dir={out}"]) == 0
    stdout = capsys.readouterr().out
    res = _check_outputs(out, ["task1", "task2", "task3"])
    assert res["scenario"] == "class_incremental" and res["num_labels"] == 6
    assert [t["labels"] for t in res["tasks"]] == [[0, 1], [2, 3], [4, 5]]
    assert [t["train_samples"] for t in res["tasks"]] == [560, 560, 560]
    assert res["replay_memory"]["size"] == 500 and set(res["replay_memory"]["by_source"]) <= {"task1", "task2",
                                                                                              "task3"}
    assert res["R"][0][0] > 0.9  # 0 vs 1 is easy even after one epoch
    assert "after task 3: acc[task1]=" in stdout and f"ACC={res['ACC']:.4f}" in stdout
    assert f"continual, mean final (ACC) accuracy: {res['ACC']:.4f}" in stdout


def test_text_task_incremental_ewc_end_to_end(tmp_path, data_root, tiny_model_dir):  # noqa: F811
    out = tmp_path / "text"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
task: continual
model: {{name_or_path: {tiny_model_dir}}}
data: {{root: {data_root}, tasks: [trec, emotion, sst2], max_train_samples: 24, max_eval_samples: 12, max_length: 24}}
regularizers: [{{name: ewc, lambda: 10.0, num_samples: 8, batch_size: 8}}]
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 8, learning_rate: 1e-3, logging_steps: 100,
           disable_tqdm: true, seed: 0}}
llrd: {{decay: 0.8}}
""")
    assert main(["run", str(cfg)]) == 0
    res = _check_outputs(out, ["trec", "emotion", "sst2"])
    assert res["num_labels"] == 6 and res["regularizers"] == ["ewc"]
    assert [t["labels"] for t in res["tasks"]] == [list(range(6)), list(range(6)), [0, 1]]
    assert res["tasks"][2]["class_names"] == ["negative", "positive"]
    assert [t["train_samples"] for t in res["tasks"]] == [24, 24, 24]
    assert [t["eval_samples"] for t in res["tasks"]] == [12, 12, 12]
    assert sorted(p.name for p in (out / "heads").iterdir()) == ["emotion.safetensors", "sst2.safetensors",
                                                                "trec.safetensors"]


def test_text_class_incremental_replay_source_end_to_end(tmp_path, data_root, tiny_model_dir, capsys):  # noqa: F811
    rows = [("a lovely day", "happy"), ("a grim day", "sad"), ("so glad", "happy"), ("so gloomy", "sad")] * 4
    _write_csv(tmp_path / "mood_train.csv", rows)
    _write_csv(tmp_path / "mood_dev.csv", rows[:6])
    out = tmp_path / "text_ci"
    cfg = tmp_path / "c.yaml"
    base = f"""
task: continual
model: {{name_or_path: {tiny_model_dir}}}
data:
  root: {data_root}
  scenario: class_incremental
  tasks: [trec, {{name: mood, train_file: {tmp_path}/mood_train.csv, eval_file: {tmp_path}/mood_dev.csv,
                 text_column: sentence, label_column: y}}]
  replay_source: {{dataset: sst2, max_samples: SOURCE}}
  max_train_samples: 24
  max_eval_samples: 12
  max_length: 24
regularizers: [{{name: replay, budget: 16, ratio: 0.25, seed: 0}}]
training: {{output_dir: {out}, max_steps: 2, per_device_train_batch_size: 8, learning_rate: 1e-3, logging_steps: 100,
           disable_tqdm: true, seed: 0}}
"""
    cfg.write_text(base.replace("SOURCE", "10"))  # a source smaller than the budget cannot fill the memory
    assert main(["run", str(cfg)]) == 2
    assert "replay budget 16 is larger than data.replay_source 'sst2', which has 10 examples" in \
        capsys.readouterr().err
    cfg.write_text(base.replace("SOURCE", "40"))
    assert main(["run", str(cfg)]) == 0
    stdout = capsys.readouterr().out
    res = _check_outputs(out, ["trec", "mood"])
    # union label space: trec 0-5, mood 6-7 (names sorted), then the source's own block: sst2 8-9
    assert res["num_labels"] == 10
    assert [t["labels"] for t in res["tasks"]] == [list(range(6)), [6, 7]]
    assert res["tasks"][1]["class_names"] == ["happy", "sad"]
    assert res["replay_source"]["labels"] == [8, 9] and res["replay_source"]["samples"] == 40
    assert res["replay_memory"]["size"] == 16
    assert set(res["replay_memory"]["by_source"]) <= {"replay_source:sst2", "trec", "mood"}
    assert "replay_source:sst2" in res["replay_memory"]["by_source"]
    # the memory held the source before task 1, so replay already joined task 1
    assert "task 1/2 'trec' (class_incremental): 24 train examples, regularizers ['replay']" in stdout
    assert not (out / "heads").exists()


def test_mnist_with_a_local_image_classifier(tmp_path, data_root):
    import transformers as T

    from tl_hf.run.tasks.continual.run import run_continual_recipe

    vit = tmp_path / "vit"
    torch.manual_seed(0)
    T.ViTForImageClassification(T.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=16,
                                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                            num_labels=2)).save_pretrained(vit)
    common = ["data.kind=mnist", "data.pairs=[[0, 1], [2, 3]]", "data.max_per_task=40", f"data.root={data_root}",
              "training.max_steps=1", "training.per_device_train_batch_size=8", "training.disable_tqdm=true"]
    res = run_continual_recipe(_cfg(*common, f"model.name_or_path={vit}", f"training.output_dir={tmp_path / 'o'}",
                                    "model.save_model=true"), log=lambda *_: None)
    assert res["num_labels"] == 2 and len(res["R"]) == 2
    assert (tmp_path / "o" / "heads" / "task2.safetensors").exists()
    assert (tmp_path / "o" / "model" / "config.json").exists()
    T.ViTForImageClassification(T.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16,
                                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                            num_labels=2)).save_pretrained(tmp_path / "rgb")
    with pytest.raises(ConfigError, match="takes 3-channel 32 x 32 images, but Split-MNIST examples are grey"):
        run_continual_recipe(_cfg(*common, f"model.name_or_path={tmp_path / 'rgb'}",
                                  f"training.output_dir={tmp_path / 'o2'}"), log=lambda *_: None)


# ---------------------------------------------------------------------------------------------------------------------
# data.replay_source for Split-MNIST: MNIST digits no task uses, or an image folder converted to grey 28 x 28
# ---------------------------------------------------------------------------------------------------------------------

def test_mnist_replay_source_validation():
    mn = ["data.kind=mnist", "data.scenario=class_incremental", "data.pairs=[[0, 1], [2, 3]]"]
    cfg = _cfg(*mn, "data.replay_source={digits: [8, 9], max_samples: 200}")
    spec = cfg.data.image_source_spec()
    assert (spec.name, spec.digits, spec.imagefolder, spec.max_samples) == ("mnist_digits_8_9", [8, 9], None, 200)
    assert _cfg(*mn, "data.replay_source={imagefolder: some/dir, name: pics}").data.image_source_spec().name == "pics"
    with pytest.raises(ConfigError, match=r"data\.replay_source: unknown key 'digit'; did you mean 'digits'\? Valid "
                                          r"keys for kind: mnist: name, digits, imagefolder, max_samples"):
        _cfg(*mn, "data.replay_source={digit: [8, 9]}")
    with pytest.raises(ConfigError, match=r"unknown key 'dataset' \(a text source's key; kind is mnist\)"):
        _cfg(*mn, "data.replay_source={dataset: sst2}")
    with pytest.raises(ConfigError, match="set exactly one of digits .* or imagefolder"):
        _cfg(*mn, "data.replay_source={digits: [8], imagefolder: x}")
    with pytest.raises(ConfigError, match="set exactly one of digits"):
        _cfg(*mn, "data.replay_source={max_samples: 5}")
    with pytest.raises(ConfigError, match=r"digits \[1, 8\]: digit 1 is also in task 1's group \[0, 1\]"):
        _cfg(*mn, "data.replay_source={digits: [1, 8]}")
    with pytest.raises(ConfigError, match=r"digits must be a list of digits in 0\.\.9"):
        _cfg(*mn, "data.replay_source={digits: [8, 12]}")
    with pytest.raises(ConfigError, match=r"max_samples must be an int >= 1"):
        _cfg(*mn, "data.replay_source={digits: [8], max_samples: 0}")
    with pytest.raises(ConfigError, match=r"replay_source .*task_incremental"):
        _cfg("data.kind=mnist", "data.replay_source={digits: [8, 9]}")
    dom = ["data.kind=mnist", "data.scenario=domain_incremental", "data.pairs=[[0, 1], [2, 3]]"]
    assert _cfg(*dom, "data.replay_source={digits: [8, 9]}").data.image_source_spec().digits == [8, 9]
    with pytest.raises(ConfigError, match=r"the source needs 2 digits like every task"):
        _cfg(*dom, "data.replay_source={digits: [7]}")
    with pytest.raises(ConfigError, match=r"imagefolder: domain_incremental needs the tasks' labels"):
        _cfg(*dom, "data.replay_source={imagefolder: x}")


def _mnist_source_config(tmp_path, data_root, source, budget, selection="reservoir"):
    path = tmp_path / "src.yaml"
    path.write_text(f"""
task: continual
model: {{name_or_path: "mlp:16"}}
data: {{kind: mnist, scenario: class_incremental, pairs: [[0, 1], [2, 3]], max_per_task: 40, root: {data_root},
       replay_source: {source}}}
regularizers: [{{name: replay, budget: {budget}, selection: {selection}, seed: 0}}]
training: {{output_dir: {tmp_path / 'out'}, max_steps: 2, per_device_train_batch_size: 8, seed: 0, disable_tqdm: true}}
""")
    return path


def test_mnist_replay_source_digits_fill_the_memory_before_task_1(tmp_path, data_root, capsys):
    from safetensors.torch import load_file

    from tl_hf.run.data.mnist import load_mnist_idx

    cfg = _mnist_source_config(tmp_path, data_root, "{digits: [8, 9], max_samples: 5}", 12)
    assert main(["run", str(cfg)]) == 2  # a budget larger than the source cannot be filled
    err = capsys.readouterr().err
    assert "replay budget 12 is larger than data.replay_source 'mnist_digits_8_9', which has 5 examples " \
           "(data.replay_source.max_samples, or the images available)" in err
    assert not (tmp_path / "out").exists()

    cfg = _mnist_source_config(tmp_path, data_root, "{digits: [8, 9], max_samples: 30}", 12, "class_balanced")
    assert main(["run", str(cfg)]) == 0
    stdout = capsys.readouterr().out
    assert "replay source mnist_digits_8_9: 30 examples (MNIST t10k digits [8, 9] (30 of 1983 images)), labels " \
           "[8, 9]" in stdout
    assert "replay memory filled from mnist_digits_8_9 before task 1: 12 examples" in stdout
    assert "task 1/2 'task1' (class_incremental): 32 train examples, regularizers ['replay']" in stdout
    res = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert res["num_labels"] == 10  # the digits keep their own outputs 8 and 9
    assert res["replay_source"]["labels"] == [8, 9] and res["replay_source"]["samples"] == 30
    by = res["replay_memory"]["by_source"]
    assert res["replay_memory"]["size"] == 12 and set(by) == {"replay_source:mnist_digits_8_9", "task1", "task2"}
    # class-balanced over 6 classes (0-3 and the source's 8, 9): 2 slots each, so the source keeps 4
    assert by["replay_source:mnist_digits_8_9"] == 4
    # the source's examples in memory are real MNIST 8s and 9s, labelled with their digit
    state = tmp_path / "out" / "continual_state" / "after_task2" / "regularizers"
    mem = load_file(str(state / "tl_hf_reg_replay.safetensors"))
    prov = json.loads((state / "tl_hf_reg_replay.json").read_text())["meta"]["provenance"]
    images, labels = load_mnist_idx(data_root)
    eights_nines = torch.from_numpy(images[np.isin(labels, [8, 9])].astype(np.float32) / 255.0)
    for i, (src, _) in enumerate(prov):
        if src.startswith("replay_source:"):
            assert int(mem["labels"][i]) in (8, 9)
            assert (eights_nines - mem["pixel_values"][i, 0]).abs().flatten(1).max(1).values.min() == 0.0


def test_mnist_replay_source_imagefolder_converted_to_grey_28(tmp_path, data_root, capsys):
    from PIL import Image

    from tl_hf.run.tasks.continual.mnist import grey28 as _grey28

    folder = tmp_path / "pics"
    (folder / "bright").mkdir(parents=True)
    (folder / "dark").mkdir()
    for i in range(5):
        Image.new("RGB", (40, 30), (100, 50, 200)).save(folder / "bright" / f"rgb{i}.png")  # luma 82.05 -> 82
        Image.new("L", (64, 64), 20).save(folder / "dark" / f"grey{i}.png")
    Image.new("RGB", (50, 50), (255, 255, 255)).save(folder / "bright" / "white.jpg")
    Image.new("RGBA", (28, 28), (10, 10, 10, 0)).save(folder / "dark" / "alpha.png")
    (folder / "dark" / "notes.txt").write_text("not an image")
    assert (_grey28(str(folder / "bright" / "rgb0.png"), "w") == 82).all()
    assert (_grey28(str(folder / "dark" / "grey0.png"), "w") == 20).all()
    assert (_grey28(str(folder / "dark" / "alpha.png"), "w") == 10).all()
    assert _grey28(str(folder / "bright" / "white.jpg"), "w").min() >= 250
    assert _grey28(str(folder / "bright" / "rgb0.png"), "w").shape == (28, 28)

    cfg = _mnist_source_config(tmp_path, data_root, f"{{imagefolder: {folder}}}", 12, "class_balanced")
    assert main(["run", str(cfg)]) == 0
    stdout = capsys.readouterr().out
    assert f"replay source pics: 12 examples ({folder} (12 of 12 images, grey 28 x 28)), labels [4, 5]" in stdout
    assert "replay memory filled from pics before task 1: 12 examples" in stdout
    assert "task 1/2 'task1' (class_incremental): 32 train examples, regularizers ['replay']" in stdout
    res = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert res["num_labels"] == 6 and res["replay_source"]["class_names"] == ["bright", "dark"]
    assert res["replay_memory"]["by_source"]["replay_source:pics"] == 4
    from safetensors.torch import load_file

    state = tmp_path / "out" / "continual_state" / "after_task2" / "regularizers"
    mem = load_file(str(state / "tl_hf_reg_replay.safetensors"))
    prov = json.loads((state / "tl_hf_reg_replay.json").read_text())["meta"]["provenance"]
    seen = set()
    for i, (src, _) in enumerate(prov):
        if src == "replay_source:pics":
            px, y = mem["pixel_values"][i], int(mem["labels"][i])
            assert px.shape == (1, 28, 28) and float(px.min()) == float(px.max())  # constant images stay constant
            seen.add((y, round(float(px[0, 0, 0]) * 255)))
    assert seen <= {(4, 82), (4, 255), (4, 254), (4, 253), (5, 20), (5, 10)} and {y for y, _ in seen} == {4, 5}
