"""What a WSD sweep's SLURM jobs run about branches (see :mod:`ladder.sweep.slurm_branches`):
``release`` in a parent's batch shell, ``stop`` in its stop job, and the branch states
`ladder status` shows. Run as ``python -m ladder.sweep.slurm_gate release|stop SWEEP_DIR
PARENT``; torch is never imported (the gate polls from the parent's batch shell)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from ladder.exit_codes import PARENT_FAILED
from ladder.sweep.branches import PARENT_FAILED_STATE, WAITING_STATE, BranchPoint, ready, stop_branch
from ladder.sweep.launcher import Job
from ladder.sweep.slurm import load_jobs, scontrol_jobs, slurm_command
from ladder.train.status import read_status


def _branch_tasks(sweep_dir: Path, parent: str) -> tuple[list[tuple[str, Job]], str | None]:
    """(SLURM task id, job) of the latest submission's held branches of ``parent``, and the
    parent's own task id."""
    subs = load_jobs(sweep_dir)["submissions"]
    out, parent_task = [], None
    for array in (subs[-1].get("arrays", []) if subs else []):
        for t in array["tasks"]:
            if t["rung"] == parent:
                parent_task = f"{array['job_id']}_{t['task']}"
            if array.get("gated") and t.get("parent") == parent:
                point = BranchPoint(parent, Path(t["parent_dir"]), int(t["branch_step"]))
                job = Job(t["rung"], ("-",), Path(t["run_dir"]), waits_for=point)
                out.append((f"{array['job_id']}_{t['task']}", job))
    return out, parent_task


def release(sweep_dir: Path, parent: str) -> int:
    """Release every held branch of ``parent`` whose branch point is saved. 0 when none is left
    waiting (the gate's loop ends), 1 otherwise."""
    left = 0
    for task, job in _branch_tasks(sweep_dir, parent)[0]:
        if not ready(job):
            left += 1
            continue
        r = slurm_command(["scontrol", "release", task], check=False)
        if r.returncode == 0:
            print(f"[ladder] {job.name}: branch point {job.waits_for.describe()} saved; released {task}",
                  flush=True)
    return 1 if left else 0


def stop(sweep_dir: Path, parent: str) -> int:
    """The parent failed for good: every branch still waiting gets ``parent_failed`` (with the
    parent's own outcome, or SLURM's state of its job) and is cancelled."""
    release(sweep_dir, parent)  # a branch point saved before the failure: that branch goes on
    tasks, parent_task = _branch_tasks(sweep_dir, parent)
    state = next((r.get("JobState") for r in scontrol_jobs(parent_task)), None) if parent_task else None
    for task, job in tasks:
        if ready(job):
            continue
        why = job.waits_for.failed() or f"its SLURM job {parent_task} ended {state or 'in failure'}"
        msg = stop_branch(job, why)
        slurm_command(["scancel", task], check=False)
        print(f"[ladder] {job.name}: {msg}; cancelled {task}", flush=True)
    return 0


def branch_status(state: str, task: dict[str, Any], slurm_reason: str | None) -> str:
    """A rung's state for `ladder status` where it is a WSD branch: waiting (held for its
    parent's branch point) or stopped because its parent failed; any other state as it is."""
    if state == "done":
        return state
    if (read_status(task["run_dir"]) or {}).get("outcome") == PARENT_FAILED:
        return PARENT_FAILED_STATE
    if task.get("parent") and slurm_reason == "JobHeldUser":
        return f"{WAITING_STATE} (for {task['parent']} step {task['branch_step']})"
    return state


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("release", "stop"):
        print("usage: python -m ladder.sweep.slurm_gate release|stop SWEEP_DIR PARENT",
              file=sys.stderr)
        return 2
    action, sweep_dir, parent = argv
    return (release if action == "release" else stop)(Path(sweep_dir), parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
