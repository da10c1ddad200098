"""The SLURM backend against a real single-node SLURM cluster (started by the fixture).

Rungs here are a stand-in trainer (STANDIN below) with the real trainer's contract: it writes
run.json + metrics.jsonl through RunLogWriter, checkpoints its position atomically, on
SIGTERM/SIGUSR1 saves and exits with the checkpoint exit code, and when rerun resumes from its
last checkpoint (dropping evaluations logged after it). Run with ``pytest -m slurm``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.runlog import read_run
from ladder.sweep.launcher import CHECKPOINT_EXIT_CODE, Job, Resources
from ladder.sweep.slurm import SbatchError, SlurmError, SlurmSweep, load_jobs
from ladder.sweep.slurm_status import DONE, FAILED, QUEUED, REQUEUED, RUNNING, status

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SWEEP = "sweep dir"  # a space in every path the scripts and #SBATCH lines carry
NOTE = "it's \"odd\" $HOME `id` $(id) \\ ;|& ünï\nline"  # must reach the rung byte for byte

STANDIN = r'''
"""Stand-in rung: the trainer's resume/checkpoint/signal contract, with sleeps for steps."""
import argparse, json, os, signal, sys, time
from analysis.runlog import RunLogWriter, RunMeta
from analysis.files import atomic_write_text

p = argparse.ArgumentParser()
p.add_argument("--run-dir", required=True)
p.add_argument("--name", required=True)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--batch-tokens", type=int, default=1000)
p.add_argument("--ckpt-every", type=int, default=3)
p.add_argument("--step-seconds", type=float, default=0.1)
p.add_argument("--fail", type=int, default=0, help="exit with this code at once")
p.add_argument("--note", default="")
a = p.parse_args()

stop = []
signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
signal.signal(signal.SIGUSR1, lambda s, f: stop.append(s))
log = RunLogWriter(a.run_dir)
ckpt = os.path.join(a.run_dir, "ckpt.json")
step = json.load(open(ckpt))["step"] if os.path.exists(ckpt) else 0
if step:
    log.resume_at(step)  # evaluations after the checkpoint are redone, never duplicated
else:
    log.write_meta(RunMeta(name=a.name, target_tokens=a.steps * a.batch_tokens,
                           batch_tokens=a.batch_tokens, n_params=1000, extra={"note": a.note}))
with open(os.path.join(a.run_dir, "starts.log"), "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "resume_step": step,
                        "job": os.environ.get("SLURM_JOB_ID")}) + "\n")
atomic_write_text(os.path.join(a.run_dir, "pid"), str(os.getpid()))
if a.fail:
    sys.exit(a.fail)
while step < a.steps:
    time.sleep(a.step_seconds)
    step += 1
    log.append({"step": step, "tokens": step * a.batch_tokens,
                "train/CrossEntropyLoss": 10.0 / (1 + step)})
    if step % a.ckpt_every == 0 or stop or step == a.steps:
        atomic_write_text(ckpt, json.dumps({"step": step}))
    if stop and step < a.steps:
        print(f"signal {stop[0]}: checkpointed at step {step}", flush=True)
        sys.exit(CHECKPOINT_EXIT)
'''

PREDICT = r'''
"""Stand-in final job: reads every rung's run log, writes predictions.json."""
import json, sys
from pathlib import Path
from analysis.runlog import read_run
from analysis.files import atomic_write_text
out, runs = Path(sys.argv[1]), [read_run(p) for p in sys.argv[2:]]
out.mkdir(parents=True, exist_ok=True)
atomic_write_text(out / "predictions.json", json.dumps({
    "runs": {r.name: {"tokens": r.d, "loss": r.final("train/CrossEntropyLoss", last=1)}
             for r in runs}}, indent=2))
'''


def _script(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text.replace("CHECKPOINT_EXIT", str(CHECKPOINT_EXIT_CODE)))
    return path


def _rung(tmp: Path, name: str, resources: Resources = Resources(), **opts) -> Job:
    run_dir = tmp / SWEEP / "runs" / name
    argv = [sys.executable, str(tmp / "standin.py"), "--run-dir", str(run_dir), "--name", name]
    for k, v in opts.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return Job(name, argv, run_dir, resources)


@pytest.fixture
def sweep_env(tmp_path, slurm_cluster, monkeypatch):
    """Stand-in scripts in tmp_path; jobs import `analysis` from the repo."""
    _script(tmp_path, "standin.py", STANDIN)
    _script(tmp_path, "predict.py", PREDICT)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True)
    slurm_cluster.wait_jobs_gone(60)


def _wait(predicate, timeout: float, what: str, sweep_dir: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    detail = ""
    if sweep_dir is not None:
        logs = sorted((sweep_dir / "slurm" / "logs").glob("*.log"))
        detail = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs)
        detail += "\n" + status(sweep_dir).table()
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{detail}")


def _steps(run_dir: Path) -> list[int]:
    return [int(s) for s in read_run(run_dir).evals["step"]]


def _starts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "starts.log").read_text().splitlines()]


def test_ladder_array_with_dependent_prediction(sweep_env, slurm_cluster):
    """2 sizes x 2 multipliers: two arrays (one per resource request) and an afterok final
    job that reads all four run logs."""
    tmp = sweep_env
    small, large = Resources(cpus_per_task=1, time="5"), Resources(cpus_per_task=1, time="10")
    rungs = [_rung(tmp, f"{size}-{mult}xC", res, steps=4 * mult, step_seconds=0.05, note=NOTE)
             for size, res in (("s1", small), ("s2", large)) for mult in (1, 2)]
    pred_dir = tmp / SWEEP / "predictions"
    final = Job("predict", [sys.executable, str(tmp / "predict.py"), str(pred_dir),
                            *[str(r.run_dir) for r in rungs]])
    sweep = SlurmSweep(tmp / SWEEP, rungs, final)
    assert [len(g.rungs) for g in sweep.groups] == [2, 2]

    t0 = time.monotonic()
    record = sweep.submit()
    assert len(record["arrays"]) == 2 and record["final"]["job_id"].isdigit()
    assert load_jobs(tmp / SWEEP)["submissions"][-1] == record
    _wait(lambda: (pred_dir / "predictions.json").exists(), 120, "predictions.json",
          tmp / SWEEP)
    elapsed = time.monotonic() - t0

    preds = json.loads((pred_dir / "predictions.json").read_text())["runs"]
    assert set(preds) == {r.name for r in rungs}
    for r in rungs:
        mult = int(r.name.split("-")[1][0])
        assert preds[r.name]["tokens"] == 4 * mult * 1000
        assert _steps(r.run_dir) == list(range(1, 4 * mult + 1))
        assert preds[r.name]["loss"] == pytest.approx(10.0 / (1 + 4 * mult))
        assert read_run(r.run_dir).meta.extra["note"] == NOTE
    st = _wait(lambda: (s := status(tmp / SWEEP)).final["state"] == "COMPLETED" and s, 30,
               "final job COMPLETED")
    assert [r.state for r in st.rungs] == [DONE] * 4
    assert all(r.tokens == r.target_tokens for r in st.rungs)
    assert st.all_done
    print(f"\n2x2 ladder + prediction on SLURM: {elapsed:.1f}s from submit to predictions.json")


def test_preempted_and_killed_rungs_resume_without_lost_evaluations(sweep_env, slurm_cluster):
    """Task 0 gets the time-limit signal (USR1 to the batch shell, as --signal=B:USR1@ sends
    it): it checkpoints, exits with the checkpoint code and requeues itself. Task 1's process is
    SIGKILLed (a node failure, nothing saved at exit): it is requeued as a retry and resumes from
    its last periodic checkpoint. Both end with every evaluation exactly once."""
    tmp = sweep_env
    steps = 40
    rungs = [_rung(tmp, name, Resources(cpus_per_task=1), steps=steps, step_seconds=0.1,
                   ckpt_every=4) for name in ("preempted", "killed")]
    sweep = SlurmSweep(tmp / SWEEP, rungs, max_retries=1)
    array = sweep.submit()["arrays"][0]["job_id"]
    pre, kil = (r.run_dir for r in rungs)

    _wait(lambda: (pre / "metrics.jsonl").exists() and len(_steps(pre)) >= 6, 60,
          "preempted rung to log 6 evaluations", tmp / SWEEP)
    st = {r.name: r for r in status(tmp / SWEEP).rungs}
    assert st["preempted"].state == RUNNING and st["preempted"].slurm_state == "RUNNING"
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", f"{array}_0")

    _wait(lambda: (kil / "metrics.jsonl").exists() and len(_steps(kil)) >= 10, 60,
          "killed rung to log 10 evaluations", tmp / SWEEP)
    killed_pid = int((kil / "pid").read_text())
    os.kill(killed_pid, signal.SIGKILL)  # same machine: the fixture's cluster is this host
    killed_at = max(_steps(kil))

    seen: dict[str, set] = {r.name: set() for r in rungs}

    def both_done():
        slurm_cluster.expedite_requeued()
        rungs_now = status(tmp / SWEEP).rungs
        for r in rungs_now:
            seen[r.name].add(r.state)
        return all(r.state == DONE for r in rungs_now)

    _wait(both_done, 120,
          "both rungs done after requeue", tmp / SWEEP)
    for run_dir in (pre, kil):
        assert _steps(run_dir) == list(range(1, steps + 1)), "evaluations lost or duplicated"
        starts = _starts(run_dir)
        assert len(starts) == 2, starts
        assert starts[0]["resume_step"] == 0 and starts[1]["resume_step"] > 0
    # The preempted rung saved at the step it was signalled; the killed one lost the steps
    # after its last periodic checkpoint and redid them.
    assert _starts(kil)[1]["resume_step"] % 4 == 0 and _starts(kil)[1]["resume_step"] <= killed_at
    assert all(REQUEUED in states for states in seen.values()), seen
    st = {r.name: r for r in status(tmp / SWEEP).rungs}
    assert st["preempted"].restarts == 1 and st["killed"].restarts == 1
    log0 = (tmp / SWEEP / "slurm" / "logs" / "array-0_0.log").read_text()
    assert "requeue" in log0 and f"rung exited with {CHECKPOINT_EXIT_CODE}" in log0
    log1 = (tmp / SWEEP / "slurm" / "logs" / "array-0_1.log").read_text()
    assert "retry 1/1" in log1


def test_rejected_option_shows_sbatch_error_verbatim(sweep_env, slurm_cluster):
    """A partition the cluster does not have: the error is sbatch's own text, and the array
    that was accepted before it is cancelled (all-or-nothing submission)."""
    tmp = sweep_env
    good = _rung(tmp, "good", Resources(cpus_per_task=1))
    bad = _rung(tmp, "bad", Resources(cpus_per_task=1, partition="no-such-partition"))
    sweep = SlurmSweep(tmp / SWEEP, [good, bad])
    with pytest.raises(SbatchError) as err:
        sweep.submit()
    direct = subprocess.run(["sbatch", "--parsable", "--hold",
                             str(tmp / SWEEP / "slurm" / "array-1.sbatch")],
                            capture_output=True, text=True)
    assert direct.returncode != 0
    assert err.value.stderr == direct.stderr  # verbatim
    assert direct.stderr.strip() in str(err.value)
    assert "no-such-partition" in str(err.value) or "invalid partition" in str(err.value).lower()
    assert slurm_cluster.squeue_ids() == []  # the accepted first array was cancelled
    assert load_jobs(tmp / SWEEP)["submissions"] == []
    assert not (good.run_dir / "metrics.jsonl").exists()


def test_status_states_and_resubmission(sweep_env, slurm_cluster):
    """queued -> running -> done, a failing rung ends 'failed' (its retries used up), the final
    job is cancelled by its unmet afterok; a new submission is refused while jobs are active and
    afterwards submits only the unfinished rung."""
    tmp = sweep_env
    res = Resources(cpus_per_task=2)  # the whole node: tasks run one at a time
    rungs = [_rung(tmp, "slow", res, steps=15, step_seconds=0.2),
             _rung(tmp, "quick", res, steps=2, step_seconds=0.05),
             _rung(tmp, "broken", res, fail=3)]
    final = Job("predict", [sys.executable, "-c", "print('never')"])
    sweep = SlurmSweep(tmp / SWEEP, rungs, final, max_retries=0)
    sweep.submit()

    st = _wait(lambda: (s := {r.name: r for r in status(tmp / SWEEP).rungs})["slow"].state
               == RUNNING and s, 30, "slow rung running", tmp / SWEEP)
    assert st["quick"].state == QUEUED and st["broken"].state == QUEUED
    assert st["quick"].slurm_state == "PENDING"
    with pytest.raises(SlurmError, match="still queued or running"):
        SlurmSweep(tmp / SWEEP, rungs, final).submit()

    _wait(lambda: {r.state for r in status(tmp / SWEEP).rungs} == {DONE, FAILED}, 90,
          "rungs finished", tmp / SWEEP)
    final_state = _wait(lambda: (f := status(tmp / SWEEP).final)["state"] != "PENDING" and f,
                        30, "final job to leave PENDING")
    st = {r.name: r for r in status(tmp / SWEEP).rungs}
    assert (st["slow"].state, st["quick"].state, st["broken"].state) == (DONE, DONE, FAILED)
    assert st["broken"].slurm_state == "FAILED"
    assert st["slow"].tokens == 15_000 and st["slow"].loss == pytest.approx(10.0 / 16)
    assert final_state["state"] == "CANCELLED"  # afterok can never be satisfied
    table = status(tmp / SWEEP).table()
    assert "broken" in table and "failed" in table

    again = SlurmSweep(tmp / SWEEP, rungs, final, max_retries=0)
    assert [j.name for j in again.pending_rungs()] == ["broken"]
    record = again.submit()
    assert [t["rung"] for t in record["arrays"][0]["tasks"]] == ["broken"]
    assert record["rungs_done_before"] == ["slow", "quick"]
