"""Many raw token files read as one token stream, through per-file offsets (never a copy).

OLMo's token files (``.npy`` in name only: raw little-endian uint16/uint32, no header; each
document followed by EOS) are addressed as their concatenation in sorted path order, as
OLMo-core's ``NumpyFSLDataset`` addresses them. Start-up stats each file and reads three
small windows of it, so it costs time in the number of files, not their bytes; reads use
``os.pread`` on a bounded set of open files, so memory stays flat however much is read.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ladder.data.errors import DataError

MANIFEST = "manifest.json"  # written by `ladder tokenize` next to its token files
PROBE_TOKENS = 4096  # tokens read at the head, the tail and one seeded place of each file
_OPEN_FILES = 128  # file descriptors kept open (thousands of files would exhaust ulimit -n)


def resolve_token_files(spec: str | list[str], key: str) -> tuple[list[str], dict | None]:
    """Files named by globs, or by a directory holding a ``ladder tokenize`` manifest (which
    lists its files in order and says how they were made)."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    files: set[str] = set()
    manifest = None
    for p in patterns:
        p = os.path.expanduser(p)
        if os.path.isdir(p):
            m = Path(p) / MANIFEST
            if not m.is_file():
                raise DataError(f"{key}: {p} is a directory without a {MANIFEST}; give a glob "
                                "of token files (e.g. dir/*.npy) or the output of `ladder tokenize`")
            manifest = json.loads(m.read_text())
            files.update(str(Path(p) / f["path"]) for f in manifest["files"])
        else:
            files.update(f for f in glob.glob(p, recursive=True) if os.path.isfile(f))
    if not files:
        raise DataError(f"{key}: no token files match {patterns}")
    return sorted(files), manifest


class TokenFiles:
    """Token files as one flat read-only token array: ``read(a, b)`` returns tokens [a, b)."""

    def __init__(self, files: list[str], dtype: str, key: str = "data.path"):
        self.files, self.dtype, self.key = list(files), np.dtype(dtype), key
        size = self.dtype.itemsize
        counts = np.empty(len(files), dtype=np.int64)
        for i, f in enumerate(files):
            n = os.stat(f).st_size
            if n % size:
                raise DataError(f"{key}: {f} has {n} bytes, not a whole number of {self.dtype.name} "
                                "tokens (data.tokens_dtype)")
            counts[i] = n // size
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._fds: OrderedDict[int, int] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _fd(self, i: int) -> int:
        fd = self._fds.pop(i, None)
        if fd is None:
            fd = os.open(self.files[i], os.O_RDONLY)
            if len(self._fds) >= _OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[i] = fd
        return fd

    def _read_file(self, i: int, a: int, b: int) -> np.ndarray:
        size = self.dtype.itemsize
        buf = os.pread(self._fd(i), (b - a) * size, a * size)
        if len(buf) != (b - a) * size:
            raise DataError(f"{self.key}: {self.files[i]} shrank while reading (expected "
                            f"{self.counts[i]} tokens)")
        return np.frombuffer(buf, dtype=self.dtype)

    def read(self, a: int, b: int) -> np.ndarray:
        """Tokens [a, b) of the concatenation, across file boundaries."""
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        parts = []
        while a < b:
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            if end > a:
                stop = min(b, end)
                parts.append(self._read_file(i, a - start, stop - start))
                a = stop
            i += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):  # picklable (spawned workers reopen their own files)
        return {**self.__dict__, "_fds": OrderedDict()}


@dataclass
class Probe:
    """What start-up learns from a few windows of every file."""

    content_hash: str  # names, sizes, head and tail of each file
    max_id: int
    max_file: str  # the file holding max_id
    no_eos_end: list[str]  # files (except the last) whose last token is not EOS


def probe(tf: TokenFiles, eos_id: int, seed: int = 0) -> Probe:
    """Three 4,096-token windows per file: enough to catch data made with another tokenizer or
    dtype and to fingerprint the corpus, at a cost in files, not bytes."""
    h = hashlib.sha256()
    rng = np.random.default_rng(seed)
    best, best_file, no_eos = -1, "", []
    for i, f in enumerate(tf.files):
        n = int(tf.counts[i])
        h.update(f"{os.path.basename(f)}:{n}\0".encode())
        if n == 0:
            continue
        k = min(n, PROBE_TOKENS)
        mid = int(rng.integers(0, n - k + 1))
        windows = [tf._read_file(i, 0, k), tf._read_file(i, n - k, n), tf._read_file(i, mid, mid + k)]
        h.update(windows[0].tobytes() + windows[1].tobytes())
        m = int(max(w.max() for w in windows))
        if m > best:
            best, best_file = m, f
        if i < len(tf.files) - 1 and int(windows[1][-1]) != eos_id:
            no_eos.append(f)
    return Probe(h.hexdigest()[:16], best, best_file, no_eos)
