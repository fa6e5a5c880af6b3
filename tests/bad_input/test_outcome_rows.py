"""Bad-input matrix, rows whose right answer is a correct run (or, where the issue allows it, a refusal): TSV text
starting with a quote, label forms (float vs int, 1..N), a used output folder (no stale results), inactive keys,
byte-order marks and line endings, an imagefolder with a symlink loop, and two runs into one output folder at once.

A row either completes and its results are checked (rows counted, labels mapped by name, no stale keys), or it exits
2 with one line and leaves the output folder as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings

import pytest
from matrix_harness import (TRAIN_ROWS, Ctx, assert_one_line_refusal, ctx, files_overrides,  # noqa: F401
                            seed_checkpoint, snapshot, tiny_model_dir, tiny_vit_dir, write_jsonl)

FAST = ["training.max_steps=1", "training.save_strategy=no"]


def _outcome(ctx: Ctx, argv_extra: list[str], capsys, caplog, *, refusal: str | None, check_ok) -> None:
    """Run; rc 0 -> ``check_ok(results, text)`` (``text``: stdout + stderr + log records + warnings), else the refusal
    contract with ``refusal`` as the pattern (``None``: a refusal is wrong here)."""
    from tl_hf.cli import main

    before = snapshot(ctx.out)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["run", str(ctx.cfg), *FAST, *argv_extra])
    out, err = capsys.readouterr()
    if rc == 0:
        results = json.loads((ctx.out / "all_results.json").read_text())
        check_ok(results, "\n".join([out, err, *(r.getMessage() for r in caplog.records),
                                     *(str(w.message) for w in caught)]))
        assert (ctx.out / "SENTINEL.txt").read_text().startswith("existing results"), "a run removed a user file"
        return
    assert refusal is not None, f"refused (exit {rc}) where a correct run is the right answer: {err[-1500:]}"
    assert_one_line_refusal(rc, err, refusal)
    assert snapshot(ctx.out) == before


def _rows_are(n: int):
    def check(results, text):
        assert results["train_samples"] == n, f"{results['train_samples']} training rows, the file has {n}"
    return check


def _tsv(ctx: Ctx, name: str, body: str, *, encoding: str = "utf-8", newline: str = "\n") -> list[str]:
    (ctx.data / name).write_bytes(body.replace("\n", newline).encode(encoding))
    return [f"data.train_file={name}", f"data.eval_file={name}"]


@pytest.fixture
def fresh(ctx):  # noqa: F811
    ctx.drop_checkpoint()
    return ctx


def test_tsv_text_starting_with_a_quote_is_one_row_per_line(fresh, capsys, caplog):
    body = "sentence\tlabel\n" + "".join(f'"{t}\t{y}\n' if i % 3 == 0 else f'{t} "quoted" end\t{y}\n'
                                         for i, (t, y) in enumerate(TRAIN_ROWS))
    extra = _tsv(fresh, "quotes.tsv", body)
    _outcome(fresh, extra, capsys, caplog, refusal=None, check_ok=_rows_are(len(TRAIN_ROWS)))


@pytest.mark.parametrize("encoding, newline", [("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("utf-8-sig", "\r\n")],
                         ids=["bom", "crlf", "bom-crlf"])
def test_tsv_bom_and_line_endings(fresh, capsys, caplog, encoding, newline):
    body = "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in TRAIN_ROWS)
    extra = _tsv(fresh, "enc.tsv", body, encoding=encoding, newline=newline)
    _outcome(fresh, extra, capsys, caplog, refusal=r"enc\.tsv", check_ok=_rows_are(len(TRAIN_ROWS)))


def test_csv_quoted_commas_and_newlines(fresh, capsys, caplog):
    body = "text,label\n" + "".join(f'"{t}, really\nso {t}",{y}\n' for t, y in TRAIN_ROWS)
    extra = _tsv(fresh, "q.csv", body) + ["data.text_column=text"]
    _outcome(fresh, extra, capsys, caplog, refusal=r"q\.csv.*(quot|line)", check_ok=_rows_are(len(TRAIN_ROWS)))


def test_float_train_labels_and_int_eval_labels_map_by_name(fresh, capsys, caplog):
    write_jsonl(fresh.data / "t.jsonl", [{"text": t, "label": float(y)} for t, y in TRAIN_ROWS])
    eval_rows = [{"text": t, "label": y} for t, y in TRAIN_ROWS[:5]]
    write_jsonl(fresh.data / "e.jsonl", eval_rows)

    def check(results, text):
        preds = [json.loads(x) for x in (fresh.out / "eval_predictions.jsonl").read_text().splitlines()]
        assert len(preds) == len(eval_rows)
        for p, r in zip(preds, eval_rows):
            assert float(p["label_name"]) == r["label"], f"eval label {r['label']} read as class {p['label_name']}"
        assert results["train_samples"] == len(TRAIN_ROWS)

    _outcome(fresh, files_overrides("t.jsonl", "e.jsonl"), capsys, caplog, refusal=r"(?i)label", check_ok=check)


def test_labels_one_to_n_warn_about_the_phantom_class(fresh, capsys, caplog):
    write_jsonl(fresh.data / "t.jsonl", [{"text": t, "label": y + 1} for t, y in TRAIN_ROWS])

    def check(results, text):
        assert re.search(r"(?i)label.*\b0\b.*(label_names|map)|(label_names|map).*\b0\b", text), \
            f"no warning about the missing label 0: {text[-1500:]}"

    extra = [*files_overrides("t.jsonl"), "model.ignore_mismatched_sizes=true"]  # 3 ids (0 unused) vs a 2-way head
    _outcome(fresh, extra, capsys, caplog, refusal=r"(?i)label.*\b0\b", check_ok=check)


def test_rerun_into_a_used_output_dir_leaves_no_stale_results(fresh, capsys, caplog):
    (fresh.out / "all_results.json").write_text(json.dumps({"eval_stale_metric": 0.123, "train_loss": 9.9}))

    def check(results, text):
        assert "eval_stale_metric" not in results, "results merged with the previous run's"
        assert results["train_loss"] != 9.9 and "eval_accuracy" in results

    _outcome(fresh, [], capsys, caplog, refusal=r"(?i)output_dir.*(overwrite_output_dir|results)", check_ok=check)


@pytest.mark.parametrize("overrides, key", [
    (["freezing.k=2"], "freezing.k"),
    (["freezing.schedule.every=2"], "freezing.schedule"),
    (["llrd.head_lr=1e-3", "llrd.decay=1.0"], None),  # decay 1.0 with a head lr is a valid setting: no warning needed
], ids=["k-with-policy-full", "schedule-without-gradual", "head-lr-without-decay"])
def test_inactive_keys_warn_or_refuse(fresh, capsys, caplog, overrides, key):
    def check(results, text):
        if key is not None:
            assert key in text and re.search(r"(?i)(ignored|inactive|no effect|has no|only)", text), \
                f"no warning naming {key}: {text[-1500:]}"

    _outcome(fresh, overrides, capsys, caplog, refusal=key and re.escape(key), check_ok=check)


def test_imagefolder_symlink_loop_counts_each_image_once(fresh, capsys, caplog, tiny_vit_dir):  # noqa: F811
    import numpy as np
    from PIL import Image

    root = fresh.tmp / "imgs"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), 30 * i + (120 if cls == "bees" else 0), np.uint8)).save(
                root / cls / f"{i}.png")
    os.symlink("..", root / "ants" / "loop")  # ants/loop/ants/loop/... and ants/loop/bees/...
    fresh.cfg.write_text(f"""task: image_classification
model: {{name_or_path: {tiny_vit_dir}}}
data: {{train_dir: {root}, image_size: 16, eval_fraction: 0.5}}
training: {{output_dir: out, per_device_train_batch_size: 2, use_cpu: true, disable_tqdm: true}}
""")
    _outcome(fresh, [], capsys, caplog, refusal=r"(?i)(symlink|loop)", check_ok=_rows_are(3))


@pytest.mark.slow
def test_two_runs_into_one_output_dir_at_once(fresh, capsys):
    from tl_hf.cli import main

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TL_HF_DEBUG", None)
    first = subprocess.Popen([sys.executable, "-m", "tl_hf.cli", "run", str(fresh.cfg), "training.max_steps=400",
                              "training.save_strategy=no"], cwd=fresh.tmp, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        start, before = time.monotonic(), snapshot(fresh.out)
        while time.monotonic() - start < 60 and snapshot(fresh.out) == before and first.poll() is None:
            time.sleep(0.2)  # the first run's lock appears in the output folder before anything else
        time.sleep(1.0)
        assert first.poll() is None, f"the first run ended early: {first.stderr.read()[-1500:]}"
        capsys.readouterr()
        rc = main(["run", str(fresh.cfg), "training.max_steps=1", "training.save_strategy=no"])
        msg = assert_one_line_refusal(rc, capsys.readouterr().err, r"(?i)(lock|another run|in use|running)")
        assert str(first.pid) in msg, f"the message does not name the holder (pid {first.pid}): {msg}"
    finally:
        first.kill()
        first.wait(timeout=30)
