"""Several targets from one ladder: one `ladder predict` call for both, against one call per target
(the second reusing the cached calibration), and against one call per target that each
calibrate (what a second --out cost before calibrations were cached by the ladder's content).
Each way starts from an empty calibration cache; wall and CPU time (user + system of the command
and its workers) per way, their ratios to the one call, and a check that every way gives the same
predictions.

    PYTHONPATH=. python tests/benchmarks/bench_multi_target.py [--data DIR] [--reps 2] [--smoke]

--smoke: a small synthetic ladder of final evaluations, no plots (seconds; run by the tests).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TARGETS = {"7B-4T": "7B-4T:6887575552:3945065873408", "13B-5T": "13B-5T:13202396160:5000088518656"}
SMOKE_TARGETS = {"1B": "1B:1.28e9:1.3e11", "3B": "3B:3.17e9:6e11"}


def timed(args, cache: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `ladder predict`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ladder", "predict", *map(str, args)],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "LADDER_CALIBRATION_CACHE": str(cache)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode not in (0, 1):
        raise SystemExit(res.stderr)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def predictions(out: Path) -> dict:
    return {(p["target"], p["task"]): (p["pred_acc"], p["pred_acc_low"], p["pred_acc_high"], p["grade"])
            for p in json.loads((out / "predictions.json").read_text())}


def one_rep(base: list, targets: dict, tmp: Path) -> dict[str, tuple[float, float]]:
    both = [a for spec in targets.values() for a in ("--target", spec)]
    names = list(targets)
    out = {"one call": timed([*base, *both, "--out", tmp / "both"], tmp / "c1")}
    a = timed([*base, "--target", targets[names[0]], "--out", tmp / "a0"], tmp / "c2")
    b = timed([*base, "--target", targets[names[1]], "--out", tmp / "a1"], tmp / "c2")
    c = timed([*base, "--target", targets[names[1]], "--out", tmp / "b1"], tmp / "c3")
    out["two calls, cached calibration"] = (a[0] + b[0], a[1] + b[1])
    out["two calls, each calibrating"] = (a[0] + c[0], a[1] + c[1])
    one = predictions(tmp / "both")
    assert one == {**predictions(tmp / "a0"), **predictions(tmp / "a1")} == \
        {**predictions(tmp / "a0"), **predictions(tmp / "b1")}, "the ways disagree"
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = Path(os.environ.get("LADDER_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", default=str(shared / "olmo-ladder"))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if args.smoke:
            import ladder_formats as F
            table = F.wide_csv(F.final_only(F.rows()), Path(d) / "ladder.csv")
            spec = Path(d) / "tasks.yaml"
            spec.write_text(F.TASK_SPEC)
            base, targets, reps = [table, "--task-spec", spec, "--tasks", "mine", "--no-plots",
                                   "--n-boot", "40"], SMOKE_TARGETS, 1
        else:
            base = sorted(Path(args.data).glob("*xC.csv"))
            if len(base) != 16:
                print(f"expected 16 ladder CSVs in {args.data}", file=sys.stderr)
                return 2
            targets, reps = TARGETS, args.reps
        for rep in range(reps):
            tmp = Path(d) / f"rep{rep}"
            tmp.mkdir()
            load = os.getloadavg()[0]
            res = one_rep(base, targets, tmp)
            ref = res["one call"]
            print(f"rep {rep + 1} (load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):")
            for way, (wall, cpu) in res.items():
                print(f"  {way:<32} wall {wall:6.1f} s ({wall / ref[0]:.2f}x)  CPU {cpu:6.1f} s "
                      f"({cpu / ref[1]:.2f}x)")
        print("every way gave the same predictions, intervals and grades")
    return 0


if __name__ == "__main__":
    sys.exit(main())
