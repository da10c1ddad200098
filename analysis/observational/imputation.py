"""Low-rank imputation of missing benchmark scores.

Public benchmark tables have holes (a model was never run on HumanEval, a leaderboard
dropped XWinograd). Observational scaling laws need a complete matrix before PCA, and the
imputation must be fitted on the training models only, or the test models leak into the
capability space. This is the standard "hard impute" / EM-PCA fixed point: standardise
each column, start the holes at the column mean, then alternately fit a rank-k PCA and
overwrite the holes with its reconstruction. Observed entries are never changed.

Training rows iterate until the holes stop moving (tolerance on the largest change, not a
fixed 1000-iteration loop; times in docs/observational.md). New rows are imputed in closed
form: the fixed point of that same loop with the subspace held fixed is the least-squares fit
of the observed entries onto the subspace, so no iteration is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ImputationError(ValueError):
    """The matrix cannot be imputed as asked (too few rows, an empty column, ...)."""


@dataclass
class LowRankImputer:
    """Fill NaNs with a rank-``rank`` PCA reconstruction fitted on the rows given to ``fit``.

    ``clip``: optional (low, high) applied to imputed values only (scores in [0, 1]).
    Fitted attributes: ``mean_``/``scale_`` (standardisation of the observed values),
    ``center_`` and ``components_`` (rank-k subspace in standardised units), ``n_iter_``,
    ``converged_``, ``max_change_`` (last update of the holes, standardised units).
    """

    rank: int = 1
    tol: float = 1e-7
    max_iter: int = 5000
    clip: tuple[float, float] | None = None

    mean_: np.ndarray = field(init=False, repr=False, default=None)
    scale_: np.ndarray = field(init=False, repr=False, default=None)
    center_: np.ndarray = field(init=False, repr=False, default=None)
    components_: np.ndarray = field(init=False, repr=False, default=None)
    n_iter_: int = field(init=False, default=0)
    converged_: bool = field(init=False, default=False)
    max_change_: float = field(init=False, default=float("nan"))

    def fit(self, X: np.ndarray) -> "LowRankImputer":
        self.fit_transform(X)
        return self

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        X = _as_matrix(X)
        n, p = X.shape
        if not 1 <= self.rank <= min(n - 1, p):
            raise ImputationError(
                f"imputation rank {self.rank} needs at least {self.rank + 1} rows and "
                f"{self.rank} columns; got {n} rows x {p} columns")
        miss = np.isnan(X)
        counts = (~miss).sum(axis=0)
        if (counts < 2).any():
            bad = np.flatnonzero(counts < 2).tolist()
            raise ImputationError(
                f"columns {bad} have fewer than 2 observed values in the fitting rows; "
                "cannot standardise or impute them")
        self.mean_ = np.nanmean(X, axis=0)
        self.scale_ = np.nanstd(X, axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        Z[miss] = 0.0  # column mean in standardised units
        self.n_iter_, self.converged_, self.max_change_ = 0, True, 0.0
        if miss.any():
            self.converged_ = False
            for it in range(1, self.max_iter + 1):
                center = Z.mean(axis=0)
                recon = self._reconstruct(Z, center)
                change = np.max(np.abs(recon[miss] - Z[miss]))
                Z[miss] = recon[miss]
                self.n_iter_, self.max_change_ = it, float(change)
                if change < self.tol:
                    self.converged_ = True
                    break
        # Final subspace, the one applied to new rows.
        self.center_ = Z.mean(axis=0)
        _, _, vt = np.linalg.svd(Z - self.center_, full_matrices=False)
        self.components_ = vt[: self.rank]
        return self._finish(Z, miss, X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Impute new rows with the fitted subspace (least squares on their observed entries)."""
        if self.components_ is None:
            raise ImputationError("LowRankImputer is not fitted; call fit first")
        X = _as_matrix(X)
        if X.shape[1] != self.components_.shape[1]:
            raise ImputationError(
                f"expected {self.components_.shape[1]} columns, got {X.shape[1]}")
        miss = np.isnan(X)
        Z = (X - self.mean_) / self.scale_
        V = self.components_  # (k, p)
        for i in np.flatnonzero(miss.any(axis=1)):
            obs = ~miss[i]
            if not obs.any():
                raise ImputationError(f"row {i} has no observed value to impute from")
            Vo = V[:, obs]
            z, *_ = np.linalg.lstsq(Vo.T, Z[i, obs] - self.center_[obs], rcond=None)
            Z[i, ~obs] = self.center_[~obs] + z @ V[:, ~obs]
        return self._finish(Z, miss, X)

    def _reconstruct(self, Z: np.ndarray, center: np.ndarray) -> np.ndarray:
        u, s, vt = np.linalg.svd(Z - center, full_matrices=False)
        k = self.rank
        return center + (u[:, :k] * s[:k]) @ vt[:k]

    def _finish(self, Z: np.ndarray, miss: np.ndarray, X: np.ndarray) -> np.ndarray:
        out = Z * self.scale_ + self.mean_
        out[~miss] = X[~miss]  # observed scores pass through bit-exact
        if self.clip is not None and miss.any():
            out[miss] = np.clip(out[miss], *self.clip)
        return out


def _as_matrix(X) -> np.ndarray:
    X = np.array(X, dtype=float, copy=True)
    if X.ndim != 2:
        raise ImputationError(f"expected a 2-D matrix, got shape {X.shape}")
    return X
