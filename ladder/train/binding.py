"""A run directory is bound to the run it was started with: resuming it under another recipe
(a different schedule, sequence length, data...) would splice two runs into one log while
run.json describes only the second, the one mistake that silently corrupts a fit.

The check compares what run.json recorded with what this invocation would record, before
anything in the directory is written, and names every key that differs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from analysis.runlog import RUN_JSON, RunMeta
from ladder.restarts import differences

# Plan values that identify a run (from run.json's top level).
PLAN_KEYS = ("name", "n_params", "target_tokens", "batch_tokens", "seed", "corpus_hash",
             "tokenizer_hash", "lr", "total_steps")


class RunBindingError(ValueError):
    """The directory holds another run; the message names the keys that differ."""


def check_same_run(run_dir: Path, meta: RunMeta) -> None:
    """Refuse to resume (or to call complete) a run directory that holds a different run."""
    p = Path(run_dir) / RUN_JSON
    if not p.is_file():
        return
    try:
        old = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunBindingError(f"{p}: unreadable ({e}); move the directory aside or use another "
                              f"--out") from None
    if not isinstance(old, dict):
        raise RunBindingError(f"{p}: not a run.json (a JSON object was expected); move the "
                              f"directory aside or use another --out")
    new = meta.to_json()
    diffs = [(k, old[k], new.get(k)) for k in PLAN_KEYS if k in old and old[k] != new.get(k)]
    if isinstance(old.get("recipe"), dict):
        diffs += differences(old["recipe"], new.get("recipe") or {}, "run")
    if diffs:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in diffs[:4])
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise RunBindingError(f"{p}: this directory holds a different run ({shown}{more}); "
                              f"use another --out, or --force-new to move it aside and start over")


def move_aside(run_dir: Path) -> Path | None:
    """``--force-new``: rename an existing run directory to ``<dir>.replaced-<UTC time>`` (kept,
    never deleted); returns the new name."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    os.rename(run_dir, dest)
    return dest


def claim_run_dir(run_dir: Path, meta: RunMeta, main: bool, force_new: bool = False, report=print):
    """Make ``run_dir`` this run's: the main process locks it (a second writer is refused,
    naming the holder) and moves another run aside if ``force_new``; every process then checks
    that the directory holds this run. Returns the lock (main process) or None."""
    from ladder.sweep.lock import DirLock

    lock = DirLock(run_dir).acquire() if main else None
    try:
        if main and force_new and (Path(run_dir) / RUN_JSON).exists():
            moved = move_aside(Path(run_dir))  # still locked: the lock moves with it
            old, lock = lock, None
            lock = DirLock(run_dir).acquire()
            old.release()
            report(f"--force-new: moved the previous run to {moved}")
        elif not force_new:
            check_same_run(Path(run_dir), meta)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock
