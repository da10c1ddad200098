"""`ladder sweep --backend slurm` on a real single-node SLURM cluster: a 2x2 micro ladder of real
`ladder train` rungs as job arrays, a rung killed mid-run and requeued, `ladder status --predict`
run again and again meanwhile, and the dependent prediction job writing predictions.json. Run
with `pytest -m slurm` (.ci/run does)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.runlog import read_run
from tests.test_sweep import MICRO, one_line_or_ok, watch_sweep

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]


def _wait(predicate, timeout, what, sweep_dir, cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.expedite_requeued()
        if predicate():
            return
        time.sleep(1)
    logs = sorted((sweep_dir / "slurm" / "logs").glob("*.log"))
    detail = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{detail}")


def _rows(run_dir: Path) -> int:
    try:
        return len(read_run(run_dir).evals)
    except Exception:
        return 0


def test_micro_ladder_on_slurm_with_a_killed_rung_and_dependent_prediction(
        tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, **slurm_cluster.env, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "ladder", "sweep", str(ROOT / "recipes" / "tiny-cpu.yaml"),
            *MICRO, "slurm.cpus_per_task=1", "slurm.time='00:30:00'", "slurm.max_retries=2",
            "--backend", "slurm", "--out", str(out)]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prediction job" in r.stdout and "ladder status" in r.stdout

    # Kill one rung's trainer mid-run (a node failure: nothing saved at exit).
    victim = out / "runs" / "tiny-25k-2xC"
    _wait(lambda: _rows(victim) >= 3, 600, "tiny-25k-2xC to log 3 evaluations", out,
          slurm_cluster)
    killed = subprocess.run(["pkill", "-KILL", "-f", f"[-]-out {victim}"], capture_output=True)
    assert killed.returncode == 0, "the rung's trainer process was not found"

    # Watched from another terminal until the dependent prediction job has written its set.
    pred = out / "predictions" / "predictions.json"
    watched = watch_sweep(out, lambda: not pred.exists(), tick=slurm_cluster.expedite_requeued,
                          every=5.0, env=slurm_cluster.env, timeout=900)
    assert watched and all(one_line_or_ok(w) for w in watched), [w.stderr for w in watched]
    assert any("partial-ladder predictions from 3 of 4" in w.stdout for w in watched), \
        [w.stdout[-300:] + w.stderr for w in watched]
    assert (out / "predictions-partial" / "progress.json").is_file()
    preds = json.loads(pred.read_text())
    assert [(p["task"], p["target"]) for p in preds] == [("corpus_cont", "micro-target")]
    assert preds[0]["actual_acc"] is not None

    # The killed rung was retried, resumed from its checkpoint, and logged every evaluation
    # exactly once.
    run = read_run(victim)
    steps = [int(s) for s in run.evals["step"]]
    assert steps == sorted(set(steps))
    assert run.evals["tokens"].iloc[-1] >= run.meta.target_tokens
    log = "\n".join(p.read_text(errors="replace") for p in (out / "slurm" / "logs").glob("*.log"))
    assert "retry 1/2" in log

    s = subprocess.run([sys.executable, "-m", "ladder", "status", str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert s.returncode == 0, s.stderr
    assert "tiny-25k-2xC" in s.stdout and "predictions:" in s.stdout and "not yet" not in s.stdout
