"""SLURM backend for sweeps: sbatch scripts, submission, preemption. The script lines (the rung's
bash body included) are in :mod:`ladder.sweep.slurm_script`, per-rung status in
:mod:`ladder.sweep.slurm_status`; what stays here is a sweep's jobs from recipe block to
submitted array.

Layout written under ``SWEEP_DIR/slurm/``:
  ``array-<k>.sbatch``  one job ARRAY per group of rungs with identical resources (a SLURM
                        array has one resource request for all its tasks, so a ladder whose
                        sizes need different GPUs/time becomes one array per distinct request;
                        task ``i`` picks its rung from a ``case`` table in the script);
  ``final.sbatch``      the job that runs after every array succeeded (``afterok``);
  ``logs/``             one log per array task (appended across requeues) and the final job's;
  ``jobs.json``         the submitted job ids and which task runs which rung (atomic writes).

Preemption/time limit: arrays are submitted with ``--requeue`` and
``--signal=B:USR1@<seconds>``. The batch shell traps USR1 and forwards it to ``srun``, which
delivers it to every process of the rung's step (the trainer saves a checkpoint and exits with
:data:`CHECKPOINT_EXIT_CODE`; ``accelerate launch`` itself ignores it), then requeues its own
array task; the rerun resumes from that checkpoint. SLURM holds a requeued job for about two
minutes (``Reason=BeginTime``) before it is eligible again. The same requeue happens whenever the rung
exits with the checkpoint code, and a rung that fails otherwise (a killed process, a lost node)
is requeued up to ``max_retries`` times. On SIGTERM from SLURM itself (scancel, preemption)
the script does not requeue: SLURM decides whether the job comes back.

Submission is all-or-nothing: arrays are submitted held, then the final job; if any sbatch is
rejected, what was submitted is cancelled and :class:`SbatchError` shows sbatch's stderr
verbatim; otherwise the ids are recorded and the arrays released.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from analysis.files import atomic_write_text
from ladder.sweep.rundir import run_state
from ladder.sweep.launcher import CHECKPOINT_EXIT_CODE, Job, JobSpecError, Resources
from ladder.sweep.slurm_config import SlurmConfig  # noqa: F401  (the recipe's slurm: block)
from ladder.sweep.slurm_script import comment_text, launch_line, rung_body, sbatch_lines

SLURM_SUBDIR = "slurm"
JOBS_JSON = "jobs.json"
JOBS_FORMAT = "ladder-slurm-jobs/1"

_ACTIVE_SLURM = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD",
                 "STOPPED", "SPECIAL_EXIT"}


class SlurmError(RuntimeError):
    """A SLURM command failed; the message carries its stderr verbatim."""


class SbatchError(SlurmError):
    """sbatch rejected a script (bad partition, account, option...)."""

    def __init__(self, script: Path, returncode: int, stderr: str):
        self.script, self.returncode, self.stderr = script, returncode, stderr
        super().__init__(f"sbatch rejected {script} (exit {returncode}):\n{stderr.rstrip()}")


# ---------------------------------------------------------------------------- rendering


@dataclass
class ArrayGroup:
    """Rungs sharing one resource request: one SLURM array, task i = rungs[i]."""

    index: int
    resources: Resources
    rungs: list[Job]
    gated: bool = False  # WSD branches waiting for their parents: submitted held (slurm_branches)

    @property
    def script_name(self) -> str:
        return f"array-{self.index}.sbatch"

    @property
    def log_pattern(self) -> str:
        return f"array-{self.index}_%a.log"

    def log_name(self, task: int) -> str:
        return f"array-{self.index}_{task}.log"


@dataclass
class SlurmSweep:
    """A sweep's SLURM jobs: ``write()`` the scripts, ``submit()`` them (status: :mod:`ladder.sweep.slurm_status`).

    ``rungs`` are generic jobs (name, argv, run_dir, resources): the caller decides what a rung
    runs. ``final`` (optional) runs once all rungs succeeded, e.g. the prediction.
    """

    sweep_dir: Path
    rungs: Sequence[Job]
    final: Job | None = None
    signal_seconds: int = 300  # USR1 this long before the time limit: time to checkpoint
    checkpoint_exit_code: int = CHECKPOINT_EXIT_CODE
    max_retries: int = 2  # requeues of a rung that failed (not counting checkpoint requeues)
    max_requeues: int = 100  # hard cap on a task's restarts, whatever the reason
    max_parallel: int | None = None  # array throttle (%N)
    setup: Sequence[str] = ()  # bash lines run first in every job (module load, venv...)
    workdir: Path | None = None  # --chdir for jobs; default: the submitting directory
    job_prefix: str = "ladder"
    skip_done: bool = True  # rungs whose run_state is done are not submitted again
    small: Resources = field(default_factory=Resources)  # a WSD parent's stop job (slurm_branches)
    branch_poll_seconds: int = 30  # a WSD parent's batch shell looks for its branch points this often
    groups: list[ArrayGroup] = field(init=False, default_factory=list)
    waiting: dict[str, list[Job]] = field(init=False, default_factory=dict)  # parent -> held branches
    orphans: list[Job] = field(init=False, default_factory=list)  # branches whose parent left no point

    def __post_init__(self):
        self.sweep_dir = Path(self.sweep_dir).resolve()
        self.workdir = Path(self.workdir or os.getcwd()).resolve()
        names = [j.name for j in self.rungs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise JobSpecError(f"duplicate rung names: {', '.join(dup)}")
        for job in self.rungs:
            job.validate()
            if job.run_dir is None:
                raise JobSpecError(f"rung {job.name}: run_dir is required (status reads it)")
        if self.final is not None:
            self.final.validate()
        for line in self.setup:
            if "\n" in line:
                raise JobSpecError(f"setup line {line!r}: one line per entry")
        if not 0 < self.checkpoint_exit_code < 126:
            raise JobSpecError(f"checkpoint_exit_code must be in 1..125, "
                               f"got {self.checkpoint_exit_code}")
        self.groups = self._group()

    @classmethod
    def from_config(cls, sweep_dir: str | os.PathLike, rungs: Sequence[Job], final: Job | None,
                    config: "SlurmConfig", **kwargs) -> "SlurmSweep":
        """With the sweep knobs of a recipe's ``slurm:`` block (rung resources are the
        caller's: ``config.resources(size)`` per rung)."""
        return cls(Path(sweep_dir), rungs, final, signal_seconds=config.signal_seconds,
                   max_retries=config.max_retries, max_parallel=config.max_parallel,
                   setup=config.setup, small=config.defaults,
                   branch_poll_seconds=config.branch_poll_seconds, **kwargs)

    @property
    def slurm_dir(self) -> Path:
        return self.sweep_dir / SLURM_SUBDIR

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.sweep_dir.name) or "sweep"

    def pending_rungs(self) -> list[Job]:
        return [j for j in self.rungs if not (self.skip_done and run_state(j.run_dir).done)]

    def _group(self) -> list[ArrayGroup]:
        from ladder.sweep.slurm_branches import waiting

        # parent -> its branches submitted held; branches nothing would release are left out
        self.waiting, self.orphans = waiting(self.pending_rungs())
        held = {j.name for js in self.waiting.values() for j in js}
        groups: dict[tuple[Resources, bool], list[Job]] = {}
        for job in self.pending_rungs():
            if job not in self.orphans:
                groups.setdefault((job.resources, job.name in held), []).append(job)
        return [ArrayGroup(i, res, jobs, gated) for i, ((res, gated), jobs) in enumerate(groups.items())]

    # ------------------------------------------------------------------ scripts
    def render_array(self, group: ArrayGroup) -> str:
        r = group.resources
        n = len(group.rungs)
        array = f"0-{n - 1}" + (f"%{self.max_parallel}" if self.max_parallel else "")
        lines = ["#!/bin/bash",
                 f"# Sweep {comment_text(self.sweep_dir)}: array {group.index}, {n} rung(s) with the same "
                 f"resources.",
                 "# Written by ladder; submit with `ladder sweep` (it records the job ids).",
                 *sbatch_lines(f"{self.job_prefix}-{self.name}-a{group.index}", r,
                                self.slurm_dir / "logs" / group.log_pattern, self.workdir),
                 f"#SBATCH --array={array}",
                 "#SBATCH --requeue",
                 f"#SBATCH --signal=B:USR1@{int(self.signal_seconds)}",
                 "#SBATCH --open-mode=append",
                 "# setup (before `set -u`: module/conda/venv scripts often read unset variables)",
                 *self.setup, "set -uo pipefail", "",
                 "# task -> rung",
                 'case "${SLURM_ARRAY_TASK_ID:?not running as a SLURM array task}" in']
        from ladder.sweep.slurm_branches import gate_lines, module_argv

        for i, job in enumerate(group.rungs):
            gate = ([f"    GATE=({shlex.join(module_argv('release', self.sweep_dir, job.name))})"]
                    if job.name in self.waiting else [])
            lines += [f"  {i})",
                      f"    RUNG={shlex.quote(job.name)}",
                      f"    RUN_DIR={shlex.quote(str(job.run_dir))}",
                      f"    CMD=({shlex.join(job.argv)})", *gate,
                      "    ;;"]
        lines += ['  *) echo "[ladder] no rung for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2;;',
                  "esac", ""]
        if any(job.name in self.waiting for job in group.rungs):
            lines += gate_lines(self.branch_poll_seconds)
        lines += rung_body(checkpoint=self.checkpoint_exit_code, retries=self.max_retries,
                           max_requeues=self.max_requeues, launch=launch_line(group.resources)
                           ).splitlines()
        return "\n".join(lines) + "\n"

    def render_final(self) -> str:
        assert self.final is not None
        lines = ["#!/bin/bash",
                 f"# Sweep {comment_text(self.sweep_dir)}: runs after all rungs succeeded (afterok).",
                 *sbatch_lines(f"{self.job_prefix}-{self.name}-{self.final.name}",
                                self.final.resources, self.slurm_dir / "logs" / "final.log",
                                self.workdir),
                 "#SBATCH --open-mode=append",
                 "# setup (before `set -u`: module/conda/venv scripts often read unset variables)",
                 *self.setup, "set -uo pipefail", "",
                 f"CMD=({shlex.join(self.final.argv)})",
                 'echo "[ladder] $(date -Is) final job ${SLURM_JOB_ID} on $(hostname)"',
                 'exec srun --nodes=1 --ntasks=1'
                 + (f" --cpus-per-task={self.final.resources.cpus_per_task}"
                    if self.final.resources.cpus_per_task else "") + ' "${CMD[@]}"']
        return "\n".join(lines) + "\n"

    def write(self) -> dict[str, Path]:
        """Write the scripts (atomically, executable); returns {array-k | final: path}."""
        (self.slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        for g in self.groups:
            out[f"array-{g.index}"] = self._write_script(g.script_name, self.render_array(g))
        if self.final is not None:
            out["final"] = self._write_script("final.sbatch", self.render_final())
        for job in self.rungs:
            Path(job.run_dir).mkdir(parents=True, exist_ok=True)
        return out

    def _write_script(self, name: str, text: str) -> Path:
        path = self.slurm_dir / name
        atomic_write_text(path, text)
        path.chmod(0o755)
        return path

    # ------------------------------------------------------------------ submission
    def submit(self) -> dict[str, Any]:
        """Write and submit; returns the record appended to ``jobs.json``.

        Refuses while a previous submission of this sweep still has rungs queued or running:
        two jobs writing one run directory would corrupt it.
        """
        active = active_jobs(self.sweep_dir)
        if active:
            raise SlurmError(f"{self.sweep_dir}: jobs of an earlier submission are still queued "
                             f"or running ({', '.join(active)}); wait for them or scancel them")
        from ladder.sweep.slurm_branches import stop_orphans, submit_stops, task_record

        stop_orphans(self.orphans)
        scripts = self.write()
        submitted: list[str] = []
        record: dict[str, Any] = {"submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                  "arrays": [], "final": None}
        try:
            for g in self.groups:
                job_id = sbatch(scripts[f"array-{g.index}"], ["--hold"])
                submitted.append(job_id)
                record["arrays"].append({
                    "job_id": job_id, "script": str(scripts[f"array-{g.index}"]),
                    "resources": asdict(g.resources), "gated": g.gated,
                    "tasks": [{"task": i, "rung": j.name, "run_dir": str(j.run_dir),
                               "log": str(self.slurm_dir / "logs" / g.log_name(i)), **task_record(j)}
                              for i, j in enumerate(g.rungs)]})
            arrays = list(submitted)
            submitted += submit_stops(self, record, list(self.waiting), self.small, sbatch)
            if self.final is not None:
                job_id = sbatch(scripts["final"], final_sbatch_options(arrays))
                submitted.append(job_id)
                record["final"] = {"job_id": job_id, "name": self.final.name,
                                   "script": str(scripts["final"]),
                                   "log": str(self.slurm_dir / "logs" / "final.log")}
            record["rungs_done_before"] = [j.name for j in self.rungs
                                           if j not in self.pending_rungs()]
            record = json.loads(json.dumps(record))  # exactly what jobs.json holds
            _append_record(self.slurm_dir / JOBS_JSON, record, self.rungs)
        except BaseException:
            if submitted:
                slurm_command(["scancel", *submitted], check=False)
            raise
        held = [a["job_id"] for a in record["arrays"] if not a["gated"]]  # gated: their parents'
        if held:
            slurm_command(["scontrol", "release", *held])
        return record


# ---------------------------------------------------------------------------- SLURM commands


def slurm_command(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which(argv[0])
    if exe is None:
        raise SlurmError(f"{argv[0]} not found on PATH: is this a SLURM login node?")
    r = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SlurmError(f"{shlex.join(argv)} failed (exit {r.returncode}):\n{r.stderr.rstrip()}")
    return r


def final_sbatch_options(array_ids: Sequence[str]) -> list[str]:
    """The final job starts when every array task succeeded; if one fails for good, SLURM
    cancels it instead of leaving it pending forever."""
    if not array_ids:
        return []
    return [f"--dependency=afterok:{':'.join(array_ids)}", "--kill-on-invalid-dep=yes"]


def sbatch(script: Path, options: Sequence[str] = ()) -> str:
    """Submit; returns the job id. A rejection raises :class:`SbatchError` with sbatch's stderr
    exactly as printed."""
    r = slurm_command(["sbatch", "--parsable", *options, str(script)], check=False)
    if r.returncode != 0:
        raise SbatchError(Path(script), r.returncode, r.stderr)
    job_id = r.stdout.strip().split(";")[0]  # "id" or "id;cluster"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id for {script}: {r.stdout!r} {r.stderr!r}")
    return job_id


_KV = re.compile(r"(\w+(?:/\w+)?)=(\S*)")


def scontrol_jobs(job_id: str) -> list[dict[str, str]]:
    """``scontrol -o show job ID``: one dict per job record (array tasks one each, or a
    still-pending range as one record with ``ArrayTaskId=2-5``). [] once SLURM forgot the job."""
    r = slurm_command(["scontrol", "-o", "show", "job", str(job_id)], check=False)
    if r.returncode != 0:
        if "Invalid job id" in r.stderr:
            return []
        raise SlurmError(f"scontrol show job {job_id} failed:\n{r.stderr.rstrip()}")
    return [dict(_KV.findall(line)) for line in r.stdout.splitlines() if line.strip()]


def task_ids(spec: str) -> list[int]:
    """'3' / '2-5' / '0,2,4-6%2' -> task ids."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            step = 1
            if ":" in b:
                b, s = b.split(":", 1)
                step = int(s)
            out += range(int(a), int(b) + 1, step)
        else:
            out.append(int(part))
    return out


# ---------------------------------------------------------------------------- records and status


def load_jobs(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(sweep_dir) / SLURM_SUBDIR / JOBS_JSON
    if not path.exists():
        return {"format": JOBS_FORMAT, "rungs": {}, "submissions": []}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SlurmError(f"{path}: invalid JSON ({e})") from e
    if data.get("format") != JOBS_FORMAT:
        raise SlurmError(f"{path}: expected format {JOBS_FORMAT!r}, got {data.get('format')!r}")
    return data


def _append_record(path: Path, record: dict[str, Any], rungs: Iterable[Job]) -> None:
    data = load_jobs(path.parent.parent)
    for j in rungs:  # every rung of the sweep, submitted this time or not
        data["rungs"][j.name] = {"run_dir": str(j.run_dir)}
    data["submissions"].append(record)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def active_jobs(sweep_dir: str | os.PathLike) -> list[str]:
    """Job ids of the latest submission that SLURM still has queued or running."""
    data = load_jobs(sweep_dir)
    if not data["submissions"]:
        return []
    latest = data["submissions"][-1]
    ids = [a["job_id"] for a in latest.get("arrays", [])] + [j["job_id"] for j in latest.get("stops", [])]
    if latest.get("final"):
        ids.append(latest["final"]["job_id"])
    active = []
    for job_id in ids:
        for rec in scontrol_jobs(job_id):
            if rec.get("JobState") in _ACTIVE_SLURM:
                task = rec.get("ArrayTaskId")
                active.append(f"{job_id}_{task}" if task else job_id)
    return active


def cancel(sweep_dir: str | os.PathLike) -> list[str]:
    """scancel the latest submission's jobs; rungs keep their checkpoints."""
    ids = active_jobs(sweep_dir)
    if ids:
        slurm_command(["scancel", *sorted({i.split("_")[0] for i in ids})])
    return ids
