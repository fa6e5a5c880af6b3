"""Bad-input matrix, token-classification rows (``task: token_classification``): an eval tag outside the tag set,
malformed BIO under ``data.bio_repair: error``, a file with no sentences, a CoNLL line with 3 columns, tokens and tags
of different lengths, integer tags without names, a tag set that is not IOB2, a slow (Python) tokenizer, and bad
values of the task's own keys.

Each row: exit code 2, one line naming the file/line or key and the fix, and the output folder as it was (no new
file: the data and the tokenizer are checked before the output folder is touched).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from matrix_harness import Ctx, expect_refusal, new_ctx, tiny_model_dir  # noqa: F401  (fixture)

GOOD = "john\tB-PER\nsmith\tI-PER\nwent\tO\nto\tO\nparis\tB-LOC\n\nmary\tB-PER\nsaw\tO\nrome\tB-LOC\n\n"


def token_config(model: Path, extra: str = "") -> str:
    return f"""task: token_classification
model: {{name_or_path: {model}}}
data: {{root: data, train_file: train.conll, eval_file: dev.conll, max_length: 16{extra}}}
training: {{output_dir: out, max_steps: 2, per_device_train_batch_size: 2, disable_tqdm: true, use_cpu: true}}
"""


@pytest.fixture
def tok_ctx(tmp_path, tiny_model_dir, monkeypatch) -> Ctx:  # noqa: F811
    return new_ctx(tmp_path, monkeypatch, tiny_model_dir, token_config(tiny_model_dir), _write_good)


def _write_good(data: Path) -> None:
    for name in ("train.conll", "dev.conll"):
        (data / name).write_text(GOOD, encoding="utf-8")


def _file(name: str, text: str):
    def prep(c: Ctx):
        (c.data / name).write_text(text, encoding="utf-8")
        return []
    return prep


def _jsonl(rows: list[dict], *extra: str):
    def prep(c: Ctx):
        (c.data / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return ["data.train_file=t.jsonl", "data.eval_file=t.jsonl", *extra]
    return prep


def _slow_tokenizer(c: Ctx):
    import transformers as T

    folder = c.tmp / "byt5_tokenizer"
    T.ByT5Tokenizer().save_pretrained(folder)
    (folder / "vocab.json").write_text("{}", encoding="utf-8")  # passes the vocabulary-files check; ByT5 ignores it
    shutil.copy(c.model / "config.json", folder / "config.json")  # a save_pretrained folder
    return [f"model.tokenizer={folder}"]


TOKEN_ROWS = [
    pytest.param(_file("dev.conll", "john\tB-PER\nworks\tO\nat\tO\nacme\tB-ORG\n\n"), [],
                 r"dev\.conll:4: tag 'B-ORG' is not in the tag set \(O, B-LOC, I-LOC, B-PER, I-PER\)",
                 id="token-eval-tag-outside-the-tag-set"),
    pytest.param(_file("train.conll", GOOD + "the\tO\ncity\tI-LOC\n\n"), ["data.bio_repair=error"],
                 r"train data: 1 malformed IOB2 tag\(s\) in 1 sentence\(s\).*train\.conll lines 12; fix the file, "
                 r"or set data\.bio_repair=repair", id="token-malformed-bio-under-error"),
    pytest.param(_file("dev.conll", "\n\t\n-DOCSTART-\tO\n\n"), [], r"dev\.conll has no sentences",
                 id="token-file-with-no-sentences"),
    pytest.param(_file("train.conll", "john\tB-PER\nsmith\tI-PER\tNNP\n\n"), [],
                 r"train\.conll:2 has 3 column\(s\).*token<TAB>tag", id="token-conll-line-with-3-columns"),
    pytest.param(_jsonl([{"tokens": ["a", "b"], "ner_tags": ["O", "O"]},
                         {"tokens": ["c", "d", "e"], "ner_tags": ["O", "B-X"]}]), [],
                 r"t\.jsonl row 2: 3 tokens but 2 tags", id="token-tokens-and-tags-of-different-lengths"),
    pytest.param(_jsonl([{"tokens": ["a", "b"], "ner_tags": [0, 1]}]), [],
                 r"integer ids but no tag names are known; set data\.label_names", id="token-ids-without-names"),
    pytest.param(None, ["data.label_names=[O, PER, LOC]"], r"data\.label_names: tag 'PER' is not IOB2",
                 id="token-label-names-not-iob2"),
    pytest.param(None, ["data.bio_repair=fix"], r"data\.bio_repair must be one of warn, repair, error",
                 id="token-bad-bio-repair"),
    pytest.param(None, ["data.dataset=wnut"], r"unknown token-classification dataset 'wnut'.*wnut17",
                 id="token-unknown-builtin"),
    pytest.param(None, ["evaluation.metrics=[accuracy]"], r"evaluation\.metrics: token classification scores",
                 id="token-evaluation-metrics"),
    pytest.param(_slow_tokenizer, [], r"needs a fast tokenizer .*ByT5Tokenizer", id="token-slow-tokenizer"),
]


@pytest.mark.parametrize("prep, overrides, expected", TOKEN_ROWS)
def test_token_row(tok_ctx, prep, overrides, expected, capsys):
    extra = prep(tok_ctx) if prep else []
    argv = ["run", str(tok_ctx.cfg), *overrides, *extra]
    if "data.dataset=wnut" in overrides:
        argv = ["run", str(tok_ctx.cfg), "data.train_file=null", "data.eval_file=null", *overrides]
    expect_refusal(tok_ctx, argv, expected, capsys)
