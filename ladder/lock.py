"""One writer per directory: an exclusive advisory lock on a run or sweep directory.

A second ``ladder train`` on the same run directory, or a second ``ladder sweep`` on the same
sweep directory, would interleave two writers' rows in one log (the corruption this prevents).
The lock is ``fcntl.flock`` on ``<dir>/.ladder.lock``: the kernel drops it when the holder dies,
however it dies, so a crashed holder never blocks the next run. The file holds who has it
(host, pid, command, since) so that a refusal can name the holder. File systems without flock
(Lustre mounted without ``flock``) fall back to an exclusive-create lock file, which is stale
when its holder's pid is gone on this host, or when it is older than ``STALE_AFTER`` seconds
without a refresh on another host.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".ladder.lock"
STALE_AFTER = 6 * 3600.0  # fallback locks only: a holder on another host refreshes it
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


class LockHeld(RuntimeError):
    """Another live process holds the directory; the message names it."""

    def __init__(self, directory: Path, holder: dict):
        self.directory, self.holder = directory, holder
        what = ", ".join(x for x in (holder.get("command"), holder.get("since") and f"since {holder['since']}") if x)
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}" + (f" ({what})" if what else "")
        super().__init__(f"{directory} is in use by {who}; wait for it to finish or stop it "
                         f"(one writer per directory)")


def _holder() -> dict:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if prog == "__main__.py":  # python -m ladder ...
        prog = "ladder"
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "command": " ".join([prog, *sys.argv[1:3]])[:200],
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def read_holder(directory: str | os.PathLike) -> dict:
    try:
        return json.loads((Path(directory) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class DirLock:
    """``with DirLock(d):`` holds ``d`` for this process; raises :class:`LockHeld` if taken."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None
        self._fallback = False

    def acquire(self) -> "DirLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:  # another user's lock file: flock works on a read-only fd
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.dir, read_holder(self.dir)) from None
            if e.errno not in _NO_FLOCK:
                raise
            return self._acquire_fallback()
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        except OSError:  # read-only fd: the lock holds, only the holder's name is missing
            pass
        return self

    def _acquire_fallback(self) -> "DirLock":
        path = self.dir / (LOCK_NAME + ".excl")
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                holder = _read(path)
                if not _stale(holder, path):
                    raise LockHeld(self.dir, holder) from None
                path.unlink(missing_ok=True)  # the holder is gone: take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_holder(), f)
            self._fallback, self._excl = True, path
            return self
        raise LockHeld(self.dir, _read(path))

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        if self._fallback:
            self._excl.unlink(missing_ok=True)
            self._fallback = False

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _stale(holder: dict, path: Path) -> bool:
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER
    except OSError:
        return True


def wait_for_release(directory: str | os.PathLike, timeout: float, poll: float = 0.5) -> bool:
    """Wait until nobody holds ``directory`` (a killed sweep's trainer finishing its checkpoint);
    True if free."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with DirLock(directory):
                return True
        except LockHeld:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
