"""Where tokenizers and token files are cached, and how an entry appears there atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``LADDER_CACHE`` or ``~/.cache/ladder``."""
    p = Path(override or os.environ.get("LADDER_CACHE") or Path.home() / ".cache" / "ladder")
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_dir(final: Path, build) -> Path:
    """Build a cache entry in a temp dir and rename it into place; a concurrent builder that
    finishes first wins and ours is discarded (both are identical)."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
