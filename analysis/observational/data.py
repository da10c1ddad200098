"""The input of an observational fit: a benchmark table (one row per model), joined metric
tables, and the train/test split of its models."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.observational.errors import ObservationalError

MODEL_COL = "Model"
FAMILY_COL = "Model Family"
FLOPS_COL = "FLOPs (1E21)"
METADATA_COLUMNS = (MODEL_COL, FAMILY_COL, "Model Size (B)", "Pretraining Data Size (T)", FLOPS_COL)
FLOPS_UNIT = 1e21  # FLOPS_COL is in units of 1e21 FLOPs


def load_benchmark_table(path: str | Path, joins: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Read a benchmark CSV (one row per model) and left-join extra metric CSVs on ``Model``."""
    df = _read_csv(path)
    for col in (MODEL_COL, FAMILY_COL, FLOPS_COL):
        if col not in df.columns:
            raise ObservationalError(f"{path}: missing required column {col!r}")
    _check_unique_models(df, path)
    joined: list[str] = []
    for jp in joins:
        j = _read_csv(jp)
        if MODEL_COL not in j.columns:
            raise ObservationalError(f"{jp}: missing the {MODEL_COL!r} column to join on")
        _check_unique_models(j, jp)
        clash = [c for c in j.columns if c != MODEL_COL and c in df.columns]
        if clash:
            raise ObservationalError(f"{jp}: column(s) {clash} already exist in the table; rename them")
        if not j[MODEL_COL].isin(df[MODEL_COL]).any():
            raise ObservationalError(f"{jp}: no model in it matches a model of {path}")
        df = df.merge(j, on=MODEL_COL, how="left")
        joined += [c for c in j.columns if c != MODEL_COL]
    df.attrs["joined_columns"] = joined  # default predictors come from the benchmark CSV only
    return df


def joined_columns(table: pd.DataFrame) -> set:
    """Columns that came from ``--join`` tables (targets, never default predictors)."""
    return set(table.attrs.get("joined_columns", ()))


def _read_csv(path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ObservationalError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ObservationalError(f"{path}: not a readable CSV ({e})") from None


def _check_unique_models(df: pd.DataFrame, path) -> None:
    dup = df[MODEL_COL][df[MODEL_COL].duplicated()].unique().tolist()
    if dup:
        raise ObservationalError(f"{path}: duplicate model rows {dup[:5]}")


def benchmark_columns(df: pd.DataFrame) -> list[str]:
    """Numeric score columns: every numeric column that is not model metadata."""
    return [c for c in df.columns if c not in METADATA_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]


# ----------------------------------------------------------------------------- splits


def split_by_cutoff(flops: np.ndarray, cutoff: float) -> np.ndarray:
    """train = FLOPs <= cutoff, test = FLOPs > cutoff (FLOPs in the table's unit, 1e21).
    Models with unknown FLOPs are left out (""): they can be neither placed below nor above
    the cutoff (the paper's code sent them to test; use a split file for that)."""
    flops = np.asarray(flops, dtype=float)
    return np.where(np.isnan(flops), "", np.where(flops <= cutoff, "train", "test")).astype(object)


def split_by_family(families, test_families: Sequence[str]) -> np.ndarray:
    families = np.asarray(families, dtype=object)
    unknown = sorted(set(test_families) - set(families))
    if unknown:
        raise ObservationalError(f"test families not in the table: {unknown}")
    return np.where(np.isin(families, list(test_families)), "test", "train").astype(object)


def split_random(n: int, test_fraction: float, seed: int = 0) -> np.ndarray:
    if not 0 < test_fraction < 1:
        raise ObservationalError(f"test fraction must be in (0, 1), got {test_fraction}")
    n_test = max(1, int(round(test_fraction * n)))
    labels = np.full(n, "train", dtype=object)
    labels[np.random.default_rng(seed).permutation(n)[:n_test]] = "test"
    return labels


def split_from_file(models, path: str | Path) -> np.ndarray:
    """``Model,split`` CSV with split in {train, test}; models not listed are left out ("")."""
    s = _read_csv(path)
    for col in (MODEL_COL, "split"):
        if col not in s.columns:
            raise ObservationalError(f"{path}: missing column {col!r} (expected columns Model,split)")
    _check_unique_models(s, path)
    bad = sorted(set(s["split"].astype(str)) - {"train", "test"})
    if bad:
        raise ObservationalError(f"{path}: split values must be 'train' or 'test', found {bad}")
    unknown = sorted(set(s[MODEL_COL]) - set(models))
    if unknown:
        raise ObservationalError(
            f"{path}: {len(unknown)} model(s) not in the benchmark table, e.g. {unknown[:3]}")
    lookup = dict(zip(s[MODEL_COL], s["split"].astype(str)))
    return np.array([lookup.get(m, "") for m in models], dtype=object)
