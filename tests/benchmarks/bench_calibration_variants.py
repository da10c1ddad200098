"""Interval calibrations compared on the OLMo ladder's own backtests: the default and the
variants it was chosen over, each judged leave-one-scenario-out on the 7 in-ladder extrapolation
scenarios; the 7B-4T target is predicted from the 16 ladder runs and shown for the record only
(nothing from it chooses a variant).

    PYTHONPATH=. python tests/benchmarks/bench_calibration_variants.py [--data DIR] [--n-boot 200]

Prints per variant: (c_t, c_n, k) on all scenarios, the lowest leave-one-scenario-out coverage,
each scenario's calibrated median width against the raw one, and on the 7B how many actuals
the interval holds and its median width. Backtests take minutes (one per scenario).
"""

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis import Target, predict_target, read_run, read_runs  # noqa: E402
from analysis.calibration import (LEVEL, Record, _z, conformal_quantile,  # noqa: E402
                                  fit_calibration)
from analysis.practice.calibrate import backtest_records, calibrate_ladder  # noqa: E402

TARGET = Target("7B-4T", 6887575552, 3945065873408)
FINE = tuple(round(0.0025 * i, 4) for i in range(13))


class Tails:
    """Each tail calibrated on its own at (1 + level) / 2: the lower side on over-predictions,
    the upper side on under-predictions, each with its own extrapolation term and scale."""

    def __init__(self, records: list[Record], grid=(0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03)):
        self.side = {}
        for s in ("lo", "hi"):
            best = None
            for c_t, c_n in itertools.product(grid, grid):
                h = self._h(records, s, c_t, c_n)
                k = self._k(records, h, s)
                w = float(np.median(k * h))
                if best is None or w < best[0] - 1e-12:
                    best = (w, c_t, c_n, k)
            self.side[s] = best[1:]

    @staticmethod
    def _h(recs, s, c_t, c_n):
        raw = np.array([(r.pred - r.low) if s == "lo" else (r.high - r.pred) for r in recs])
        ex = _z(LEVEL) * np.hypot(c_t * np.array([r.dt for r in recs]),
                                  c_n * np.array([r.dn for r in recs]))
        return np.hypot(raw, ex)

    @staticmethod
    def _k(recs, h, s):
        e = np.array([r.actual - r.pred for r in recs])
        sc = np.maximum(0, -e if s == "lo" else e) / np.maximum(h, 1e-12)
        scen = np.array([r.scenario for r in recs])
        return max(1.0, max(conformal_quantile(sc[scen == x], (1 + LEVEL) / 2)
                            for x in dict.fromkeys(scen)))

    def widen(self, task, pred, low, high, dn, dt):
        r = Record("", task, "", pred, low, high, pred, dn, dt)
        (ct, cn, k), (ct2, cn2, k2) = self.side["lo"], self.side["hi"]
        return (pred - k * self._h([r], "lo", ct, cn)[0], pred + k2 * self._h([r], "hi", ct2, cn2)[0])

    def describe(self):
        return "per tail: " + ", ".join(f"{s} c_t={v[0]:g} c_n={v[1]:g} k={v[2]:.2f}"
                                        for s, v in self.side.items())


VARIANTS = {
    "default (grid 0.5 pt, both terms)": lambda recs: fit_calibration(recs),
    "finer grid (0.25 pt)": lambda recs: fit_calibration(recs, grid=FINE),
    "tokens-per-parameter term only": lambda recs: fit_calibration(recs, grid_n=(0.0,)),
    "each tail on its own": lambda recs: Tails(recs),
}


def loso(recs, make):
    rows = {}
    for s in dict.fromkeys(r.scenario for r in recs):
        cal = make([r for r in recs if r.scenario != s])
        mine = [r for r in recs if r.scenario == s]
        iv = [cal.widen(r.task, r.pred, r.low, r.high, r.dn, r.dt) for r in mine]
        rows[s] = (float(np.mean([lo <= r.actual <= hi for r, (lo, hi) in zip(mine, iv)])),
                   float(np.median([hi - lo for lo, hi in iv])),
                   float(np.median([r.high - r.low for r in mine])))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()
    data = Path(args.data)
    paths = sorted(data.glob("*xC.csv"))
    if len(paths) != 16 or not (data / "7B-4T-final.csv").exists():
        print(f"expected 16 ladder CSVs and 7B-4T-final.csv in {data}", file=sys.stderr)
        return 2
    runs = read_runs(paths)
    t0 = time.perf_counter()
    recs = backtest_records(calibrate_ladder(runs, n_boot=args.n_boot).results)
    print(f"{len(recs)} backtest predictions in {time.perf_counter() - t0:.0f} s "
          f"(load {os.getloadavg()[0]:.1f})")
    raw7 = predict_target(runs, TARGET, actual=read_run(data / "7B-4T-final.csv"),
                          n_boot=args.n_boot, warn=lambda m: None)
    print(f"7B-4T raw bootstrap: {sum(p.raw_low <= p.actual_acc <= p.raw_high for p in raw7)}/8, "
          f"median width {100 * np.median([p.raw_high - p.raw_low for p in raw7]):.2f}")
    for name, make in VARIANTS.items():
        cal = make(recs)
        rows = loso(recs, make)
        iv = [cal.widen(p.task, p.pred_acc, p.raw_low, p.raw_high, p.dn, p.dt) for p in raw7]
        iv = [(max(lo, 0.0), min(hi, 1.0)) for lo, hi in iv]
        hits = sum(lo <= p.actual_acc <= hi for p, (lo, hi) in zip(raw7, iv))
        desc = cal.describe() if isinstance(cal, Tails) else \
            f"c_t={cal.c_t:g} c_n={cal.c_n:g} k={cal.k:.2f}"
        print(f"\n{name}: {desc}")
        print(f"  leave-one-scenario-out: lowest coverage {min(c for c, _, _ in rows.values()):.2f}")
        for s, (c, w, wr) in rows.items():
            print(f"    {s:14s} coverage {c:.2f}  median width {100 * w:5.2f} ({w / wr:.2f}x raw)")
        print(f"  7B-4T (record only): {hits}/8 inside, median width "
              f"{100 * np.median([hi - lo for lo, hi in iv]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
