"""Writing results safely: atomic files, output directories replaced as a set, JSON without
NaN. Every writer of the project uses these, so a reader never sees a partial file or a mix of
two runs' outputs, JSON stays strict (NaN/inf become null), and files get the modes the user's
umask asks for (a lab's shared results directory stays readable by the lab)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

OUTPUT_MARKER = ".ladder-output"  # in every directory written by output_dir()


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
    except OSError as e:  # name the file meant, not the temp file (or none: a failed write)
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(p)) from e
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


def check_output_dir(out: str | os.PathLike, owned: Iterable[str] = ()) -> Path:
    """Refuse, before any work, an ``--out`` that is a file or a directory holding files no
    ladder command wrote there (it would be replaced as a whole). New, empty, or earlier output
    (the marker, or only ``owned`` names and plots) is fine."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a directory")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and OUTPUT_MARKER not in names:
            foreign = sorted(n for n in names - set(owned) if not n.endswith(".png"))
            if foreign:
                raise OutputError(f"--out {out}: holds files ladder did not write ({', '.join(foreign[:3])}); "
                                  f"give a new or empty directory")
    return out


@contextlib.contextmanager
def output_dir(out: str | os.PathLike, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Write a command's outputs as one set: yields a fresh directory beside ``out``; when the
    block succeeds it replaces ``out`` whole, so a kill leaves the old set or the new one, never
    a mix, and files of the old set the new one lacks (last run's plots) are gone. On failure
    the new set is removed and ``out`` is untouched."""
    out = check_output_dir(out, owned).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_outputs(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{os.getpid()}-"))
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
        marker = tmp / OUTPUT_MARKER
        marker.write_text("written by ladder: this directory is replaced as a whole on each run\n")
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
        os.rename(tmp, out)
    elif not _exchange(tmp, out):  # no atomic exchange here: two renames, repaired if cut
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
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


def sweep_stale_outputs(out: Path) -> None:
    """Remove sets left beside ``out`` by killed writers; if a kill fell between the two renames
    of the fallback swap, put the old set back."""
    for p in out.parent.glob(f".{out.name}.*-*"):
        kind, _, rest = p.name[len(out.name) + 2:].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
