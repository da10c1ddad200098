"""16 OLMo ladder runs -> 7B-4T: per-task table next to the ladder paper's own code, MAE,
trust grade, calibrated and raw interval coverage and width, and the wall time of
`ladder predict` (8 tasks, intervals, plots): the first run calibrates the intervals on the
ladder's backtests (kept in an empty calibration cache), the second reuses that calibration.

    PYTHONPATH=. python tests/benchmarks/bench_predict_7b.py [--data ../shared/data/olmo-ladder] [extra predict args]

The 7B CSV is passed only as --actual (never fitted on).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAPER_CODE = {"mmlu": (49.01, 48.38), "hellaswag": (81.35, 82.52), "arc_challenge": (61.95, 51.50),
              "arc_easy": (84.55, 76.59), "piqa": (82.05, 81.22), "csqa": (72.65, 75.71),
              "socialiqa": (59.93, 58.74), "openbookqa": (49.40, 44.17)}
Z90 = 1.6448536269514722  # two-sided 90% normal quantile


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    args, extra = ap.parse_known_args()
    data = Path(args.data)
    runs = sorted(str(p) for p in data.glob("*xC.csv"))
    if len(runs) != 16:
        print(f"expected 16 ladder CSVs in {data}, found {len(runs)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ladder", "predict", *runs, "--target-name", "7B-4T",
               "--target-n", "6887575552", "--target-d", "3945065873408",
               "--actual", str(data / "7B-4T-final.csv"), "--out", str(Path(tmp) / "out"), *extra]
        walls = []
        # an empty calibration cache: the first run calibrates, the second reuses its calibration
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_CALIBRATION_CACHE": str(Path(tmp) / "cache")}
        for _ in range(2):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            walls.append(time.perf_counter() - t0)
            if res.returncode not in (0, 1):
                print(res.stderr, file=sys.stderr)
                return res.returncode
        rows = json.loads((Path(tmp) / "out" / "predictions.json").read_text())
        plots = sorted(p.name for p in (Path(tmp) / "out").glob("*.png"))
    print(f"{'task':<14} {'grade':<10} {'actual':>7} {'ours':>7} {'90% interval':>16} {'err':>6} "
          f"{'raw bootstrap':>16} | {'paper code':>10} {'err':>6}")
    ours, theirs, covered, widths, raw_cov, raw_w, scaled, scaled_raw = [], [], 0, [], 0, [], [], []
    for r in rows:
        a, p = 100 * r["actual_acc"], 100 * r["pred_acc"]
        lo, hi = 100 * r["pred_acc_low"], 100 * r["pred_acc_high"]
        pa, pp = PAPER_CODE[r["task"]]
        ours.append(abs(p - a)); theirs.append(abs(pp - pa))
        covered += lo <= a <= hi; widths.append(hi - lo)
        scaled.append((a - p) / (((hi - p) if a > p else (p - lo)) / Z90))  # error / implied SD
        rlo, rhi = 100 * r["interval"]["raw_low"], 100 * r["interval"]["raw_high"]
        raw_cov += rlo <= a <= rhi; raw_w.append(rhi - rlo)
        scaled_raw.append((a - p) / (((rhi - p) if a > p else (p - rlo)) / Z90))
        flag = "" if r.get("converged", True) else "  NOT CONVERGED"
        print(f"{r['task']:<14} {r.get('grade', '-'):<10} {a:7.2f} {p:7.2f} [{lo:6.2f}, {hi:6.2f}] "
              f"{p - a:+6.2f} [{rlo:6.2f}, {rhi:6.2f}] | {pp:10.2f} {pp - pa:+6.2f}{flag}")
    med = float(np.median(widths))
    print(f"\nMAE: ours {sum(ours) / len(ours):.2f} points (max {max(ours):.2f}); "
          f"paper code {sum(theirs) / len(theirs):.2f} (max {max(theirs):.2f})")
    print(f"90% intervals ({rows[0]['interval']['method']}) contain the actual on "
          f"{covered}/{len(rows)} tasks; median width {med:.2f} points")
    print(f"raw bootstrap intervals: {raw_cov}/{len(rows)}; median width {np.median(raw_w):.2f} points")
    rms, rms_raw = (float(np.sqrt(np.mean(np.square(x)))) for x in (scaled, scaled_raw))
    print(f"errors / the SD the 90% intervals imply (half-width on the error's side / {Z90:.3f}): "
          f"RMS {rms:.2f} calibrated, {rms_raw:.2f} raw (1 = intervals sized to the errors; "
          f"{len(rows)} tasks, report only)")
    print(f"non-converged fits: {sum(not r.get('converged', True) for r in rows)}")
    print(f"plots: {', '.join(plots)}")
    print(f"`ladder predict` wall time: {walls[0]:.1f} s calibrating, {walls[1]:.1f} s reusing the "
          f"calibration (8 tasks, 200-replicate intervals, plots; {os.cpu_count()} cores, load "
          f"average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
