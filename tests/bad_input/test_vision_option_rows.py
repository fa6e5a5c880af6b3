"""Bad-input matrix, vision option rows (issue 15): ``freezing.feature_layer`` outside the model's blocks, a CNN given
a ViT-only option (``feature_layer`` / ``feature_pooling``), a ``blocks`` range outside the model.

Each row: the input, exit code 2, a pattern for the one error line; the output folder stays as it was.
"""

from __future__ import annotations

import pytest
from matrix_harness import Ctx, ctx, row, run_cli_row, seed_checkpoint, tiny_model_dir, tiny_vit_dir  # noqa: F401


def _image_run(c: Ctx, model, freezing: str) -> None:
    import numpy as np
    from PIL import Image

    root = c.tmp / "imgs"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * i + (100 if cls == "bees" else 0), np.uint8)).save(
                root / cls / f"{i}.png")
    c.cfg.write_text(f"""
task: image_classification
model: {{name_or_path: {model}}}
data: {{train_dir: {root}, image_size: 32}}
freezing: {{{freezing}}}
training: {{output_dir: out, max_steps: 2, per_device_train_batch_size: 2, use_cpu: true, disable_tqdm: true}}
""")


def _tiny_cnn(c: Ctx):
    """A tiny MobileNetV2 (BatchNorm CNN) with an image processor, saved like a real backbone folder."""
    import torch
    import transformers as T

    out = c.tmp / "tiny_mobilenet"
    torch.manual_seed(0)
    T.MobileNetV2ForImageClassification(T.MobileNetV2Config(image_size=32, depth_multiplier=0.25, min_depth=4,
                                                            num_labels=2)).save_pretrained(out)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    return out


VISION_ROWS = [
    row("freezing-feature-layer-outside-blocks",
        lambda c: _image_run(c, c.vit, "policy: feature_extraction, feature_layer: 3"), [],
        r"freezing\.feature_layer=3 is outside this vit model's blocks: valid 1\.\.1", vit=True),
    row("freezing-feature-layer-zero", lambda c: _image_run(c, c.vit, "feature_layer: 0"), [],
        r"freezing\.feature_layer must be a block number >= 1", vit=True),
    row("freezing-feature-pooling-unknown", lambda c: _image_run(c, c.vit, "feature_pooling: max"), [],
        r"freezing\.feature_pooling must be one of model, cls, mean", vit=True),
    row("freezing-feature-layer-on-cnn",
        lambda c: _image_run(c, _tiny_cnn(c), "policy: feature_extraction, feature_layer: 8"), [],
        r"freezing\.feature_layer is for ViT-family models \(vit, dinov2\).*not mobilenet_v2.*top_k or blocks"),
    row("freezing-feature-pooling-on-cnn", lambda c: _image_run(c, _tiny_cnn(c), "feature_pooling: mean"), [],
        r"freezing\.feature_pooling is for ViT-family models.*not mobilenet_v2"),
    row("freezing-blocks-outside-model", lambda c: _image_run(c, _tiny_cnn(c), "policy: blocks, blocks: [10, 17]"),
        [], r"freezing blocks: \[10, 17\] is outside this mobilenet_v2 model's blocks: valid 0\.\.16"),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", VISION_ROWS)
def test_vision_option_row(ctx, prep, overrides, expected, opts, capsys, request):
    ctx.drop_checkpoint()  # another model / data: the resume check would refuse first (its own rows)
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
