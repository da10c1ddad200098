"""Observational scaling laws (Ruan, Maddison & Hashimoto, 2024) across public models.

Instead of training a ladder, use the hundreds of public models that are already
evaluated: their standard-benchmark scores live in a low-dimensional *capability space*
(the first few principal components explain >95% of the variance), each model family maps
log-compute linearly into that space with its own efficiency, and a downstream metric is a
sigmoid of a linear function of the capabilities. Fitting on the smaller (cheaper) models
and predicting the larger ones is the backtest.

Pipeline, all fitted on training models only:
  benchmark matrix -> low-rank imputation (analysis.observational.imputation) -> PCA (analysis.observational.pca)
  -> sigmoid link ``y = b + (1 - b) * sigmoid(w . PC + w0)`` (variant chosen on the training
  models only by analysis.observational.selection, or the paper's) -> predictions with
  bootstrap intervals; plus per-family linear maps log-FLOPs -> PCs and the paper's
  "equivalent FLOPs" axis of a reference family for plots.

The link fit (``fit_sigmoid_link``) is a small self-contained interface (arrays in, a
``SigmoidLinkFit`` out) so that it can be swapped for the project's shared robust fitter.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.files import json_safe
from analysis.observational.imputation import ImputationError, LowRankImputer
from analysis.observational.pca import PCA, PCAError

MODEL_COL = "Model"
FAMILY_COL = "Model Family"
FLOPS_COL = "FLOPs (1E21)"
METADATA_COLUMNS = (MODEL_COL, FAMILY_COL, "Model Size (B)", "Pretraining Data Size (T)", FLOPS_COL)
FLOPS_UNIT = 1e21  # FLOPS_COL is in units of 1e21 FLOPs
DEFAULT_REF_FAMILY = "Llama-2"


class ObservationalError(ValueError):
    """Bad input or an impossible request for an observational fit; the message says which."""


# ----------------------------------------------------------------------------- link fit


@dataclass
class SigmoidLinkFit:
    """``y = floor + (1 - floor) * sigmoid(intercept + X @ weights)``.

    ``converged``: the best start met a scipy tolerance; ``n_starts_converged`` of
    ``n_starts`` did; ``cost_spread``: best vs worst converged cost (a multimodality hint).
    """

    weights: np.ndarray
    intercept: float
    floor: float
    cost: float
    converged: bool
    n_starts: int
    n_starts_converged: int
    cost_spread: float
    message: str
    loss: str

    def linear(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + np.asarray(X, dtype=float) @ self.weights

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.floor + (1.0 - self.floor) * _sigmoid(self.linear(X))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = [float(w) for w in self.weights]
        return d


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def fit_sigmoid_link(
    X: np.ndarray,
    y: np.ndarray,
    *,
    floor_max: float = 0.2,
    floor_fixed: float | None = None,
    loss: str = "linear",
    delta: float = 1.0,
    ridge: float = 0.0,
    init: np.ndarray | None = None,
    multistart: bool = True,
) -> SigmoidLinkFit:
    """Least-squares (or Huber, ``loss="huber"`` with ``delta``) fit of the sigmoid link.

    Parameters ``[w0, w_1..w_k, floor]`` with ``0 <= floor <= floor_max`` (the chance-level
    floor; the ceiling is fixed at 1 as in the paper), or the floor held at ``floor_fixed``
    (e.g. the metric's chance level). ``ridge`` = λ adds ``λ Σ_k (w_k sd(X_k))²`` to the mean
    squared residual: a penalty on the weights of standardised inputs, so λ is unit-free.
    Trust-region reflective with the analytic Jacobian from several deterministic starts (the
    paper's start, logit-linear regressions at two floors, and ``init`` if given); the lowest
    converged cost wins. ``multistart=False`` with ``init`` tries only ``init`` (bootstrap
    refits warm-start from the full fit) and falls back to all starts if it does not converge.
    Raises ``ObservationalError`` if no start converges: never a silent bad fit.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, k = X.shape
    fixed = floor_fixed is not None
    n_par = k + 1 + (0 if fixed else 1)
    if n < n_par:
        raise ObservationalError(
            f"the sigmoid link has {n_par} parameters but only {n} training models")
    if loss not in ("linear", "huber"):
        raise ObservationalError(f"loss must be 'linear' or 'huber', got {loss!r}")
    if ridge < 0:
        raise ObservationalError(f"ridge must be >= 0, got {ridge}")
    if ridge > 0 and loss != "linear":
        raise ObservationalError("ridge is only defined for the least-squares loss")
    if fixed and not 0 <= floor_fixed < 1:
        raise ObservationalError(f"floor_fixed must be in [0, 1), got {floor_fixed}")
    if not fixed and not 0 < floor_max < 1:
        raise ObservationalError(f"floor_max must be in (0, 1), got {floor_max}")
    A = np.column_stack([np.ones(n), X])
    pen = np.sqrt(n * ridge) * X.std(axis=0) if ridge > 0 else None  # penalty row scales

    def floor_of(p):
        return floor_fixed if fixed else p[-1]

    def resid(p):
        b = floor_of(p)
        r = b + (1.0 - b) * _sigmoid(A @ p[:k + 1]) - y
        return r if pen is None else np.r_[r, pen * p[1:k + 1]]

    def jac(p):
        b = floor_of(p)
        s = _sigmoid(A @ p[:k + 1])
        J = np.zeros((n + (0 if pen is None else k), n_par))
        J[:n, :k + 1] = ((1.0 - b) * s * (1.0 - s))[:, None] * A
        if not fixed:
            J[:n, -1] = 1.0 - s
        if pen is not None:
            J[n + np.arange(k), 1 + np.arange(k)] = pen
        return J

    eps = 1e-3
    lo = np.full(n_par, -np.inf)
    hi = np.full(n_par, np.inf)
    if not fixed:
        lo[-1], hi[-1] = 0.0, floor_max
    if init is not None:
        init = np.asarray(init, dtype=float)
        if init.shape != (k + 2,):
            raise ObservationalError(f"init must have {k + 2} parameters, got shape {init.shape}")
        init = init[:n_par]

    def solve(starts):
        results = []
        for p0 in starts:
            p0 = p0.copy()
            if not fixed:
                p0[-1] = min(max(p0[-1], eps * floor_max), floor_max * (1 - eps))  # strictly inside
            if fixed and loss == "linear":  # unbounded least squares: MINPACK's LM, ~10x faster
                r = least_squares(resid, p0, jac=jac, method="lm", x_scale="jac", max_nfev=2000)
            else:
                r = least_squares(resid, p0, jac=jac, bounds=(lo, hi), method="trf",
                                  loss=loss, f_scale=delta, x_scale="jac", max_nfev=2000)
            if np.all(np.isfinite(r.x)):
                results.append(r)
        ok = [r for r in results if r.status > 0]
        if not ok:
            msgs = "; ".join(sorted({r.message for r in results})) or "non-finite parameters"
            raise ObservationalError(
                f"sigmoid link fit did not converge from any of {len(starts)} start(s): {msgs}")
        best = min(ok, key=lambda r: r.cost)
        return SigmoidLinkFit(
            weights=best.x[1:k + 1].copy(), intercept=float(best.x[0]),
            floor=float(floor_of(best.x)), cost=float(best.cost), converged=True,
            n_starts=len(starts), n_starts_converged=len(ok),
            cost_spread=float(max(r.cost for r in ok) - best.cost), message=str(best.message),
            loss=loss)

    if init is not None and not multistart:
        try:
            return solve([init])
        except ObservationalError:
            pass  # fall back to every start
    starts = [np.r_[0.0, np.full(k, 1e-2), 0.0][:n_par]]  # the paper's start
    floors = (floor_fixed,) if fixed else (0.0, min(0.5 * float(np.min(y)), floor_max))
    for b in floors:
        u = np.clip((y - b) / (1.0 - b), 0.01, 0.99)
        coef, *_ = np.linalg.lstsq(A, np.log(u / (1.0 - u)), rcond=None)
        starts.append(np.r_[coef, b][:n_par])
    if init is not None:
        starts.insert(0, init)
    return solve(starts)


# ----------------------------------------------------------------------------- estimator


@dataclass
class ObservationalScalingLaw:
    """Benchmark scores (models x benchmarks, NaN = missing) -> downstream metric in [0, 1].

    scikit-learn style: ``fit(X, y)`` then ``predict(X)`` / ``predict_interval(X)``.
    Defaults follow the paper's code: rank-1 imputation in standardised units clipped to
    [0, 1], PCA on the raw (unstandardised) imputed scores, sigmoid floor in [0, 0.2],
    least squares. Variants (``select_method``'s grid): ``impute_rank``, ``floor_fixed``
    (floor held at the chance level), ``loss="huber"``, ``ridge`` on the link weights.
    Fitted: ``imputer_``, ``pca_`` (``components_`` = loadings, ``explained_variance_ratio_``),
    ``link_`` (``SigmoidLinkFit``), ``feature_names_in_``, ``fit_seconds_``.
    """

    n_components: int = 3
    impute_rank: int = 1
    impute_tol: float = 1e-7
    impute_clip: tuple[float, float] | None = (0.0, 1.0)
    standardize: bool = False
    floor_max: float = 0.2
    floor_fixed: float | None = None
    loss: str = "linear"
    huber_delta: float = 1.0
    ridge: float = 0.0

    feature_names_in_: list[str] = field(init=False, default=None)
    imputer_: LowRankImputer = field(init=False, repr=False, default=None)
    pca_: PCA = field(init=False, repr=False, default=None)
    link_: SigmoidLinkFit = field(init=False, repr=False, default=None)
    fit_seconds_: float = field(init=False, default=float("nan"))
    _warm_start: np.ndarray | None = field(init=False, repr=False, default=None)

    # -- fitting
    def fit(self, X, y) -> "ObservationalScalingLaw":
        t0 = time.perf_counter()
        names, X = _matrix(X)
        y = np.asarray(y, dtype=float)
        n = X.shape[0]
        if y.shape != (n,):
            raise ObservationalError(f"y has shape {y.shape}, expected ({n},)")
        if np.isnan(y).any():
            raise ObservationalError("y has missing values; drop those models from training")
        Xf = self._fit_features(X, names)
        self.link_ = self._fit_link(self.pca_.transform(Xf), y)
        self._train = (X, y)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit_features(self, X: np.ndarray, names: list[str] | None) -> np.ndarray:
        """Imputation + PCA on the training rows; returns the imputed matrix. The link is
        fitted separately so that method selection can reuse one feature fit for every
        link variant."""
        n, p = X.shape
        if not 1 <= self.n_components <= p:
            raise ObservationalError(
                f"{self.n_components} PCs requested from {p} predictor benchmark(s); "
                f"use between 1 and {p}")
        need = self.n_components + 2
        if n < need:
            raise ObservationalError(
                f"{n} training model(s) for {self.n_components} PCs: the fit needs at least "
                f"{need} (PCA needs more models than PCs, the sigmoid link has "
                f"{self.n_components + 2} parameters)")
        names = names or [f"x{i}" for i in range(p)]
        sparse = [c for c, k in zip(names, (~np.isnan(X)).sum(axis=0)) if k < 2]
        if sparse:
            raise ObservationalError(
                f"predictor(s) {sparse} have fewer than 2 values among the {n} training models; "
                "drop them (--predictors) or change the split")
        clip = self.impute_clip
        if clip is not None and not (np.nanmin(X) >= clip[0] and np.nanmax(X) <= clip[1]):
            clip = None  # predictors are not fractions: do not clip their imputations
        try:
            self.imputer_ = LowRankImputer(rank=min(self.impute_rank, p, n - 1),
                                           tol=self.impute_tol, clip=clip)
            Xf = self.imputer_.fit_transform(X)
            self.pca_ = PCA(self.n_components, standardize=self.standardize).fit(Xf)
        except (ImputationError, PCAError) as e:
            raise ObservationalError(str(e)) from None
        if not self.imputer_.converged_:
            raise ObservationalError(
                f"imputation did not converge in {self.imputer_.n_iter_} iterations "
                f"(last change {self.imputer_.max_change_:.2e} > tol {self.impute_tol:.0e})")
        self.feature_names_in_ = names
        return Xf

    def _fit_link(self, T: np.ndarray, y: np.ndarray) -> SigmoidLinkFit:
        return fit_sigmoid_link(T, y, floor_max=self.floor_max, floor_fixed=self.floor_fixed,
                                loss=self.loss, delta=self.huber_delta, ridge=self.ridge,
                                init=self._warm_start, multistart=self._warm_start is None)

    # -- inference
    def impute(self, X) -> np.ndarray:
        self._check_fitted()
        return self.imputer_.transform(self._columns(X))

    def transform(self, X) -> np.ndarray:
        """Capabilities (PC scores) of models, imputing their missing benchmarks first."""
        filled = self.impute(X)  # checks fitted first
        return self.pca_.transform(filled)

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.link_.predict(self.transform(X))

    def predict_interval(self, X, level: float = 0.9, n_boot: int = 200, seed: int = 0):
        """Bootstrap prediction interval: refit the whole pipeline on models resampled with
        replacement, add a training residual to each bootstrap prediction, take quantiles.
        Returns ``(low, high, n_failed)``; failed resamples (degenerate fits) are skipped."""
        self._check_fitted()
        if not 0 < level < 1:
            raise ObservationalError(f"interval level must be in (0, 1), got {level}")
        Xq = self._columns(X)
        Xt, yt = self._train
        rng = np.random.default_rng(seed)
        resid = yt - self.link_.predict(self.pca_.transform(self.imputer_.transform(Xt)))
        draws, failed = [], 0
        for _ in range(n_boot):
            idx = rng.integers(0, len(yt), len(yt))
            est = ObservationalScalingLaw(**self.get_params())
            link = self.link_
            est._warm_start = np.r_[link.intercept, link.weights, link.floor]
            try:
                est.fit(Xt[idx], yt[idx])
                pred = est.predict(Xq)
            except ObservationalError:
                failed += 1
                continue
            draws.append(pred + rng.choice(resid, size=len(pred)))
        if len(draws) < max(10, n_boot // 2):
            raise ObservationalError(
                f"only {len(draws)} of {n_boot} bootstrap refits succeeded; too few for an interval")
        D = np.clip(np.array(draws), 0.0, 1.0)
        a = (1.0 - level) / 2.0
        return np.quantile(D, a, axis=0), np.quantile(D, 1.0 - a, axis=0), failed

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in (
            "n_components", "impute_rank", "impute_tol", "impute_clip", "standardize",
            "floor_max", "floor_fixed", "loss", "huber_delta", "ridge")}

    def loadings(self) -> pd.DataFrame:
        self._check_fitted()
        return pd.DataFrame(self.pca_.components_, columns=self.feature_names_in_,
                            index=[f"PC-{i + 1}" for i in range(self.n_components)])

    def _check_fitted(self):
        if self.link_ is None:
            raise ObservationalError("ObservationalScalingLaw is not fitted; call fit first")

    def _columns(self, X) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names_in_ if c not in X.columns]
            if missing:
                raise ObservationalError(f"missing predictor column(s) {missing}")
            X = X[self.feature_names_in_]
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names_in_):
            raise ObservationalError(
                f"expected {len(self.feature_names_in_)} predictor columns, got shape {X.shape}")
        return X


def _matrix(X) -> tuple[list[str] | None, np.ndarray]:
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns], X.to_numpy(dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ObservationalError(f"expected a models x benchmarks matrix, got shape {X.shape}")
    return None, X


# ----------------------------------------------------------------------------- compute maps


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


# ----------------------------------------------------------------------------- data + splits


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


# ----------------------------------------------------------------------------- full run


@dataclass
class ObservationalResult:
    model: ObservationalScalingLaw
    predictions: pd.DataFrame
    metrics: dict
    equivalent: EquivalentCompute | None
    target: str
    table: pd.DataFrame = field(repr=False, default=None)

    def table_rows(self, models) -> pd.DataFrame:
        """Predictor columns of the given models, in the fitted column order."""
        t = self.table.set_index(MODEL_COL)
        return t.loc[list(models), self.model.feature_names_in_]

    def write(self, out_dir: str | Path, plots: bool = True) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "metrics.json", out / "predictions.csv"]
        (out / "metrics.json").write_text(json.dumps(json_safe(self.metrics), indent=2) + "\n")
        self.predictions.to_csv(out / "predictions.csv", index=False)
        if plots:
            written += plot_observational(self, out)
        return written


def run_observational(
    table: pd.DataFrame,
    target: str,
    split: np.ndarray,
    predictors: Sequence[str] | None = None,
    n_components: int = 3,
    ref_family: str | None = None,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    method: str = "paper",
    chance: float = 0.0,
    validation: str = "auto",
    **estimator_kwargs,
) -> ObservationalResult:
    """Fit on the ``split == "train"`` models with a known target, predict every other
    model with predictors (test models are scored; models without the target are predicted
    only, split "predict"), and collect metrics, family maps and the equivalent-compute axis.

    ``method="select"`` picks the variant by validation on the training models only
    (``analysis.observational.selection``; ``chance`` is the metric's chance level for the
    fixed-floor candidates, ``validation`` the scheme); ``method="paper"`` is the authors'
    method, optionally modified by ``estimator_kwargs`` (only allowed with "paper")."""
    if method not in ("select", "paper"):
        raise ObservationalError(f"method must be 'select' or 'paper', got {method!r}")
    if method == "select" and estimator_kwargs:
        raise ObservationalError(
            f"estimator options {sorted(estimator_kwargs)} are only allowed with method='paper'")
    if target not in table.columns:
        raise ObservationalError(
            f"target column {target!r} not found; available metric columns: {benchmark_columns(table)}")
    if not pd.api.types.is_numeric_dtype(table[target]):
        raise ObservationalError(f"target column {target!r} is not numeric")
    yall = table[target].to_numpy(dtype=float)
    if np.isnan(yall).all():
        raise ObservationalError(f"target column {target!r} has no values (all missing)")
    ok = yall[~np.isnan(yall)]
    if ok.min() < 0 or ok.max() > 1:
        raise ObservationalError(
            f"target {target!r} ranges over [{ok.min():.4g}, {ok.max():.4g}]; the sigmoid link "
            "predicts fractions in [0, 1] (rescale the column, e.g. divide a 0-100 score by 100)")
    if predictors is None:
        predictors = [c for c in benchmark_columns(table) if c != target and c not in _joined(table)]
    predictors = list(predictors)
    missing = [c for c in predictors if c not in table.columns]
    if missing:
        raise ObservationalError(f"predictor column(s) {missing} not found in the table")
    if target in predictors:
        raise ObservationalError(f"target {target!r} is also a predictor; remove it from --predictors")
    if not predictors:
        raise ObservationalError("no predictor benchmark columns")
    nonnum = [c for c in predictors if not pd.api.types.is_numeric_dtype(table[c])]
    if nonnum:
        raise ObservationalError(f"predictor column(s) {nonnum} are not numeric")
    if n_components > len(predictors):
        raise ObservationalError(
            f"{n_components} PCs requested but only {len(predictors)} predictor benchmark(s)")

    split = np.asarray(split, dtype=object).copy()
    X = table[predictors].to_numpy(dtype=float)
    no_pred = np.isnan(X).all(axis=1)
    split[no_pred & (split != "")] = ""  # nothing to predict from
    has_y = ~np.isnan(yall)
    train = (split == "train") & has_y
    test = (split == "test") & has_y
    pred_only = (split != "") & ~has_y
    if not train.any():
        raise ObservationalError(f"no training models with a value for {target!r}")
    if not test.any():
        raise ObservationalError(
            f"the split leaves no test models with a value for {target!r} "
            f"({int(train.sum())} training models); choose a lower cutoff or another split")

    flops = table[FLOPS_COL].to_numpy(dtype=float)
    if method == "select":
        from analysis.observational.selection import select_method

        selection = select_method(X[train], yall[train], flops[train], n_components=n_components,
                                  chance=chance, validation=validation, seed=seed)
        params = dict(selection.selected.params)
        method_info = {"requested": "select", **selection.to_dict()}
    else:
        params = dict(estimator_kwargs)
        method_info = {"requested": "paper", "selected": "paper" + (" (modified)" if params else ""),
                       "params": params}
    est = ObservationalScalingLaw(n_components=n_components, **params)
    est.fit(pd.DataFrame(X[train], columns=predictors), yall[train])
    use = split != ""
    pred = np.full(len(table), np.nan)
    low = np.full(len(table), np.nan)
    high = np.full(len(table), np.nan)
    caps = np.full((len(table), n_components), np.nan)
    caps[use] = est.transform(X[use])
    pred[use] = est.link_.predict(caps[use])
    t0 = time.perf_counter()
    lo_, hi_, n_failed = est.predict_interval(X[use], level=level, n_boot=n_boot, seed=seed)
    interval_seconds = time.perf_counter() - t0
    low[use], high[use] = lo_, hi_

    with np.errstate(divide="ignore", invalid="ignore"):
        logf = np.where(flops > 0, np.log(flops), np.nan)
    families = table[FAMILY_COL].astype(str).to_numpy(dtype=object)
    models = table[MODEL_COL].astype(str).to_numpy(dtype=object)

    maps, skipped = fit_family_maps(families[train], logf[train], caps[train], models[train])
    aggregate = np.full(len(table), np.nan)
    aggregate[use] = est.link_.linear(caps[use])
    equivalent = _equivalent_axis(ref_family, families[use], logf[use], aggregate[use], models[use])

    labels = np.where(train, "train", np.where(test, "test", np.where(pred_only, "predict", "")))
    keep = labels != ""
    preds = pd.DataFrame({
        "model": models, "family": families, "flops": flops, "split": labels,
        "actual": yall, "predicted": pred, "low": low, "high": high,
    })[keep].reset_index(drop=True)
    if equivalent is not None:
        # In the table's FLOPs unit (1e21), like the flops column.
        preds["equivalent_flops"] = np.exp(equivalent.log_flops(aggregate[keep]))

    def err(m):
        e = pred[m] - yall[m]
        return float(np.mean(e**2)), float(np.mean(np.abs(e)))

    mse_tr, mae_tr = err(train)
    mse_te, mae_te = err(test)
    cover = float(np.mean((yall[test] >= low[test]) & (yall[test] <= high[test])))
    evr = est.pca_.explained_variance_ratio_
    metrics = {
        "target": target, "predictors": predictors, "n_components": n_components,
        "n_train": int(train.sum()), "n_test": int(test.sum()), "n_predict_only": int(pred_only.sum()),
        "mse_train": mse_tr, "mae_train": mae_tr, "mse_test": mse_te, "mae_test": mae_te,
        "explained_variance": [float(v) for v in evr],
        "explained_variance_cumulative": float(evr.sum()),
        "loadings": {f"PC-{i + 1}": dict(zip(predictors, map(float, row)))
                     for i, row in enumerate(est.pca_.components_)},
        "link": {"form": "y = floor + (1 - floor) * sigmoid(intercept + weights . PC)",
                 **est.link_.to_dict()},
        "imputation": {"rank": est.imputer_.rank, "n_iter": est.imputer_.n_iter_,
                       "converged": est.imputer_.converged_,
                       "n_missing_train": int(np.isnan(X[train]).sum()),
                       "n_missing_other": int(np.isnan(X[use & ~train]).sum())},
        "interval": {"method": "bootstrap over training models (whole pipeline refit) + resampled residual",
                     "level": level, "n_boot": n_boot, "n_failed": n_failed, "seed": seed,
                     "coverage_test": cover, "seconds": interval_seconds},
        "family_maps": {f: asdict(m) for f, m in maps.items()},
        "family_maps_skipped": skipped,
        "equivalent_compute": asdict(equivalent) if equivalent is not None else None,
        "fit_seconds": est.fit_seconds_,
        "method": method_info,
        "estimator": est.get_params(),
    }
    return ObservationalResult(est, preds, metrics, equivalent, target, table)


def _joined(table: pd.DataFrame) -> set:
    return set(table.attrs.get("joined_columns", ()))


def _equivalent_axis(ref_family, families, logf, aggregate, models) -> EquivalentCompute | None:
    """An explicit reference family must work; the default falls back to the family with
    the most models of known FLOPs (None if no family has two)."""
    if ref_family is not None:
        return fit_equivalent_compute(ref_family, families, logf, aggregate, models)
    counts = pd.Series(families[np.isfinite(logf)]).value_counts()
    order = ([DEFAULT_REF_FAMILY] if DEFAULT_REF_FAMILY in counts.index else []) + \
        sorted(counts.index, key=lambda f: (-counts[f], f))
    for fam in order:
        try:
            return fit_equivalent_compute(fam, families, logf, aggregate, models)
        except ObservationalError:
            continue
    return None


# ----------------------------------------------------------------------------- plots


def plot_observational(result: ObservationalResult, out_dir: str | Path) -> list[Path]:
    """``equivalent_compute.png``: actual (train o, test x) and the fitted link along the
    reference family's equivalent-FLOPs axis, test intervals as bars;
    ``capability_vs_flops.png``: PC-1 of training models and each family's compute map;
    ``parity.png``: predicted vs actual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    p = result.predictions
    written = []
    styles = {"train": dict(marker="o", color="tab:blue"), "test": dict(marker="X", color="tab:red")}

    eq = result.equivalent
    if eq is not None:
        fig, ax = plt.subplots(figsize=(7, 5))
        x = np.log10(p["equivalent_flops"].to_numpy() * FLOPS_UNIT)
        for s, st in styles.items():
            m = (p["split"] == s).to_numpy()
            ax.scatter(x[m], p["actual"][m], s=36, alpha=0.8, label=f"{s} (actual)", **st)
            if s == "test":
                ax.errorbar(x[m], p["predicted"][m],
                            yerr=[p["predicted"][m] - p["low"][m], p["high"][m] - p["predicted"][m]],
                            fmt="none", ecolor="tab:red", alpha=0.35, label="test interval")
        m = (p["split"] == "predict").to_numpy()
        if m.any():
            ax.scatter(x[m], p["predicted"][m], s=24, marker="^", color="gray", label="predicted (no actual)")
        grid = np.linspace(np.nanmin(x) - 0.2, np.nanmax(x) + 0.2, 200)
        agg = (grid - math.log10(FLOPS_UNIT)) * math.log(10) * eq.slope + eq.intercept
        link = result.model.link_
        ax.plot(grid, link.floor + (1 - link.floor) * _sigmoid(agg), color="black", lw=2, label="sigmoid link")
        ax.set_xlabel(f"{eq.ref_family}-equivalent FLOPs (log10)")
        ax.set_ylabel(result.target)
        m = result.metrics
        ax.set_title(f"{result.target}: test MSE {m['mse_test']:.2e}, MAE {m['mae_test']:.3f}")
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "equivalent_compute.png", dpi=120)
        plt.close(fig)
        written.append(out / "equivalent_compute.png")

    maps = result.metrics.get("family_maps") or {}
    if maps:
        fig, ax = plt.subplots(figsize=(7, 5))
        cmap = plt.get_cmap("tab20")
        for i, (fam, fm) in enumerate(sorted(maps.items())):
            rows = p[(p["family"] == fam) & (p["split"] == "train")]
            caps = result.model.transform(result.table_rows(rows["model"]))
            lf = np.log(rows["flops"].to_numpy())
            grid = np.linspace(lf.min(), lf.max(), 20)
            color = cmap(i % 20)
            ax.scatter(np.log10(rows["flops"] * FLOPS_UNIT), caps[:, 0], color=color, s=20)
            ax.plot(np.log10(np.exp(grid) * FLOPS_UNIT), fm["intercept"][0] + fm["slope"][0] * grid,
                    color=color, lw=1.2, label=f"{fam} (R² {fm['r2'][0]:.2f})" if fm["r2"][0] is not None else fam)
        ax.set_xlabel("training FLOPs (log10)")
        ax.set_ylabel("PC-1 (training models)")
        ax.set_title("Per-family compute maps: PC-1 = α_f + β_f · ln FLOPs")
        ax.legend(fontsize=6, ncol=2, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "capability_vs_flops.png", dpi=120)
        plt.close(fig)
        written.append(out / "capability_vs_flops.png")

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for s, st in styles.items():
        m = (p["split"] == s).to_numpy()
        ax.scatter(p["actual"][m], p["predicted"][m], s=30, alpha=0.8, label=s, **st)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
    ax.set_xlabel(f"actual {result.target}")
    ax.set_ylabel("predicted")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "parity.png", dpi=120)
    plt.close(fig)
    written.append(out / "parity.png")
    return written
