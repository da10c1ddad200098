"""WSD decay branches on the real single-node SLURM cluster: branches are submitted held and wait
for their stable parent; a parent that fails for good stops them with a clear status
(status.json outcome `parent_failed`, `ladder status`); a preempted parent that is requeued only
makes them wait, and each branch is released, and trains beside its parent, once the parent has
saved its branch point. `pytest -m slurm` (the second test is also `slow`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from analysis.runlog import read_metrics_jsonl
from ladder.train.status import read_status
from tests.test_slurm_outcomes import _wait as wait_logged
from tests.test_wsd import RECIPE as WSD_RECIPE

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
RECIPE = {**WSD_RECIPE, "name": "wsd-slurm", "multipliers": [0.25, 0.5],
          "slurm": {"cpus_per_task": 1, "time": "00:20:00", "max_retries": 0, "branch_poll_seconds": 2}}


def _env(tmp_path, cluster) -> dict:
    return {**os.environ, **cluster.env, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
            "LADDER_CACHE": str(tmp_path / "cache")}


def _ladder(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ladder", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _wait(predicate, timeout, what, out: Path, cluster):
    wait_logged(predicate, timeout, what, cluster, out / "slurm" / "logs")


def _recipe(tmp_path, **train) -> Path:
    d = json.loads(json.dumps(RECIPE))
    d["train"].update(train)
    p = tmp_path / "wsd.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_a_failed_parent_stops_its_waiting_branches(tmp_path, slurm_cluster, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _env(tmp_path, slurm_cluster)
    out = tmp_path / "sweep"
    parent = out / "runs" / "tiny-9k-stable"
    parent.mkdir(parents=True)  # another run's directory: the parent fails at once, for good
    (parent / "run.json").write_text(json.dumps({"name": "someone-else", "n_params": 1}))
    try:
        r = _ladder(env, "sweep", _recipe(tmp_path), "--backend", "slurm", "--out", out, "--no-predict")
        assert r.returncode == 0, r.stdout + r.stderr
        jobs = json.loads((out / "slurm" / "jobs.json").read_text())["submissions"][-1]
        gated = [a for a in jobs["arrays"] if a["gated"]]
        assert [t["rung"] for a in gated for t in a["tasks"]] == ["tiny-9k-0.25xC", "tiny-9k-0.5xC"]
        assert [s["parent"] for s in jobs["stops"]] == ["tiny-9k-stable"]
        s = _ladder(env, "status", out)  # the parent is still starting: its branches wait, held
        assert "waiting (for tiny-9k-stable step 21)" in s.stdout, s.stdout + s.stderr
        branches = [out / "runs" / n for n in ("tiny-9k-0.25xC", "tiny-9k-0.5xC")]
        _wait(lambda: all((read_status(b) or {}).get("outcome") == "parent_failed" for b in branches),
              240, "the stop job to stop both branches", out, slurm_cluster)
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, env=env)
    log = (out / "slurm" / "logs").glob("array-*_0.log")
    assert any("not retried" in p.read_text(errors="replace") for p in log)
    for b in branches:
        st = read_status(b)
        assert "tiny-9k-stable" in st["message"] and "not started" in st["message"], st
        assert not (b / "metrics.jsonl").exists() and not (b / "checkpoints").exists()
    stop_log = (out / "slurm" / "logs" / "stop-tiny-9k-stable.log").read_text(errors="replace")
    assert stop_log.count("cancelled") == 2, stop_log
    s = _ladder(env, "status", out)
    assert s.returncode == 0, s.stderr
    rows = {ln.split()[0]: ln for ln in s.stdout.splitlines() if ln.startswith("tiny-9k")}
    assert "parent failed" in rows["tiny-9k-0.25xC"] and "parent failed" in rows["tiny-9k-0.5xC"]
    assert "failed" in rows["tiny-9k-stable"]


@pytest.mark.slow
def test_branches_wait_through_a_preemption_then_train_beside_their_parent(tmp_path, slurm_cluster,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _env(tmp_path, slurm_cluster)
    out = tmp_path / "sweep"
    d = json.loads(json.dumps(RECIPE))
    # a stable run of ~650 steps: the first branch (released at step 41) starts while it trains
    # on however fast a machine (with ~160 steps an idle one finished the parent first)
    d["multipliers"] = [0.5, 8]
    d["checkpoint"]["interval"] = 10  # a checkpoint before the first branch point (step 41)
    p = tmp_path / "wsd.yaml"
    p.write_text(yaml.safe_dump(d))
    parent = out / "runs" / "tiny-9k-stable"
    first, last = out / "runs" / "tiny-9k-0.5xC", out / "runs" / "tiny-9k-8xC"
    try:
        r = _ladder(env, "sweep", p, "--backend", "slurm", "--out", out, "--no-predict")
        assert r.returncode == 0, r.stdout + r.stderr
        stable_task = next(f"{a['job_id']}_{t['task']}" for a in json.loads(
            (out / "slurm" / "jobs.json").read_text())["submissions"][-1]["arrays"]
            for t in a["tasks"] if t["rung"] == "tiny-9k-stable")
        _wait(lambda: (parent / "checkpoints").is_dir() and any(
            c.name.startswith("step") for c in (parent / "checkpoints").iterdir()), 300,
            "the parent's first checkpoint", out, slurm_cluster)
        slurm_cluster.run("scancel", "--signal=USR1", "--batch", stable_task)  # preempt the parent
        _wait(lambda: (read_status(parent) or {}).get("outcome") == "preempted", 120,
              "the parent to checkpoint on USR1", out, slurm_cluster)
        s = _ladder(env, "status", out)  # requeued: its branches only wait
        assert s.stdout.count("waiting (for tiny-9k-stable") == 2, s.stdout
        _wait(lambda: (read_status(last) or {}).get("outcome") == "completed", 600,
              "the last branch to complete", out, slurm_cluster)
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, env=env)
    plog = next(p for p in (out / "slurm" / "logs").glob("array-*_0.log")
                if "rung=tiny-9k-stable" in p.read_text(errors="replace")).read_text(errors="replace")
    assert "(outcome: preempted)" in plog and "released" in plog
    done = json.loads((parent / "status.json").read_text())["time"]
    started = [ln for ln in (out / "slurm" / "logs").glob("array-*.log")
               if "rung=tiny-9k-0.5xC" in ln.read_text(errors="replace")][0].read_text(errors="replace")
    assert "starting from tiny-9k-stable at step 41" in started
    # the first branch began while its parent was still training (it keeps running)
    began = started.split("[ladder] ", 1)[1].split()[0]
    assert began[:19] < done[:19], (began, done)
    for b in (first, last):
        rows = read_metrics_jsonl(b / "metrics.jsonl")
        step = json.loads((b / "run.json").read_text())["branch_step"]
        assert [r for r in rows if r["step"] <= step] == \
            [r for r in read_metrics_jsonl(parent / "metrics.jsonl") if r["step"] <= step]
        assert (read_status(b) or {}).get("outcome") == "completed"
    s = _ladder(env, "status", out)
    assert s.returncode == 0 and s.stdout.count(" done ") == 3, s.stdout
