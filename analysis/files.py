"""Writing results safely: atomic files, output directories replaced as a set, JSON without
NaN. Every writer of the project uses these, so a reader never sees a partial file or a mix of
two runs' outputs, JSON stays strict (NaN/inf become null), and files get the modes the user's
umask asks for (a lab's shared results directory stays readable by the lab)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

OUTPUT_MARKER = ".ladder-output"  # in every directory written by output_dir()
FOREIGN_STALE_AFTER = 24 * 3600.0  # s: an unfinished set another host left beside an output


class OutputError(ValueError):
    """An output path that cannot be written as asked; the message names it."""


def umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (not thread-safe; startup only)
    os.umask(old)
    return old


def file_mode() -> int:
    """Mode of a new file as open() would make it: 0666 less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same directory, fsync, then rename: readers never see a
    partial file. The file gets the umask's mode (mkstemp alone makes it private, 0600)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(o: Any) -> Any:
    """``o`` with numpy scalars/arrays and 0-d tensors as Python values and non-finite floats as
    None, recursively through dicts, lists and tuples; anything else unchanged."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, (np.floating, np.integer)) or (
            hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 1) == 0):
        o = o.item()  # numpy scalars, 0-d tensors
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def finite_or_none(v: Any) -> float | None:
    """``float(v)`` for a finite number, else None (missing, NaN, inf or not a number)."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


# ---------------------------------------------------------------------------- output sets


# Names that versions before every output was a marked set wrote into an output directory
# outside its set (the calibration cache in place, `ladder status --predict` into
# predictions/partial/). Frozen: what decides ownership is the marker, never this list.
LEGACY_UNMARKED = frozenset({"calibration.json", "partial"})


def is_output_set(d: Path) -> bool:
    """Whether ``d`` is a directory a ladder command wrote as a set (it holds the marker)."""
    return (d / OUTPUT_MARKER).is_file()


def check_output_dir(out: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--out`` that is a file or a directory ladder did not write
    (it would be replaced as a whole). New, empty, or a set ladder wrote (its marker) is fine."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not is_output_set(out):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in LEGACY_UNMARKED)
        if foreign:
            raise OutputError(f"--out {out}: holds files ladder did not write ({', '.join(foreign[:3])}); "
                              f"give a new or empty directory")
    return out


@contextlib.contextmanager
def output_dir(out: str | os.PathLike, writer: str = "ladder") -> Iterator[Path]:
    """Write a command's outputs as one set: yields a fresh directory beside ``out``; when the
    block succeeds it replaces ``out`` whole, so a kill leaves the old set or the new one, never
    a mix, and files of the old set the new one lacks (last run's plots) are gone. On failure
    the new set is removed and ``out`` is untouched. Two writers of one ``out`` at once each
    swap in a whole set; the last one stays. ``writer`` (the command) goes into the marker."""
    out = check_output_dir(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_outputs(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{_writer_tag()}-"))
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
        atomic_write_text(tmp / OUTPUT_MARKER, f"written by {writer}: this directory is replaced "
                                               f"as a whole on each run\n")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        try:
            os.rename(tmp, out)
            return
        except OSError as e:  # another writer's set arrived first: exchange with it below
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if not _exchange(tmp, out):  # no atomic exchange here: two renames, repaired if cut
        old = out.with_name(f".{out.name}.old-{_writer_tag()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    # after an exchange ``tmp`` holds the old set; the caller removes it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_tag() -> str:
    """pid@host: a results directory on a shared file system is written from several hosts
    (a SLURM job on a compute node, `ladder status --predict` on a login node)."""
    return f"{os.getpid()}@{socket.gethostname().replace('-', '_')}"


def _left_by_dead_writer(tag: str, mtime: float) -> bool:
    pid, _, host = tag.partition("@")
    if not pid.isdigit():
        return False
    if host and host != socket.gethostname().replace("-", "_"):  # another host's: by age only
        return time.time() - mtime > FOREIGN_STALE_AFTER
    return not _pid_alive(int(pid))


def sweep_stale_outputs(out: Path) -> None:
    """Remove sets left beside ``out`` by killed writers; if a kill fell between the two renames
    of the fallback swap, put the old set back. Another host's are left to age out."""
    for p in out.parent.glob(f".{out.name}.*-*"):
        kind, _, rest = p.name[len(out.name) + 2:].partition("-")
        try:
            mtime = p.stat().st_mtime
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if kind not in ("tmp", "old") or not _left_by_dead_writer(rest.split("-")[0], mtime):
            continue
        if kind == "old" and not out.exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
