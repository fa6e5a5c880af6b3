"""Run every benchmark, one after another, each in its own process.

    python benchmarks/run_all.py             # full settings: writes benchmarks/results/*.json and docs/benchmarks.md
    python benchmarks/run_all.py --small     # CI smoke settings: every script end to end, nothing written to docs
    python benchmarks/run_all.py --only step_time fisher_cost

Full settings take about 2.5 hours on a 2-core CPU (the SST-2 grid alone ~1.5 h); each script's docstring gives its
own time. The order runs the timing-sensitive benchmarks first; run them on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: name -> the flag that selects its small (CI smoke) settings
BENCHMARKS = {
    "step_time": "--small", "penalty_overhead": "--quick", "fisher_cost": "--small", "memory": "--small",
    "cached_features": "--small", "cached_features_ddp": "--small", "time_to_accuracy": "--small",
    "split_mnist": "--small", "split_cifar10": "--small",
    "text_sequence": "--small", "sst2_strategies": "--small", "dinov2_layers": "--small",
    "fisher_cost_vision": "--small", "vision_strategies": "--small", "vision_cost": "--small",
    "method_costs": "--small", "robust_ft": "--small", "vision_bn_diagnosis": "--small",
    "nlp_families": "--small",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS))
    args = ap.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    failed = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + ([BENCHMARKS[name]] if args.small else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, env=env)
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
