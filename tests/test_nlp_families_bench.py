"""benchmarks/nlp_families.py without training: the cell configs differ only in the strategy, the degenerate-run
rule, the report's aggregation and the plan of the remaining cells (its smoke run is in test_benchmarks_smoke)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nlp_families as nf


def test_plain_and_tl_hf_cells_differ_only_in_the_strategy():
    plain = nf.cell_config("glue_rte", "plain", 1, "/tmp/o")
    tl = nf.cell_config("glue_rte", "tl_hf", 1, "/tmp/o")
    assert "llrd" not in plain and "freezing" not in plain
    assert tl.pop("llrd") == {"decay": 0.9} and tl.pop("freezing") == {"policy": "top_k", "k": 4}
    assert tl == plain
    assert "freezing" not in nf.cell_config("glue_stsb", "tl_hf", 0, "/tmp/o")
    # the data subset does not move with the training seed
    data = [nf.cell_config("goemotions", "plain", s, "o")["data"] for s in (0, 2)]
    assert data[0] == data[1]
    assert nf.cell_config("squad", "plain", 2, "o")["data"]["seed"] == 0
    small = nf.cell_config("goemotions", "tl_hf", 0, "o", small=True)
    assert small["training"]["max_steps"] == 2 and small["data"]["max_test_samples"] == 16
    with pytest.raises(SystemExit, match="unknown strategy"):
        nf.cell_config("glue_rte", "lora", 0, "o")


def test_degenerate_is_within_one_point_of_the_majority_rate():
    rates = nf.class_rates([0] * 146 + [1] * 131)  # RTE dev: 277 pairs
    assert rates["eval_label_counts"] == [146, 131]
    assert rates["majority_rate"] == pytest.approx(146 / 277)
    assert nf.is_degenerate(0.53, rates["majority_rate"])  # 52.7 %: 0.3 points away
    assert nf.is_degenerate(0.5171, rates["majority_rate"])
    assert not nf.is_degenerate(0.5415, rates["majority_rate"])
    assert not nf.is_degenerate(0.60, rates["majority_rate"])


def _row(ds, st, seed, main, **kw):
    return {"dataset": ds, "strategy": st, "seed": seed, "main": main, "scores": {"eval_f1": main / 2},
            "wall_s": 100.0 + seed, "train_s": 90.0, "steps": 156, "trainable_params_end": 7, "total_params": 9, **kw}


def test_aggregate_gives_points_per_seed_and_degenerate_counts():
    rows = [_row("glue_rte", "plain", s, a, majority_rate=0.527) for s, a in [(0, 0.53), (1, 0.60), (2, 0.52)]]
    rows.append(_row("squad", "tl_hf", 0, 12.5))
    table = nf.aggregate(rows)
    rte = table["glue_rte/plain"]
    assert rte["n"] == 3 and rte["per_seed"] == pytest.approx({"0": 53.0, "1": 60.0, "2": 52.0})
    assert rte["mean"] == pytest.approx(55.0) and rte["std"] == pytest.approx(4.3589, abs=1e-4)
    assert rte["degenerate_runs"] == 2 and rte["majority_rate"] == pytest.approx(52.7)
    assert rte["scores_mean"]["eval_f1"] == pytest.approx(0.275) and rte["wall_s_mean"] == pytest.approx(101.0)
    assert table["squad/tl_hf"]["mean"] == 12.5 and "degenerate_runs" not in table["squad/tl_hf"]  # SQuAD: percent
    assert set(table) == {"glue_rte/plain", "squad/tl_hf"}
    rows += [_row("glue_rte", "tl_hf", s, a, majority_rate=0.527) for s, a in [(0, 0.63), (1, 0.58)]]
    diffs = nf.paired(nf.aggregate(rows))
    assert set(diffs) == {"glue_rte"}  # squad has no plain row
    assert diffs["glue_rte"]["per_seed"] == pytest.approx({"0": 10.0, "1": -2.0})  # seed 2: no tl_hf row
    assert diffs["glue_rte"]["tl_hf_minus_plain"] == pytest.approx(60.5 - 55.0)


def test_plan_lists_each_remaining_cell_once_with_the_strategies_paired():
    full = nf.plan([])
    assert len(full) == 4 * 2 * 3 + 2 * 2
    cmds = [c for c, _ in full]
    assert cmds[0].endswith("--dataset glue_rte --strategy plain --seed 0")
    assert cmds[1].endswith("--dataset glue_rte --strategy tl_hf --seed 0")
    left = nf.plan([_row("glue_rte", "tl_hf", 0, 0.6)], prefix="flock L timeout 600")
    assert len(left) == len(full) - 1
    assert all(c.startswith("flock L timeout 600 python benchmarks/nlp_families.py ") for c, _ in left)
    assert not any(c.endswith("--dataset glue_rte --strategy tl_hf --seed 0") for c, _ in left)
    assert sum(e for _, e in full) == pytest.approx(24 * 3.5 + 2 * 4.5 + 2 * 3.5)


def test_published_table_holds_the_issue_numbers():
    got = {ds: p["score"] for ds, p in nf.PUBLISHED.items()}
    assert got == {"glue_rte": 68.8, "glue_mrpc": 88.9, "glue_stsb": 86.9, "wnut17": 47.4, "squad": 85.8,
                   "goemotions": 46.0}
    assert nf.PUBLISHED["squad"]["exact_match"] == 77.7
    assert set(nf.PUBLISHED) == set(nf.SETTINGS)


def test_report_writes_table_pairs_and_published(monkeypatch, capsys):
    written = {}
    monkeypatch.setattr(nf, "write_result", lambda name, payload: written.update(name=name, **payload))
    rows = [_row("glue_mrpc", st, 0, a, majority_rate=0.684) for st, a in [("plain", 0.684), ("tl_hf", 0.80)]]
    nf.report(rows)
    assert written["name"] == "nlp_families" and written["runs"] == rows
    assert written["table"]["glue_mrpc/plain"]["degenerate_runs"] == 1
    assert written["table"]["glue_mrpc/tl_hf"]["degenerate_runs"] == 0
    assert written["tl_hf_vs_plain"]["glue_mrpc"]["tl_hf_minus_plain"] == pytest.approx(11.6)
    assert written["published"]["glue_mrpc"]["score"] == 88.9
    out = capsys.readouterr().out
    assert "glue_mrpc/plain: eval_accuracy 68.4" in out and "degenerate 1/1" in out and "+11.6 points" in out


def test_families_table_has_one_row_per_dataset_run_and_says_what_is_missing():
    rows = [_row("glue_mrpc", st, 0, a, majority_rate=0.684) for st, a in [("plain", 0.684), ("tl_hf", 0.80)]]
    rows.append(_row("glue_stsb", "plain", 0, 0.5))
    table = nf.aggregate(rows)
    lines = nf.families_table(table, nf.paired(table)).splitlines()
    assert len(lines) == 2 + 2  # header, rule, mrpc, stsb
    assert "| glue_mrpc | eval_accuracy | 68.4 ± 0.0 (n=1, degenerate 1/1) | 80.0 ± 0.0 (n=1, degenerate 0/1) | " \
           "+11.6 (+11.6) |" in lines[2] and "88.9" in lines[2]
    assert lines[3].startswith("| glue_stsb |") and "| not run | - |" in lines[3]
