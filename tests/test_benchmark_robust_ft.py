"""benchmarks/robust_ft.py bookkeeping without training: the cell plan, the statistics and degenerate-run count of
the report, and the choice of the WiSE-FT source (its smoke run is in test_benchmarks_smoke.py, slow)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import robust_ft  # noqa: E402


def test_plan_has_every_cell_once_and_wise_after_the_rows_it_reads():
    cells = robust_ft.plan()
    # ood: full, llrd, llrd_mean, lp, lp_ft x 3 seeds, lp_sklearn once, 3 alphas x 3 of the best row and of lp_ft;
    # rte, sst2_500: 4 rows x 5
    assert len(cells) == len(set(cells)) == (5 * 3 + 1 + 2 * 3 * 3) + 2 * (4 * 5)
    first_wise = min(i for i, (_, r, _) in enumerate(cells) if r.startswith("wise_"))
    last_ft = max(i for i, (g, r, _) in enumerate(cells) if g == "ood" and r in robust_ft.FT_ROWS)
    assert last_ft < first_wise
    assert {s for g, r, s in cells if g == "rte" and r == "reinit2"} == {0, 1, 2, 3, 4}


def _few(seed, acc, majority=0.527):
    return {"grid": "rte", "row": "plain", "seed": seed, "dev_accuracy": acc, "majority": majority, "wall_s": 10.0}


def test_tables_give_mean_std_worst_seed_and_degenerate_runs():
    rows = [_few(0, 0.53), _few(1, 0.60), _few(2, 0.518), _few(3, 0.64), _few(4, 0.5365)]
    cell = robust_ft.tables(rows)["rte"]["plain"]
    accs = [53.0, 60.0, 51.8, 64.0, 53.65]
    assert cell["dev"]["mean"] == pytest.approx(sum(accs) / 5)
    assert cell["dev"]["std"] == pytest.approx(5.2671, abs=1e-3)  # sample std
    assert cell["dev"]["min"] == pytest.approx(51.8)
    assert cell["degenerate"] == 3  # 53.0, 51.8 and 53.65 lie within 1 point of the majority rate 52.7
    assert "| plain | 56.5 ± 5.3 | 51.8 | 3 of 5 (majority 52.7) |" in robust_ft.report(rows)


def _ood(row, seed, acc):
    return {"grid": "ood", "row": row, "seed": seed, "sst2_accuracy": acc, "cr_accuracy": 0.7, "imdb_accuracy": 0.6,
            "wall_s": 1.0}


def test_wise_source_is_the_best_mean_dev_row_and_needs_every_seed():
    rows = [_ood(r, s, acc + 0.01 * s) for r, acc in zip(robust_ft.FT_ROWS, (0.84, 0.86, 0.855, 0.85))
            for s in range(3)]
    assert robust_ft.wise_source(rows) == "llrd"
    rows.append({**_ood("wise_0.5", 0, 0.85), "source": "llrd"})
    assert "| wise_0.5 of llrd | 85.0 ± 0.0 (min 85.0) | 70.0 ± 0.0 (min 70.0) |" in robust_ft.report(rows)
    assert robust_ft.wise_source(rows, forced="lp_ft") == "lp_ft"
    assert robust_ft.wise_row("wise_lp_ft_0.25", rows) == (0.25, "lp_ft")
    assert robust_ft.wise_row("wise_0.75", rows) == (0.75, "llrd")
    with pytest.raises(SystemExit, match="lp_ft: 2 of 3"):
        robust_ft.wise_source([r for r in rows if not (r["row"] == "lp_ft" and r["seed"] == 2)])
