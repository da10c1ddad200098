"""Sigmoid links from a loss to an accuracy, fitted by least squares (as the ladder paper does)
with both asymptotes bounded to [0, 1]. The grid of starts is built by variable projection (for
each (k, L0) the asymptotes are a closed-form linear solve), so the start is always a good one."""

from __future__ import annotations

import numpy as np

from analysis.laws.base import Law


def sigmoid_model(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lo + (hi - lo) / (1 + exp(s (x - x0))) and its Jacobian in (lo, hi, s, x0), for parameter
    rows ``theta`` (rows, 4) and inputs ``x`` (1 or rows, points). The last Jacobian column is
    minus d pred / d x, which the single-step law chains through its loss law."""
    lo, hi, s, x0 = (theta[:, i:i + 1] for i in range(4))
    dx = x - x0
    J = np.empty((4,) + np.broadcast_shapes(dx.shape, s.shape))  # planes: see the objective
    sig = J[1]
    np.multiply(s, dx, out=sig)
    np.clip(sig, -500, 500, out=sig)
    np.exp(sig, out=sig)
    sig += 1.0
    np.reciprocal(sig, out=sig)  # high accuracy at low loss
    np.subtract(1.0, sig, out=J[0])
    span = hi - lo
    pred = lo + span * sig
    dsig = sig * J[0]  # minus d sig / d t
    dsig *= span
    np.multiply(dsig, dx, out=J[2])
    np.negative(J[2], out=J[2])
    np.multiply(dsig, s, out=J[3])
    return pred, np.moveaxis(J, 0, -1)


class SigmoidLink(Law):
    """Acc(L) = a / (1 + exp(-k (L - L0))) + b, the ladder paper's step 2.

    Fitted in the equivalent form Acc = lo + (hi - lo) / (1 + exp(s (L - L0))) with
    s = -k > 0, lo = b (accuracy as loss -> inf), hi = a + b (as loss -> 0); both asymptotes
    are bounded to [0, 1]. ``floor`` pins ``lo`` (e.g. to chance accuracy)."""

    param_names = ("a", "k", "L0", "b")
    extra_names = ("lo", "hi")
    resid_scale = 0.01  # one accuracy point
    log_input = False

    def __init__(self, floor: float | None = None, ceiling: float = 1.0, pin_ceiling: bool = False):
        self.floor = floor
        self.ceiling = ceiling
        self.pin_ceiling = pin_ceiling  # hi = ceiling exactly (perfect accuracy as loss -> 0)

    def check_params(self) -> None:
        super().check_params()
        name = type(self).__name__
        if self.floor is not None and not 0 <= self.floor < 1:
            raise ValueError(f"{name}: floor must be in [0, 1) or None, got {self.floor!r}")
        if not 0 < self.ceiling <= 1 or (self.floor is not None and self.ceiling <= self.floor):
            raise ValueError(f"{name}: ceiling must be in (floor, 1], got {self.ceiling!r}")
        if not isinstance(self.pin_ceiling, bool):
            raise ValueError(f"{name}: pin_ceiling must be True or False, got {self.pin_ceiling!r}")

    def features(self, loss):
        x = np.asarray(loss, dtype=float).reshape(-1)
        if self.log_input:
            if np.any(x <= 0):
                raise ValueError("LogSigmoidLink: losses must be positive")
            x = np.log(x)
        return x[None, :]

    def model(self, theta, F):
        return sigmoid_model(theta, F[0][None, :])

    def _scale(self, F):
        x = F[0]
        return float(np.min(x)), float(np.max(x) - np.min(x)) or 1.0

    def starts(self, F, z, w):
        xmin, rng = self._scale(F)
        ss = np.array([0.5, 1, 2, 4, 8, 16, 32]) / rng
        x0s = xmin + rng * np.linspace(-2.0, 2.0, 17)
        S, X0 = (g.ravel() for g in np.meshgrid(ss, x0s, indexing="ij"))
        sig = 1.0 / (1.0 + np.exp(np.clip(S[:, None] * (F[0][None, :] - X0[:, None]), -500, 500)))
        # closed-form weighted least squares for (lo, hi) given (s, x0): z = lo (1-sig) + hi sig
        u, v = 1 - sig, sig
        suu, svv, suv = (w * u * u).sum(1), (w * v * v).sum(1), (w * u * v).sum(1)
        suz, svz = (w * u * z).sum(1), (w * v * z).sum(1)
        det = suu * svv - suv ** 2
        det = np.where(np.abs(det) < 1e-12, np.nan, det)
        lo = (svv * suz - suv * svz) / det
        hi = (suu * svz - suv * suz) / det
        lo = np.nan_to_num(lo, nan=float(np.min(z)))
        hi = np.nan_to_num(hi, nan=float(np.max(z)))
        if self.floor is not None:
            lo = np.full_like(lo, self.floor)
        if self.pin_ceiling:  # one-parameter solve for lo given hi = ceiling
            hi = np.full_like(hi, self.ceiling)
            if self.floor is None:
                lo = (w * u * (z - self.ceiling * v)).sum(1) / np.maximum(suu, 1e-300)
        return np.stack([lo, hi, S, X0], axis=1)

    def bounds(self, F, z):
        xmin, rng = self._scale(F)
        lo_b = (self.floor, self.floor) if self.floor is not None else (0.0, 1.0)
        hi_b = (self.ceiling, self.ceiling) if self.pin_ceiling else (0.0, self.ceiling)
        return np.array([lo_b, hi_b, [1e-3 / rng, 1e3 / rng],
                         [xmin - 20 * rng, xmin + 21 * rng]], float)

    def named(self, t):
        lo, hi, s, x0 = (float(v) for v in t)
        return {"a": hi - lo, "k": -s, "L0": x0, "b": lo, "lo": lo, "hi": hi}


class LogSigmoidLink(SigmoidLink):
    """Acc(L) = a / (1 + exp(-k (ln L - L0))) + b: the sigmoid in log-loss, i.e. a power-law
    approach to the asymptotes (L0 is a log-loss)."""

    log_input = True
