"""Compute in capability space: each family's linear map log-FLOPs -> PCs, and the paper's
"equivalent FLOPs" axis of a reference family (a relabelling for plots; predictions never use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.observational.errors import ObservationalError

DEFAULT_REF_FAMILY = "Llama-2"


@dataclass
class FamilyMap:
    """``PC_k = intercept_k + slope_k * log(FLOPs)`` for one family (natural log, FLOPs in
    the table's unit). ``r2`` per PC is the fit quality."""

    family: str
    n_models: int
    slope: list[float]
    intercept: list[float]
    r2: list[float]
    models: list[str]


def fit_family_map(family: str, log_flops: np.ndarray, caps: np.ndarray, models: Sequence[str]) -> FamilyMap:
    log_flops = np.asarray(log_flops, dtype=float)
    caps = np.asarray(caps, dtype=float).reshape(len(log_flops), -1)
    ok = np.isfinite(log_flops)
    if ok.sum() < 2 or np.ptp(log_flops[ok]) == 0:
        raise ObservationalError(
            f"family {family!r} has {int(ok.sum())} model(s) with distinct known FLOPs; a "
            "per-family slope needs at least 2")
    A = np.column_stack([np.ones(ok.sum()), log_flops[ok]])
    coef, *_ = np.linalg.lstsq(A, caps[ok], rcond=None)
    res = caps[ok] - A @ coef
    ss = ((caps[ok] - caps[ok].mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(ss > 0, 1.0 - (res**2).sum(axis=0) / np.where(ss > 0, ss, 1.0), np.nan)
    return FamilyMap(family, int(ok.sum()), coef[1].tolist(), coef[0].tolist(),
                     [None if math.isnan(v) else float(v) for v in r2],
                     [str(m) for m, o in zip(models, ok) if o])


def fit_family_maps(families, log_flops, caps, models) -> tuple[dict[str, FamilyMap], dict[str, str]]:
    """Per-family maps for every family with >= 2 models of known, distinct FLOPs.
    Returns ``(maps, skipped)`` where ``skipped`` gives the reason per family."""
    families = np.asarray(families, dtype=object)
    maps, skipped = {}, {}
    for fam in sorted(set(families)):
        m = families == fam
        try:
            maps[fam] = fit_family_map(fam, np.asarray(log_flops)[m], np.asarray(caps)[m],
                                       np.asarray(models, dtype=object)[m])
        except ObservationalError as e:
            skipped[fam] = str(e)
    return maps, skipped


@dataclass
class EquivalentCompute:
    """The paper's x-axis: the link's aggregate capability ``C = w . PC + w0`` expressed as
    the log-FLOPs a reference family would need for it (``C = a log F + c`` fitted on that
    family). A monotone relabelling of C for plots; predictions never use it."""

    ref_family: str
    slope: float
    intercept: float
    models: list[str]

    def log_flops(self, aggregate: np.ndarray) -> np.ndarray:
        return (np.asarray(aggregate) - self.intercept) / self.slope


def fit_equivalent_compute(ref_family: str, families, log_flops, aggregate, models) -> EquivalentCompute:
    families = np.asarray(families, dtype=object)
    m = families == ref_family
    if not m.any():
        raise ObservationalError(f"reference family {ref_family!r} has no models in the table")
    fm = fit_family_map(ref_family, np.asarray(log_flops)[m], np.asarray(aggregate)[m],
                        np.asarray(models, dtype=object)[m])
    if fm.slope[0] == 0:
        raise ObservationalError(f"reference family {ref_family!r}: capability does not change with FLOPs")
    return EquivalentCompute(ref_family, fm.slope[0], fm.intercept[0], fm.models)


def equivalent_axis(ref_family: str | None, families, log_flops, aggregate, models) -> EquivalentCompute | None:
    """An explicit reference family must work; the default (None) falls back from Llama-2 to
    the family with the most models of known FLOPs (None if no family has two)."""
    if ref_family is not None:
        return fit_equivalent_compute(ref_family, families, log_flops, aggregate, models)
    counts = pd.Series(families[np.isfinite(log_flops)]).value_counts()
    order = ([DEFAULT_REF_FAMILY] if DEFAULT_REF_FAMILY in counts.index else []) + \
        sorted(counts.index, key=lambda f: (-counts[f], f))
    for fam in order:
        try:
            return fit_equivalent_compute(fam, families, log_flops, aggregate, models)
        except ObservationalError:
            continue
    return None
