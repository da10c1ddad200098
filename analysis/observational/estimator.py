"""``ObservationalScalingLaw``: benchmark scores -> capabilities (PCs) -> downstream metric.

scikit-learn's estimator contract: ``__init__`` only stores the settings, ``fit`` sets the
fitted attributes (trailing underscore), ``get_params`` returns the settings. The two stages of
``fit`` are public because method selection fits the features once per fold and every link
variant on them: ``fit_capabilities`` (imputation + PCA) and ``fit_link``.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import pandas as pd

from analysis.observational.errors import ObservationalError
from analysis.observational.imputation import ImputationError, LowRankImputer
from analysis.observational.link import SigmoidLinkFit, fit_sigmoid_link
from analysis.observational.pca import PCA, PCAError


class ObservationalScalingLaw:
    """Benchmark scores (models x benchmarks, NaN = missing) -> downstream metric in [0, 1].

    ``fit(X, y)`` then ``predict(X)`` / ``predict_interval(X)``. Defaults follow the paper's
    code: rank-1 imputation in standardised units clipped to [0, 1], PCA on the raw
    (unstandardised) imputed scores, sigmoid floor in [0, 0.2], least squares. Variants
    (``select_method``'s grid): ``impute_rank``, ``floor_fixed`` (floor held at the chance
    level), ``loss="huber"``, ``ridge`` on the link weights.
    Fitted: ``imputer_``, ``pca_`` (``components_`` = loadings, ``explained_variance_ratio_``),
    ``link_`` (``SigmoidLinkFit``), ``feature_names_in_``, ``X_train_``, ``y_train_`` (kept for
    the bootstrap of ``predict_interval``), ``fit_seconds_``.
    """

    def __init__(self, n_components: int = 3, impute_rank: int = 1, impute_tol: float = 1e-7,
                 impute_clip: tuple[float, float] | None = (0.0, 1.0), standardize: bool = False,
                 floor_max: float = 0.2, floor_fixed: float | None = None, loss: str = "linear",
                 huber_delta: float = 1.0, ridge: float = 0.0):
        self.n_components = n_components
        self.impute_rank = impute_rank
        self.impute_tol = impute_tol
        self.impute_clip = impute_clip
        self.standardize = standardize
        self.floor_max = floor_max
        self.floor_fixed = floor_fixed
        self.loss = loss
        self.huber_delta = huber_delta
        self.ridge = ridge

    @classmethod
    def param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.param_names()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # -- fitting
    def fit(self, X, y, *, link_init: np.ndarray | None = None) -> "ObservationalScalingLaw":
        """``link_init``: link parameters to start from alone (``SigmoidLinkFit.parameters()``
        of a previous fit; the bootstrap's refits), falling back to every start."""
        t0 = time.perf_counter()
        names, X = _matrix(X)
        y = np.asarray(y, dtype=float)
        n = X.shape[0]
        if y.shape != (n,):
            raise ObservationalError(f"y has shape {y.shape}, expected ({n},)")
        if np.isnan(y).any():
            raise ObservationalError("y has missing values; drop those models from training")
        T = self.fit_capabilities(X, names)
        self.link_ = self.fit_link(T, y, init=link_init)
        self.X_train_, self.y_train_ = X, y
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def fit_capabilities(self, X, names: list[str] | None = None) -> np.ndarray:
        """Fit imputation + PCA on the training rows ``X``; returns their capabilities (PC
        scores of the imputed rows, as the link is fitted on them)."""
        X = np.asarray(X, dtype=float)
        self._check_shape(X)
        names = names or [f"x{i}" for i in range(X.shape[1])]
        sparse = [c for c, k in zip(names, (~np.isnan(X)).sum(axis=0)) if k < 2]
        if sparse:
            raise ObservationalError(
                f"predictor(s) {sparse} have fewer than 2 values among the {X.shape[0]} training "
                "models; drop them (--predictors) or change the split")
        clip = self.impute_clip
        if clip is not None and not (np.nanmin(X) >= clip[0] and np.nanmax(X) <= clip[1]):
            clip = None  # predictors are not fractions: do not clip their imputations
        try:
            self.imputer_ = LowRankImputer(rank=min(self.impute_rank, X.shape[1], X.shape[0] - 1),
                                           tol=self.impute_tol, clip=clip)
            filled = self.imputer_.fit_transform(X)
            self.pca_ = PCA(self.n_components, standardize=self.standardize).fit(filled)
        except (ImputationError, PCAError) as e:
            raise ObservationalError(str(e)) from None
        if not self.imputer_.converged_:
            raise ObservationalError(
                f"imputation did not converge in {self.imputer_.n_iter_} iterations "
                f"(last change {self.imputer_.max_change_:.2e} > tol {self.impute_tol:.0e})")
        self.feature_names_in_ = names
        return self.pca_.transform(filled)

    def fit_link(self, T: np.ndarray, y: np.ndarray, init: np.ndarray | None = None) -> SigmoidLinkFit:
        """The link with this estimator's settings fitted on capabilities ``T``; returned, not
        stored (``fit`` stores it as ``link_``)."""
        return fit_sigmoid_link(T, y, floor_max=self.floor_max, floor_fixed=self.floor_fixed,
                                loss=self.loss, delta=self.huber_delta, ridge=self.ridge,
                                init=init, multistart=init is None)

    def _check_shape(self, X: np.ndarray) -> None:
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

    # -- inference
    def impute(self, X) -> np.ndarray:
        self._check_fitted("pca_")
        return self.imputer_.transform(self._columns(X))

    def transform(self, X) -> np.ndarray:
        """Capabilities (PC scores) of models, imputing their missing benchmarks first."""
        return self.pca_.transform(self.impute(X))

    def predict(self, X) -> np.ndarray:
        self._check_fitted("link_")
        return self.link_.predict(self.transform(X))

    def predict_interval(self, X, level: float = 0.9, n_boot: int = 200, seed: int = 0):
        """Bootstrap prediction interval: refit the whole pipeline on models resampled with
        replacement, add a training residual to each bootstrap prediction, take quantiles.
        Returns ``(low, high, n_failed)``; failed resamples (degenerate fits) are skipped."""
        self._check_fitted("link_")
        if not 0 < level < 1:
            raise ObservationalError(f"interval level must be in (0, 1), got {level}")
        Xq = self._columns(X)
        Xt, yt = self.X_train_, self.y_train_
        rng = np.random.default_rng(seed)
        resid = yt - self.link_.predict(self.pca_.transform(self.imputer_.transform(Xt)))
        draws, failed = [], 0
        for _ in range(n_boot):
            idx = rng.integers(0, len(yt), len(yt))
            est = type(self)(**self.get_params())
            try:
                est.fit(Xt[idx], yt[idx], link_init=self.link_.parameters())
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

    def loadings(self) -> pd.DataFrame:
        self._check_fitted("pca_")
        return pd.DataFrame(self.pca_.components_, columns=self.feature_names_in_,
                            index=[f"PC-{i + 1}" for i in range(self.n_components)])

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise ObservationalError(f"{type(self).__name__} is not fitted; call fit first")

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
