"""Bad-input matrix, data rows: missing and empty files, a directory for a file, columns, label forms (lists, dicts,
absurd ids, labels outside the set, a head of another size), JSONL / CSV / TSV / parquet shapes, encodings,
max_length above the model's positions, images (unreadable, unknown dataset, worker errors, a model without a
preprocessor_config.json, grayscale refused, smaller than a patch, a ViT option on a CNN) and MNIST files
(truncated, checksum, labels out of range).

Each row: the input, exit code 2, a pattern for the one error line; the output folder stays as it was.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from matrix_harness import (Ctx, all_of, ctx, files_overrides, row, run_cli_row, seed_checkpoint,  # noqa: F401
                            tiny_model_dir, tiny_vit_dir, write_jsonl)
from conftest import real_data_root

TEXTS = ["good", "bad", "fine", "awful"]


def _jsonl(rows: list[dict], name: str = "t.jsonl", **columns):
    def prep(c: Ctx):
        write_jsonl(c.data / name, rows)
        return files_overrides(name, **columns)
    return prep


def _text(name: str, content: str | bytes, *extra: str):
    def prep(c: Ctx):
        p = c.data / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return [f"data.train_file={name}", f"data.eval_file={name}", *extra]
    return prep


def _labels_outside_set(c: Ctx):
    rows = [{"review": "good", "sentiment": "pos"}, {"review": "bad", "sentiment": "neg"},
            {"review": "meh", "sentiment": "neutral"}, {"review": "fine", "sentiment": "pos"}]
    write_jsonl(c.data / "s.jsonl", rows)
    return [*files_overrides("s.jsonl", text="review", label="sentiment"), "data.label_names=[neg, pos]"]


def _eval_label_unseen(c: Ctx):
    write_jsonl(c.data / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    write_jsonl(c.data / "e.jsonl", [{"text": "so so", "label": "mixed"}])
    return files_overrides("t.jsonl", "e.jsonl")


def _parquet(rows: dict, name: str = "t.parquet"):
    def prep(c: Ctx):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(rows), c.data / name)
        return files_overrides(name)
    return prep


def _three_labels(c: Ctx):
    lines = ["sentence\tlabel"] + [f"{t}\t{i % 3}" for i, t in enumerate(["a", "b", "c", "d", "e", "f"])]
    (c.data / "three.tsv").write_text("\n".join(lines) + "\n")
    return ["data.train_file=three.tsv", "data.eval_file=three.tsv", "model.num_labels=null"]


def _no_tokenizer_model(c: Ctx):
    d = c.tmp / "model_no_tok"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(c.model / name, d / name)
    return [f"model.name_or_path={d}"]


def _data_dir_as_file(c: Ctx):
    (c.data / "train_dir.tsv").mkdir()
    return ["data.train_file=train_dir.tsv"]


def _eval_dir_as_file(c: Ctx):
    (c.data / "evals").mkdir()
    return ["data.eval_file=evals"]


def _tokenizer_is_file(c: Ctx):
    return [f"model.tokenizer={c.model / 'vocab.txt'}"]


def _image_cfg(c: Ctx, data_lines: str, training: str = "") -> None:
    c.cfg.write_text(f"""
task: image_classification
model: {{name_or_path: {c.vit}}}
data: {{{data_lines}}}
training: {{output_dir: out, max_steps: 2, per_device_train_batch_size: 2, use_cpu: true, disable_tqdm: true{training}}}
""")


def _image_folder(c: Ctx, broken: dict[str, bytes] | None = None) -> Path:
    import numpy as np
    from PIL import Image

    root = c.tmp / "imgs"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 40 * i + (100 if cls == "bees" else 0), np.uint8)).save(
                root / cls / f"{i}.png")
    for name, data in (broken or {}).items():
        (root / name).write_bytes(data)
    return root


def _bad_image_fail(c: Ctx):
    root = _image_folder(c, {"bees/broken.jpg": b"\xff\xd8\xff\xe0 this is not a jpeg"})
    _image_cfg(c, f"train_dir: {root}, on_bad_image: fail, image_size: 16")


def _bad_image_in_worker(c: Ctx):
    root = _image_folder(c)
    png = (root / "ants" / "0.png").read_bytes()
    (root / "ants" / "truncated.png").write_bytes(png[: len(png) // 2])
    _image_cfg(c, f"train_dir: {root}, on_bad_image: fail, verify_images: false, image_size: 16",
               ", dataloader_num_workers: 1")


def _no_class_folders(c: Ctx):
    root = c.tmp / "flat"
    root.mkdir()
    (root / "x.png").write_bytes(b"")
    _image_cfg(c, f"train_dir: {root}, image_size: 16")


def _one_class_folder(c: Ctx):
    root = _image_folder(c)
    shutil.rmtree(root / "bees")
    _image_cfg(c, f"train_dir: {root}, image_size: 16")


def _vit_without_processor(c: Ctx):
    bare = c.tmp / "vit_noproc"
    shutil.copytree(c.vit, bare)
    (bare / "preprocessor_config.json").unlink()
    c.vit = bare
    _image_cfg(c, f"train_dir: {_image_folder(c)}")


def _grayscale_refused(c: Ctx):
    import numpy as np
    from PIL import Image

    root = _image_folder(c)
    Image.fromarray(np.full((16, 16), 90, np.uint8), "L").save(root / "bees" / "gray.png")
    _image_cfg(c, f"train_dir: {root}, convert_grayscale: false")


def _smaller_than_patch(c: Ctx):
    import numpy as np
    from PIL import Image

    root = _image_folder(c)
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(root / "ants" / "tiny.png")
    _image_cfg(c, f"train_dir: {root}")


def _vit_option_on_cnn(c: Ctx):
    import transformers as T

    cnn = c.tmp / "tiny_mobilenet"
    T.MobileNetV2ForImageClassification(T.MobileNetV2Config(depth_multiplier=0.25, image_size=16, num_labels=2)) \
        .save_pretrained(cnn)
    T.MobileNetV2ImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}) \
        .save_pretrained(cnn)
    c.vit = cnn
    _image_cfg(c, f"train_dir: {_image_folder(c)}, interpolate_pos_encoding: true")


def _mnist_root(c: Ctx, edit) -> None:
    root = c.tmp / "mnist_root"
    shutil.copytree(real_data_root("mnist_t10k") / "mnist_t10k", root / "mnist_t10k")
    edit(root / "mnist_t10k")
    _image_cfg(c, f"dataset: mnist, root: {root}, image_size: 16, max_train_samples: 8, max_eval_samples: 4")


def _mnist_truncated(c: Ctx):
    def edit(d: Path):
        p = d / "t10k-images-idx3-ubyte.gz"
        p.write_bytes(p.read_bytes()[:5000])
    _mnist_root(c, edit)


def _mnist_label_out_of_range(c: Ctx):
    def edit(d: Path):
        p = d / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(gzip.decompress(p.read_bytes()))
        raw[8 + 17] = 42  # the 18th label: digit 42
        p.write_bytes(gzip.compress(bytes(raw)))
    _mnist_root(c, edit)


def _mnist_checksum(c: Ctx):
    def edit(d: Path):
        p = d / "t10k-images-idx3-ubyte.gz"
        raw = bytearray(gzip.decompress(p.read_bytes()))
        raw[16 + 500] ^= 0xFF  # one pixel: the IDX header still checks out, only MD5SUMS can tell
        p.write_bytes(gzip.compress(bytes(raw)))
    _mnist_root(c, edit)


CSV_HEAD = "text,label\n"

DATA_ROWS = [
    # -- where the data is ----------------------------------------------------------------------------------------
    row("data-root-missing", None, ["data.root={tmp}/no_such_root"],
        ["data root", "no_such_root", "is not a directory", "set data.root=PATH"]),
    row("data-train-file-missing", None, ["data.train_file=nope.tsv"], ["data file not found", "nope.tsv"]),
    row("data-eval-file-missing", None, ["data.eval_file=nope_dev.tsv"], r"data file not found: nope_dev\.tsv"),
    row("data-train-file-is-directory", _data_dir_as_file, [], r"train_dir\.tsv.*is a directory"),
    row("data-eval-file-is-directory", _eval_dir_as_file, [], r"evals.*is a directory"),
    row("data-unknown-builtin-dataset", None, ["data.dataset=sst3", "data.train_file=null", "data.eval_file=null"],
        ["unknown dataset 'sst3'", "did you mean 'sst2'"]),
    row("data-dataset-and-files", None, ["data.dataset=sst2"], r"either data\.dataset or data\.train_file"),
    row("data-no-source", None, ["data.train_file=null", "data.eval_file=null"], r"data: set data\.dataset"),
    row("data-bad-file-format", None, ["data.file_format=xlsx"], ["data.file_format must be one of", "xlsx"]),
    row("data-bad-eval-fraction", None, ["data.eval_fraction=1.5"], r"data\.eval_fraction must be in \(0, 1\)"),
    # -- empty files --------------------------------------------------------------------------------------------------
    row("data-empty-train-split", lambda c: (c.data / "train.tsv").write_text("sentence\tlabel\n"), [],
        ["train.tsv", "empty"]),
    row("data-empty-eval-split", lambda c: (c.data / "dev.tsv").write_text("sentence\tlabel\n"), [],
        ["dev.tsv", "empty"]),
    row("data-zero-byte-train-file", lambda c: (c.data / "train.tsv").write_bytes(b""), [], r"train\.tsv.*empty"),
    row("data-zero-byte-jsonl", _text("z.jsonl", b"", "data.text_column=text"), [], r"z\.jsonl.*empty"),
    row("data-zero-byte-csv", _text("z.csv", b"", "data.text_column=text"), [], r"z\.csv.*empty"),
    row("data-whitespace-only-jsonl", _text("w.jsonl", "\n\n  \n", "data.text_column=text"), [], r"w\.jsonl.*empty"),
    # -- columns ------------------------------------------------------------------------------------------------------
    row("data-missing-text-column", None, ["data.text_column=txt"],
        ["column 'txt' (data.text_column) not found", "sentence, label"]),
    row("data-missing-label-column", None, ["data.label_column=lbl"],
        ["column 'lbl' (data.label_column) not found", "sentence, label"]),
    row("data-missing-pair-column", None, ["data.text_pair_column=hypothesis"],
        r"'hypothesis' \(data\.text_pair_column\) not found"),
    row("data-numeric-text-column", _text("n.tsv", "sentence\tscore\tlabel\ngood\t0.9\t1\nbad\t0.1\t0\n",
                                          "data.text_column=score"),
        [],
        all_of(r"data\.text_column", "score", "(numeric|number|not text|string)")),
    row("data-same-column-text-and-label", None, ["data.label_column=sentence"],
        r"(?i)'sentence'.*(both|same column).*text_column.*label_column|text_column.*label_column.*(both|same)"),
    row("data-csv-missing-column-in-header", _text("h.csv", "text\ngood\nbad\n", "data.text_column=text"), [],
        r"column 'label' \(data\.label_column\) not found"),
    # -- label forms --------------------------------------------------------------------------------------------------
    row("data-labels-outside-label-set", _labels_outside_set, [], ["['neutral']", "outside the label set"]),
    row("data-eval-label-unseen", _eval_label_unseen, [], ["e.jsonl", "['mixed']", "do not occur in the training"]),
    row("data-label-list-jsonl", _jsonl([{"text": t, "label": [i % 2]} for i, t in enumerate(TEXTS)]), [],
        r"(?i)t\.jsonl.*label.*(list|nested|scalar)"),
    row("data-label-dict-jsonl", _jsonl([{"text": t, "label": {"y": i % 2}} for i, t in enumerate(TEXTS)]), [],
        r"(?i)t\.jsonl.*label.*(dict|mapping|nested|scalar)"),
    row("data-label-null-jsonl", _jsonl([{"text": t, "label": None if i == 1 else i % 2} for i, t in
                                         enumerate(TEXTS)]), [], all_of(r"t\.jsonl", "label", "(null|missing|empty)")),
    row("data-text-list-jsonl", _jsonl([{"text": [t, t], "label": i % 2} for i, t in enumerate(TEXTS)]), [],
        r"(?i)t\.jsonl.*text.*(list|nested|string)"),
    row("data-text-null-jsonl", _jsonl([{"text": None if i == 2 else t, "label": i % 2} for i, t in
                                        enumerate(TEXTS)]), [], all_of(r"t\.jsonl", "text", "(null|missing|empty)")),
    row("data-label-list-parquet", _parquet({"text": TEXTS, "label": [[0], [1], [0], [1]]}), [],
        r"(?i)t\.parquet.*label.*(list|nested|scalar)"),
    row("data-text-list-parquet", _parquet({"text": [[t] for t in TEXTS], "label": [0, 1, 0, 1]}), [],
        r"(?i)t\.parquet.*text.*(list|nested|string)"),
    row("data-label-absurd-int", _jsonl([{"text": t, "label": [0, 1, 0, 10 ** 9][i]} for i, t in enumerate(TEXTS)]),
        [], r"(?i)label.*1000000000"),
    row("data-label-absurd-int-tsv", _text("big.tsv", "sentence\tlabel\ngood\t1\nbad\t0\nok\t99999999999\n"), [],
        r"(?i)label.*99999999999"),
    row("data-label-head-mismatch-checkpoint", _three_labels, [],
        all_of("head", r"\b3\b", r"model\.ignore_mismatched_sizes")),
    row("data-label-names-duplicate", None, ["data.label_names=[neg, neg]"], r"(?i)data\.label_names.*(duplicate|neg)"),
    # -- file shapes ------------------------------------------------------------------------------------------------
    row("data-corrupt-jsonl", _text("t.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "lab\n',
                                    "data.text_column=text"), [], ["t.jsonl", "could not read"]),
    row("data-jsonl-not-objects", _text("a.jsonl", "[1, 2]\n[3, 4]\n", "data.text_column=text"), [],
        r"(?i)a\.jsonl"),
    row("data-json-scalar", _text("s.json", "42\n", "data.text_column=text"), [], r"(?i)s\.json"),
    row("data-csv-ragged-rows", _text("r.csv", CSV_HEAD + "good,1\nbad,0,extra,fields\n", "data.text_column=text"), [],
        r"(?i)r\.csv"),
    row("data-binary-garbage-csv", _text("g.csv", bytes(range(256)) * 4, "data.text_column=text"), [],
        r"(?i)g\.csv"),
    row("data-utf16-without-bom-tsv", _text("u16.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n".encode("utf-16-le")), [],
        r"(?i)u16\.tsv.*(utf-8|encoding|decode)"),
    row("data-latin1-tsv", _text("l1.tsv", "sentence\tlabel\ncaf\xe9 cr\xe8me\t1\nbad\t0\n".encode("latin-1")), [],
        r"(?i)l1\.tsv.*(utf-8|encoding|decode)"),
    # -- model-side limits ----------------------------------------------------------------------------------------
    row("data-max-length-above-positions", None, ["data.max_length=512"], r"(?i)data\.max_length.*512.*128"),
    row("data-max-length-huge", None, ["data.max_length=1000000000"], all_of(r"data\.max_length", "1000000000")),
    row("data-missing-tokenizer-files", _no_tokenizer_model, [],
        r"(?i)model_no_tok.*tokenizer.*(vocab\.txt|tokenizer\.json|tokenizer_config\.json)"),
    row("data-tokenizer-path-is-file", _tokenizer_is_file, [], r"(?i)vocab\.txt.*(is a file|directory)"),
    # -- images -------------------------------------------------------------------------------------------------------
    row("data-unreadable-image-fail", _bad_image_fail, [], ["broken.jpg", "unreadable", "on_bad_image=skip"],
        vit=True),
    row("data-unknown-image-dataset", lambda c: _image_cfg(c, "dataset: hymenopter"), [],
        ["unknown image dataset 'hymenopter'", "did you mean 'hymenoptera'"], vit=True),
    row("data-image-no-source", lambda c: _image_cfg(c, "image_size: 16"), [], r"data: set data\.dataset", vit=True),
    row("data-image-folder-missing", lambda c: _image_cfg(c, "train_dir: no_such_images"), [],
        r"no_such_images", vit=True),
    row("data-image-folder-without-classes", _no_class_folders, [], r"(?i)flat.*(class|subfolder)", vit=True),
    row("data-image-single-class", _one_class_folder, [], r"(?i)imgs.*(one class|1 class|2 classes|at least two)",
        vit=True),
    row("data-image-error-in-worker", _bad_image_in_worker, [], r"truncated\.png", vit=True),
    row("data-image-bad-on-bad-image", lambda c: _image_cfg(c, "dataset: mnist, on_bad_image: ignore"), [],
        r"data\.on_bad_image must be one of", vit=True),
    row("data-image-std-zero", lambda c: _image_cfg(c, "dataset: mnist, image_mean: [0.5], image_std: [0]"), [],
        r"data\.image_std values must be > 0", vit=True),
    row("data-image-model-without-processor-config", _vit_without_processor, [],
        ["vit_noproc", "has no preprocessor_config.json", "set data.image_mean and data.image_std"], vit=True),
    row("data-image-grayscale-refused", _grayscale_refused, [],
        ["data.convert_grayscale is false", "gray.png, mode L", "set data.convert_grayscale: true"], vit=True),
    row("data-image-smaller-than-patch", _smaller_than_patch, [],
        ["tiny.png is 6x4 pixels", "8x8 patch", "at least 8 pixels on each side"], vit=True),
    row("data-image-vit-option-on-cnn", _vit_option_on_cnn, [],
        ["data.interpolate_pos_encoding is a ViT-family option", "mobilenet_v2", "remove the key"], vit=True),
    row("data-mnist-truncated-gz", _mnist_truncated, [],
        r"(?i)t10k-images-idx3-ubyte\.gz.*(truncated|corrupt|MD5)", vit=True),
    row("data-mnist-label-out-of-range", _mnist_label_out_of_range, [],
        r"(?i)t10k-labels-idx1-ubyte\.gz.*(MD5|out of range|42)", vit=True),
    row("data-mnist-checksum-mismatch", _mnist_checksum, [], r"(?i)t10k-images-idx3-ubyte\.gz.*MD5", vit=True),
    row("data-mnist-root-empty", lambda c: (c.tmp / "empty_root").mkdir() or _image_cfg(
        c, f"dataset: mnist, root: {c.tmp / 'empty_root'}"), [], r"empty_root.*t10k-images-idx3-ubyte\.gz", vit=True),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", DATA_ROWS)
def test_data_row(ctx, prep, overrides, expected, opts, capsys, request):
    ctx.drop_checkpoint()  # a data row changes the data: the resume check would refuse first (its own rows)
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
