"""Bad-input matrix, sentence-pair and regression rows (issue 11, families 1 and 2): a pair column that does not exist,
an empty pair text, float labels given to a classification config, labels auto cannot place, a regression head of
several outputs, NaN / inf scores, a multi-label problem type, a classification metric watched by early stopping in
a regression run, a built-in dataset with the wrong problem type.

Each row: the input, exit code 2, a pattern for the one error line; the output folder stays as it was.
"""

from __future__ import annotations

import pytest
from matrix_harness import Ctx, all_of, ctx, row, run_cli_row, seed_checkpoint, tiny_model_dir  # noqa: F401

PAIRS = [("a man is playing a flute", "a man plays a flute"), ("a dog runs", "a cat sleeps"),
         ("two kids play", "children are playing"), ("a woman cooks", "a woman is cooking"),
         ("the sky is blue", "grass is green"), ("a plane takes off", "an airplane is taking off")]


def _pairs(name: str, labels, *, empty_pair: int | None = None, extra: tuple[str, ...] = ()):
    """A tsv of sentence pairs ``s1 s2 y`` with ``labels`` (strings, as written in the file)."""
    def prep(c: Ctx):
        lines = ["s1\ts2\ty"]
        for i, ((a, b), y) in enumerate(zip(PAIRS, labels)):
            lines.append(f"{a}\t{'' if i == empty_pair else b}\t{y}")
        (c.data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [f"data.train_file={name}", f"data.eval_file={name}", "data.text_column=s1",
                "data.text_pair_column=s2", "data.label_column=y", *extra]
    return prep


SCORES = ["4.8", "0.4", "3.9", "4.6", "0.0", "5.0"]
ROWS = [
    row("pair-column-missing", None, ["data.text_pair_column=premise"],
        all_of(r"column 'premise' \(data\.text_pair_column\) not found", "its columns are: sentence, label")),
    row("pair-text-empty", _pairs("e.tsv", ["1", "0", "1", "1", "0", "1"], empty_pair=2), [],
        all_of("e.tsv", "row 3 has an empty text in column 's2'", "data.text_pair_column", "sentence pair")),
    row("float-labels-to-a-classifier",
        _pairs("f.tsv", SCORES, extra=("data.problem_type=single_label_classification",)), [],
        all_of("f.tsv", "label 4.8 is not a class", "data.problem_type: regression")),
    row("auto-ambiguous-few-fractional-values", _pairs("a.tsv", ["0.5", "1.5", "0.5", "1.5", "0.5", "1.5"]), [],
        all_of("a.tsv", "only 2 distinct", "data.problem_type: regression", "single_label_classification")),
    row("auto-ambiguous-integer-valued-floats", _pairs("i.tsv", ["1.0", "2.0", "3.0", "4.0", "5.0", "3.0"]), [],
        all_of("i.tsv", "integer-valued numbers written as floats", "set data.problem_type")),
    row("regression-with-several-outputs", _pairs("r.tsv", SCORES, extra=("data.problem_type=regression",)),
        ["model.num_labels=3"], all_of("model.num_labels=3", "regression", "model.num_labels: 1")),
    row("regression-nan-score", _pairs("n.tsv", ["4.8", "nan", "3.9", "4.6", "0.0", "5.0"],
                                       extra=("data.problem_type=regression",)), [],
        all_of("n.tsv", "row 2", "'nan', not a finite number", "regression")),
    row("regression-inf-score-auto", _pairs("inf.tsv", ["4.8", "0.4", "inf", "4.6", "0.0", "5.0"]), [],
        all_of("inf.tsv", "row 3", "'inf', not a finite number")),
    row("regression-empty-score", _pairs("m.tsv", ["4.8", "", "3.9", "4.6", "0.0", "5.0"],
                                         extra=("data.problem_type=regression",)), [],
        all_of("m.tsv", "row 2", "is empty", "finite number")),
    row("problem-type-multi-label", None, ["data.problem_type=multi_label_classification"],
        all_of("multi_label_classification", "task: text_multilabel")),
    row("problem-type-unknown", None, ["data.problem_type=regresion"],
        all_of("data.problem_type must be one of", "did you mean 'regression'")),
    row("regression-early-stopping-on-accuracy", _pairs("s.tsv", SCORES, extra=("data.problem_type=regression",)),
        ["early_stopping.patience=1", "training.eval_strategy=steps", "training.eval_steps=1"],
        all_of("early_stopping.metric=accuracy", "regression", "early_stopping.metric=pearsonr")),
    row("stsb-as-classification", None, ["data.dataset=stsb", "data.train_file=null", "data.eval_file=null",
                                         "data.root=null", "data.problem_type=single_label_classification"],
        all_of("data.dataset=stsb is a regression dataset", "data.problem_type")),
    row("rte-as-regression", None, ["data.dataset=rte", "data.train_file=null", "data.eval_file=null",
                                    "data.root=null", "data.problem_type=regression"],
        all_of("data.dataset=rte is a classification dataset", "single_label_classification")),
    row("num-labels-one-for-a-classifier", None, ["model.num_labels=1"],
        all_of(r"model\.num_labels must be >= 2", "data.problem_type: regression")),
]


@pytest.mark.parametrize("prep, overrides, expected, opts", ROWS)
def test_pairs_regression_row(ctx, prep, overrides, expected, opts, capsys, request):
    ctx.drop_checkpoint()  # a data row changes the data: the resume check would refuse first (its own rows)
    run_cli_row(ctx, prep, overrides, expected, opts, capsys, request)
