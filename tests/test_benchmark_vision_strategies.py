"""benchmarks/vision_strategies.py bookkeeping without training: the aggregation and the docs table it prints."""

import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import vision_strategies as vs  # noqa: E402


def _row(strategy, seed, acc, start=100, end=100):
    return {"dataset": "cifar10_subset", "backbone": "dinov2", "strategy": strategy, "seed": seed, "accuracy": acc,
            "wall_s": 10.0 + seed, "train_s_per_epoch": 5.0, "trainable_params_start": start,
            "trainable_params_end": end, "total_params": 1000}


def test_report_gives_mean_std_and_a_table_row_per_strategy_in_order():
    rows = [_row("lp_ft", 0, 0.40, 10, 100), _row("plain", 1, 0.30), _row("plain", 0, 0.20), _row("fe_best", 0, 0.5)]
    with mock.patch.object(vs, "write_result") as write:
        agg = vs.report(rows)
    assert write.call_args.args[0] == "vision_strategies"
    plain = agg["cifar10_subset/dinov2/plain"]
    assert plain["n"] == 2 and abs(plain["accuracy_mean"] - 25.0) < 1e-9 and abs(plain["accuracy_std"] - 7.0711) < 1e-3
    lines = vs.strategies_table(agg, rows, "cifar10_subset", "dinov2").splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| plain") and "25.0 ± 7.1 (n=2) | 20.0 / 30.0 | 10 |" in lines[2]  # seeds in order
    assert lines[3].startswith("| feature extraction, block 9 (cached)")
    assert lines[4].startswith("| LP-FT") and "10 then 100 of 1,000" in lines[4]
