"""scripts/gpu_smoke.py's benchmark, dry run on the CPU (``--cpu``): the same code path as on a GPU (plain Trainer,
TransferTrainer + LLRD, + EWC with its Fisher), fp32, tiny step counts, on a tiny model folder; nothing recorded."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from tests.tiny import save_tiny_text_model

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "scripts" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_dry_run_on_the_cpu(tmp_path, capsys):
    gs = _script()
    model = save_tiny_text_model(tmp_path / "model")
    doc = ROOT / "docs" / "gpu_smoke.md"
    before = doc.read_text()
    assert gs.main(["--cpu", "--bench-only", "--model", str(model)]) == 0
    assert doc.read_text() == before, "a CPU dry run records nothing"
    res = json.loads(capsys.readouterr().out)  # the --cpu sizes: 1 round, 1 warm-up + 2 timed steps, batch 4 x 16
    assert res["settings"]["dtype"] == "fp32" and res["settings"]["timed_steps"] == 2
    assert set(res["step_s"]) == set(gs.VARIANTS)
    assert all(len(v) == 1 and all(t > 0 for t in v) for v in res["step_s_per_round"].values())
    r = res["ratios"]
    assert math.isfinite(r["transfer_llrd_over_plain"]) and r["transfer_llrd_over_plain"] > 0
    assert math.isfinite(r["ewc_over_no_ewc"]) and r["ewc_over_no_ewc"] > 0
    assert res["peak_mib"] == {v: None for v in gs.VARIANTS} and r["peak_ewc_over_no_ewc"] is None  # no GPU
