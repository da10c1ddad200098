"""Digests of the files whose bytes matter, and a full or failing disk named as such.

Checkpoint files and the token cache carry a record per file, ``{"bytes": n, "xxh3_128": hex}``,
in their manifest (``checkpoint.json``, the cache's ``meta.json``); a reader checks the record
before using a byte. XXH3-128 is a checksum, not a signature: it finds damage (a zeroed block
after a power loss, a truncated copy, a flipped bit), not a forger who rewrites the manifest
too; nothing read from disk is unpickled, so a forger cannot run code either
(:mod:`ladder.train.safe_dcp`). The speed of the digest against a checkpoint write is measured
by ``tests/benchmarks/bench_checkpoint.py`` (docs/reliability.md).

Disk errors reach us in many shapes: ``OSError`` from Python, ``RuntimeError`` from
``torch.save``'s stream writer (no errno), ``SafetensorError`` with the OS message inside, DCP's
``CheckpointException`` wrapping each rank's error. :func:`storage_error` turns any of them into
one :class:`StorageError` naming the path and the cause, so ``ladder train`` prints one line.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import xxhash  # XXH3 runs at memory speed (pyproject; also a dependency of datasets and wandb)

ALGORITHM = "xxh3_128"
_CHUNK = 8 << 20


def new_hasher():
    """A streaming hasher (``update(bytes)``, ``hexdigest()``) for digests computed while writing."""
    return xxhash.xxh3_128()


def digest_file(path: str | os.PathLike) -> str:
    h = new_hasher()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def file_record(path: str | os.PathLike, digest: str | None = None) -> dict[str, Any]:
    """What a manifest records of one file: its size and digest (``digest`` when it was computed
    while writing, else the file is read)."""
    return {"bytes": os.stat(path).st_size, ALGORITHM: digest or digest_file(path)}


def record_tree(root: Path, skip: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Records of every file under ``root`` by relative path (``skip``: names left out)."""
    skip = set(skip)
    return {str(p.relative_to(root)): file_record(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def files_problem(root: Path, records: dict[str, Any], *, digests: bool = True) -> str | None:
    """Why the files under ``root`` are not the ones recorded, or None. Sizes of every file first
    (cheap: a truncated copy is found without reading anything), then the digests. A record
    that is a bare number is a size (manifests written before digests)."""
    for rel, rec in records.items():
        size = rec if isinstance(rec, int) else rec.get("bytes") if isinstance(rec, dict) else None
        if not isinstance(size, int):
            return f"the manifest's record of {rel} is malformed"
        try:
            actual = (root / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} is {actual} bytes, {size} were written"
    if digests:
        for rel, rec in records.items():
            want = rec.get(ALGORITHM) if isinstance(rec, dict) else None
            if want is None:
                continue
            try:
                got = digest_file(root / rel)
            except OSError as e:
                return f"{rel} is unreadable ({e.strerror or e})"
            if got != want:
                return f"{rel} does not match its digest (damaged contents)"
    return None


SEAL = "manifest_" + ALGORITHM  # a manifest's digest of its own content


def _seal_digest(manifest: dict[str, Any]) -> str:
    h = new_hasher()
    h.update(json.dumps({k: v for k, v in manifest.items() if k != SEAL}, sort_keys=True).encode())
    return h.hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its own digest added: a flipped byte in a value the readers act on (a
    dtype, a flag) is found like one in the files it lists."""
    return {**manifest, SEAL: _seal_digest(manifest)}


def seal_problem(manifest: dict[str, Any], name: str) -> str | None:
    """Why a sealed manifest is not as written, or None (unsealed ones: older, not checked)."""
    if SEAL in manifest and manifest[SEAL] != _seal_digest(manifest):
        return f"{name} does not match its digest (damaged contents)"
    return None


def has_digests(records: dict[str, Any]) -> bool:
    return bool(records) and all(isinstance(r, dict) and ALGORITHM in r for r in records.values())


# ---------------------------------------------------------------------------- disk errors


STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EIO: "input/output error", errno.EROFS: "read-only file system",
                  errno.EFBIG: "file too large", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}
# How the same causes read when a library has turned the OSError into text (safetensors' Rust
# io::Error, a C++ stream's message).
_MESSAGES = [(re.compile(p, re.I), e) for p, e in (
    (r"no space left|os error 28|ENOSPC|StorageFull", errno.ENOSPC),
    (r"quota exceeded|os error 122|EDQUOT", errno.EDQUOT),
    (r"read-only file system|os error 30|EROFS", errno.EROFS),
    (r"input/output error|os error 5\b|EIO\b", errno.EIO),
    (r"permission denied|os error 13", errno.EACCES))]
# torch.save's stream writer reports a failed write(2) without its errno.
_TORCH_WRITE = re.compile(r"inline_container\.cc|PytorchStreamWriter failed|file write failed|"
                          r"unexpected pos \d+ vs \d+", re.I)


class StorageError(OSError):
    """A write the file system refused; ``str()`` is one line naming the path and the cause."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"

    def status_message(self) -> str:
        """What status.json says: schedulers do not retry it; a person frees space and reruns."""
        return f"failed: {self}; free space (or fix the file system) and rerun the same command to resume"


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        failures = getattr(e, "failures", None)  # DCP's CheckpointException: {rank: (error, trace)}
        if isinstance(failures, dict):
            todo += [f[0] if isinstance(f, tuple) else f for f in failures.values()]


def _free_bytes(path: Path) -> int | None:
    for p in [path, *path.parents]:
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def storage_error(exc: BaseException, path: str | os.PathLike) -> StorageError | None:
    """``exc`` as a :class:`StorageError` about ``path`` if a file system refused a write (full,
    over quota, read-only, failing), else None: a bug stays a bug, with its traceback."""
    if isinstance(exc, StorageError):
        return exc
    path = Path(path)
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return StorageError(e.errno, STORAGE_ERRNOS[e.errno], str(e.filename or path))
    text = " ".join(str(e) for e in _chain(exc))
    for pattern, code in _MESSAGES:
        if pattern.search(text):
            return StorageError(code, STORAGE_ERRNOS[code], str(path))
    if _TORCH_WRITE.search(text):
        free = _free_bytes(path)
        if free is not None and free < (1 << 20):
            return StorageError(errno.ENOSPC, STORAGE_ERRNOS[errno.ENOSPC], str(path))
        return StorageError(errno.EIO, "the file system refused a write (full, over quota or failing)",
                            str(path))
    return None
