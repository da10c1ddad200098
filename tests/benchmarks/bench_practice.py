"""Estimation practice and ladder planning on the OLMo ladder (never the 7B target).

    LADDER_SHARED_DATA=../shared/data PYTHONPATH=. python tests/benchmarks/bench_practice.py \
        [--data DIR] [--skip-sweep] [--skip-partial] [--skip-plan]

1. Step 1 on intermediate checkpoints (first 10% of each run dropped) vs final checkpoints only
   (and the current default, first 50% dropped): predicting the 1B runs from 190M-760M, per
   task, task-loss ARE and chained accuracy error; then a sweep of the dropped fraction over
   the three default backtest scenarios.
2. The Hitchhiker's other practices on the 1B backtest: the 1B run's own first 10%/30% added
   to the ladder, the no-scaling-law baselines from that partial run, and exponents borrowed
   from the other tasks (E, A, B fitted per task).
3. The ladder planner: accuracy error vs compute of reduced grids, predicting the 1B runs.
Prints tables and wall times (the machine may be shared: the load average is printed).
"""

import argparse
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis.practice.planner import plan_ladder  # noqa: E402
from analysis.practice.estimation import (LossLawEstimator, PracticeResult, PracticeRow,  # noqa: E402
                               compare_configs, practice_backtest, step1_points_configs)
from analysis.predict import actual_values  # noqa: E402
from analysis.runlog import read_runs  # noqa: E402
from analysis.metrics import PAPER_TASKS  # noqa: E402
from analysis.twostep import TwoStepConfig, fit_task  # noqa: E402

SCENARIOS = (["1B"], ["760M", "1B"], ["1B", "10xC"])


def summary(res: PracticeResult) -> str:
    w = max(len(m) for m in res.methods) + 2
    out = [f"{'method':<{w}} {'loss ARE %':>10} {'acc MAE':>8}"]
    for m in res.methods:
        out.append(f"{m:<{w}} {100 * res.loss_are(m):10.2f} {100 * res.acc_mae(m):8.2f}")
    return "\n".join(out)


def borrowed_rows(runs, holdout=("1B",)) -> PracticeResult:
    """Per task: exponents = median of the other tasks' tied fits on the same training runs;
    only E, A, B fitted on the task itself."""
    train = [r for r in runs if r.meta.size not in holdout]
    test = [r for r in runs if r.meta.size in holdout]
    cfg = TwoStepConfig()
    fits = {k: LossLawEstimator(t, drop_frac=cfg.step1_min_frac).fit(train)
            for k, t in PAPER_TASKS.items()}
    res = PracticeResult(list(holdout))
    for k, t in PAPER_TASKS.items():
        ex = np.median([f.exponents_[0] for o, f in fits.items() if o != k])
        est = LossLawEstimator(t, drop_frac=cfg.step1_min_frac, fixed_exponents=(ex, ex)).fit(train)
        step2 = fit_task(train, t, cfg).step2
        for r in test:
            acc, loss = actual_values(r, t)
            p = float(est.predict(r.n, r.d)[0])
            res.rows.append(PracticeRow("exponents borrowed from the other tasks", k, r.name, p,
                                        loss, float(step2.predict(np.array([p]))[0]), acc,
                                        est.converged_))
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-partial", action="store_true")
    ap.add_argument("--skip-plan", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    runs = read_runs(sorted(Path(args.data).glob("*xC.csv")))
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)\n")

    print("## 1. Step 1: intermediate checkpoints (first 10% dropped) vs final only; hold out 1B\n")
    t0 = time.perf_counter()
    res = compare_configs(runs, ["1B"], step1_points_configs(0.1))
    print(res.table())
    print(f"({time.perf_counter() - t0:.1f}s)\n")

    if not args.skip_sweep:
        print("### Dropped fraction, over the three default backtest scenarios "
              "(loss ARE % / accuracy MAE points)\n")
        base = TwoStepConfig()
        variants = {"final": replace(base, step1_points="final")}
        for f in (0.1, 0.3, 0.5, 0.7, 0.9):
            variants[f"intermediate, first {f:.0%} dropped"] = replace(base, step1_min_frac=f)
        print("| variant | " + " | ".join("+".join(s) for s in SCENARIOS) + " | mean |")
        print("|---|" + "---|" * (len(SCENARIOS) + 1))
        for name, cfg in variants.items():
            t0 = time.perf_counter()
            cells, a, e = [], [], []
            for s in SCENARIOS:
                r = compare_configs(runs, list(s), {name: cfg})
                a.append(100 * r.loss_are(name)); e.append(100 * r.acc_mae(name))
                cells.append(f"{a[-1]:.2f} / {e[-1]:.2f}")
            print(f"| {name} | " + " | ".join(cells) +
                  f" | {np.mean(a):.2f} / {np.mean(e):.2f} |  ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
        print()

    if not args.skip_partial:
        print("## 2. Partial training of the target, no-law baselines, borrowed exponents "
              "(hold out 1B)\n")
        t0 = time.perf_counter()
        cfg = TwoStepConfig()
        res = practice_backtest(
            runs, ["1B"], {"final": dict(points="final"),
                           f"intermediate, first {cfg.step1_min_frac:.0%} dropped":
                           dict(drop_frac=cfg.step1_min_frac)},
            partial_fracs=(0.1, 0.3))
        res.rows += borrowed_rows(runs).rows
        print(summary(res))
        print(f"({time.perf_counter() - t0:.1f}s)\n")

    if not args.skip_plan:
        print("## 3. Ladder planner: predicting the 1B runs from reduced grids "
              "(budget 1.0 point)\n")
        t0 = time.perf_counter()
        plan = plan_ladder(runs, tasks="paper", budget_error=0.01,
                           target_compute=6 * 6887575552 * 3945065873408)
        print(plan.table())
        rec = plan.recommended
        print(f"recommended: {rec.name if rec else None}; "
              f"{len(plan.candidates)} grids in {time.perf_counter() - t0:.1f}s\n")
        feas = [c for c in plan.candidates if c.feasible]
        x = np.log([c.compute for c in feas]); y = np.array([c.mae for c in feas])
        rho = np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]
        print(f"Spearman correlation of compute and error over {len(feas)} feasible grids: {rho:+.2f}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
