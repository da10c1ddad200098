"""The run's outcome file, ``<run>/status.json``: one JSON object on one line (so a batch script
reads it with ``sed``), written atomically by the main process at start and at every exit.

    {"outcome": "preempted", "exit_code": 75, "step": 120, "total_steps": 300, "message": "...",
     "time": "2026-12-01T23:00:00+00:00", "host": "node17", "pid": 4242}

Outcomes and the retry policy: :mod:`ladder.exit_codes`.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from analysis.files import atomic_write_text
from ladder.exit_codes import BAD_INPUT, DIVERGED, EXIT_PREEMPTED, OUTCOME_EXIT, PARENT_FAILED, RUNNING

STATUS_FILE = "status.json"
PREVIOUS = "status.prev.json"  # the attempt before: kept for the record, never acted on


class Preempted(BaseException):
    """A stop signal during a trainer's start-up, before there is a state to checkpoint (a
    BaseException, as KeyboardInterrupt: no library's ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"{signal.Signals(signum).name} during start-up, before any step: nothing to "
                         f"checkpoint; rerun the same command to start (exit {EXIT_PREEMPTED})")


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (RANK), or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def write_status(run_dir: str | os.PathLike, outcome: str, *, step: int | None = None,
                 total_steps: int | None = None, message: str = "") -> Path:
    if outcome != RUNNING and outcome not in OUTCOME_EXIT:
        raise ValueError(f"unknown outcome {outcome!r}")
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    record = {"outcome": outcome, "exit_code": OUTCOME_EXIT.get(outcome), "step": step,
              "total_steps": total_steps, "message": " ".join(str(message).split())[:2000],
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
              "pid": os.getpid()}
    path = d / STATUS_FILE
    text = json.dumps(record) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
            raise
        _overwrite(path, text.encode())
    return path


def _overwrite(path: Path, data: bytes) -> None:
    """On a full disk (a new file gets no block), rewrite the file in the block it already has
    (a status line is under 4 KiB):
    not atomic, but a reader takes a torn status for none, and a status saying why the run
    failed is worth more than the last one's 'running'."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, len(data) - len(view)):]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_status(run_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    """The last outcome written, or None (no file, or unreadable: treated as never started)."""
    if run_dir is None:
        return None
    try:
        record = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("outcome"), str) else None


def clear_status(run_dir: str | os.PathLike | None) -> None:
    """Before an attempt: the previous attempt's outcome must not be read as this one's (a
    trainer killed before writing would otherwise look preempted again)."""
    if run_dir is None:
        return
    try:
        os.replace(Path(run_dir) / STATUS_FILE, Path(run_dir) / PREVIOUS)
    except FileNotFoundError:
        pass


def stopped_for_good(run_dir: str | os.PathLike) -> str | None:
    """Why a run will never go on (its last outcome: bad input, diverged, its parent failed),
    or None: a WSD branch waiting on it stops instead of waiting forever."""
    st = read_status(run_dir) or {}
    if st.get("outcome") in (BAD_INPUT, DIVERGED, PARENT_FAILED):
        return st["outcome"] + (f": {st['message']}" if st.get("message") else "")
    return None
