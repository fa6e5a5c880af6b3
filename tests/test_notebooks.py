"""The example notebooks in notebooks/ run end to end at their small settings (TL_HF_NOTEBOOK_SMALL=1) and draw plots;
the committed files carry the outputs of such a run.

Each notebook is executed with nbclient in a fresh IPython kernel that runs on this interpreter (sys.executable), from
the notebooks/ folder, with the real MiniLM and the shared data root. Trainer outputs go to tmp_path.
"""

import json
import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebooks run in; nbclient, nbformat, ipykernel are dev extras)
import nbclient
import nbformat
import pytest
from conftest import real_data_root

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NEEDS = {"01": "sst2", "02": "sst2", "03": "mnist_t10k"}


def test_all_three_notebooks_are_found():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


def _load_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_make_notebooks", REPO / "notebooks" / "_make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_notebooks_are_executed_small_and_match_the_generator():
    """Committed with their outputs from a small run (plots inline, readable on GitHub / the Hub), the sources exactly
    what notebooks/_make_notebooks.py writes, nothing volatile (timings, absolute paths), and small files."""
    gen = _load_generator()
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        want = gen.build(gen.NOTEBOOKS[path.name])
        assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in want.cells], \
            f"{path.name}: sources differ from _make_notebooks.py; rerun it with --execute"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{path.name}: not executed"
        outs = [o for c in code for o in c.outputs]
        assert sum("image/png" in o.get("data", {}) for o in outs) >= 3, f"{path.name}: plots missing"
        assert not [o for o in outs if o.output_type == "error"]
        text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
        assert "SMALL=True" in text, f"{path.name}: outputs not from the small settings"
        for volatile in ("/tmp/", "/work/", "/home/", "/root/"):
            assert volatile not in text, f"{path.name}: absolute path {volatile!r} in the outputs"
        assert not [c for c in nb.cells if "execution" in c.metadata], f"{path.name}: cell timings kept"
        assert set(nb.metadata) == {"kernelspec", "language_info"}
        assert path.stat().st_size < 400_000, f"{path.name}: {path.stat().st_size} bytes"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A private 'python3' kernel spec that starts this interpreter; nothing is registered outside tmp_path."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tl_hf tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))          # searched first
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))   # connection files
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))            # no ~/.ipython profile
    monkeypatch.setenv("TL_HF_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("TL_HF_NOTEBOOK_OUTPUT_DIR", str(tmp_path / "outputs"))
    return tmp_path


# ~35 s for the three on 2 idle cores, 65-90 s on 2 shared ones (kernel start, imports, the real MiniLM): slow
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_small_and_plots(path, kernel_env, monkeypatch):
    root = real_data_root(NEEDS[path.name[:2]])
    monkeypatch.setenv("TL_HF_DATA_ROOT", str(root.resolve()))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL_PYTHON=' + sys.executable)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell

    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert pngs, f"{path.name} produced no image/png output"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # the kernel ran on this interpreter, with the small settings
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    assert "SMALL=True" in text
    assert f"KERNEL_PYTHON={sys.executable}" in text
    assert os.listdir(kernel_env / "outputs"), "the notebook wrote its Trainer outputs elsewhere"
