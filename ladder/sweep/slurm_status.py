"""What each rung of a SLURM sweep is doing: the scheduler's view (scontrol) combined with what
the rung's run directory says, for `ladder status`."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from ladder.sweep.rundir import RunState, run_state
from ladder.sweep.slurm import task_ids, load_jobs, scontrol_jobs
from ladder.sweep.slurm_gate import branch_status
from ladder.units import si

# Rung states reported by :func:`status`.
QUEUED, RUNNING, REQUEUED, DONE, FAILED, NOT_SUBMITTED = (
    "queued", "running", "requeued", "done", "failed", "not submitted")


@dataclass
class RungStatus:
    name: str
    state: str  # queued / running / requeued / done / failed / not submitted
    run_dir: str
    job_id: str | None = None  # "ARRAY_TASK"
    slurm_state: str | None = None
    restarts: int = 0
    reason: str | None = None
    tokens: float | None = None
    target_tokens: float | None = None
    loss: float | None = None
    evals: int = 0
    log: str | None = None


@dataclass
class SweepStatus:
    rungs: list[RungStatus]
    final: dict[str, Any] | None = None  # job_id, state, reason, log

    @property
    def all_done(self) -> bool:
        return all(r.state == DONE for r in self.rungs)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rungs:
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"rungs": [asdict(r) for r in self.rungs], "final": self.final,
                "counts": self.counts()}

    def table(self) -> str:
        head = ("rung", "state", "job", "slurm", "restarts", "tokens", "target", "loss")
        rows = [head]
        for r in self.rungs:
            rows.append((r.name, r.state, r.job_id or "-", r.slurm_state or "-", str(r.restarts),
                         si(r.tokens, 3), si(r.target_tokens, 3),
                         f"{r.loss:.4f}" if r.loss is not None else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                         for row in rows)
        if self.final:
            text += (f"\nfinal job {self.final['job_id']}: {self.final['state']}"
                     + (f" ({self.final['reason']})" if self.final.get("reason") not in
                        (None, "None") else ""))
        return text


def _slurm_records(submission: dict[str, Any]) -> dict[str, dict[str, str]]:
    """rung name -> its array task's scontrol record (from the latest submission)."""
    out: dict[str, dict[str, str]] = {}
    for array in submission.get("arrays", []):
        by_task = {t["task"]: t for t in array["tasks"]}
        for rec in scontrol_jobs(array["job_id"]):
            for task in task_ids(rec.get("ArrayTaskId", "")):
                if task in by_task:
                    out[by_task[task]["rung"]] = {**rec, "_task": f"{array['job_id']}_{task}",
                                                  "_log": by_task[task]["log"]}
    return out


def status(sweep_dir: str | os.PathLike) -> SweepStatus:
    """Per-rung state from SLURM (``scontrol show job``; no accounting database needed) and the
    run directories (tokens, last loss, done). A rung SLURM no longer knows is done or failed
    by its run directory alone."""
    data = load_jobs(sweep_dir)
    subs = data["submissions"]
    latest = subs[-1] if subs else {}
    have_slurm = shutil.which("scontrol") is not None  # else: from the run directories alone
    slurm = _slurm_records(latest) if latest and have_slurm else {}
    submitted = {t["rung"]: (a["job_id"], t) for a in latest.get("arrays", []) for t in a["tasks"]}
    rungs = []
    for name, info in data["rungs"].items():
        rs = run_state(info["run_dir"])
        st = RungStatus(name=name, state=NOT_SUBMITTED, run_dir=info["run_dir"],
                        tokens=rs.tokens, target_tokens=rs.target_tokens, loss=rs.loss,
                        evals=rs.evals)
        rec = slurm.get(name)
        if name in submitted:
            array_id, task = submitted[name]
            st.job_id, st.log = f"{array_id}_{task['task']}", task["log"]
        if rec:
            st.slurm_state = rec.get("JobState")
            st.restarts = int(rec.get("Restarts", "0") or 0)
            st.reason = rec.get("Reason")
        st.state = (_combine(rs, st.slurm_state, st.restarts, name in submitted) if have_slurm
                    else DONE if rs.done else f"unknown ({rs.state}; scontrol not found)")
        # a WSD branch: waiting for its parent, or stopped by its failure
        st.state = branch_status(st.state, submitted[name][1] if name in submitted else info,
                                 st.reason)
        rungs.append(st)
    final = None
    if latest.get("final"):
        f = latest["final"]
        recs = scontrol_jobs(f["job_id"]) if have_slurm else []
        rec = recs[0] if recs else {}
        final = {"job_id": f["job_id"], "name": f.get("name"), "log": f.get("log"),
                 "state": rec.get("JobState", "UNKNOWN (no longer in SLURM)"),
                 "reason": rec.get("Reason")}
    return SweepStatus(rungs, final)


def _combine(rs: RunState, slurm_state: str | None, restarts: int, submitted: bool) -> str:
    if slurm_state in ("RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"):
        return RUNNING
    if slurm_state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return REQUEUED
    if slurm_state in ("PENDING", "SUSPENDED", "RESV_DEL_HOLD", "STOPPED"):
        return REQUEUED if restarts > 0 else QUEUED
    if rs.done:
        return DONE
    if slurm_state is not None or submitted:
        return FAILED  # ended (FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...) or forgotten, unfinished
    return NOT_SUBMITTED
