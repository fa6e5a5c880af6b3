"""Shared fixtures and checks of the bad-input matrix (tests/bad_input/test_*.py import them from here).

Every CLI row runs ``tl_hf.cli.main(["run", "run.yaml", *overrides])`` in process, with the test's tmp folder as the
current directory, against ``out/`` that already holds a sentinel file and a real ``checkpoint-1/`` written by the
same config (one 3-step tiny run per session, the later checkpoints removed: a run interrupted after step 1). The
config names its data and output folders relatively (``data``, ``out``), so a row's config is byte-identical to the
seed run's unless the row changes it. :func:`expect_refusal` checks the contract: exit code 2, one line on stderr
matching the row's pattern, no traceback, every file that was in ``out/`` unchanged (bytes and mtime).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN_ROWS = [("a great and moving film", 1), ("dull , lifeless and boring", 0), ("wonderful acting", 1),
              ("a total mess", 0), ("charming and funny", 1), ("i hated every minute", 0),
              ("brilliant work", 1), ("tedious and flat", 0)]
FAKE_TOKEN = "hf_" + "Zq8xLp2Vn7Rt4Wm9Kc3Bd6Hj1Fs5Gy0Ae"  # looks like a user access token; never a real one


def make_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in TRAIN_ROWS]
    (root / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    return root


def run_config_text(model: Path) -> str:
    """The rows' config: relative data and output folders, 3 steps, a checkpoint every step."""
    return f"""model: {{name_or_path: {model}}}
data: {{root: data, train_file: train.tsv, eval_file: dev.tsv, text_column: sentence, max_length: 16}}
training:
  output_dir: out
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1e-3
  logging_steps: 1
  save_strategy: steps
  save_steps: 1
  disable_tqdm: true
  use_cpu: true
llrd: {{decay: 0.8}}
"""


_CACHE: dict[str, Path] = {}  # each test module imports the fixtures: the session's models and seed run are made once


def _once(name: str, make):
    if name not in _CACHE:
        _CACHE[name] = make()
    return _CACHE[name]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32, 128 positions) with the bundled MiniLM tokenizer files."""
    return _once("bert", lambda: _save_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


def _save_tiny_bert(out: Path) -> Path:
    from tiny import save_tiny_text_model

    return save_tiny_text_model(out, num_labels=2)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 1-layer ViT image classifier (16x16 inputs) and its processor, saved with save_pretrained."""
    return _once("vit", lambda: _save_tiny_vit(tmp_path_factory.mktemp("tiny_vit")))


def _save_tiny_vit(out: Path) -> Path:
    import torch
    import transformers as T

    torch.manual_seed(0)
    cfg = T.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                      image_size=16, patch_size=8, num_labels=2)
    T.ViTForImageClassification(cfg).save_pretrained(out)
    T.ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(out)  # a run needs normalisation
    return out


@pytest.fixture(scope="session")
def seed_checkpoint(tmp_path_factory, tiny_model_dir) -> Path:
    """``out/checkpoint-1`` of the rows' own config: a 3-step run, its checkpoints 2 and 3 removed."""
    return _once("seed", lambda: _seed_run(tmp_path_factory.mktemp("seed_run"), tiny_model_dir))


def _seed_run(base: Path, tiny_model_dir: Path) -> Path:
    from tl_hf.cli import main

    make_data(base / "data")
    (base / "run.yaml").write_text(run_config_text(tiny_model_dir))
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert main(["run", "run.yaml"]) == 0
    finally:
        os.chdir(cwd)
    for extra in ("checkpoint-2", "checkpoint-3"):
        shutil.rmtree(base / "out" / extra, ignore_errors=True)
    ckpt = base / "out" / "checkpoint-1"
    assert (ckpt / "tl_hf_state.json").is_file() and (ckpt / "trainer_state.json").is_file()
    return ckpt


@dataclass
class Ctx:
    tmp: Path
    model: Path
    data: Path
    out: Path
    cfg: Path
    vit: Path | None = None
    extra: dict = field(default_factory=dict)

    def append(self, text: str) -> None:
        self.cfg.write_text(self.cfg.read_text() + text)

    def replace(self, old: str, new: str) -> None:
        text = self.cfg.read_text()
        assert old in text, f"{old!r} not in the config"
        self.cfg.write_text(text.replace(old, new, 1))

    def drop_checkpoint(self) -> None:
        shutil.rmtree(self.out / "checkpoint-1")


def new_ctx(tmp_path: Path, monkeypatch, model: Path, config_text: str, write_data) -> Ctx:
    """A row's folder: the test's tmp folder as the current directory (offline, no debug tracebacks), ``data/``
    filled by ``write_data(folder)``, ``run.yaml`` = ``config_text``, and ``out/`` holding a sentinel file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TL_HF_DEBUG", raising=False)
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_data(data)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(config_text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "SENTINEL.txt").write_text("existing results that must survive a failed run\n")
    return Ctx(tmp=tmp_path, model=model, data=data, out=out, cfg=cfg)


@pytest.fixture
def ctx(tmp_path, tiny_model_dir, seed_checkpoint, monkeypatch) -> Ctx:
    c = new_ctx(tmp_path, monkeypatch, tiny_model_dir, run_config_text(tiny_model_dir), make_data)
    out = c.out
    shutil.copytree(seed_checkpoint, out / "checkpoint-1")  # copy2: bytes and mtimes as in the seed run
    for f in seed_checkpoint.parent.glob("tl_hf_*.json"):  # the run's own records next to its checkpoints
        shutil.copy2(f, out / f.name)
    return c


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mtime_ns) of every file under ``folder``."""
    snap = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            snap[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return snap


PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")  # a tqdm progress bar (datasets' "Map: 100%|...| 8/8 [...]")


def assert_one_line_refusal(rc: int, err: str, expected, prog: str = "tl-hf") -> str:
    """Exit code 2 and exactly one line on stderr, ``{prog}: error: ...``, matching ``expected`` (a regex, or a
    list of substrings that must all occur); progress bars do not count as lines. Returns the message."""
    assert rc == 2, f"exit code {rc}, expected 2; stderr: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {lines[:5]}"
    msg = lines[0]
    assert msg.startswith(prog) and ": error: " in msg, msg
    if isinstance(expected, str):
        assert re.search(expected, msg), f"pattern {expected!r} not found in {msg!r}"
    else:
        for s in expected:
            assert s in msg, f"{s!r} not in {msg!r}"
    return msg


def expect_refusal(ctx: Ctx, argv: list[str], expected, capsys, *, new_files: bool = False) -> str:
    """Run ``tl-hf`` in process and check the bad-input contract (see the module docstring)."""
    from tl_hf.cli import main

    before = snapshot(ctx.out)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    msg = assert_one_line_refusal(rc, err, expected)
    after = snapshot(ctx.out)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"existing outputs modified or removed: {changed}"
    added = sorted(set(after) - set(before))
    assert new_files or not added, f"a refused run left new files in the output folder: {added}"
    return msg


MAX_MESSAGE = 600  # a refusal is one readable line: never a flattened worker traceback (issue 16: 1.5 kB)


def all_of(*patterns: str) -> str:
    """A regex that matches when every one of ``patterns`` occurs, in any order (case-insensitive)."""
    return "(?is)^" + "".join(f"(?=.*{p})" for p in patterns)


def fresh(prep=None):
    """A row whose own error comes from the data or the model: without checkpoint-1, since a config change against
    it is refused first, as a resume with another config (checked before anything is loaded)."""
    def run(c):
        c.drop_checkpoint()
        return prep(c) if prep else None
    return run


def row(id_: str, prep, overrides: list[str], expected, *, vit: bool = False, new_files: bool = False, marks=()):
    """One named CLI row: ``prep(ctx)`` edits the config / files (and may return more overrides), ``expected`` is a
    regex (or a list of substrings) for the one error line; ``{tmp}`` stands for the test's folder. ``vit``: the row
    needs ``ctx.vit``; ``new_files``: the refusal comes after training (a push), so new files are expected."""
    return pytest.param(prep, overrides, expected, {"vit": vit, "new_files": new_files}, id=id_, marks=marks)


def run_cli_row(ctx: Ctx, prep, overrides, expected, opts, capsys, request) -> str:
    if opts["vit"]:
        ctx.vit = request.getfixturevalue("tiny_vit_dir")
    extra = prep(ctx) if prep else None
    extra = extra if isinstance(extra, list) else []  # a prep may return what its last call returned
    argv = ["run", str(ctx.cfg), *[o.replace("{tmp}", str(ctx.tmp)) for o in [*overrides, *extra]]]
    if isinstance(expected, str):
        expected = expected.replace("{tmp}", re.escape(str(ctx.tmp)))
    else:
        expected = [s.replace("{tmp}", str(ctx.tmp)) for s in expected]
    msg = expect_refusal(ctx, argv, expected, capsys, new_files=opts["new_files"])
    assert len(msg) <= MAX_MESSAGE, f"a {len(msg)}-character error line: {msg[:300]}..."
    return msg


def write_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def files_overrides(train: str, eval_: str | None = None, text: str = "text", label: str = "label") -> list[str]:
    return [f"data.train_file={train}", f"data.eval_file={eval_ or train}", f"data.text_column={text}",
            f"data.label_column={label}"]


def model_copy(ctx: Ctx, name: str = "model_copy") -> Path:
    d = ctx.tmp / name
    shutil.copytree(ctx.model, d)
    return d
