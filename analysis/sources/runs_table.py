"""A table of the ladder's runs (``--runs-table``): N, and how to count each run's tokens, for
inputs that do not carry them (lm-evaluation-harness results, a table without an N column).
Never guessed: a run the table does not name, and whose input has no N, is an error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.columns import as_floats
from analysis.runlog import RunLogError

# accepted spellings of each field (lower case): the first is the documented one
RUN = ("run", "run_name", "model", "name")
N = ("n", "n_params", "params", "num_params", "parameters")
TOKENS = ("tokens", "d", "train_tokens", "num_tokens", "tokens_seen")
STEP = ("step", "_step", "global_step")
TOKENS_PER_STEP = ("tokens_per_step", "batch_tokens", "batch_size_in_tokens")
MULTIPLIER = ("multiplier", "mult")
SIZE = ("size",)


def find_column(columns, names) -> str | None:
    """The column of ``columns`` spelled as one of ``names`` (case-insensitive), else None."""
    lower = {str(c).strip().lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


@dataclass(frozen=True)
class RunInfo:
    n: float | None = None
    d: float | None = None  # final tokens (a run evaluated once)
    tokens_per_step: float | None = None
    multiplier: float | None = None
    size: str | None = None
    source: str = ""


def read_table(path: Path) -> dict[str, np.ndarray]:
    """A CSV or parquet table as columns (see analysis.columns)."""
    from analysis.runlog import read_csv_columns

    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet_columns(path)
    return read_csv_columns(path)


def read_parquet_columns(path: Path) -> dict[str, np.ndarray]:
    from analysis.columns import column_from

    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except ImportError as e:
        raise RunLogError(f"{path}: reading parquet needs pyarrow ({e}); export the table as CSV") from None
    except Exception as e:  # pyarrow raises its own types for a damaged file
        raise RunLogError(f"{path}: cannot read as parquet ({' '.join(str(e).split())[:200]})") from None
    return {str(c): column_from(df[c].tolist()) for c in df.columns}


def _positive(v: float, path: Path, run: str, field: str) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if not (math.isfinite(v) and v > 0):
        raise RunLogError(f"{path}: run '{run}': {field} must be a positive number, got {v:g}")
    return float(v)


def read_runs_table(path: str | Path) -> dict[str, RunInfo]:
    """run -> RunInfo from a CSV or parquet table with a run column and at least N."""
    path = Path(path)
    if not path.is_file():
        raise RunLogError(f"--runs-table {path}: no such file")
    cols = read_table(path)
    run_col, n_col = find_column(cols, RUN), find_column(cols, N)
    if run_col is None or n_col is None:
        raise RunLogError(f"--runs-table {path}: needs a '{RUN[0]}' column and an '{N[0]}' column "
                          f"(parameters), got columns {', '.join(map(str, list(cols)[:8]))}")
    get = {k: (c, as_floats(cols[c])) for k, names in (("d", TOKENS), ("tps", TOKENS_PER_STEP),
                                                      ("mult", MULTIPLIER))
           if (c := find_column(cols, names)) is not None}
    size_col = find_column(cols, SIZE)
    n = as_floats(cols[n_col])
    out: dict[str, RunInfo] = {}
    for i, run in enumerate(str(r).strip() for r in cols[run_col]):
        if not run:
            raise RunLogError(f"--runs-table {path}: row {i + 2} has no run name")
        if run in out:
            raise RunLogError(f"--runs-table {path}: run '{run}' is listed twice")
        vals = {k: _positive(v[i], path, run, c) for k, (c, v) in get.items()}
        n_i = _positive(n[i], path, run, n_col)
        if n_i is None:
            raise RunLogError(f"--runs-table {path}: run '{run}' has no {n_col}")
        out[run] = RunInfo(n_i, vals.get("d"), vals.get("tps"), vals.get("mult"),
                           str(cols[size_col][i]) if size_col else None, str(path))
    return out
