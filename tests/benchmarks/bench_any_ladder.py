"""Do the default method's choices hold beyond one ladder? Backtests of each choice on the OLMo
ladder, the demo's ladder, and synthetic ladders with known truth whose targets sit as far beyond
the ladder as real targets do (15-150x in tokens per parameter, 5-35x in N), with checkpoints and
with final evaluations only. No held-out lab's results are read here.

    PYTHONPATH=. python tests/benchmarks/bench_any_ladder.py [--olmo DIR] [--demo SWEEP_DIR]
        [--only PREFIXES] [--smoke]

Per ladder and choice: accuracy MAE in points of the in-ladder backtests (every extrapolation
scenario of analysis.practice.calibrate; the actual is the held-out run's mean of its last 5
evaluations), and for the synthetic ladders the MAE against the truth at the far targets, with
the farthest reach of each (N and tokens per parameter, as factors beyond the fitted runs). For
the default, the far-target MAE of the predictions graded reliable and of the others. --smoke: one
small synthetic ladder, two choices (seconds; run by the test suite).
"""

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import synthetic_truth as S  # noqa: E402
from analysis.calibration import extrapolation  # noqa: E402
from analysis.metrics import resolve_tasks  # noqa: E402
from analysis.practice.backtest import backtest  # noqa: E402
from analysis.practice.calibrate import extrapolation_scenarios  # noqa: E402
from analysis.predict import Target, predict_targets  # noqa: E402
from analysis.runlog import read_run, read_runs  # noqa: E402
from analysis.twostep import TwoStepConfig  # noqa: E402

BASE = TwoStepConfig()
VARIANTS = {
    "default": {},
    "paper form (free exponents, final points, sigmoid, free ceiling)":
        dict(step1_exponents="free", step1_points="final", link="sigmoid", link_ceiling="free"),
    "free exponents": dict(step1_exponents="free"),
    "step 1 on final points only": dict(step1_points="final"),
    "sigmoid link": dict(link="sigmoid"),
    "free ceiling": dict(link_ceiling="free"),
    "chance floor": dict(link_floor="chance"),
    "direct (tied exponents)": dict(mode="direct"),
}


def _mae(errors) -> float:
    e = [abs(x) for x in errors if math.isfinite(x)]
    return 100 * float(np.mean(e)) if e else float("nan")


def in_ladder(runs, tasks, cfg, scenarios):
    """MAE over every scenario's held-out runs, the refused count, and the reach (dN, dT max)."""
    errs, refused, reach = [], 0, [0.0, 0.0]
    for h in scenarios:
        r = backtest(runs, h, tasks, cfg, warn=lambda m: None)
        errs += [p.pred_acc - p.actual_acc for p in r.scored]
        refused += r.refused
        for p in r.predictions:
            reach = [max(reach[0], p.dn), max(reach[1], p.dt)]
    return _mae(errs), refused, reach


def far(runs, tasks, cfg, family):
    """MAE against the truth at the far targets; for grading: errors by grade."""
    preds = predict_targets(runs, S.far_targets(), tasks, cfg, intervals=False, warn=lambda m: None)
    targets = {t.name: t for t in S.far_targets()}
    errs = {p.task + p.target: p.pred_acc - S.truth(family, p.task, targets[p.target]) for p in preds}
    by_grade: dict[str, list] = {}
    for p in preds:
        g = p.grade_name if math.isfinite(p.pred_acc) else "refused"
        by_grade.setdefault(g, []).append(errs[p.task + p.target])
    fit_n, fit_d = [r.n for r in runs], [r.d for r in runs]
    reach = np.max([extrapolation(fit_n, fit_d, t.n, t.d) for t in S.far_targets()], axis=0)
    return _mae(errs.values()), sum(not math.isfinite(p.pred_acc) for p in preds), list(reach), by_grade


def demo_ladder(sweep_dir: Path):
    """The demo sweep's rungs and its trained target (held out, never fitted on)."""
    m = json.loads((sweep_dir / "sweep.json").read_text())
    rungs = [read_run(r["run_dir"]) for r in m["runs"] if r["role"] == "rung"]
    held = [read_run(r["run_dir"]) for r in m["runs"] if r["role"] != "rung"]
    return rungs, held


def ladders(args):
    """(name, runs, tasks, family or None, extra held-out runs)."""
    if args.smoke:
        runs, tasks = S.ladder("tied, log-sigmoid", n_evals=6, sizes=S.SIZES[1:], mults=(1, 2, 5))
        yield "synthetic smoke", runs, {"easy": tasks["easy"]}, "tied, log-sigmoid", []
        return
    olmo = Path(args.olmo)
    if olmo.is_dir():
        yield "OLMo ladder (16 runs, paper tasks)", read_runs(sorted(olmo.glob("*xC.csv"))), \
            resolve_tasks("paper"), None, []
    if args.demo and Path(args.demo, "sweep.json").exists():
        rungs, held = demo_ladder(Path(args.demo))
        yield "demo ladder (tiny-cpu, corpus_cont)", rungs, resolve_tasks("corpus"), None, held
    for family in S.FAMILIES:
        for final_only in (False, True):
            runs, tasks = S.ladder(family, final_only=final_only)
            yield (f"synthetic: {family}{', final only' if final_only else ''}", runs, tasks,
                   family, [])


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--olmo", default=str(shared / "olmo-ladder"))
    ap.add_argument("--demo", help="a finished demo sweep directory (recipes/tiny-cpu.yaml)")
    ap.add_argument("--only", help="comma list of variant names (prefix match)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    variants = {k: v for k, v in VARIANTS.items()
                if (not args.only or any(k.startswith(o) for o in args.only.split(",")))
                and (not args.smoke or k in ("default", "free exponents"))}
    for name, runs, tasks, family, held in ladders(args):
        scen = extrapolation_scenarios(runs)
        print(f"\n## {name}: {len(runs)} runs, {len(scen)} in-ladder scenarios", flush=True)
        for vname, kw in variants.items():
            cfg, t0 = replace(BASE, **kw), time.perf_counter()
            mae, refused, reach = in_ladder(runs, tasks, cfg, scen)
            line = (f"  {vname:<62} in-ladder {mae:5.2f} (reach N {math.exp(reach[0]):4.1f}x, "
                    f"tokens/param {math.exp(reach[1]):4.1f}x; refused {refused})")
            if held:
                preds = predict_targets(runs, [Target(r.name, r.n, r.d) for r in held], tasks, cfg,
                                        actuals={r.name: r for r in held}, intervals=False,
                                        warn=lambda m: None)
                line += f"; held-out target {_mae([p.pred_acc - p.actual_acc for p in preds]):5.2f}"
            if family is not None:
                fmae, frefused, freach, by_grade = far(runs, tasks, cfg, family)
                line += (f"; far targets {fmae:5.2f} (reach N {math.exp(freach[0]):4.0f}x, "
                         f"tokens/param {math.exp(freach[1]):4.0f}x; refused {frefused})")
                if vname == "default":
                    line += "; by grade: " + ", ".join(f"{g} {_mae(e):.2f} (n={len(e)})"
                                                      for g, e in sorted(by_grade.items()))
            print(line + f"  [{time.perf_counter() - t0:.0f}s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
