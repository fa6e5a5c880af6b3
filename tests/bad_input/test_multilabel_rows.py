"""Bad-input matrix, multi-label rows (task text_multilabel): labels outside the set (ids and names), a training split
without any label, a label listed twice in one row (refused, not merged), ids mixed with names, thresholds outside
(0, 1) or tuned on test, and options that do not apply to a label set.

Each row: the input, exit code 2, a pattern for the one error line; the output folder stays as it was.
"""

from __future__ import annotations

import pytest
from matrix_harness import (Ctx, all_of, ctx, row, run_cli_row, seed_checkpoint,  # noqa: F401
                            tiny_model_dir, write_jsonl)

TASK = ["task=text_multilabel", "data.label_column=labels", "data.text_column=text"]
GOOD = [{"text": "so happy", "labels": "joy"}, {"text": "mad and scared", "labels": "anger,fear"},
        {"text": "the weather", "labels": ""}, {"text": "glad", "labels": "joy"}]


def _files(train: list[dict], *extra: str, eval_rows: list[dict] | None = None, label_column: str = "labels"):
    def prep(c: Ctx):
        write_jsonl(c.data / "ml_train.jsonl", train)
        write_jsonl(c.data / "ml_dev.jsonl", eval_rows if eval_rows is not None else GOOD)
        task = [o for o in TASK if not o.startswith("data.label_column=")] + [f"data.label_column={label_column}"]
        return [*task, "data.train_file=ml_train.jsonl", "data.eval_file=ml_dev.jsonl", *extra]
    return prep


NAMES = "data.label_names=[joy, anger, fear]"
ROWS = [
    row("multilabel-id-outside-set", _files([*GOOD[:2], {"text": "x", "labels": "0,7"}], NAMES), [],
        all_of("ml_train.jsonl", r"row 3 \(line 3\)", "label id 7", "'labels'", r"outside the label set")),
    row("multilabel-id-outside-set-eval", _files(GOOD, NAMES, eval_rows=[{"text": "x", "labels": [1, 3]}]), [],
        all_of("ml_dev.jsonl", "row 1", "label id 3", "outside the label set")),
    row("multilabel-unknown-name", _files([*GOOD, {"text": "x", "labels": "joyy"}], NAMES), [],
        all_of("ml_train.jsonl", "row 5", "label 'joyy'", "not in the label set", "did you mean 'joy'")),
    row("multilabel-unknown-name-not-in-train", _files(GOOD, eval_rows=[{"text": "x", "labels": "love"}]), [],
        all_of("ml_dev.jsonl", "label 'love'", "not in the label set")),
    row("multilabel-train-without-any-label", _files([{"text": t, "labels": ""} for t in ("a", "b", "c")]), [],
        all_of("ml_train.jsonl", "no row has a label", "'labels'")),
    row("multilabel-train-without-any-label-declared", _files([{"text": "a", "labels": None}] * 3, NAMES), [],
        all_of("ml_train.jsonl", "no row has a label")),
    row("multilabel-duplicate-label-in-row", _files([*GOOD, {"text": "x", "labels": "fear,anger,fear"}]), [],
        all_of("row 5", "'fear' is listed twice", "refused, not merged")),
    row("multilabel-ids-mixed-with-names", _files([*GOOD, {"text": "x", "labels": "2"}]), [],
        all_of("mixes label ids and names", "label_names")),
    row("multilabel-threshold-above-1", _files(GOOD, "data.threshold=1.5"), [],
        all_of(r"data\.threshold=1\.5", r"outside \(0, 1\)")),
    row("multilabel-threshold-zero", _files(GOOD, "data.threshold=0"), [], all_of(r"data\.threshold=0", "outside")),
    row("multilabel-threshold-typo", _files(GOOD, "data.threshold=tuned"), [],
        all_of(r"data\.threshold", "tune_per_label", "did you mean")),
    row("multilabel-objective-unknown", _files(GOOD, "data.threshold_objective=accuracy"), [],
        all_of(r"data\.threshold_objective", "f1_macro")),
    row("multilabel-eval-file-is-test-file", _files(GOOD, "data.test_file=ml_dev.jsonl"), [],
        all_of("eval_file and data.test_file are the same file", "tuned on the test rows")),
    row("multilabel-goemotions-tuned-on-test", lambda c: [*TASK, "data.dataset=goemotions", "data.train_file=null",
                                                          "data.eval_file=null", "data.eval_split=test"], [],
        all_of(r"data\.eval_split=test", "never on test")),
    row("multilabel-single-label-metric", _files(GOOD, "evaluation.metrics=[accuracy]"), [],
        all_of(r"evaluation\.metrics", "multilabel_f1")),
    row("multilabel-early-stopping-on-accuracy", _files(GOOD, "early_stopping.patience=1",
                                                        "training.eval_strategy=steps", "training.eval_steps=1"), [],
        all_of(r"early_stopping\.metric='accuracy'", "f1_macro")),
    row("multilabel-num-labels-mismatch", _files(GOOD, "model.num_labels=5"), [],
        all_of(r"model\.num_labels=5", "3 labels")),
    row("multilabel-label-column-missing", _files(GOOD, label_column="emotions"), [],
        all_of("'emotions'", "label_column", "columns are: text, labels")),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", ROWS)
def test_multilabel_row(ctx, prep, overrides, expected, opts, capsys, request):
    ctx.drop_checkpoint()  # a row of another task: the resume check would refuse first (its own rows)
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
