"""The local backend: run a sweep's rungs on this machine, each in its own process, with retries
decided from each run's status file (requeue on preemption, a bounded number of retries after a
crash, never a retry of bad input or divergence), and their status."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladder.exit_codes import DONE, GIVE_UP, REQUEUE, WAITING, next_action
from ladder.sweep.launcher import Job, Resources, local_argv
from ladder.sweep.sweepdir import Sweep

MAX_REQUEUES = 100  # a rung preempted this often is stuck, not unlucky


@dataclass
class RungOutcome:
    name: str
    ok: bool
    attempts: int
    seconds: float
    returncode: int | None
    log: Path


def visible_devices(n_devices: int, slots: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES per slot: the node's GPUs split evenly over the rungs running side
    by side (without it every rung would train on cuda:0). None when there is no GPU."""
    if n_devices < 1:
        return [None] * slots
    per = max(1, n_devices // slots)
    return [",".join(str((i * per + k) % n_devices) for k in range(per)) for i in range(slots)]


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def run_local(jobs: list[Job], log_dir: Path, *, parallel: int = 1, max_retries: int = 2,
              threads: int | None = None, echo=print, n_gpus: int | None = None) -> list[RungOutcome]:
    """Run jobs on this machine, ``parallel`` at a time, each on its own share of the GPUs.
    After each attempt the run's status file decides (:func:`ladder.exit_codes.next_action`):
    a preempted rung is restarted without counting as a failure, a crashed one is retried up to
    ``max_retries`` times (resuming from its checkpoint), bad input and divergence never.
    A WSD branch (``Job.waits_for``) starts once its parent has saved its branch point, while
    the parent runs on; a parent that fails for good stops its waiting branches. Ctrl-C stops
    every rung; a rerun of the sweep resumes them."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    env = dict(os.environ)
    per_job = threads or max(1, cores // max(1, parallel))
    env.setdefault("OMP_NUM_THREADS", str(per_job))
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    devices = visible_devices(_gpu_count() if n_gpus is None else n_gpus, parallel)
    sched = _Scheduler(list(jobs), log_dir, env, devices, max_retries, echo)
    old_handlers = _stop_on_signals()
    try:
        while sched.pending or sched.running:
            sched.start_ready()
            time.sleep(0.2)
            sched.reap()
            sched.stop_orphans()
    except KeyboardInterrupt:
        sched.stop_all()
        raise
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    return sched.outcomes


class _Scheduler:
    """The local backend's scheduling state: jobs pending, running (in slots), their attempts,
    failures and outcomes."""

    def __init__(self, jobs: list[Job], log_dir: Path, env: dict, devices: list, max_retries: int,
                 echo):
        self.pending, self.log_dir, self.env, self.devices = jobs, log_dir, env, devices
        self.max_retries, self.echo, self.total = max_retries, echo, len(jobs)
        self.free_slots = list(range(len(devices)))
        self.attempts: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.running: dict[str, tuple[Job, subprocess.Popen, float, Any, int]] = {}
        self.outcomes: list[RungOutcome] = []

    def start_ready(self) -> None:
        """Start pending jobs in order while slots are free, skipping branches still waiting."""
        from ladder.sweep.branches import ready
        from ladder.train.status import clear_status

        while self.free_slots:
            job = next((j for j in self.pending if ready(j)), None)
            if job is None:
                return
            self.pending.remove(job)
            slot = self.free_slots.pop(0)
            self.attempts[job.name] = self.attempts.get(job.name, 0) + 1
            job_env = dict(self.env)
            if self.devices[slot] is not None:
                job_env["CUDA_VISIBLE_DEVICES"] = self.devices[slot]
            log = open(self.log_dir / f"{job.name}.log", "a")
            log.write(f"\n=== attempt {self.attempts[job.name]}"
                      + (f" on GPUs {self.devices[slot]}" if self.devices[slot] is not None else "")
                      + f": {' '.join(local_argv(job))}\n")
            log.flush()
            _wait_for_run_dir(job, self.echo)  # a killed sweep's rung may still be checkpointing
            clear_status(job.run_dir)
            proc = subprocess.Popen(local_argv(job), stdout=log, stderr=subprocess.STDOUT,
                                    env=job_env, start_new_session=True,
                                    preexec_fn=_dies_with(os.getpid()))
            self.running[job.name] = (job, proc, time.time(), log, slot)

    def reap(self) -> None:
        """Decide for every job that has exited: done, requeue, retry or give up."""
        from ladder.sweep.rundir import run_state
        from ladder.train.status import read_status

        for name, (job, proc, t0, log, slot) in list(self.running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            del self.running[name]
            self.free_slots.append(slot)
            secs = time.time() - t0
            status = read_status(job.run_dir)
            outcome = status["outcome"] if status else None
            action = next_action(outcome, rc)
            if action == DONE:
                st = run_state(job.run_dir)
                loss = f", train loss {st.loss:.4f}" if st.loss is not None else ""
                self.echo(f"[{len(self.outcomes) + 1}/{self.total}] {name} done in {secs:.0f}s "
                          f"({st.evals} evaluations{loss})")
                self.outcomes.append(RungOutcome(name, True, self.attempts[name], secs, rc, Path(log.name)))
            elif action == REQUEUE and self.attempts[name] < MAX_REQUEUES:
                self.echo(f"{name}: {'waiting for its parent' if outcome == WAITING else 'checkpointed on a signal'}"
                          f", restarting")
                self.pending.insert(0, job)
            else:
                self._failed(job, action, f"{outcome or 'no status'}, exit {rc}", secs, rc, Path(log.name))

    def _failed(self, job: Job, action: str, why: str, secs: float, rc: int | None, log: Path) -> None:
        name = job.name
        self.failures[name] = self.failures.get(name, 0) + 1
        if action not in (GIVE_UP, None) and self.failures[name] <= self.max_retries:
            self.echo(f"{name}: failed ({why}), retry {self.failures[name]}/{self.max_retries} "
                      f"from its last checkpoint; log: {log}")
            self.pending.append(job)
            return
        reason = "not retried: it would fail again" if action in (GIVE_UP, None) else \
            f"after {self.attempts.get(name, 0)} attempts"
        self.echo(f"[{len(self.outcomes) + 1}/{self.total}] {name} FAILED ({why}) {reason}; log: {log}")
        self.outcomes.append(RungOutcome(name, False, self.attempts.get(name, 0), secs, rc, log))

    def stop_orphans(self) -> None:
        """Branches whose parent failed for good (or left no branch point and is not coming
        back) are stopped with their reason: waiting would be forever."""
        from ladder.sweep.branches import ready, stop_branch

        failed = {o.name for o in self.outcomes if not o.ok}
        active = {j.name for j in self.pending} | set(self.running)
        for job in [j for j in self.pending if j.waits_for is not None and not ready(j)]:
            parent = job.waits_for
            if parent.job in active:  # running, retried or requeued: the branch waits
                continue
            why = parent.failed() or ("failed" if parent.job in failed else
                                      f"no checkpoint at step {parent.step} and not running")
            self.pending.remove(job)
            self._failed(job, None, stop_branch(job, why), 0.0, None, self.log_dir / f"{job.name}.log")

    def stop_all(self) -> None:
        for _, proc, _, _, _ in self.running.values():
            try:
                os.killpg(proc.pid, 15)  # the trainer checkpoints on SIGTERM
            except ProcessLookupError:
                pass
        for _, proc, _, _, _ in self.running.values():
            proc.wait()


def _stop_on_signals() -> dict:
    """SIGTERM/SIGHUP stop the sweep as Ctrl-C does: every rung checkpoints, then exits."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread
            pass
    return old


def _dies_with(parent: int):
    """preexec_fn: the rung gets SIGTERM (checkpoint and exit) if the sweep dies, even by
    SIGKILL; it runs in its own process group, so nothing else would stop it. SLURM-run rungs
    are owned by the scheduler and do not go through here."""
    from analysis.parallel import set_parent_death_signal

    return lambda: set_parent_death_signal(signal.SIGTERM, parent)


def _wait_for_run_dir(job: Job, echo, timeout: float = 600.0) -> None:
    """A rung of a killed sweep may still be writing its checkpoint: wait for it to let go of
    the run directory rather than fail on its lock."""
    from ladder.lock import read_holder, wait_for_release

    if job.run_dir is None or not wait_for_release(job.run_dir, 0):
        holder = read_holder(job.run_dir) if job.run_dir else {}
        if holder:
            echo(f"{job.name}: waiting for pid {holder.get('pid')} on {holder.get('host')} to "
                 f"release {job.run_dir}")
        if job.run_dir is not None:
            wait_for_release(job.run_dir, timeout)


class LocalStatus(list):
    """Per rung: name, role, state (done / partial / new), tokens, last loss, evaluations."""

    def table(self) -> str:
        lines = []
        for r in self:
            tok = f"{r['tokens']:.4g}/{r['target_tokens']:.4g}" if r["tokens"] else "-"
            loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
            lines.append(f"{r['name']:<24} {r['role']:<7} {r['state']:<8} tokens {tok:<20} "
                         f"loss {loss}  evals {r['evals']}" + (f"  ({r['note']})" if r["note"] else ""))
        return "\n".join(lines)

    def to_json(self) -> list:
        return list(self)


def local_status(sweep: Sweep) -> LocalStatus:
    from ladder.sweep.rundir import run_state

    from ladder.sweep.branches import branch_state

    out = LocalStatus()
    for role, r in sweep.plan.all_runs():
        st = run_state(sweep.run_dir(r))
        state, note = branch_state(sweep.rung_job(r), st.state)
        role = "branch" if r.role == "branch" else role
        out.append({"name": r.name, "role": role, "state": state, "tokens": st.tokens,
                    "target_tokens": st.target_tokens, "loss": st.loss, "evals": st.evals,
                    "note": note or st.note})
    return out


class LocalBackend:
    """Rungs on this machine, ``sweep.parallel`` at a time, under the sweep process: it
    predicts the targets itself when they are done."""

    name = "local"

    def __init__(self, plan):
        self.plan = plan

    @classmethod
    def from_plan(cls, plan) -> "LocalBackend":
        return cls(plan)

    def resources(self, size: str) -> Resources:
        return Resources()

    def device_memory_gib(self, size: str) -> float | None:
        return None

    def checks(self, plan, estimates: dict) -> list:
        return []

    def render(self, sweep: Sweep, options) -> str:
        par = options.parallel or sweep.recipe.sweep.parallel
        return (f"local: {len(sweep.jobs())} runs, {par} at a time on this machine, each logging "
                f"to {sweep.dir / 'logs'}/<run>.log; then the targets predicted here")

    def launch(self, sweep: Sweep, options, echo) -> bool:
        from ladder.sweep.rundir import run_state

        knobs = sweep.recipe.sweep
        jobs = sweep.jobs()
        todo = [j for j in jobs if not run_state(j.run_dir).done]
        echo(f"sweep {sweep.recipe.name}: {len(jobs)} runs in {sweep.dir} "
             f"({len(jobs) - len(todo)} already done)")
        outcomes = run_local(todo, sweep.dir / "logs", parallel=options.parallel or knobs.parallel,
                             max_retries=(options.max_retries if options.max_retries is not None
                                          else knobs.max_retries), echo=echo)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise LocalSweepFailed(failed)
        return True

    def status(self, sweep: Sweep) -> LocalStatus:
        return local_status(sweep)

    def cancel(self, sweep: Sweep) -> list[str]:
        """SIGTERM to the sweep process holding the directory: it stops its rungs in order
        (each checkpoints); a rerun resumes them."""
        import socket

        from ladder.lock import read_holder

        holder = read_holder(sweep.dir)
        if not holder or holder.get("host") != socket.gethostname():
            return []
        try:
            os.kill(int(holder["pid"]), signal.SIGTERM)
        except (ProcessLookupError, KeyError, ValueError):
            return []
        return [f"pid {holder['pid']} ({holder.get('command', 'ladder sweep')})"]

    @classmethod
    def owns(cls, sweep_dir: Path) -> bool:
        return (Path(sweep_dir) / "logs").is_dir()


class LocalSweepFailed(RuntimeError):
    """Some rungs failed for good; the sweep says which and where their logs are."""

    def __init__(self, failed: list[RungOutcome]):
        self.failed = failed
        super().__init__(f"{len(failed)} run(s) failed: "
                         + ", ".join(f"{o.name} (log {o.log})" for o in failed))
