"""One table for the whole ladder (CSV or parquet): a row per run or per checkpoint, a run column,
N, tokens (or steps), and metric columns (wide), or one metric per row in ``metric`` and ``value``
columns (long). Read into one run log per run, saying where N and the tokens came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.columns import as_floats, column_from, show
from analysis.runlog import PAPER_N, STEP, TOKENS, RunLog, RunLogError, RunMeta, parse_run_name, validated
from analysis.sources.runs_table import (MULTIPLIER, N, RUN, SIZE, STEP as STEP_NAMES,
                                         TOKENS as TOKEN_NAMES, TOKENS_PER_STEP, RunInfo,
                                         find_column, read_table)

METRIC, VALUE = "metric", "value"


def is_ladder_table(path: Path) -> bool:
    """A parquet file, or a CSV whose header names a run column (a W&B export of one run has
    none)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    if path.suffix.lower() != ".csv":
        return False
    try:
        with open(path, encoding="utf-8-sig") as f:
            header = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    import csv
    names = next(csv.reader([header]), [])
    return find_column(names, RUN) is not None


def _pivot_long(cols: dict, path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Long rows (run, N, tokens/step, metric, value) -> wide columns, one row per checkpoint."""
    metric, value = find_column(cols, (METRIC,)), find_column(cols, (VALUE,))
    rows: dict[tuple, dict] = {}
    values = as_floats(cols[value])
    for i, m in enumerate(cols[metric]):
        key = tuple(str(cols[k][i]) for k in keys)
        row = rows.setdefault(key, {k: cols[k][i] for k in keys})
        name = str(m).strip()
        if not name:
            raise RunLogError(f"{path}: row {i + 2} has no {METRIC} name")
        if name in row and row[name] != values[i]:
            raise RunLogError(f"{path}: {METRIC} '{name}' appears twice for "
                              f"{', '.join(f'{k}={v}' for k, v in zip(keys, key))}")
        row[name] = values[i]
    names = list(dict.fromkeys(k for r in rows.values() for k in r))
    return {k: column_from([r.get(k) for r in rows.values()]) for k in names}


def read_ladder_table(path: Path, runs_info: dict[str, RunInfo] | None = None,
                      tokens_per_step: float | None = None, say=lambda m: None) -> list[RunLog]:
    """Every run of a ladder table (see the module's docstring)."""
    cols = read_table(path)
    run_col = find_column(cols, RUN)
    if run_col is None:
        raise RunLogError(f"{path}: a ladder table needs a '{RUN[0]}' column")
    fmt = "wide"
    if find_column(cols, (METRIC,)) and find_column(cols, (VALUE,)):
        keys = [run_col] + [c for c in _special(cols).values() if c is not None]
        cols, fmt = _pivot_long(cols, path, keys), "long"
    runs, said = runs_from_columns(path, cols, runs_info, tokens_per_step)
    say(f"{path}: {len(runs)} runs from a {fmt} table ({len(cols[run_col])} rows); {said}")
    return runs


def _special(cols) -> dict[str, str | None]:
    return {k: find_column(cols, names) for k, names in (
        ("n", N), ("tokens", TOKEN_NAMES), ("step", STEP_NAMES), ("size", SIZE),
        ("mult", MULTIPLIER), ("tps", TOKENS_PER_STEP))}


def runs_from_columns(source, cols: dict[str, np.ndarray], runs_info: dict[str, RunInfo] | None = None,
                      tokens_per_step: float | None = None) -> tuple[list[RunLog], str]:
    """Wide columns with a run column -> one run log per run, and where N and the tokens came
    from (for the reader's summary)."""
    runs_info = runs_info or {}
    run_col, special = find_column(cols, RUN), _special(cols)
    if not len(cols[run_col]):
        raise RunLogError(f"{source}: the table has no rows")
    names = [str(x).strip() for x in cols[run_col]]
    metrics = [c for c in cols if c != run_col and c not in special.values()]
    if not metrics:
        raise RunLogError(f"{source}: no metric columns besides "
                          f"{', '.join(c for c in special.values() if c)}")
    runs, said = [], {"n": set(), "tokens": set()}
    for name in dict.fromkeys(names):
        if not name:
            raise RunLogError(f"{source}: row {names.index(name) + 2} has no run name")
        idx = np.array([i for i, x in enumerate(names) if x == name])
        runs.append(_one_run(source, name, idx, cols, special, metrics, runs_info.get(name),
                             tokens_per_step, said))
    return runs, (f"N from {' and '.join(sorted(said['n']))}; tokens from "
                  f"{' and '.join(sorted(said['tokens']))}")


def _constant(path, name, cols, col, idx) -> float | None:
    if col is None:
        return None
    v = as_floats(cols[col][idx])
    v = v[np.isfinite(v)]
    if v.size and np.any(v != v[0]):
        raise RunLogError(f"{path}: run '{name}' has several values of '{col}' ({show(v[0])}, "
                          f"{show(v[v != v[0]][0])}); one per run")
    return float(v[0]) if v.size else None


def _one_run(path, name, idx, cols, special, metrics, info, tokens_per_step, said) -> RunLog:
    parsed = parse_run_name(name)
    size = str(cols[special["size"]][idx[0]]) if special["size"] else parsed.get("size")
    n = _constant(path, name, cols, special["n"], idx)
    if n is not None:
        said["n"].add(f"column '{special['n']}'")
    elif info is not None and info.n is not None:
        n = info.n
        said["n"].add(f"the runs table ({info.source})")
    elif size in PAPER_N:
        n = PAPER_N[size]
        said["n"].add("the size names (the OLMo ladder's counts)")
    else:
        raise RunLogError(f"{path}: run '{name}' has no N: add an '{N[0]}' column, or give "
                          f"--runs-table FILE with columns {RUN[0]},{N[0]}")
    tokens, step = _tokens(path, name, idx, cols, special, info, tokens_per_step, said)
    order = np.argsort(tokens, kind="stable")
    table = {STEP: step[order], TOKENS: tokens[order]}
    for m in metrics:
        table[m] = cols[m][idx][order]
    mult = _constant(path, name, cols, special["mult"], idx)
    if mult is None:
        mult = info.multiplier if info is not None and info.multiplier else parsed.get("multiplier")
    meta = RunMeta(name=name, n_params=int(round(n)), size=size, multiplier=mult,
                   target_tokens=float(tokens.max()))
    if len(np.unique(tokens)) != tokens.size:
        dup = tokens[np.flatnonzero(np.diff(np.sort(tokens)) == 0)[0]]
        raise RunLogError(f"{path}: run '{name}' has two rows at tokens {show(dup)}")
    return validated(RunLog(meta, table, f"{path} (run {name})"))


def _tokens(path, name, idx, cols, special, info, tokens_per_step, said):
    """Tokens seen at each of the run's rows, and their steps."""
    step = as_floats(cols[special["step"]][idx]) if special["step"] else None
    if step is not None and not np.isfinite(step).any():  # final evaluations without a step
        step = None
    if special["tokens"]:
        said["tokens"].add(f"column '{special['tokens']}'")
        tokens = as_floats(cols[special["tokens"]][idx])
    elif step is not None and (tps := _constant(path, name, cols, special["tps"], idx)
                               or (info.tokens_per_step if info else None) or tokens_per_step):
        said["tokens"].add("steps x tokens per step")
        tokens = step * tps
    elif idx.size == 1 and info is not None and info.d is not None:
        said["tokens"].add(f"the runs table's final tokens ({info.source})")
        tokens = np.array([info.d])
    else:
        raise RunLogError(f"{path}: run '{name}' has no tokens: add a '{TOKEN_NAMES[0]}' column, "
                          f"or '{STEP_NAMES[0]}' with --tokens-per-step N (or a "
                          f"'{TOKENS_PER_STEP[0]}' column in --runs-table)")
    bad = ~(np.isfinite(tokens) & (tokens > 0))
    if bad.any():
        raise RunLogError(f"{path}: run '{name}' has tokens {show(tokens[bad][0])}; tokens must be "
                          f"positive numbers")
    return tokens, (step if step is not None else np.arange(1, tokens.size + 1, dtype=float))
