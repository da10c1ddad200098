"""The lines of ``metrics.jsonl``: each row carries a CRC-32 of its own JSON, and is appended
whole or not at all.

A row that still parses after a byte changed (a digit of a loss, a step) would otherwise feed a
fit silently; the checksum finds it. Appends go through ``write(2)`` until every byte is down:
on a nearly full disk the kernel writes part of a row and returns a short count, and only the
next call fails with ENOSPC. The part already written is cut again, so the file ends on a whole
row and the next append never lands on a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zlib
from typing import Any

from analysis.files import json_safe

ROW_CHECK = "crc32"  # the field holding a row's checksum (never a metric column)
_CHECK_FIELD = re.compile(r', "crc32": "([0-9a-f]{8})"}$')


def format_row(row: dict[str, Any]) -> str:
    """One line: the row's JSON with the CRC-32 of that JSON added as its last field."""
    body = json.dumps({k: json_safe(v) for k, v in row.items() if k != ROW_CHECK})
    return f'{body[:-1]}, "{ROW_CHECK}": "{zlib.crc32(body.encode()):08x}"}}\n'


def row_problem(line: str, row: dict[str, Any], kinds: set[bool]) -> str | None:
    """Why a parsed line is not a row as written, or None; ``kinds`` collects, across a file,
    whether rows carry a checksum (rows written before checksums carry none; a file mixing the
    two has lost a checksum field to damage)."""
    kinds.add(ROW_CHECK in row)
    if len(kinds) > 1:
        return "breaks the file's pattern: some rows carry a checksum and some do not (damaged)"
    if ROW_CHECK not in row:
        return None
    line = line.rstrip("\r")
    m = _CHECK_FIELD.search(line)
    if m is None:
        return "has a malformed checksum field (damaged)"
    if f"{zlib.crc32((line[:m.start()] + '}').encode()):08x}" != m.group(1):
        return "does not match its checksum (damaged contents)"
    return None


def append_line(path: str | os.PathLike, line: bytes) -> None:
    """Append ``line`` whole, fsynced, or raise ``OSError`` naming ``path`` with nothing of it
    left in the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                os.fsync(fd)
            raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        os.close(fd)
