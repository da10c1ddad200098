"""The direct method (Krajewski et al. 2025, arXiv 2512.08894): accuracy straight from (N, D),

    -log Acc = A / N^alpha + B / D^beta          (their eq. 4, across tokens-per-parameter ratios)

fitted as log(-log Acc) = LSE(a - alpha log N, b - beta log D) with a Huber loss (delta 1e-3) on
those log residuals, one point per run (its final accuracy), as their released code does. There is
no intermediate feature, so no step-1 error compounds into step 2; but neither does anything
separate a task's trend from its evaluation noise. Their eq. 2 (a power law in compute at one fixed
ratio) cannot reach a target at a ratio the ladder lacks, so it is not offered.

The exponents are tied (alpha = beta) by default, as in step 1: the backtests in docs/analysis.md
compare both (with two model sizes the free form has a one-parameter family of exact fits).
"""

from __future__ import annotations

import numpy as np

from analysis.laws import ChinchillaLaw

_NO_E = -80.0  # log of the irreducible term, pinned: exp(-80) is zero next to any -log accuracy


class DirectLaw(ChinchillaLaw):
    """-log Acc = A/N^alpha + B/D^beta with alpha = beta. ``fit(n, d, y=accuracy)``;
    ``predict`` returns accuracy. Bootstrap, convergence checks: as every :class:`Law`."""

    param_names = ("A", "B", "alpha", "beta")
    tied = True

    def _full(self, theta: np.ndarray) -> np.ndarray:
        e = np.full((theta.shape[0], 1), _NO_E)
        beta = theta[:, 2:3] if self.tied else theta[:, 3:4]
        return np.concatenate([e, theta[:, :3], beta], axis=1)

    def model(self, theta, F):
        pred, J = super().model(self._full(theta), F)
        J = J[..., 1:]  # no e parameter
        if self.tied:
            J = np.concatenate([J[..., :2], J[..., 2:3] + J[..., 3:4]], axis=-1)
        return pred, J

    def to_target_space(self, y):
        y = np.asarray(y, float)
        if np.any((y <= 0) | (y >= 1)):
            raise ValueError(f"{type(self).__name__}: accuracies must lie strictly between 0 and 1")
        return np.log(-np.log(y))

    def from_target_space(self, z):
        return np.exp(-np.exp(z))

    def starts(self, F, z, w):
        g = super().starts(F, z, w)
        g = g[g[:, 0] == g[0, 0]][:, 1:]  # the grid without its (unused) e axis
        return g[g[:, 2] == g[:, 3]][:, :3] if self.tied else g

    def bounds(self, F, z):
        b = super().bounds(F, z)[1:]
        return b[:3] if self.tied else b

    def named(self, t):
        out = super().named(self._full(np.atleast_2d(t))[0])
        out.pop("E")
        return out


class FreeDirectLaw(DirectLaw):
    """The paper's own form: alpha and beta fitted separately."""

    tied = False


def final_points(series, last: int):
    """(N, D, accuracy) per run: its final D and the mean of its last ``last`` accuracies."""
    n = np.array([s.n for s in series])
    d = np.array([s.d for s in series])
    acc = np.array([float(np.mean(s.acc[s.tail(last)])) for s in series])
    return n, d, np.clip(acc, 1e-6, 1 - 1e-6)
