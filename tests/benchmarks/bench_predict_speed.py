"""`ladder predict` wall time, this tree next to a baseline commit, in one run (16 OLMo ladder
runs -> 7B-4T, 8 tasks, 200-replicate intervals; with and without plots).

    PYTHONPATH=. python tests/benchmarks/bench_predict_speed.py [--baseline REF] [--repeats 3]

The baseline is extracted with `git archive REF` into a temporary directory. This tree runs with
its calibration prepared once beforehand (`--calibration FILE`, what a second `ladder predict`
on the same ladder does), and so does a baseline that has calibrated intervals; the time to make
the file is printed separately. Runs alternate between the
two trees so that machine load hits both alike; medians and their ratio are printed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ["--target-name", "7B-4T", "--target-n", "6887575552", "--target-d", "3945065873408"]


def _run(tree: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ladder", "predict", *args], cwd=tree,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if res.returncode not in (0, 1):
        raise SystemExit(f"{tree}: ladder predict failed:\n{res.stderr}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    ap.add_argument("--baseline", default="44cb415", help="git ref of the code to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    runs = sorted(str(p) for p in data.glob("*xC.csv"))
    if len(runs) != 16:
        print(f"expected 16 ladder CSVs in {data}, found {len(runs)}", file=sys.stderr)
        return 2
    common = [*runs, *TARGET, "--actual", str(data / "7B-4T-final.csv")]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        arch = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=arch, check=True)
        cal_dir = Path(tmp) / "cal"
        t_cal = _run(ROOT, [*common, "--out", str(cal_dir), "--no-plots"])
        cal = ["--calibration", str(cal_dir / "calibration.json")]
        # a baseline that calibrates too reuses the same file (else `auto` would backtest each run)
        base_cal = cal if "--calibration" in (base / "ladder/cli/predict.py").read_text() else []
        times = {k: [] for k in ("base plots", "new plots", "base no-plots", "new no-plots")}
        for i in range(args.repeats):
            for plots in (True, False):
                extra = [] if plots else ["--no-plots"]
                tag = "plots" if plots else "no-plots"
                times[f"base {tag}"].append(_run(base, [*common, "--out", f"{tmp}/b{i}", *extra,
                                                        *base_cal]))
                times[f"new {tag}"].append(_run(ROOT, [*common, "--out", f"{tmp}/n{i}", *extra, *cal]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"calibrating once (backtests of 7 scenarios, then the prediction): {t_cal:.1f} s")
    for tag in ("plots", "no-plots"):
        b, n = med[f"base {tag}"], med[f"new {tag}"]
        print(f"{tag:<9} baseline {args.baseline}: {b:5.1f} s   this tree: {n:5.1f} s   "
              f"ratio {n / b:.2f}   (medians of {args.repeats})")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
