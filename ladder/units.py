"""Human-readable counts (parameters, tokens) for tables and status lines."""

from __future__ import annotations


def si(x: float | None, digits: int = 4) -> str:
    """1.234e9 -> '1.234B' (T, B, M, K suffixes, as model and token counts are written); None -> '-'."""
    if x is None:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{unit}"
    return f"{x:g}"
