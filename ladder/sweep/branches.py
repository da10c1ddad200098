"""The dependency of a WSD decay branch on its stable parent, as every backend sees it.

A branch may start once its parent has saved the checkpoint at its branch point (the parent
keeps running), or once it has a checkpoint of its own (a branch resumed). A parent that stops
for good before that point stops its waiting branches: their status file says
``parent_failed`` and why, so `ladder status` and the schedulers read it like any outcome. A
parent that is preempted or retried only makes them wait longer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ladder.exit_codes import PARENT_FAILED
from ladder.train.status import stopped_for_good


def checkpoint_saved(run_dir: str | os.PathLike, step: int) -> bool:
    """A complete, resumable checkpoint at ``step`` in ``run_dir`` (the layout of
    ladder/train/checkpoint.py, read without importing torch: SLURM's gate polls it from the
    batch shell; a test holds the two readers together)."""
    d = Path(run_dir) / "checkpoints" / f"step{step:07d}"
    try:
        manifest = json.loads((d / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and bool(manifest.get("has_state")) and \
        (d / "training_state" / "state.json").is_file()


def own_checkpoint(run_dir: str | os.PathLike | None) -> bool:
    """Whether a run directory holds any complete checkpoint (a branch started already)."""
    root = Path(run_dir) / "checkpoints" if run_dir is not None else None
    if root is None or not root.is_dir():
        return False
    return any(p.name.startswith("step") and p.name[4:].isdigit() and checkpoint_saved(run_dir, int(p.name[4:]))
               for p in root.iterdir())




@dataclass(frozen=True)
class BranchPoint:
    """What a branch job waits for: ``job``'s checkpoint at ``step`` in ``run_dir``."""

    job: str
    run_dir: Path
    step: int

    def reached(self) -> bool:
        return checkpoint_saved(self.run_dir, self.step)

    def failed(self) -> str | None:
        """Why the parent will never reach the point (its own status file), or None."""
        return None if self.reached() else stopped_for_good(self.run_dir)

    def describe(self) -> str:
        return f"{self.job} step {self.step}"


def ready(job) -> bool:
    """Whether ``job`` may start now: no parent, the branch point saved, or a start of its own."""
    point = getattr(job, "waits_for", None)
    return point is None or point.reached() or own_checkpoint(job.run_dir)


def stop_branch(job, why: str) -> str:
    """Record in the branch's run directory that it will not start, and why."""
    from ladder.train.status import read_status, write_status

    if (read_status(job.run_dir) or {}).get("outcome") != PARENT_FAILED:
        write_status(job.run_dir, PARENT_FAILED, step=0,
                     message=f"parent {job.waits_for.job} stopped before step "
                             f"{job.waits_for.step} ({why}); not started")
    return f"parent {job.waits_for.job} failed ({why})"


# States `ladder status` shows for a branch that has not started.
WAITING_STATE, PARENT_FAILED_STATE = "waiting", "parent failed"


def branch_state(job, state: str) -> tuple[str, str]:
    """(state, note) of a job for `ladder status`: a branch that has not started is waiting
    for its parent's branch point, or was stopped because its parent failed."""
    from ladder.train.status import read_status

    point = getattr(job, "waits_for", None)
    if point is None or state == "done":
        return state, ""
    st = read_status(job.run_dir) or {}
    if st.get("outcome") == PARENT_FAILED:
        return PARENT_FAILED_STATE, str(st.get("message", ""))
    if state == "new" and not ready(job):
        return WAITING_STATE, f"for {point.describe()}"
    return state, ""
