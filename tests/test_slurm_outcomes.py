"""Failure semantics on the real single-node SLURM cluster, with real `ladder train` rungs: a
rung whose input is bad is not retried; a 2-process CPU rung (accelerate launch, gloo) asked to
checkpoint with USR1 is requeued from its status file (accelerate turns the workers' 75 into 1)
and resumes exactly; the final job then runs. `pytest -m slurm`."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from analysis.runlog import read_run
from ladder.sweep.launcher import Job, Resources
from ladder.sweep.slurm import SlurmSweep
from ladder.train import checkpoint as ckpt
from ladder.train.status import read_status

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
VAL = "eval/pystdlib-validation/CrossEntropyLoss"
RECIPE = {
    "name": "slurm-outcomes",
    "model": {"sizes": ["tiny-43k"], "tokenizer_vocab_size": 300},
    "data": {"source": "pystdlib", "max_bytes": 300_000, "validation_tokens": 2048},
    "multipliers": [0.3],
    "train": {"seq_len": 32, "batch_tokens": 512, "micro_batch_size": 8, "cpu_threads": 1},
    "evaluation": {"count": 6, "early": 0, "batch_size": 16},
    "checkpoint": {"interval": 20, "keep_last": 2},
    "tracking": {"log_interval": 2},
}
FINAL = r'''
import json, sys
from pathlib import Path
status = json.loads((Path(sys.argv[1]) / "status.json").read_text())
assert status["outcome"] == "completed", status
Path(sys.argv[2]).write_text("ran after " + status["outcome"])
'''


def _wait(predicate, timeout, what, cluster, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.expedite_requeued()
        if predicate():
            return
        time.sleep(0.5)
    text = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(logs.glob("*.log")))
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{text}")


def _train_argv(recipe: Path, out: Path, *overrides) -> list[str]:
    return [sys.executable, "-m", "ladder", "train", str(recipe), "--out", str(out), "--no-progress",
            *overrides]


def test_bad_input_not_retried_preempted_two_process_rung_resumes_exactly(tmp_path, slurm_cluster,
                                                                           monkeypatch):
    from ladder.recipe import load_recipe
    from ladder.train.loop import train

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("LADDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    # The reference: one uninterrupted process (also fills the tokenizer cache the jobs reuse).
    train(load_recipe(recipe), out=tmp_path / "ref", cache=tmp_path / "cache", progress=False)
    ref = read_run(tmp_path / "ref")

    bad_dir, pre_dir, marker = tmp_path / "A" / "bad", tmp_path / "B" / "pre", tmp_path / "final-ran"
    bad = SlurmSweep(tmp_path / "A", [Job("bad", _train_argv(recipe, bad_dir, "train.lr=hot"), bad_dir,
                                          Resources(cpus_per_task=1))], max_retries=2)
    final = Job("final", (sys.executable, "-c", FINAL, str(pre_dir), str(marker)), None,
                Resources(cpus_per_task=1))
    pre = SlurmSweep(tmp_path / "B", [Job("pre", _train_argv(recipe, pre_dir), pre_dir,
                                          Resources(cpus_per_task=2, processes_per_node=2))],
                     final, max_retries=0)  # a crash would fail the test: only the preemption requeues
    bad.submit()
    array = pre.submit()["arrays"][0]["job_id"]
    try:
        # bad input: one attempt, the status says why, no requeue
        _wait(lambda: (read_status(bad_dir) or {}).get("outcome") == "bad_input" and
              "not retried" in (bad.slurm_dir / "logs" / "array-0_0.log").read_text(),
              300, "the bad rung to give up", slurm_cluster, bad.slurm_dir / "logs")
        log = (bad.slurm_dir / "logs" / "array-0_0.log").read_text()
        assert log.count("rung=bad") == 1 and "requeue" not in log

        # the 2-process rung: USR1 to the batch shell after its first checkpoint
        _wait(lambda: ckpt.latest_resumable(pre_dir) is not None, 600, "the first checkpoint",
              slurm_cluster, pre.slurm_dir / "logs")
        slurm_cluster.run("scancel", "--signal=USR1", "--batch", f"{array}_0")
        _wait(marker.exists, 900, "the final job", slurm_cluster, pre.slurm_dir / "logs")
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True)
    log = (pre.slurm_dir / "logs" / "array-0_0.log").read_text()
    assert "(outcome: preempted)" in log and "requeue" in log and "restart=1" in log
    assert json.loads((pre_dir / "run.json").read_text())["num_processes"] == 2
    run = read_run(pre_dir)
    assert list(run.evals["step"]) == list(ref.evals["step"])  # every evaluation exactly once
    assert max(abs(run.evals[VAL] - ref.evals[VAL])) < 1e-5
    assert marker.read_text() == "ran after completed"
