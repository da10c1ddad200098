"""WSD decay branches against the cosine ladder they replace, on the tiny CPU ladder.

    PYTHONPATH=. python tests/benchmarks/bench_wsd.py [--cosine runs/tiny-cpu]
        [--wsd runs/tiny-cpu-wsd] [--json out.json] [--seed N]
    PYTHONPATH=. python tests/benchmarks/bench_wsd.py --smoke     # seconds: the default suite's

Trains (or resumes, or finds done) both sweeps through the demo command, `ladder sweep
recipes/tiny-cpu.yaml` and `ladder sweep recipes/tiny-cpu-wsd.yaml` (--backend local,
--no-predict), then measures, side by side:
  * the ladders' training FLOPs (the plans', and what the run logs say was trained) and their ratio;
  * each decayed branch's final validation loss against the cosine run of the same (size,
    multiplier), in percent (the aim: within 1%);
  * the in-ladder backtest MAE of each layout (accuracy points; the aim: WSD within 1.2x the
    cosine ladder's), for the default fit and, for WSD, both ways of reading its stable phase in
    step 2 (TwoStepConfig.wsd_step2);
  * the held-out tiny target predicted by each ladder, against both targets' actuals (the cosine
    sweep trains it with cosine, the WSD sweep as one WSD run).
--smoke runs the same measurements on two synthetic ladders (a known loss law; the WSD one's
stable-phase rows above it) and plans both real recipes: no training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.annealed import fit_runs  # noqa: E402
from analysis.metrics import resolve_tasks  # noqa: E402
from analysis.practice.backtest import backtest, default_scenarios, mults_by_value  # noqa: E402
from analysis.predict import Target, actual_values, predict_targets  # noqa: E402
from analysis.runlog import RunLog, read_run  # noqa: E402
from analysis.twostep import TwoStepConfig  # noqa: E402

RECIPES = {"cosine": ROOT / "recipes" / "tiny-cpu.yaml", "wsd": ROOT / "recipes" / "tiny-cpu-wsd.yaml"}
VAL = "eval/pystdlib-validation/CrossEntropyLoss"


def run_sweep(recipe: Path, out: Path, seed: int | None = None) -> None:
    """The demo command (resumes, or returns at once when every run is done); ``seed``: the
    same ladder with another seed (``seeds=[N]``), in its own sweep directory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "ladder", "sweep", str(recipe), "--backend", "local",
                    "--out", str(out), "--no-predict", *([f"seeds=[{seed}]"] if seed is not None else [])],
                   check=True, env=env)


def plan_flops() -> dict:
    from ladder.recipe import load_recipe
    from ladder.sweep.plan import plan_sweep

    plans = {k: plan_sweep(load_recipe(p)) for k, p in RECIPES.items()}
    return {k: p.ladder_flops for k, p in plans.items()}


def trained_flops(runs: list[RunLog]) -> float:
    """6 N D of what each run's log says it trained itself (a branch: from its branch point)."""
    total = 0.0
    for r in runs:
        first = (r.meta.extra.get("branch_step") or 0) * float(r.meta.batch_tokens or 0)
        total += 6.0 * r.n * (r.d - first)
    return total


def loss_pairs(cosine: list[RunLog], wsd: list[RunLog], column: str) -> list[dict]:
    """Each decayed branch's final loss against the cosine run of the same name."""
    by_name = {r.name: r for r in cosine}
    out = []
    for b in wsd:
        c = by_name.get(b.name)
        if c is None:
            continue
        lc, lw = float(c.column(column)[-1]), float(b.column(column)[-1])
        out.append({"run": b.name, "cosine": lc, "wsd": lw, "rel_pct": 100 * (lw / lc - 1)})
    return out


def backtests(runs: list[RunLog], tasks, cfg: TwoStepConfig) -> dict:
    """MAE (accuracy points) and loss ARE (%) per feasible scenario, and their means."""
    scenarios = default_scenarios(runs)
    top = mults_by_value(runs)[-1:]
    if top and top not in scenarios:
        scenarios.append(top)  # the largest multiplier: extrapolation in tokens per parameter
    out = {}
    for h in scenarios:
        try:
            r = backtest(runs, h, tasks, cfg, warn=lambda m: None)
        except ValueError as e:  # too few runs left to fit
            out["+".join(h)] = {"skipped": str(e)}
            continue
        out["+".join(h)] = {"mae_points": 100 * r.mae(), "loss_are_pct": 100 * r.loss_are()}
    done = [v for v in out.values() if "mae_points" in v]
    out["mean"] = {k: float(np.mean([v[k] for v in done])) for k in ("mae_points", "loss_are_pct")}
    return out


def target_predictions(ladders: dict, targets: dict, target: Target, tasks, cfg) -> dict:
    out = {}
    for name, runs in ladders.items():
        preds = predict_targets(runs, [target], tasks, cfg, intervals=False, warn=lambda m: None)
        for p in preds:
            row = {"pred_acc": p.pred_acc, "pred_loss": p.pred_loss}
            for tname, actual in targets.items():
                if actual is not None:
                    acc, loss = actual_values(actual, tasks[p.task], cfg.feature, cfg.last)
                    row[f"error_points_vs_{tname}_target"] = 100 * (p.pred_acc - acc)
                    row[f"actual_acc_{tname}"], row[f"actual_loss_{tname}"] = acc, loss
            out[f"{name}/{p.task}"] = row
    return out


def measure(cosine: list[RunLog], wsd: list[RunLog], targets: dict, target: Target, tasks,
            val_column: str) -> dict:
    cfg = TwoStepConfig()
    wsd_rungs = fit_runs(wsd)
    pairs = loss_pairs(cosine, wsd_rungs, val_column)
    rel = [abs(p["rel_pct"]) for p in pairs]
    res = {"trained_flops": {"cosine": trained_flops(cosine), "wsd": trained_flops(wsd)},
           "final_val_loss": pairs,
           "final_val_loss_summary": {"mean_abs_pct": float(np.mean(rel)), "max_abs_pct": float(np.max(rel)),
                                      "mean_signed_pct": float(np.mean([p["rel_pct"] for p in pairs]))},
           "backtest": {"cosine": backtests(cosine, tasks, cfg),
                        "wsd (step 2: decay rows)": backtests(wsd_rungs, tasks, replace(cfg, wsd_step2="decay")),
                        "wsd (step 2: all rows)": backtests(wsd_rungs, tasks, replace(cfg, wsd_step2="all"))},
           "target": target_predictions({"cosine": cosine, "wsd": wsd_rungs}, targets, target, tasks, cfg)}
    t = res["trained_flops"]
    t["ratio"] = t["wsd"] / t["cosine"]
    c = res["backtest"]["cosine"]["mean"]["mae_points"]
    for k in ("wsd (step 2: decay rows)", "wsd (step 2: all rows)"):
        res["backtest"][k]["mean"]["ratio_to_cosine"] = res["backtest"][k]["mean"]["mae_points"] / c
    return res


def report(res: dict) -> str:
    lines = []
    if "plan_flops" in res:
        p = res["plan_flops"]
        lines.append(f"plan FLOPs: cosine {p['cosine']:.3g}, WSD {p['wsd']:.3g}, ratio {p['wsd'] / p['cosine']:.3f}")
    t = res["trained_flops"]
    lines.append(f"trained FLOPs (run logs): cosine {t['cosine']:.3g}, WSD {t['wsd']:.3g}, ratio {t['ratio']:.3f}")
    lines.append("final validation loss, decayed branch vs cosine run:")
    for p in res["final_val_loss"]:
        lines.append(f"  {p['run']:<14} cosine {p['cosine']:.4f}  WSD {p['wsd']:.4f}  {p['rel_pct']:+.2f}%")
    s = res["final_val_loss_summary"]
    lines.append(f"  mean |diff| {s['mean_abs_pct']:.2f}%, max {s['max_abs_pct']:.2f}%, mean signed {s['mean_signed_pct']:+.2f}%")
    lines.append("in-ladder backtests (accuracy MAE points / loss ARE %):")
    for layout, b in res["backtest"].items():
        cells = ", ".join(f"{k}: " + (f"{v['mae_points']:.2f} / {v['loss_are_pct']:.2f}" if "mae_points" in v
                                      else "skipped") for k, v in b.items() if k != "mean")
        ratio = f" (x{b['mean']['ratio_to_cosine']:.2f} cosine)" if "ratio_to_cosine" in b["mean"] else ""
        lines.append(f"  {layout:<26} {cells}; mean {b['mean']['mae_points']:.2f} / "
                     f"{b['mean']['loss_are_pct']:.2f}{ratio}")
    lines.append("held-out target:")
    for k, v in res["target"].items():
        errs = ", ".join(f"{e.split('_vs_')[1].replace('_target', '')} target {v[e]:+.2f}"
                         for e in v if e.startswith("error_points"))
        lines.append(f"  {k:<22} predicted {100 * v['pred_acc']:.2f} points (loss {v['pred_loss']:.4f}); "
                     f"error vs {errs}")
    return "\n".join(lines)


def real(args) -> dict:
    from ladder.recipe import load_recipe
    from ladder.sweep.plan import plan_sweep
    from ladder.sweep.predict import prediction_tasks

    dirs = {"cosine": Path(args.cosine), "wsd": Path(args.wsd)}
    for k, d in dirs.items():
        run_sweep(RECIPES[k], d, args.seed)
    ladders, targets = {}, {}
    for k, d in dirs.items():
        plan = plan_sweep(load_recipe(RECIPES[k]))
        ladders[k] = [read_run(d / "runs" / r.name) for r in plan.stables + plan.rungs]
        t = plan.targets[0]
        targets[k] = read_run(d / "runs" / t.run.name)
    tasks = resolve_tasks(prediction_tasks(load_recipe(RECIPES["cosine"])))
    res = measure(ladders["cosine"], ladders["wsd"], targets, Target(t.name, t.n, t.d), tasks, VAL)
    res["plan_flops"] = plan_flops()
    return res


def smoke() -> dict:
    from tests.analysis_synthetic import VAL as SVAL, write_ladder
    from tests.test_wsd_analysis import wsd_ladder

    tmp = Path(tempfile.mkdtemp(prefix="bench-wsd-"))
    cosine = [read_run(p) for p in write_ladder(tmp / "cosine", noise=0.0)]
    for r in cosine:
        r.meta.extra["schedule"] = "cosine"
    wsd = [read_run(p) for p in wsd_ladder(tmp / "wsd")]
    for r in wsd:  # the synthetic WSD logs have no validation column: the law's, as the cosine ones
        r.columns[SVAL] = 2.0 * r.column("eval/downstream_bpb/hellaswag_val_rc_5shot_bpb") + 1.0
    from analysis.runlog import PAPER_N

    res = measure(cosine, wsd, {"cosine": None}, Target("3B-60B", PAPER_N["3B"], 6e10),
                  resolve_tasks("hellaswag"), SVAL)
    res["plan_flops"] = plan_flops()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cosine", default="runs/tiny-cpu", help="the cosine sweep's directory")
    ap.add_argument("--wsd", default="runs/tiny-cpu-wsd", help="the WSD sweep's directory")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--seed", type=int, help="train both ladders with this seed instead of the recipes' "
                                            "(a second measurement of the same ladders; give other --cosine/--wsd)")
    ap.add_argument("--smoke", action="store_true", help="synthetic ladders, seconds")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    res = smoke() if args.smoke else real(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
