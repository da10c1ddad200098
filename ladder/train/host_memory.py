"""Keep freed host memory in the process while training on CPU.

PyTorch's CPU tensors come straight from ``malloc``. glibc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and trims freed memory at the top of the
heap back to the OS, so every training step page-faults its activations, logits and gradients
in again: the kernel zeroes each 4 KiB page on first touch (how many faults, and their share of
a step's CPU time, measured by ``tests/benchmarks/bench_train.py``: docs/training.md).
Raising the two thresholds makes freed blocks stay in the heap for the next step, as CUDA's
caching allocator does on GPUs; peak resident memory is unchanged, since each step needs the same
blocks.

Only glibc (Linux) has ``mallopt``; elsewhere this does nothing. Set ``LADDER_KEEP_HOST_MEMORY=0``
to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 256 * 2**20  # larger blocks (rare, and amortised by their compute) still use mmap
TRIM_THRESHOLD = 2**30  # free memory kept at the top of the heap before returning it to the OS

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Configure glibc's allocator once per process; returns whether it is in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("LADDER_KEEP_HOST_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
