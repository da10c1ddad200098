"""Writing results safely: atomic files, JSON without NaN. Every writer of the project uses
these, so a reader never sees a partial file and JSON stays strict (NaN/inf become null)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same directory, fsync, then rename: readers never see a
    partial file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
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
