"""WSD decay branches on SLURM: submitted held, released when their parent saves the branch
point, stopped when their parent fails for good.

A branch whose parent has not reached its branch point is submitted in an array of its own,
held (``--hold``): it takes no node while it waits. Its parent's batch script releases each
branch task once the checkpoint at its branch point exists, polling while the parent trains
and once more when the script exits (``release``); so the parent keeps running while its
branches train. For each such parent a small *stop* job waits on the parent's task with
``--dependency=afternotok``: SLURM starts it only if the parent's job ends in failure (gave up,
retries exhausted, cancelled, timed out, node lost), and cancels it (``--kill-on-invalid-dep``)
when the parent succeeds. It writes ``parent_failed`` into each still-waiting branch's status
file, with the reason, and cancels the branch (``stop``). A parent that is preempted and
requeued is pending again, not failed: its branches keep waiting.

This module renders and submits; what the jobs run is :mod:`ladder.sweep.slurm_gate`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from ladder.sweep.branches import ready, stop_branch
from ladder.sweep.launcher import Job

def waiting(jobs: Sequence[Job]) -> tuple[dict[str, list[Job]], list[Job]]:
    """Parent name -> its branches in ``jobs`` that must wait for it (held when submitted); and
    the branches whose parent is not among ``jobs`` (done or gone) and never saved their branch
    point: nothing would release them, so they are not submitted (:func:`stop_orphans`)."""
    names = {j.name for j in jobs}
    out: dict[str, list[Job]] = {}
    orphans = []
    for job in jobs:
        if job.waits_for is not None and not ready(job):
            if job.waits_for.job in names:
                out.setdefault(job.waits_for.job, []).append(job)
            else:
                orphans.append(job)
    return out, orphans


def stop_orphans(orphans: Sequence[Job], echo=print) -> None:
    for job in orphans:
        why = job.waits_for.failed() or f"not running and no checkpoint at step {job.waits_for.step}"
        echo(f"{job.name}: not submitted: {stop_branch(job, why)}")


def module_argv(action: str, sweep_dir: Path, parent: str) -> list[str]:
    return [sys.executable, "-m", "ladder.sweep.slurm_gate", action, str(sweep_dir), parent]


def gate_lines(every_s: int) -> list[str]:
    """Batch-script lines after the rung table: a parent task (GATE set) releases its branches
    as their branch points appear (looking every ``every_s`` seconds), and once more whenever
    the script exits."""
    return ['if [ -n "${GATE+x}" ]; then',
            "  # a WSD stable run: release each decay branch once its branch point is saved",
            f'  ( while ! "${{GATE[@]}}"; do sleep {int(every_s)}; done ) &',
            "  trap '\"${GATE[@]}\" || true' EXIT",
            "fi", ""]


def task_record(job: Job) -> dict[str, Any]:
    """What jobs.json says about a branch task: its parent and branch point."""
    p = job.waits_for
    return {} if p is None else {"parent": p.job, "parent_dir": str(p.run_dir), "branch_step": p.step}


def render_stop(ss, parent: str, resources) -> str:
    """The stop job of ``parent``: runs only if the parent's task ends in failure."""
    from ladder.sweep.slurm_script import comment_text, sbatch_lines

    lines = ["#!/bin/bash",
             f"# Sweep {comment_text(ss.sweep_dir)}: runs only if {parent} fails for good "
             "(afternotok): stops its waiting decay branches.",
             *sbatch_lines(f"{ss.job_prefix}-{ss.name}-stop-{parent}", resources,
                            ss.slurm_dir / "logs" / f"stop-{parent}.log", ss.workdir),
             "#SBATCH --open-mode=append",
             *ss.setup, "set -uo pipefail", "",
             f"exec {shlex.join(module_argv('stop', ss.sweep_dir, parent))}"]
    return "\n".join(lines) + "\n"


def submit_stops(ss, record: dict[str, Any], parents: Sequence[str], resources, sbatch) -> list[str]:
    """One stop job per parent with waiting branches, each after its parent's array task."""
    task_of = {t["rung"]: f"{a['job_id']}_{t['task']}" for a in record["arrays"] for t in a["tasks"]}
    ids = []
    for parent in parents:
        script = ss._write_script(f"stop-{parent}.sbatch", render_stop(ss, parent, resources))
        job_id = sbatch(script, [f"--dependency=afternotok:{task_of[parent]}", "--kill-on-invalid-dep=yes"])
        ids.append(job_id)
        record.setdefault("stops", []).append(
            {"job_id": job_id, "parent": parent, "after": task_of[parent], "script": str(script),
             "log": str(ss.slurm_dir / "logs" / f"stop-{parent}.log")})
    return ids
