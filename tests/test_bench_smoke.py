"""The benchmark scripts' smoke modes, so they cannot rot while nobody runs them in full."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def test_bench_train_smoke():
    """Our step, our step with the loss on full logits (the before/after ratio) and the Trainer."""
    r = subprocess.run([sys.executable, str(ROOT / "tests/benchmarks/bench_train.py"), "--smoke"], env=ENV,
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for variant in ("ours", "ours-logits-loss", "trainer"):
        assert f"smoke {variant}:" in r.stdout


def test_bench_gpu_cpu_smoke():
    """The GPU verdict's every check on tiny presets (three `accelerate launch` runs, the
    recompile probe, a memory step: ~50 s of CPU, the price of a script that cannot rot)."""
    r = subprocess.run([sys.executable, str(ROOT / "tests/benchmarks/bench_gpu.py"), "--cpu-smoke"], env=ENV,
                       cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    table = r.stdout[r.stdout.index("verdict"):]
    for check in ("train", "preempt", "hf-load", "recompile", "memory tiny-9k"):
        assert f"\n{check}" in table and "FAIL" not in table
