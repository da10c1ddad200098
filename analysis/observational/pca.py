"""Principal components of a complete benchmark matrix: the capability space.

A thin, dependency-free PCA (numpy SVD) with the scikit-learn attribute names, so fitted
loadings and explained variance are visible and the analysis needs no extra package.
Signs are fixed deterministically (each component's largest-magnitude loading is positive;
for a matrix of accuracies that makes PC-1 grow with general capability).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class PCAError(ValueError):
    """PCA asked for more components than the data supports."""


@dataclass
class PCA:
    """Fitted attributes: ``mean_``, ``scale_`` (ones unless ``standardize``),
    ``components_`` (k x p loadings), ``explained_variance_`` (k, sample variance of each
    PC) and ``explained_variance_ratio_`` (k, fraction of the total variance)."""

    n_components: int = 3
    standardize: bool = False

    mean_: np.ndarray = field(init=False, repr=False, default=None)
    scale_: np.ndarray = field(init=False, repr=False, default=None)
    components_: np.ndarray = field(init=False, repr=False, default=None)
    explained_variance_: np.ndarray = field(init=False, repr=False, default=None)
    explained_variance_ratio_: np.ndarray = field(init=False, repr=False, default=None)
    singular_values_: np.ndarray = field(init=False, repr=False, default=None)

    def fit(self, X: np.ndarray) -> "PCA":
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise PCAError(f"expected a 2-D matrix, got shape {X.shape}")
        if np.isnan(X).any():
            raise PCAError("PCA input has missing values; impute them first")
        n, p = X.shape
        k = self.n_components
        if k < 1 or k > p:
            raise PCAError(f"{k} components requested from {p} benchmark columns; need 1..{p}")
        if n < k + 1:
            raise PCAError(f"{k} components need at least {k + 1} models; got {n}")
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0, ddof=1) if self.standardize else np.ones(p)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        # Deterministic signs: largest |loading| of each component positive.
        signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
        signs[signs == 0] = 1.0
        vt = vt * signs[:, None]
        var = s**2 / (n - 1)
        total = var.sum()
        self.components_ = vt[:k]
        self.singular_values_ = s[:k]
        self.explained_variance_ = var[:k]
        self.explained_variance_ratio_ = var[:k] / total if total > 0 else np.zeros(k)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            raise PCAError("PCA is not fitted; call fit first")
        X = np.asarray(X, dtype=float)
        if np.isnan(X).any():
            raise PCAError("PCA input has missing values; impute them first")
        return ((X - self.mean_) / self.scale_) @ self.components_.T

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, T: np.ndarray) -> np.ndarray:
        return np.asarray(T, dtype=float) @ self.components_ * self.scale_ + self.mean_
