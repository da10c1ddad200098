"""Power laws of the loss, fitted in log space with the log-sum-exp parametrisation
log L = LSE(a - alpha log N, b - beta log D, e) and a Huber loss on log residuals (Chinchilla
Approach 3): positive E, A, B by construction, and the fit is scale-free."""

from __future__ import annotations

import itertools

import numpy as np

from analysis.laws.base import Law

# Starts of the power laws: the irreducible term at these fractions of the smallest loss, the
# log-coefficients a, b and the exponents on Chinchilla's grid.
E_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.9)


def _lse(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log-sum-exp over the last axis and its softmax weights."""
    m = T.max(axis=-1, keepdims=True)
    e = np.exp(T - m)
    s = e.sum(axis=-1, keepdims=True)
    return (m + np.log(s))[..., 0], e / s


def power_law_starts(z: np.ndarray, centers, coefs: np.ndarray,
                     exponents: np.ndarray | None = None, fixed_exponents=None) -> np.ndarray:
    """Grid of starts ``(e, a'_1..a'_m, alpha_1..alpha_m)`` of a power law with ``m`` terms
    fitted as ``log L = LSE(a_i - alpha_i x_i, e)`` on log inputs centred at ``centers``.

    The irreducible term ``e`` starts below the smallest log loss ``min(z)``; each term's
    log-coefficient runs over ``coefs`` and its exponent over ``exponents``, or is held at
    ``fixed_exponents`` (then the grid has no exponent columns). The grid is laid out in
    uncentred coefficients (Chinchilla's) and shifted to the centred ones, ``a' = a - alpha c``.
    """
    es = float(np.min(z)) + np.log(np.array(E_FRACTIONS))
    centers = np.asarray(centers, dtype=float).reshape(-1)
    m = len(centers)
    if fixed_exponents is None:
        g = np.array(list(itertools.product(es, *[coefs] * m, *[exponents] * m)))
        alphas = g[:, 1 + m:]
    else:
        g = np.array(list(itertools.product(es, *[coefs] * m)))
        alphas = np.asarray(fixed_exponents, dtype=float)[None, :]
    g[:, 1:1 + m] -= alphas * centers
    return g


class ChinchillaLaw(Law):
    """L(N, D) = E + A/N^alpha + B/D^beta, fitted as log L = LSE(a - alpha log N,
    b - beta log D, e) with Huber(δ=1e-3) on log residuals.

    Internally log N and log D are centred on the fit data's means (a' = a - alpha mean(log N)):
    uncentred, a and alpha are almost collinear (log N ~ 20) and L-BFGS needs several times the
    iterations (docs/analysis.md)."""

    param_names = ("E", "A", "B", "alpha", "beta")
    # optimiser space: theta = (e, a', b', alpha, beta)

    def __init__(self, delta: float = 1e-3):
        super().__init__()
        self.delta = delta
        self.center_ = np.zeros(2)

    def _set_scale(self, n, d):
        F = self._raw(n, d)
        self.center_ = F.mean(axis=1)

    @staticmethod
    def _raw(n, d):
        n = np.asarray(n, dtype=float).reshape(-1)
        d = np.asarray(d, dtype=float).reshape(-1)
        if n.shape != d.shape:
            n, d = np.broadcast_arrays(n, d)
        if np.any(n <= 0) or np.any(d <= 0):
            raise ValueError("ChinchillaLaw: N and D must be positive")
        return np.stack([np.log(n), np.log(d)])

    def _features(self, n, d):
        return self._raw(n, d) - self.center_[:, None]

    def _model(self, theta, F):
        e, a, b, al, be = (theta[:, i:i + 1] for i in range(5))
        lN, lD = F[0][None, :], F[1][None, :]
        T = np.stack(np.broadcast_arrays(a - al * lN, b - be * lD, e + 0 * lN), axis=-1)
        pred, s = _lse(T)
        J = np.stack([s[..., 2], s[..., 0], s[..., 1], -s[..., 0] * lN, -s[..., 1] * lD], -1)
        return pred, J

    def _target(self, y):
        if np.any(y <= 0):
            raise ValueError("ChinchillaLaw: losses must be positive")
        return np.log(y)

    def _untarget(self, z):
        return np.exp(z)

    def _grid(self, F, z, w):
        return power_law_starts(z, self.center_, np.arange(0.0, 30.0, 5.0),
                                np.array([0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 2.0]))

    def _bounds(self, F, z):
        # E between 0.1% of the smallest loss (indistinguishable from 0; keeps the flat
        # E -> 0 direction of tiny fits from running for ever) and the smallest loss x1.5.
        e = (float(np.min(z)) - 7.0, float(np.min(z)) + 0.4)
        return np.array([e, [-100, 100], [-100, 100], [0.0, 5.0], [0.0, 5.0]], float)

    def _named(self, t):
        a = t[1] + t[3] * self.center_[0]
        b = t[2] + t[4] * self.center_[1]
        return {"E": float(np.exp(t[0])), "A": float(np.exp(a)), "B": float(np.exp(b)),
                "alpha": float(t[3]), "beta": float(t[4])}


class TiedChinchillaLaw(ChinchillaLaw):
    """ChinchillaLaw with one exponent for both terms (alpha = beta): 4 parameters.

    With only two model sizes E + A/N^alpha is underdetermined (a one-parameter family of
    exact fits; the free 5-parameter fit then lands anywhere along it); tying the exponents
    lets D identify alpha. Hoffmann et al. found alpha ~ beta (0.34 / 0.28)."""

    param_names = ("E", "A", "B", "alpha", "beta")
    # optimiser space: theta = (e, a', b', alpha)

    def _model(self, theta, F):
        full = np.concatenate([theta, theta[:, 3:4]], axis=1)
        pred, J = super()._model(full, F)
        return pred, np.concatenate([J[..., :3], J[..., 3:4] + J[..., 4:5]], axis=-1)

    def _grid(self, F, z, w):
        g = super()._grid(F, z, w)
        g = g[g[:, 3] == g[:, 4]]
        return g[:, :4]

    def _bounds(self, F, z):
        return super()._bounds(F, z)[:4]

    def _named(self, t):
        return super()._named(np.concatenate([t, t[3:4]]))


class ComputeLaw(Law):
    """L(C) = E + A/C^alpha, C = 6 N D FLOPs (the paper's single-variable alternative).
    log C is centred internally, as in :class:`ChinchillaLaw`."""

    param_names = ("E", "A", "alpha")
    # optimiser space: theta = (e, a', alpha)

    def __init__(self, delta: float = 1e-3):
        super().__init__()
        self.delta = delta
        self.center_ = 0.0

    def _set_scale(self, c):
        self.center_ = float(np.mean(self._raw(c)))

    @staticmethod
    def _raw(c):
        c = np.asarray(c, dtype=float).reshape(-1)
        if np.any(c <= 0):
            raise ValueError("ComputeLaw: compute must be positive")
        return np.log(c)

    def _features(self, c):
        return (self._raw(c) - self.center_)[None, :]

    def _model(self, theta, F):
        e, a, al = (theta[:, i:i + 1] for i in range(3))
        lC = F[0][None, :]
        T = np.stack(np.broadcast_arrays(a - al * lC, e + 0 * lC), axis=-1)
        pred, s = _lse(T)
        J = np.stack([s[..., 1], s[..., 0], -s[..., 0] * lC], -1)
        return pred, J

    _target = ChinchillaLaw._target
    _untarget = ChinchillaLaw._untarget

    def _grid(self, F, z, w):
        return power_law_starts(z, self.center_, np.arange(0.0, 60.0, 2.5),
                                np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2]))

    def _bounds(self, F, z):
        e = (float(np.min(z)) - 7.0, float(np.min(z)) + 0.4)
        return np.array([e, [-100, 100], [0.0, 5.0]], float)

    def _named(self, t):
        return {"E": float(np.exp(t[0])), "A": float(np.exp(t[1] + t[2] * self.center_)),
                "alpha": float(t[2])}
