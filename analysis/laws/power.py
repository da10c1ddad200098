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


def _lse_planes(e: np.ndarray, *terms: np.ndarray, extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """log(exp(e) + sum exp(terms)) for a per-row ``e`` (S, 1) and terms (S, n), and the
    Jacobian planes (1 + len(terms) + ``extra``, S, n): the softmax weight of ``e``, then of
    each term, then ``extra`` planes left for the caller to fill.

    Shifted by each row's largest value (overflow-free), and ``e`` is exponentiated once per
    row, not per point: these run thousands of times per prediction and the exponentials are
    most of their cost."""
    m = e
    for t in terms:
        m = np.maximum(m, t.max(axis=1, keepdims=True))
    planes = np.empty((1 + len(terms) + extra,) + terms[0].shape)
    ee = np.exp(e - m)  # (S, 1)
    s = ee
    for k, t in enumerate(terms, start=1):
        np.exp(t - m, out=planes[k])
        s = s + planes[k]
    r = 1.0 / s
    pred = np.log(s)
    pred += m
    np.multiply(ee, r, out=planes[0])
    planes[1:1 + len(terms)] *= r
    return pred, planes


def _two_term_model(e, a, b, al, be, F, tied: bool):
    """log L = LSE(a - al lN, b - be lD, e) and its Jacobian in (e, a, b, al, be), or in
    (e, a, b, al) with ``tied`` (al = be). The Jacobian is an (S, n, p) view of contiguous
    (p, S, n) planes, which is how the objective reads it."""
    lN, lD = F[0][None, :], F[1][None, :]
    pred, J = _lse_planes(e, a - al * lN, b - be * lD, extra=1 if tied else 2)
    s0, s1 = J[1], J[2]
    np.multiply(s0, lN, out=J[3])
    if tied:
        J[3] += s1 * lD
    else:
        np.multiply(s1, lD, out=J[4])
        np.negative(J[4], out=J[4])
    np.negative(J[3], out=J[3])
    return pred, np.moveaxis(J, 0, -1)


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
        self.delta = delta

    def set_scale(self, n, d):
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

    def features(self, n, d):
        return self._raw(n, d) - self.center_[:, None]

    def model(self, theta, F):
        return _two_term_model(theta[:, 0:1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:4],
                               theta[:, 4:5], F, tied=False)

    def to_target_space(self, y):
        if np.any(y <= 0):
            raise ValueError("ChinchillaLaw: losses must be positive")
        return np.log(y)

    def from_target_space(self, z):
        return np.exp(z)

    def starts(self, F, z, w):
        return power_law_starts(z, self.center_, np.arange(0.0, 30.0, 5.0),
                                np.array([0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 2.0]))

    def bounds(self, F, z):
        # E between 0.1% of the smallest loss (indistinguishable from 0; keeps the flat
        # E -> 0 direction of tiny fits from running for ever) and the smallest loss x1.5.
        e = (float(np.min(z)) - 7.0, float(np.min(z)) + 0.4)
        return np.array([e, [-100, 100], [-100, 100], [0.0, 5.0], [0.0, 5.0]], float)

    def named(self, t):
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

    def model(self, theta, F):
        al = theta[:, 3:4]
        return _two_term_model(theta[:, 0:1], theta[:, 1:2], theta[:, 2:3], al, al, F, tied=True)

    def starts(self, F, z, w):
        g = super().starts(F, z, w)
        g = g[g[:, 3] == g[:, 4]]
        return g[:, :4]

    def bounds(self, F, z):
        return super().bounds(F, z)[:4]

    def named(self, t):
        return super().named(np.concatenate([t, t[3:4]]))


class ComputeLaw(Law):
    """L(C) = E + A/C^alpha, C = 6 N D FLOPs (the paper's single-variable alternative).
    log C is centred internally, as in :class:`ChinchillaLaw`."""

    param_names = ("E", "A", "alpha")
    # optimiser space: theta = (e, a', alpha)

    def __init__(self, delta: float = 1e-3):
        self.delta = delta

    @staticmethod
    def inputs(n, d) -> tuple:
        return (6.0 * np.atleast_1d(np.asarray(n, float)) * np.atleast_1d(np.asarray(d, float)),)

    def set_scale(self, c):
        self.center_ = float(np.mean(self._raw(c)))

    @staticmethod
    def _raw(c):
        c = np.asarray(c, dtype=float).reshape(-1)
        if np.any(c <= 0):
            raise ValueError("ComputeLaw: compute must be positive")
        return np.log(c)

    def features(self, c):
        return (self._raw(c) - self.center_)[None, :]

    def model(self, theta, F):
        e, a, al = (theta[:, i:i + 1] for i in range(3))
        lC = F[0][None, :]
        pred, J = _lse_planes(e, a - al * lC, extra=1)  # (e, a, alpha) planes
        np.multiply(J[1], lC, out=J[2])
        np.negative(J[2], out=J[2])
        return pred, np.moveaxis(J, 0, -1)

    to_target_space = ChinchillaLaw.to_target_space
    from_target_space = ChinchillaLaw.from_target_space

    def starts(self, F, z, w):
        return power_law_starts(z, self.center_, np.arange(0.0, 60.0, 2.5),
                                np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2]))

    def bounds(self, F, z):
        e = (float(np.min(z)) - 7.0, float(np.min(z)) + 0.4)
        return np.array([e, [-100, 100], [0.0, 5.0]], float)

    def named(self, t):
        return {"E": float(np.exp(t[0])), "A": float(np.exp(t[1] + t[2] * self.center_)),
                "alpha": float(t[2])}


def chinchilla_step1(config, n_sizes: int) -> ChinchillaLaw:
    """The Chinchilla law as step 1: exponents tied (``step1_exponents``: tied, or auto with
    fewer than 3 sizes, where E + A/N^alpha is underdetermined) or free."""
    tied = config.step1_exponents == "tied" or (config.step1_exponents == "auto" and n_sizes < 3)
    return TiedChinchillaLaw() if tied else ChinchillaLaw()
