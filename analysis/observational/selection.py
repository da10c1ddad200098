"""Choosing an observational-law variant from the training models only.

The paper fixes every modelling choice (rank-1 imputation, sigmoid floor in [0, 0.2], least
squares). A variant may extrapolate better on some metric, but choosing it by the held-out
score is fitting the test set. Here the choice is made by *forward validation inside the
training set*: the training models with the most FLOPs are held out, which mimics the
FLOPs-cutoff extrapolation that the law is used for. The grid and the rule are fixed in
advance (``candidate_grid``; documented in docs/observational.md) and the paper's method
is the first candidate, so it wins exact ties.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from analysis.observational.errors import ObservationalError
from analysis.observational.estimator import ObservationalScalingLaw

FORWARD_FRACTIONS = (0.6, 0.7, 0.8)
KFOLD = 5
HUBER_DELTA = 0.05
RIDGES = (1e-4, 1e-3)
# Estimator parameters that change the imputation/PCA features (the rest only the link).
FEATURE_PARAMS = ("impute_rank", "impute_tol", "impute_clip", "standardize")


@dataclass(frozen=True)
class Candidate:
    """One method variant: a name and the ``ObservationalScalingLaw`` keyword arguments."""

    name: str
    params: dict = field(hash=False)


PAPER = Candidate("rank1/floor<=0.2/lsq", {})


def candidate_grid(chance: float = 0.0) -> list[Candidate]:
    """The declared grid, paper's method first: imputation rank {1, 2} x floor {bounded in
    [0, 0.2], fixed at ``chance``} x link fit {least squares, Huber δ=0.05, ridge 1e-4, 1e-3}."""
    if not 0 <= chance < 1:
        raise ObservationalError(f"chance level must be in [0, 1), got {chance}")
    fits = [("lsq", {}), (f"huber{HUBER_DELTA:g}", {"loss": "huber", "huber_delta": HUBER_DELTA})]
    fits += [(f"ridge{lam:g}", {"ridge": lam}) for lam in RIDGES]
    floors = [("floor<=0.2", {}), (f"floor={chance:g}", {"floor_fixed": float(chance)})]
    grid = []
    for rank in (1, 2):
        for fname, fkw in floors:
            for lname, lkw in fits:
                params = ({"impute_rank": rank} if rank != 1 else {}) | fkw | lkw
                grid.append(Candidate(f"rank{rank}/{fname}/{lname}", params))
    assert grid[0].name == PAPER.name and grid[0].params == PAPER.params
    return grid


def forward_folds(flops: np.ndarray, fractions=FORWARD_FRACTIONS) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """``(fit_mask, val_mask, cutoff)``: fit on FLOPs <= the f-quantile model, validate above."""
    flops = np.asarray(flops, dtype=float)
    order = np.sort(flops)
    folds = []
    for f in fractions:
        cutoff = order[max(0, math.ceil(f * len(order)) - 1)]
        fit = flops <= cutoff
        if fit.any() and (~fit).any() and not any(c == cutoff for *_, c in folds):
            folds.append((fit, ~fit, float(cutoff)))
    return folds


def kfold_folds(n: int, k: int = KFOLD, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
    perm = np.random.default_rng(seed).permutation(n)
    folds = []
    for part in np.array_split(perm, min(k, n)):
        val = np.zeros(n, dtype=bool)
        val[part] = True
        folds.append((~val, val, float("nan")))
    return folds


@dataclass
class Selection:
    """Outcome of ``select_method``: the chosen candidate and every candidate's scores."""

    selected: Candidate
    scheme: str
    folds: list[dict]
    scores: dict[str, dict]
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return {"selected": self.selected.name, "params": dict(self.selected.params),
                "validation": self.scheme, "folds": self.folds, "cv_mse": self.cv_mse,
                "scores": self.scores, "seconds": self.seconds, "note": self.note}

    @property
    def cv_mse(self) -> float:
        return self.scores[self.selected.name]["mean_mse"]


def select_method(
    X: np.ndarray,
    y: np.ndarray,
    flops: np.ndarray | None = None,
    *,
    n_components: int = 3,
    chance: float = 0.0,
    validation: str = "auto",
    seed: int = 0,
    grid: list[Candidate] | None = None,
) -> Selection:
    """Score every candidate by validation on the training models ``(X, y)`` only.

    ``validation``: "forward" (needs ``flops`` for every model; folds of
    ``FORWARD_FRACTIONS``), "kfold" (5 folds, seeded) or "auto" (forward when all FLOPs are
    known, else kfold). Score = mean validation MSE over folds; a candidate that fails on a
    fold scores +inf; the lowest score wins, exact ties go to the earlier candidate. If no
    candidate can be validated (too few models), the paper's method is returned with a note.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    grid = candidate_grid(chance) if grid is None else grid
    validation, folds = _validation_folds(validation, flops, len(y), seed)
    fold_mse = {c.name: [] for c in grid}
    for fit, val, _ in folds:
        for name, mse in _score_fold(grid, n_components, X, y, fit, val).items():
            fold_mse[name].append(mse)
    scores = {name: {"mean_mse": float(np.mean(v)) if v else math.inf, "fold_mse": v}
              for name, v in fold_mse.items()}
    best = min(range(len(grid)), key=lambda i: (scores[grid[i].name]["mean_mse"], i))
    note = ""
    if not folds or not math.isfinite(scores[grid[best].name]["mean_mse"]):
        best, note = 0, "no candidate could be validated on these training models; paper's method used"
    fold_info = [{"n_fit": int(f.sum()), "n_val": int(v.sum()),
                  **({"flops_cutoff": c} if math.isfinite(c) else {})} for f, v, c in folds]
    return Selection(grid[best], validation, fold_info, scores, time.perf_counter() - t0, note)


def _validation_folds(validation: str, flops, n: int, seed: int):
    """The scheme ("auto" resolved) and its ``(fit_mask, val_mask, cutoff)`` folds."""
    known = flops is not None and np.all(np.isfinite(np.asarray(flops, dtype=float)))
    if validation == "auto":
        validation = "forward" if known else "kfold"
    if validation == "forward":
        if not known:
            raise ObservationalError("forward validation needs the FLOPs of every training model")
        return validation, forward_folds(flops)
    if validation == "kfold":
        return validation, kfold_folds(n, seed=seed)
    raise ObservationalError(f"validation must be 'auto', 'forward' or 'kfold', got {validation!r}")


def _score_fold(grid: list[Candidate], n_components: int, X: np.ndarray, y: np.ndarray,
                fit: np.ndarray, val: np.ndarray) -> dict[str, float]:
    """Validation MSE of every candidate on one fold (+inf where it cannot be fitted). One
    imputation + PCA per feature setting, and one link fit per distinct (features, link
    settings): settings that give identical features (e.g. any imputation rank when the fold
    has no holes) share their link fits."""
    features: dict[tuple, int | None] = {}  # feature setting -> index into `distinct`
    distinct: list[tuple[np.ndarray, np.ndarray]] = []  # (fit, validation) capabilities
    done: dict[tuple, float] = {}  # (features, link params) -> validation MSE
    out = {}
    for c in grid:
        est = ObservationalScalingLaw(n_components=n_components, **c.params)
        key = tuple(repr(getattr(est, k)) for k in FEATURE_PARAMS)
        if key not in features:
            try:
                T = (est.fit_capabilities(X[fit]), est.transform(X[val]))
                same = [i for i, d in enumerate(distinct)
                        if all(np.array_equal(a, b) for a, b in zip(d, T))]
                features[key] = same[0] if same else len(distinct)
                if not same:
                    distinct.append(T)
            except (ObservationalError, ValueError):  # too few models, sparse column
                features[key] = None
        if features[key] is None:
            out[c.name] = math.inf
            continue
        link_key = (features[key], repr({k: v for k, v in c.params.items()
                                          if k not in FEATURE_PARAMS}))
        if link_key not in done:
            T_fit, T_val = distinct[features[key]]
            try:
                link = est.fit_link(T_fit, y[fit])
                done[link_key] = float(np.mean((link.predict(T_val) - y[val]) ** 2))
            except ObservationalError:
                done[link_key] = math.inf
        out[c.name] = done[link_key]
    return out
