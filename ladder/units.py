"""Human-readable counts (parameters, tokens) and plain-text tables for the CLI's output."""

from __future__ import annotations


def si(x: float | None, digits: int = 4) -> str:
    """1.234e9 -> '1.234B' (T, B, M, K suffixes, as model and token counts are written); None -> '-'."""
    if x is None:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{unit}"
    return f"{x:g}"


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as aligned columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)
