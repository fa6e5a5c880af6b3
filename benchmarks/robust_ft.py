"""Issue 12 evidence with MiniLM: LP-FT and WiSE-FT in vs out of distribution, and few-sample stability with re-init.

One (grid, row, seed) cell per invocation, appended to ``benchmarks/results/robust_ft.jsonl`` (finished cells skipped).

    python benchmarks/robust_ft.py --print-plan        # every cell's command (finished ones marked), time estimate
    python benchmarks/robust_ft.py --grid ood --row lp_ft --seed 0
    python benchmarks/robust_ft.py --report            # tables (mean ± std) -> benchmarks/results/robust_ft.json
    python benchmarks/robust_ft.py --small             # smoke: every row at seed 0 on tiny data, 2 steps, no writes
    python benchmarks/robust_ft.py                     # every pending cell (one process each), then --report

**Grid ``ood``**, seeds 0-2: the nested 8,000-example SST-2 subset of ``sst2_strategies.py``, 1 epoch, batch 32, max
length 64, length-grouped batches (as ``time_to_accuracy.py``), linear schedule, 10 % warm-up; evaluated on SST-2 dev
(872, in distribution), CR (1,000 seeded rows) and IMDB (500, truncated to 64 tokens) as ``sst2_minilm_lp_ft.yaml``.
``full``: ``transformers.Trainer``, lr 5e-5, [CLS] pooler. ``llrd``: TransferTrainer, LLRD 0.9 from a head lr of 2e-4,
[CLS] pooler; ``llrd_mean``: the same on mean pooling (LP-FT differs from ``llrd`` in pooling *and* head: this control
separates them). ``lp``: linear probe, mean pooling (``1_Pooling``), the classifier alone on the feature cache, 10
epochs, lr 1e-2. ``lp_sklearn``: the issue's reference on the same rows, sklearn ``LogisticRegression`` on the
mean-pooled frozen features (deterministic: seed 0 only). ``lp_ft``: the ``lp`` probe, then everything from it as
``llrd_mean`` (its own 1-epoch schedule). ``wise_<alpha>``: WiSE-FT of the best fine-tuned row (``full`` / ``llrd`` /
``llrd_mean`` / ``lp_ft`` with the highest mean SST-2 dev accuracy, or ``--wise-source``; ``wise_lp_ft_<alpha>``:
of ``lp_ft`` always), evaluations only:
``(1 - alpha) theta_init + alpha theta_ft`` per seed (``tl_hf.run.wise_ft.wise_ft_sweep``), theta_init as the library
defines it: the model before fine-tuning (checkpoint backbone and pooler, the seeded fresh classifier), or the linear
probe for ``lp_ft``. The fine-tuning cells save both states (safetensors) under ``--models-dir`` for these cells.

**Grids ``rte`` and ``sst2_500``**, seeds 0-4 (few-sample stability): RTE full train (2,490 pairs, max length 128,
batch 16, 1 epoch = 156 steps, length-grouped; dev 277) and the first 500 of the nested SST-2 subset (the 500 cell of
``sst2_strategies.py``: 5 epochs, batch 32, not grouped; its plain / llrd seeds 0-2 should repeat that grid's).
``plain``: ``transformers.Trainer``, lr 5e-5; ``reinit1`` / ``reinit2``: the same after ``reinit_top_blocks`` (the
model's own ``_init_weights``, the run's seed) of the top 1 / 2 blocks and, as Zhang et al. 2021, the pooler; ``llrd``
as above. Reported: mean, std, worst seed, degenerate runs (dev accuracy within 1 point of the majority-class rate).

Estimated times on 2 idle cores (``EST_MIN``, guessed from earlier measured runs, not from this script): grid ``ood``
~95 min (25 cells), ``rte`` ~60 min (20), ``sst2_500`` ~40 min (20): about 3.2 h in all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, append_jsonl, markdown_table, read_jsonl, write_result  # noqa: E402
from sst2_strategies import build, load_glue  # noqa: E402

FT_ROWS = ("full", "llrd", "llrd_mean", "lp_ft")  # the WiSE-FT candidates
ALPHAS = (0.25, 0.5, 0.75)
WISE_LP_FT = "wise_lp_ft_"  # rows wise_lp_ft_<alpha>: WiSE-FT of lp_ft (from its probe), whichever row is best
ROWS = {"ood": FT_ROWS[:3] + ("lp", "lp_sklearn", "lp_ft") + tuple(f"wise_{a}" for a in ALPHAS)
        + tuple(f"{WISE_LP_FT}{a}" for a in ALPHAS),
        "rte": ("plain", "reinit1", "reinit2", "llrd")}
ROWS["sst2_500"] = ROWS["rte"]
SEEDS = {"ood": 3, "rte": 5, "sst2_500": 5}
DATA = {"ood": dict(dataset="sst2", n_train=8000, epochs=1, batch=32, max_length=64, grouped=True),
        "rte": dict(dataset="rte", n_train=None, epochs=1, batch=16, max_length=128, grouped=True),
        "sst2_500": dict(dataset="sst2", n_train=500, epochs=5, batch=32, max_length=64, grouped=False)}
#: row -> (build() strategy, learning rate, mean pooling)
RECIPE = {"full": ("plain", 5e-5, False), "plain": ("plain", 5e-5, False), "reinit1": ("plain", 5e-5, False),
          "reinit2": ("plain", 5e-5, False), "llrd": ("llrd", 2e-4, False), "llrd_mean": ("llrd", 2e-4, True),
          "lp_ft": ("llrd", 2e-4, True)}
LP = {"lr": 1e-2, "epochs": 10}
OOD_SETS = [{"name": "cr", "dataset": "cr", "max_samples": 1000},
            {"name": "imdb", "dataset": "imdb_test2000", "max_samples": 500}]
#: minutes per cell on 2 idle cores (estimates from the measured SST-2 / RTE runs, not from this script)
EST_MIN = {"ood": {"full": 6, "llrd": 5, "llrd_mean": 5, "lp": 3, "lp_sklearn": 2, "lp_ft": 8, "wise": 1.2},
           "rte": 3, "sst2_500": 2}
TIMEOUT = {"ood": 720, "rte": 300, "sst2_500": 300}
JSONL = RESULTS / "robust_ft.jsonl"
MODELS = ROOT / "outputs" / "robust_ft_models"


def load_data(grid: str, small: bool, data_root=None):
    """``(train, {set name: tokenized eval set}, tokenizer)``; the eval sets sorted by length (less padding)."""
    d = DATA[grid]
    train, dev, tok = load_glue(d["dataset"], d["n_train"], data_root, d["max_length"])
    sets = {"sst2" if grid == "ood" else "dev": dev}
    if grid == "ood":
        from tl_hf.run.data.eval_sets import load_extra_eval_sets

        extra, _ = load_extra_eval_sets(OOD_SETS, root=data_root, label_names=["negative", "positive"],
                                        tokenizer=tok, max_length=d["max_length"])
        sets.update(extra)
    if small:
        train = train.select(range(64))
        sets = {k: v.select(range(16)) for k, v in sets.items()}
    by_length = {k: v.select(np.argsort([len(x) for x in v["input_ids"]], kind="stable")) for k, v in sets.items()}
    return train, by_length, tok


def _trainer(grid, strategy, train, sets, tok, *, seed, out, small, lr, epochs=None, **kw):
    d = DATA[grid]
    extra = {"per_device_train_batch_size": d["batch"]}
    if d["grouped"]:
        extra["train_sampling_strategy"] = "group_by_length"
    return build(strategy, train, next(iter(sets.values())), tok, seed=seed, epochs=epochs or d["epochs"], out=out,
                 lr=lr, max_steps=2 if small else -1, extra_args=extra, **kw)


def _scores(name: str, pred, labels) -> dict:
    pred = np.asarray(pred)
    return {f"{name}_accuracy": float((pred == np.asarray(labels)).mean()),
            f"{name}_pred_counts": np.bincount(pred, minlength=2).tolist()}


def _evaluate(tr, sets) -> dict:
    """Accuracy and predicted-class counts on every set (predictions of the trainer's current model)."""
    out = {}
    for name, ds in sets.items():
        p = tr.predict(ds)
        out.update(_scores(name, np.asarray(p.predictions).argmax(-1), p.label_ids))
    return out


def _timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, round(time.perf_counter() - t0, 1)


def _save_states(models_dir: Path, row: str, seed: int, init: dict, ft: dict) -> None:
    from safetensors.torch import save_file

    models_dir.mkdir(parents=True, exist_ok=True)
    for kind, state in (("init", init), ("ft", ft)):
        path = models_dir / f"{row}_seed{seed}_{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _prepare(row: str, seed: int, probe: dict | None = None):
    """The model change of a row before its trainer is built (mean pooling, re-init, the probed head)."""
    from tl_hf.core.pooling import apply_mean_pooling
    from tl_hf.core.reinit import reinit_top_blocks

    def prepare(model):
        if row.startswith("reinit"):
            reinit_top_blocks(model, int(row[len("reinit"):]), pooler=True, seed=seed)
        if row in ("lp", "lp_sklearn") or RECIPE.get(row, (0, 0, False))[2]:
            apply_mean_pooling(model)
        if probe is not None:
            model.load_state_dict(probe)

    return prepare


def _probe(grid, train, sets, tok, seed, out, small):
    """The ``lp`` row's trainer after training: mean pooling, backbone frozen, classifier on cached features."""
    tr = _trainer(grid, "feature_extraction", train, sets, tok, seed=seed, out=out, small=small, lr=LP["lr"],
                  epochs=LP["epochs"], prepare_model=_prepare("lp", seed),
                  freezing={"policy": "feature_extraction", "cache_features": True})
    res, train_s = _timed(tr.train)
    return tr, {"probe_train_s": train_s, "probe_steps": res.global_step, "probe_train_loss": res.training_loss}


def _finetune(grid, row, seed, data, small, out, models_dir):
    """Rows full / llrd / llrd_mean / lp_ft / plain / reinitK: train, evaluate, save the states (grid ood)."""
    from tl_hf.core.wise_ft import snapshot

    train, sets, tok = data
    info, probe = {}, None
    if row == "lp_ft":
        lp, info = _probe(grid, train, sets, tok, seed, out, small)
        probe = snapshot(lp.model)
        del lp
    strategy, lr, _ = RECIPE[row]
    tr = _trainer(grid, strategy, train, sets, tok, seed=seed, out=out, small=small, lr=lr,
                  prepare_model=_prepare(row, seed, probe))
    init = snapshot(tr.model) if grid == "ood" else None
    res, train_s = _timed(tr.train)
    ev, eval_s = _timed(lambda: _evaluate(tr, sets))
    if init is not None:
        _save_states(models_dir, row, seed, init, snapshot(tr.model))
    return {**ev, **info, "train_s": train_s, "eval_s": eval_s, "steps": res.global_step,
            "train_loss": res.training_loss, "lr": lr, "strategy": strategy}


def _lp(grid, seed, data, small, out):
    train, sets, tok = data
    tr, info = _probe(grid, train, sets, tok, seed, out, small)
    ev, eval_s = _timed(lambda: _evaluate(tr, sets))
    return {**ev, **info, "train_s": info["probe_train_s"], "eval_s": eval_s, "lr": LP["lr"], "epochs": LP["epochs"]}


def _lp_sklearn(grid, data, small, out):
    """sklearn ``LogisticRegression()`` on the mean-pooled eval-mode features of the frozen backbone."""
    import torch
    from sklearn.linear_model import LogisticRegression

    train, sets, tok = data
    tr = _trainer(grid, "plain", train, sets, tok, seed=0, out=out, small=small, lr=0.0,
                  prepare_model=_prepare("lp_sklearn", 0))
    model = tr.model.eval()

    def features(ds):
        xs, ys = [], []
        with torch.no_grad():
            for batch in tr.get_eval_dataloader(ds):
                ys.append(batch.pop("labels").numpy())
                xs.append(model.base_model(**batch).pooler_output.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    (x, y), feat_s = _timed(lambda: features(train))
    clf, fit_s = _timed(lambda: LogisticRegression(max_iter=1000).fit(x, y))
    ev = {}
    for name, ds in sets.items():
        xe, ye = features(ds)
        ev.update(_scores(name, clf.predict(xe), ye))
    return {**ev, "train_s": round(feat_s + fit_s, 1), "features_s": feat_s, "fit_s": fit_s,
            "classifier": "sklearn LogisticRegression(max_iter=1000), defaults otherwise"}


def wise_source(done: list[dict], forced: str | None = None) -> str:
    """The fine-tuned row WiSE-FT interpolates: ``forced``, or the best mean SST-2 dev accuracy over all seeds."""
    if forced:
        return forced
    means = {}
    for row in FT_ROWS:
        accs = [r["sst2_accuracy"] for r in done if r["grid"] == "ood" and r["row"] == row]
        if len(accs) < (1 if all(r.get("small") for r in done) else SEEDS["ood"]):
            raise SystemExit(f"WiSE-FT cells need every seed of {', '.join(FT_ROWS)} first ({row}: {len(accs)} of "
                             f"{SEEDS['ood']}); see --print-plan, or choose the row with --wise-source")
        means[row] = statistics.mean(accs)
    return max(means, key=means.get)


def _wise(alpha, source, seed, data, small, out, models_dir):
    from safetensors.torch import load_file

    from tl_hf.run.wise_ft import wise_ft_sweep

    train, sets, tok = data
    paths = [models_dir / f"{source}_seed{seed}_{kind}.safetensors" for kind in ("init", "ft")]
    if not all(path.is_file() for path in paths):
        raise SystemExit(f"WiSE-FT of {source} seed {seed}: {paths[0].name} / {paths[1].name} missing in {models_dir}"
                         f" (the ood/{source}/seed {seed} cell saves them; rerun it after deleting its jsonl row)")
    init, ft = (load_file(str(path)) for path in paths)
    strategy, lr, _ = RECIPE[source]
    tr = _trainer("ood", strategy, train, sets, tok, seed=seed, out=out, small=small, lr=lr,
                  prepare_model=_prepare(source, seed, ft))
    extra = {k: v for k, v in sets.items() if k != "sst2"}
    res, eval_s = _timed(lambda: wise_ft_sweep(tr, init, [alpha], extra_eval_sets=extra))
    curve = res["curve"][0]
    ev = {f"{k}_accuracy": curve[f"{'eval' if k == 'sst2' else k}_accuracy"] for k in sets}
    return {**ev, "eval_s": eval_s, "alpha": alpha, "source": source,
            "theta_init": "the linear probe" if source == "lp_ft" else "the model before fine-tuning"}


def wise_row(row: str, done=(), forced_source=None) -> tuple[float, str]:
    """(alpha, source) of a WiSE-FT row: ``wise_lp_ft_<alpha>`` interpolates lp_ft, ``wise_<alpha>`` the best row."""
    if row.startswith(WISE_LP_FT):
        return float(row[len(WISE_LP_FT):]), "lp_ft"
    return float(row[len("wise_"):]), wise_source(list(done), forced_source)


def run_cell(grid, row, seed, data, *, small=False, models_dir=MODELS, done=(), forced_source=None) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        if row.startswith("wise_"):
            res = _wise(*wise_row(row, done, forced_source), seed, data, small, out, models_dir)
        elif row == "lp":
            res = _lp(grid, seed, data, small, out)
        elif row == "lp_sklearn":
            res = _lp_sklearn(grid, data, small, out)
        else:
            res = _finetune(grid, row, seed, data, small, out, models_dir)
    row_out = {"grid": grid, "row": row, "seed": seed, **res, "wall_s": round(time.perf_counter() - t0, 1),
               "n_train": len(data[0])}
    if grid != "ood":
        labels = np.asarray(data[1]["dev"]["label"])
        row_out["majority"] = float(np.bincount(labels).max() / len(labels))
    if small:
        row_out["small"] = True
    return row_out


def plan() -> list[tuple[str, str, int]]:
    """Every cell, in the order to run them (the WiSE-FT cells after the fine-tuning cells they read)."""
    cells = []
    for grid, rows in ROWS.items():
        for row in rows:
            seeds = [0] if row == "lp_sklearn" else range(SEEDS[grid])
            cells += [(grid, row, s) for s in seeds]
    return cells


def _est(grid, row) -> float:
    e = EST_MIN[grid]
    return e if not isinstance(e, dict) else e["wise" if row.startswith("wise_") else row]


def print_plan(done: list[dict]) -> None:
    have = {(r["grid"], r["row"], r["seed"]) for r in done}
    left = 0.0
    for grid, row, seed in plan():
        finished = (grid, row, seed) in have
        left += 0 if finished else _est(grid, row)
        print(f"flock /tmp/tl_hf_cpu.lock timeout {TIMEOUT[grid]} python benchmarks/robust_ft.py --grid {grid} "
              f"--row {row} --seed {seed}" + ("   # done" if finished else f"   # ~{_est(grid, row):g} min"))
    print(f"# {len(plan()) - len(have & set(plan()))} of {len(plan())} cells left, about {left / 60:.1f} h on 2 idle "
          "cores; then: python benchmarks/robust_ft.py --report")


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": min(xs),
            "n": len(xs)}


def tables(rows: list[dict]) -> dict:
    """grid -> row -> per-set accuracy statistics (%), mean wall time, and for the few-sample grids the degenerate
    runs (accuracy within 1 point of the majority-class rate)."""
    out = {}
    for grid, names in ROWS.items():
        for name in names:
            rs = [r for r in rows if r["grid"] == grid and r["row"] == name]
            if not rs:
                continue
            sets = [k[: -len("_accuracy")] for k in rs[0] if k.endswith("_accuracy")]
            cell = {s: _stats([r[f"{s}_accuracy"] * 100 for r in rs]) for s in sets}
            cell["wall_s_mean"] = statistics.mean(r["wall_s"] for r in rs)
            cell["seeds"] = sorted(r["seed"] for r in rs)
            if grid != "ood":
                cell["degenerate"] = sum(abs(r["dev_accuracy"] - r["majority"]) <= 0.01 for r in rs)
                cell["majority_pct"] = rs[0]["majority"] * 100
            if name.startswith("wise_"):
                cell["source"] = sorted({r["source"] for r in rs})
            out.setdefault(grid, {})[name] = cell
    return out


def _fmt(c: dict) -> str:
    return f"{c['mean']:.1f} ± {c['std']:.1f} (min {c['min']:.1f})"


def report(rows: list[dict]) -> str:
    tab = tables(rows)
    tables_md = []
    if "ood" in tab:
        tables_md.append(markdown_table(
            ["row (grid ood)", "SST-2 dev (%)", "CR (%)", "IMDB (%)", "wall per cell (s)", "seeds"],
            [[f"{n}{' of ' + '/'.join(c['source']) if 'source' in c else ''}", _fmt(c["sst2"]), _fmt(c["cr"]),
              _fmt(c["imdb"]), f"{c['wall_s_mean']:.0f}", len(c["seeds"])] for n, c in tab["ood"].items()]))
    for grid in ("rte", "sst2_500"):
        if grid in tab:
            tables_md.append(markdown_table(
                [f"row ({grid})", "dev mean ± std (%)", "worst seed", "degenerate", "wall per cell (s)", "seeds"],
                [[n, f"{c['dev']['mean']:.1f} ± {c['dev']['std']:.1f}", f"{c['dev']['min']:.1f}",
                  f"{c['degenerate']} of {len(c['seeds'])} (majority {c['majority_pct']:.1f})",
                  f"{c['wall_s_mean']:.0f}", len(c["seeds"])] for n, c in tab[grid].items()]))
    return "\n\n".join(tables_md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=sorted(ROWS))
    ap.add_argument("--row")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--small", action="store_true", help="smoke: every row at seed 0, tiny data, 2 steps, no writes")
    ap.add_argument("--report", action="store_true", help="tables from the jsonl -> benchmarks/results/robust_ft.json")
    ap.add_argument("--print-plan", action="store_true", help="every cell's command, finished ones marked")
    ap.add_argument("--wise-source", choices=FT_ROWS, help="the fine-tuned row WiSE-FT interpolates (default: best)")
    ap.add_argument("--models-dir", type=Path, default=MODELS, help="theta_init / theta_ft of the grid-ood cells")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    done = read_jsonl(JSONL)
    if args.print_plan:
        print_plan(done)
        return 0
    if args.report:
        md = report(done)
        write_result("robust_ft", {"settings": {"data": DATA, "recipes": RECIPE, "lp": LP, "ood_sets": OOD_SETS},
                                   "tables": tables(done), "runs": done})
        print(md)
        return 0
    import transformers

    transformers.logging.set_verbosity_error()
    if args.small:
        return smoke(args.data_root)
    if args.grid is None and args.row is None and args.seed is None:  # every pending cell, each in its own process
        have = {(r["grid"], r["row"], r["seed"]) for r in done}
        for grid, row, seed in (c for c in plan() if c not in have):
            subprocess.run([sys.executable, __file__, "--grid", grid, "--row", row, "--seed", str(seed),
                            "--models-dir", str(args.models_dir)], check=True)
        return main(["--report"])
    if args.grid is None or args.row not in ROWS[args.grid] or (args.grid, args.row, args.seed) not in plan():
        ap.error(f"give --grid, --row and --seed of a cell in --print-plan (rows of {args.grid}: "
                 f"{', '.join(ROWS.get(args.grid, ()))})")
    return run_one(args, done)


def run_one(args, done: list[dict]) -> int:
    """One cell of the plan: skipped when the jsonl has it, else run and appended."""
    if any((r["grid"], r["row"], r["seed"]) == (args.grid, args.row, args.seed) for r in done):
        print(f"{args.grid}/{args.row}/seed {args.seed}: done already ({JSONL.name})")
        return 0
    data = load_data(args.grid, False, args.data_root)
    row = run_cell(args.grid, args.row, args.seed, data, models_dir=args.models_dir, done=done,
                   forced_source=args.wise_source)
    append_jsonl(JSONL, row)
    print(json.dumps(row), flush=True)
    return 0


def smoke(data_root=None) -> int:
    """Every row of every grid at seed 0 on tiny data (2 optimizer steps), states in a temporary folder; checks that
    WiSE-FT at alpha 1 reproduces the saved fine-tuned model (the auto-chosen source and lp_ft); prints the rows and
    the report tables, writes nothing."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as models:
        for grid in ROWS:
            data = load_data(grid, True, data_root)
            for row in ROWS[grid]:
                rows.append(run_cell(grid, row, 0, data, small=True, models_dir=Path(models), done=rows))
                print(json.dumps(rows[-1]), flush=True)
            if grid == "ood":
                _check_alpha_one(rows, data, Path(models))
    print(report(rows))
    return 0


def _check_alpha_one(rows: list[dict], data, models_dir: Path) -> None:
    keys = ("sst2_accuracy", "cr_accuracy", "imdb_accuracy")
    for source in sorted({"lp_ft"} | {r["source"] for r in rows if r["row"].startswith("wise_")}):
        with tempfile.TemporaryDirectory() as out:
            end = _wise(1.0, source, 0, data, True, out, models_dir)
        ft = next(r for r in rows if r["grid"] == "ood" and r["row"] == source)
        if any(end[k] != ft[k] for k in keys):
            raise AssertionError(f"WiSE-FT alpha 1 of {source} {[end[k] for k in keys]} != the fine-tuned model "
                                 f"{[ft[k] for k in keys]}")
        print(f"smoke: WiSE-FT alpha 1 of {source} equals its fine-tuned model ({[end[k] for k in keys]})")


if __name__ == "__main__":
    raise SystemExit(main())
