"""GPU smoke test: the continual text recipe at small settings in bf16 with EWC on, two tasks (TREC -> SST-2), on one
GPU, in well under 5 minutes. Records machine, versions and outcome in docs/gpu_smoke.md. CI never runs it.

    python scripts/gpu_smoke.py            # on a machine with a CUDA GPU
    python scripts/gpu_smoke.py --cpu      # dry run of the same path on the CPU (fp32, no record written)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU (no bf16, nothing recorded)")
    ap.add_argument("--output-dir", default=None,
                    help="default: a fresh temporary folder (a continual run in an existing folder would resume)")
    args = ap.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device; use --cpu for a dry run", file=sys.stderr)
        return 2
    from tl_hf.cli import main as tl_main

    if args.output_dir is None:
        import tempfile

        args.output_dir = tempfile.mkdtemp(prefix="tl_hf_gpu_smoke_")

    overrides = [
        "data.tasks=[trec, sst2]", "data.max_train_samples=256", "data.max_eval_samples=128",
        "training.num_train_epochs=1", f"training.output_dir={args.output_dir}", "training.logging_steps=4",
    ]
    overrides += ["training.use_cpu=true"] if args.cpu else ["training.bf16=true"]
    t0 = time.perf_counter()
    rc = tl_main(["run", str(ROOT / "recipes/configs/continual_text_minilm.yaml"), *overrides])
    wall = time.perf_counter() - t0
    results_path = Path(args.output_dir) / "all_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    ok = rc == 0 and results.get("ACC") is not None and wall < 300
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "outcome": "pass" if ok else "FAIL",
        "exit_code": rc, "wall_s": round(wall, 1), "ACC": results.get("ACC"), "BWT": results.get("BWT"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
    }
    print(json.dumps(record, indent=2))
    if not args.cpu:
        doc = ROOT / "docs" / "gpu_smoke.md"
        doc.write_text("# GPU smoke test (`python scripts/gpu_smoke.py`)\n\nLast result:\n\n```json\n"
                       + json.dumps(record, indent=2) + "\n```\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
