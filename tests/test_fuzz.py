"""Fuzz test of the bad-input contract (issue 16): seeded, bounded mutations of the shipped configs and of small data
files. For every case, either the run completes correctly or it exits 2 with one line on stderr, no traceback, and the
output folder's existing files untouched (hashed before and after).

* **Shipped configs** (``recipes/configs/*.yaml``), validation only: a leaf is set to a hostile value (wrong type,
  non-finite, negative, huge, YAML-1.1 boolean word, token-like string), deleted, misspelled, or duplicated (a
  duplicate key or a second copy of a section, written as YAML text), and the config is run through ``tl-hf run``.
  The data loaders are replaced by a sentinel: a case that reaches them has passed validation and stops there, so no
  real model or data is ever loaded, and every validation path runs as it does for a user.
* **Data files** (csv / tsv / jsonl written here), complete tiny runs with a 2-layer BERT built from a config: label
  forms (ints, floats, names, 1..N, bools, huge ids, lists, nulls, mixed), texts (quotes at the start, delimiters and
  newlines inside, empty, numeric, non-ASCII), headers (missing or duplicated columns) and encodings (UTF-8 with and
  without BOM, Latin-1, UTF-16, CRLF). An accepted file must give one example per row written.

Hypothesis draws the cases with a fixed seed (``derandomize``) and no example database, so every run tries the same
cases; a failure is shrunk to a minimal one.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")  # a dev extra: pip install -e ".[dev]"
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "bad_input"))
from matrix_harness import FAKE_TOKEN, assert_one_line_refusal, snapshot, tiny_model_dir  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HOSTILE = [None, True, False, "no", "yes", "off", "", "  ", "x", "nope/../..", -1, 0, 1, 10 ** 12, -(10 ** 12),
           0.5, -1e-9, 1e308, math.inf, -math.inf, math.nan, [], [1, 2], ["a"], {}, {"a": 1}, "1e999", "nan",
           "\u00e9\u00e8\u4e2d", FAKE_TOKEN]


class ReachedLoading(BaseException):
    """Raised by the stubbed data loaders: validation passed (BaseException: the CLI does not turn it into exit 2)."""


class ReachedTraining(BaseException):
    """Raised by the stubbed ``Trainer.train``: a case got past every loader stub, which is a gap in ``LOADERS``."""


LOADERS = [("tl_hf.run.data.text", "load_text_classification"), ("tl_hf.run.data.images", "load_image_classification"),
           ("tl_hf.run.data.mnist", "load_mnist_idx"), ("tl_hf.run.tasks.continual.data", "prepare_text"),
           ("tl_hf.run.tasks.continual.mnist", "prepare_mnist"), ("tl_hf.run.data.tokens", "load_token_data"),
           ("tl_hf.run.data.squad", "load_qa"), ("tl_hf.run.data.multilabel", "load_multilabel")]


@pytest.fixture
def stub_loaders(monkeypatch):
    """Every name bound to a data loader, in any tl_hf module (``from x import f`` copies included), raises
    :class:`ReachedLoading`."""
    import importlib

    import tl_hf.run.tasks  # noqa: F401  (imports every task and its data modules)

    targets = []
    for mod, name in LOADERS:
        fn = getattr(importlib.import_module(mod), name, None)
        if fn is not None:
            targets.append(fn)
    assert targets, "no data loader found to stub"

    def reached(*args, **kwargs):
        raise ReachedLoading()

    def reached_training(*args, **kwargs):
        raise ReachedTraining("a fuzz case reached Trainer.train: add its task's data loader to LOADERS")

    import transformers

    monkeypatch.setattr(transformers.Trainer, "train", reached_training)

    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("tl_hf") and mod is not None:
            for attr, value in list(vars(mod).items()):
                if any(value is t for t in targets):
                    monkeypatch.setattr(mod, attr, reached)


@pytest.mark.parametrize("src", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_stops_at_a_stubbed_loader(src, tmp_path, stub_loaders, monkeypatch, capsys):
    """The harness's own guard: each unmutated shipped config stops at a stubbed loader, or is refused before it for
    its model folder, which is relative to the repo or written by another recipe and so absent from this working
    directory. A task whose loader is missing from ``LOADERS`` would make the fuzz cases below train for real
    (minutes each) instead of stopping."""
    from tl_hf.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        rc = main(["run", str(src), f"training.output_dir={tmp_path / 'out'}"])
    except ReachedLoading:
        return
    err = capsys.readouterr().err
    model = str(yaml.safe_load(src.read_text())["model"]["name_or_path"])
    assert rc == 2 and not (tmp_path / model).exists() and model in err, f"{src.name}: {err}"


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif path:
        yield path


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


def _delete(tree: dict, path: tuple) -> None:
    for p in path[:-1]:
        tree = tree[p]
    del tree[path[-1]]


@st.composite
def mutated_config(draw):
    """``(name, YAML text, description)``: one shipped config with one mutation."""
    src = draw(st.sampled_from(SHIPPED))
    tree = yaml.safe_load(src.read_text())
    leaves = sorted(_leaves(tree), key=str)
    path = draw(st.sampled_from(leaves))
    kind = draw(st.sampled_from(["value", "value", "value", "delete", "typo", "unknown", "dup_key", "dup_section"]))
    tree = copy.deepcopy(tree)
    if kind == "value":
        value = draw(st.sampled_from(HOSTILE))
        _set(tree, path, value)
        desc = f"{'.'.join(map(str, path))} = {value!r}"
    elif kind == "delete":
        _delete(tree, path)
        desc = f"delete {'.'.join(map(str, path))}"
    elif kind == "typo" and len(path) > 1:
        key = str(path[-1])
        i = draw(st.integers(0, len(key) - 1))
        bad = key[:i] + key[i + 1:] if len(key) > 1 else key + "x"
        parent = tree
        for p in path[:-1]:
            parent = parent[p]
        parent[bad] = parent.pop(path[-1])
        desc = f"rename {'.'.join(map(str, path))} -> {bad}"
    elif kind == "unknown" and isinstance(tree.get(path[0]), dict):
        tree[path[0]][draw(st.sampled_from(["lerning_rate", "frobnicate", "hub_tokn", "k2"]))] = 1
        desc = f"unknown key in {path[0]}"
    else:
        desc = kind
    text = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if kind == "dup_section":
        section = draw(st.sampled_from(list(tree)))
        text += yaml.safe_dump({section: tree[section]}, sort_keys=False)
        desc = f"second {section} section"
    elif kind == "dup_key":
        lines = text.splitlines()
        keyed = [i for i, ln in enumerate(lines) if re.match(r"\s+\w+: \S", ln)]
        if keyed:
            i = draw(st.sampled_from(keyed))
            indent, key = re.match(r"(\s+)(\w+):", lines[i]).groups()
            lines.insert(i + 1, f"{indent}{key}: 7")
            desc = f"duplicate key {key!r} (line {i + 1})"
        text = "\n".join(lines) + "\n"
    return src.name, text, desc


def _prepare_out(base: Path) -> Path:
    out = base / "out"
    out.mkdir(parents=True)
    (out / "SENTINEL.txt").write_text("results of an earlier run\n")
    return out


def _check_refusal(rc: int, err: str, out: Path, before: dict, case: str) -> None:
    try:
        assert_one_line_refusal(rc, err, r"\S")
    except AssertionError as exc:
        raise AssertionError(f"{case}: {exc}") from None
    assert snapshot(out) == before, f"{case}: a refused run changed the output folder"
    assert FAKE_TOKEN not in err, f"{case}: the error line echoes a token-like value"


@settings(max_examples=150, **FUZZ)
@given(case=mutated_config())
def test_fuzz_shipped_configs_validate_or_refuse(case, tmp_path_factory, stub_loaders, capsys, monkeypatch):
    from tl_hf.cli import main

    name, text, desc = case
    base = tmp_path_factory.mktemp("fuzzcfg")
    monkeypatch.chdir(base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_HF_DEBUG", raising=False)
    (base / name).write_text(text, encoding="utf-8")
    out = _prepare_out(base)
    before = snapshot(out)
    capsys.readouterr()
    try:
        rc = main(["run", name, f"training.output_dir={out}"])
    except ReachedLoading:
        event("config: validated, stopped at the data loader")
        return  # validation accepted the config; nothing was loaded or trained
    event(f"config: exit {rc}")
    err = capsys.readouterr().err
    assert rc != 0 or (out / "all_results.json").is_file(), f"{name} / {desc}: exit 0 without results"
    if rc != 0:
        _check_refusal(rc, err, out, before, f"{name} / {desc}")


# ---------------------------------------------------------------------------------------------------------------------
# data files: complete tiny runs
# ---------------------------------------------------------------------------------------------------------------------

TEXTS = st.sampled_from(["a fine film", '"quoted start', 'he said "wow"', "tab\tinside", "comma, inside",
                         "new\nline", "", "12345", "caf\u00e9 cr\u00e8me", "\u4e2d\u6587", "'single", "x" * 300])
LABEL_FORMS = {
    "int": lambda i: i % 2, "float": lambda i: float(i % 2), "name": lambda i: ["neg", "pos"][i % 2],
    "one_based": lambda i: i % 2 + 1, "bool": lambda i: bool(i % 2), "three": lambda i: i % 3,
    "huge": lambda i: [0, 1, 10 ** 9][i % 3], "negative": lambda i: -(i % 2), "list": lambda i: [i % 2],
    "null": lambda i: None if i == 1 else i % 2, "mixed": lambda i: [0, "1", 1.0][i % 3],
}


@st.composite
def data_file(draw):
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    n = draw(st.integers(4, 7))
    texts = [draw(TEXTS) for _ in range(n)]
    form = draw(st.sampled_from(sorted(LABEL_FORMS)))
    labels = [LABEL_FORMS[form](i) for i in range(n)]
    header = draw(st.sampled_from(["ok", "ok", "ok", "missing_label", "dup_text"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16", "crlf"]))
    return fmt, texts, labels, form, header, encoding


def _render(fmt, texts, labels, header) -> str:
    cols = {"ok": ["text", "label"], "missing_label": ["text", "lbl"], "dup_text": ["text", "text", "label"]}[header]
    rows = [[t, y] if header != "dup_text" else [t, t, y] for t, y in zip(texts, labels)]
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(cols, r)), ensure_ascii=False) + "\n" for r in rows)
    if fmt == "tsv":  # a user's TSV: fields as they are, no quoting
        return "\t".join(cols) + "\n" + "".join("\t".join(str(v) for v in r) + "\n" for r in rows)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([cols, *rows])
    return buf.getvalue()


@settings(max_examples=24, **FUZZ)
@given(case=data_file())
def test_fuzz_data_files_run_or_refuse(case, tmp_path_factory, tiny_model_dir, capsys, monkeypatch):  # noqa: F811
    from tl_hf.cli import main

    fmt, texts, labels, form, header, encoding = case
    base = tmp_path_factory.mktemp("fuzzdata")
    monkeypatch.chdir(base)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_HF_DEBUG", raising=False)
    text = _render(fmt, texts, labels, header)
    try:
        raw = text.replace("\n", "\r\n").encode() if encoding == "crlf" else text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    name = f"data.{fmt}"
    (base / name).write_bytes(raw)
    out = _prepare_out(base)
    before = snapshot(out)
    desc = f"{fmt}, labels {form}, header {header}, {encoding}: {texts!r} / {labels!r}"
    capsys.readouterr()
    rc = main(["run", str(_run_yaml(base, tiny_model_dir, name, out))])
    err = capsys.readouterr().err
    event(f"data: exit {rc}")
    if rc != 0:
        _check_refusal(rc, err, out, before, desc)
        return
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_samples"] == len(texts), f"{desc}: {results['train_samples']} examples from {len(texts)} rows"
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    preds = (out / "eval_predictions.jsonl").read_text().splitlines()
    assert len(preds) == len(texts), f"{desc}: {len(preds)} eval predictions for {len(texts)} rows"
    assert (out / "SENTINEL.txt").read_text() == "results of an earlier run\n"


def _run_yaml(base: Path, model: Path, name: str, out: Path) -> Path:
    cfg = base / "run.yaml"
    cfg.write_text(f"""model: {{name_or_path: {model}}}
data: {{root: {base}, train_file: {name}, eval_file: {name}, text_column: text, max_length: 16}}
training: {{output_dir: {out}, max_steps: 1, per_device_train_batch_size: 4, learning_rate: 1e-3, save_strategy: "no",
           disable_tqdm: true, use_cpu: true, report_to: none}}
""")
    return cfg
