"""Reading a large plain W&B history export (every training step a row, evaluations on a few):
`read_run` next to pandas.read_csv, the reader it replaced, each in a fresh process, time and
peak memory.

    PYTHONPATH=. python tests/benchmarks/bench_runlog_read.py [--rows 300000] [--every 1000]

The export is synthetic (written to a temporary directory): `_step`, tokens, 40 training
metrics, 10 accuracy and 10 bpb columns that hold a value every ``--every`` steps only.
"""

import argparse
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OURS = ("from analysis.runlog import read_run; r = read_run({path!r}); "
        "print(r.n_evals, r.column('tokens')[-1])")
PANDAS = ("import pandas as pd; df = pd.read_csv({path!r}); "
          "ev = [c for c in df.columns if c.startswith('eval/')]; "
          "df = df[df[ev].notna().any(axis=1)]; print(len(df), df['throughput/total_tokens'].iloc[-1])")


def write_export(path: Path, rows: int, every: int) -> None:
    rng = random.Random(0)
    cols = (["_step", "train/CrossEntropyLoss", "throughput/total_tokens"]
            + [f"train/m{i}" for i in range(40)]
            + [f"eval/downstream/t{i}_val_rc_5shot_len_norm" for i in range(10)]
            + [f"eval/downstream_bpb/t{i}_val_rc_5shot_bpb" for i in range(10)])
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        for s in range(1, rows + 1):
            ev = s % every == 0
            cells = [str(s), f"{2.5 - s * 1e-6:.6f}", str(s * 4_194_304)]
            cells += [f"{rng.random():.6f}" for _ in range(40)]
            cells += [f"{0.3 + s * 1e-7:.6f}" if ev else "" for _ in range(10)]
            cells += [f"{1.0 - s * 1e-7:.6f}" if ev else "" for _ in range(10)]
            f.write(",".join(cells) + "\n")


def measure(code: str) -> tuple[float, float, str]:
    """(seconds, peak MiB, stdout) of ``code`` in a fresh interpreter."""
    import time
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children so far
    return wall, max(peak, before) / 1024, res.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--every", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "7B-target.csv"
        write_export(path, args.rows, args.every)
        size = path.stat().st_size / 2 ** 20
        # ours first: ru_maxrss of children is a running maximum, so the smaller one goes first
        ours = measure(OURS.format(path=str(path)))
        theirs = measure(PANDAS.format(path=str(path)))
    print(f"export: {args.rows} rows, {size:.0f} MiB, an evaluation every {args.every} steps")
    print(f"read_run:        {ours[0]:5.2f} s, peak {ours[1]:6.0f} MiB  ({ours[2]})")
    print(f"pandas.read_csv: {theirs[0]:5.2f} s, peak {theirs[1]:6.0f} MiB  ({theirs[2]})")
    print(f"ratio: time {ours[0] / theirs[0]:.2f}, peak memory {ours[1] / theirs[1]:.2f}")
    return 0 if ours[2].split()[0] == theirs[2].split()[0] else 1


if __name__ == "__main__":
    sys.exit(main())
