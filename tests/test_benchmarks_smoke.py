"""Every benchmark script runs end to end at its small (CI smoke) settings and writes nothing: the published results
in benchmarks/results/ and docs/benchmarks.md stay as the full runs left them."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from run_all import BENCHMARKS  # noqa: E402


def _snapshot() -> dict[str, str]:
    files = [REPO / "docs" / "benchmarks.md", *sorted((REPO / "benchmarks" / "results").glob("*"))]
    files += sorted((REPO / "docs" / "img").glob("*")) if (REPO / "docs" / "img").is_dir() else []
    return {str(f.relative_to(REPO)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def test_every_benchmark_script_is_listed_in_run_all():
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")} - {"common", "run_all"}
    assert scripts == set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_small_settings_run_and_write_nothing(name):
    before = _snapshot()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), BENCHMARKS[name]], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert _snapshot() == before, f"{name} at small settings changed published results"
