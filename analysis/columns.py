"""A run's evaluation table as numpy columns, read without pandas (importing it cost more than a
whole prediction): CSV cells and JSON values to numbers, with pandas' conventions for missing
cells, so a table reads the same as ``pandas.read_csv`` would read it (tests/test_runlog.py)."""

from __future__ import annotations

import numpy as np

# the cells pandas reads as missing (its default na_values): W&B exports write some of them
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                     "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                     "nan", "null"})


def to_number(v) -> float | None:
    """A cell or JSON value as a float; NaN if missing; None if it is not a number."""
    if v is None:
        return float("nan")
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        if v.strip() in MISSING:
            return float("nan")
        if "_" in v:  # Python reads '1_000' as 1000; no export writes that, so it is not a number
            return None
        try:
            return float(v)
        except ValueError:
            return None
    return None


def column_from(values: list) -> np.ndarray:
    """Floats where every value is a number or missing, else the values as read."""
    if values and all(type(v) is str for v in values) and not any("_" in v for v in values):
        try:
            return np.array(values, dtype=float)
        except ValueError:  # missing cells, or text: value by value
            pass
    nums = [to_number(v) for v in values]
    if any(x is None for x in nums):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.array(nums, dtype=float)


def as_floats(values: np.ndarray) -> np.ndarray:
    """A column as floats (text and missing values: NaN), always a copy."""
    if values.dtype == object:
        return np.array([x if (x := to_number(v)) is not None else np.nan for v in values], float)
    return np.array(values, dtype=float)


def show(value) -> str:
    """A cell for an error message: whole numbers without a decimal point."""
    f = to_number(value)
    return str(int(f)) if f is not None and np.isfinite(f) and f == int(f) else str(value)


def take(columns: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The given rows (indices or a mask) of every column."""
    return {k: v[rows] for k, v in columns.items()}
