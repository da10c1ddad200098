"""The evidence behind the default method: in-ladder backtests of each design option.

    PYTHONPATH=. python tests/benchmarks/bench_predict_backtest.py [--data DIR] [--coverage]
        [--only PREFIXES] [--all-scenarios]

Scenarios (never the 7B target): hold out 1B (fit on 190M-760M); 760M+1B (fit on 190M+370M,
8 runs); 1B and 10xC together (fit on 9 runs of 190M-760M at 1-5xC: extrapolates in N and in
tokens per parameter, like the real target); --all-scenarios: every extrapolation scenario of
analysis.practice.calibrate (adds 10xC, 5xC+10xC, 760M+1B+10xC, 1B+5xC+10xC). Prints accuracy
MAE (points) per scenario and their mean, per variant; with --coverage, per scenario the 90%
coverage and median width of the raw bootstrap and of the calibrated interval (calibrated
without that scenario: leave one scenario out), for the default and the direct method.
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

from analysis.practice.backtest import backtest  # noqa: E402
from analysis.practice.calibrate import calibrate_ladder, extrapolation_scenarios  # noqa: E402
from analysis.runlog import read_runs  # noqa: E402
from analysis.twostep import TwoStepConfig  # noqa: E402

BASE = TwoStepConfig()
VARIANTS = {
    "default": {},
    "paper form (free exponents, sigmoid, free ceiling)": dict(step1_exponents="free", link="sigmoid", link_ceiling="free"),
    "free exponents": dict(step1_exponents="free"),
    "auto exponents (tied below 3 sizes)": dict(step1_exponents="auto"),
    "sigmoid link": dict(link="sigmoid"),
    "free ceiling": dict(link_ceiling="free"),
    "chance floor": dict(link_floor="chance"),
    "step 1 on final points only": dict(step1_points="final"),
    "step 1 on all later checkpoints (no thinning)": dict(step1_per_run=1000),
    "FLOPs-based step 1": dict(step1="compute"),
    "feature: C4 validation CE": dict(feature="val_ce"),
    "feature: task CE (-soft_log)": dict(feature="task_ce"),
    "single step": dict(mode="single"),
    "direct (arXiv 2512.08894 eq. 4, tied exponents)": dict(mode="direct"),
    "direct, free exponents (the paper's eq. 4 as published)": dict(mode="direct", direct_exponents="free"),
}
SCENARIOS = (["1B"], ["760M", "1B"], ["1B", "10xC"])


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    ap.add_argument("--coverage", action="store_true")
    ap.add_argument("--only", help="comma list of variant names (prefix match)")
    ap.add_argument("--all-scenarios", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    runs = read_runs(sorted(Path(args.data).glob("*xC.csv")))
    global SCENARIOS
    if args.all_scenarios:
        SCENARIOS = tuple(extrapolation_scenarios(runs))
    print(f"{'variant':<52} " + " ".join(f"{'+'.join(s):>9}" for s in SCENARIOS) + f" {'mean':>6}")
    for name, kw in VARIANTS.items():
        if args.only and not any(name.startswith(o) for o in args.only.split(",")):
            continue
        cfg = replace(BASE, **kw)
        maes, t0 = [], time.perf_counter()
        for s in SCENARIOS:
            try:
                r = backtest(runs, list(s), config=cfg, warn=lambda m: None)
                nc = sum(not p.converged for p in r.predictions)
                maes.append(100 * r.mae() if not nc else float("nan"))
            except ValueError:  # e.g. single step: 9 parameters from 8 runs
                maes.append(float("nan"))
        print(f"{name:<52} " + " ".join(f"{m:9.2f}" for m in maes) +
              f" {np.mean(maes):6.2f}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.coverage:
        for mode in ("chained", "direct"):
            t0 = time.perf_counter()
            lc = calibrate_ladder(runs, config=replace(BASE, mode=mode),
                                  scenarios=[list(x) for x in SCENARIOS] + [
                                      h for h in extrapolation_scenarios(runs) if tuple(h) not in SCENARIOS
                                      and list(h) not in [list(x) for x in SCENARIOS]])
            c = lc.calibration
            print(f"\n{mode}: calibration on all scenarios k={c.k:.3f} c_t={c.c_t:g} c_n={c.c_n:g} "
                  f"({time.perf_counter() - t0:.0f}s)")
            for r in lc.results:
                s_ = "+".join(r.holdout)
                v = lc.coverage[s_]
                print(f"  {s_:<14} n={v['n']:3d} MAE {100 * r.mae():5.2f}  raw: coverage "
                      f"{v['coverage_raw']:.2f} width {100 * v['median_width_raw']:5.2f}  calibrated "
                      f"(LOSO): coverage {v['coverage']:.2f} width {100 * v['median_width']:5.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
