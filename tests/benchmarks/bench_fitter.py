"""The fitter against the one it replaced, on every point fit of the OLMo ladder's backtests:
the multistart refined by vectorised Levenberg-Marquardt (L-BFGS-B as a second opinion for the
starts it leaves unconverged) next to L-BFGS-B alone, on the same objectives and starts.

    PYTHONPATH=. python tests/benchmarks/bench_fitter.py [--data ../shared/data/olmo-ladder]

Fits: the full ladder and each extrapolation scenario of analysis.practice.calibrate, for the
default two-step method, the direct method (tied and free exponents), free step-1 exponents and
the plain sigmoid link, 8 tasks each. Prints how many fits each method converges, how often one
reaches a lower loss than the other (relative 1e-6), and the CPU seconds of each.
"""

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import analysis.laws.base as base  # noqa: E402
from analysis.fit import minimize_multistart  # noqa: E402
from analysis.metrics import resolve_tasks  # noqa: E402
from analysis.practice.backtest import split_holdout  # noqa: E402
from analysis.practice.calibrate import extrapolation_scenarios  # noqa: E402
from analysis.runlog import read_runs  # noqa: E402
from analysis.twostep import TwoStepConfig, fit_task  # noqa: E402

CONFIGS = {"default": TwoStepConfig(), "direct": TwoStepConfig(mode="direct"),
           "direct free": TwoStepConfig(mode="direct", direct_exponents="free"),
           "free step-1 exponents": TwoStepConfig(step1_exponents="free"),
           "sigmoid link": TwoStepConfig(link="sigmoid")}


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    args = ap.parse_args()
    files = sorted(Path(args.data).glob("*xC.csv"))
    if len(files) != 16:
        print(f"expected 16 ladder CSVs in {args.data}, found {len(files)}", file=sys.stderr)
        return 2
    rows, cpu = [], {"lm": 0.0, "lbfgsb": 0.0}

    def both(obj, grid, **kw):  # every Law.fit goes through here: both methods, same inputs
        out = {}
        for method in ("lbfgsb", "lm"):
            t = time.process_time()
            out[method] = minimize_multistart(obj, grid, method=method, **kw)
            cpu[method] += time.process_time() - t
        rows.append(out)
        return out["lm"]

    base.minimize_multistart = both
    warnings.simplefilter("ignore", RuntimeWarning)  # non-converged fits are counted below
    runs = read_runs(files)
    tasks = resolve_tasks("paper")
    for holdout in [[]] + extrapolation_scenarios(runs):
        train = split_holdout(runs, holdout)[0] if holdout else runs
        for cfg in CONFIGS.values():
            for task in tasks.values():
                fit_task(train, task, cfg)
    lm = np.array([r["lm"].loss for r in rows])
    lb = np.array([r["lbfgsb"].loss for r in rows])
    ok_lm = np.array([r["lm"].success for r in rows])
    ok_lb = np.array([r["lbfgsb"].success for r in rows])
    rel = 1e-6 * np.maximum(np.abs(lb), 1e-12)
    print(f"{len(rows)} point fits ({len(CONFIGS)} methods x 8 tasks x the full ladder and "
          f"{len(extrapolation_scenarios(runs))} extrapolation scenarios)")
    print(f"converged: LM {ok_lm.sum()}, L-BFGS-B alone {ok_lb.sum()}; "
          f"LM lower loss in {(lm < lb - rel).sum()}, higher in {(lm > lb + rel).sum()}")
    by = Counter(r["lm"].message.split(":")[0] for r in rows)
    print("the returned fit came from: " + ", ".join(f"{k} {v}" for k, v in by.most_common()))
    print(f"CPU seconds: LM {cpu['lm']:.1f}, L-BFGS-B alone {cpu['lbfgsb']:.1f} "
          f"(ratio {cpu['lm'] / cpu['lbfgsb']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
