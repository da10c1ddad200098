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

from ladder.exit_codes import DONE, GIVE_UP, REQUEUE, next_action
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
    Ctrl-C stops every rung; a rerun of the sweep resumes them. (One function over ~60 lines:
    the scheduling state, pending/running/slots/attempts, lives in this one loop.)"""
    from ladder.sweep.rundir import run_state
    from ladder.train.status import clear_status, read_status

    log_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    env = dict(os.environ)
    per_job = threads or max(1, cores // max(1, parallel))
    env.setdefault("OMP_NUM_THREADS", str(per_job))
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    devices = visible_devices(_gpu_count() if n_gpus is None else n_gpus, parallel)
    free_slots = list(range(parallel))
    pending = list(jobs)
    attempts: dict[str, int] = {}
    failures: dict[str, int] = {}
    running: dict[str, tuple[Job, subprocess.Popen, float, Any, int]] = {}
    outcomes: list[RungOutcome] = []
    total = len(jobs)
    old_handlers = _stop_on_signals()
    try:
        while pending or running:
            while pending and free_slots:
                job = pending.pop(0)
                slot = free_slots.pop(0)
                attempts[job.name] = attempts.get(job.name, 0) + 1
                job_env = dict(env)
                if devices[slot] is not None:
                    job_env["CUDA_VISIBLE_DEVICES"] = devices[slot]
                log = open(log_dir / f"{job.name}.log", "a")
                log.write(f"\n=== attempt {attempts[job.name]}"
                          + (f" on GPUs {devices[slot]}" if devices[slot] is not None else "")
                          + f": {' '.join(local_argv(job))}\n")
                log.flush()
                _wait_for_run_dir(job, echo)  # a killed sweep's rung may still be checkpointing
                clear_status(job.run_dir)
                proc = subprocess.Popen(local_argv(job), stdout=log, stderr=subprocess.STDOUT,
                                        env=job_env, start_new_session=True,
                                        preexec_fn=_dies_with(os.getpid()))
                running[job.name] = (job, proc, time.time(), log, slot)
            time.sleep(0.2)
            for name, (job, proc, t0, log, slot) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                del running[name]
                free_slots.append(slot)
                secs = time.time() - t0
                status = read_status(job.run_dir)
                outcome = status["outcome"] if status else None
                action = next_action(outcome, rc)
                if action == DONE:
                    st = run_state(job.run_dir)
                    loss = f", train loss {st.loss:.4f}" if st.loss is not None else ""
                    echo(f"[{len(outcomes) + 1}/{total}] {name} done in {secs:.0f}s "
                         f"({st.evals} evaluations{loss})")
                    outcomes.append(RungOutcome(name, True, attempts[name], secs, rc, Path(log.name)))
                    continue
                if action == REQUEUE and attempts[name] < MAX_REQUEUES:
                    echo(f"{name}: checkpointed on a signal, restarting")
                    pending.insert(0, job)
                    continue
                failures[name] = failures.get(name, 0) + 1
                why = f"{outcome or 'no status'}, exit {rc}"
                if action != GIVE_UP and failures[name] <= max_retries:
                    echo(f"{name}: failed ({why}), retry {failures[name]}/{max_retries} "
                         f"from its last checkpoint; log: {log.name}")
                    pending.append(job)
                else:
                    reason = "not retried: it would fail again" if action == GIVE_UP else \
                        f"after {attempts[name]} attempts"
                    echo(f"[{len(outcomes) + 1}/{total}] {name} FAILED ({why}) {reason}; "
                         f"log: {log.name}")
                    outcomes.append(RungOutcome(name, False, attempts[name], secs, rc, Path(log.name)))
    except KeyboardInterrupt:
        for _, proc, _, _, _ in running.values():
            try:
                os.killpg(proc.pid, 15)  # the trainer checkpoints on SIGTERM
            except ProcessLookupError:
                pass
        for _, proc, _, _, _ in running.values():
            proc.wait()
        raise
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    return outcomes


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
                         f"loss {loss}  evals {r['evals']}")
        return "\n".join(lines)

    def to_json(self) -> list:
        return list(self)


def local_status(sweep: Sweep) -> LocalStatus:
    from ladder.sweep.rundir import run_state

    out = LocalStatus()
    for role, r in sweep.plan.all_runs():
        st = run_state(sweep.run_dir(r))
        out.append({"name": r.name, "role": role, "state": st.state, "tokens": st.tokens,
                    "target_tokens": st.target_tokens, "loss": st.loss, "evals": st.evals,
                    "note": st.note})
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
