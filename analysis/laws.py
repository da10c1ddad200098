"""Scaling-law functional forms as estimators: ``fit`` then ``predict``, named fitted params.

  ChinchillaLaw   L(N, D) = E + A/N^alpha + B/D^beta
  ComputeLaw      L(C)    = E + A/C^alpha
  SigmoidLink     Acc(L)  = a / (1 + exp(-k (L - L0))) + b
  LogSigmoidLink  Acc(L)  = a / (1 + exp(-k (ln L - L0))) + b

The power laws are fitted in log space with the log-sum-exp parametrisation
log L = LSE(a - alpha log N, b - beta log D, e) and a Huber loss on log residuals
(Chinchilla Approach 3): positive E, A, B by construction, and the fit is scale-free.
The links are fitted by least squares (as the ladder paper does) with both asymptotes
bounded to [0, 1]; the grid of starts is built by variable projection (for each (k, L0)
the asymptotes are a closed-form linear solve), so the start is always a good one.

Every estimator keeps ``result_`` (a :class:`analysis.fit.FitResult`) and ``converged_``;
``fit(..., strict=True)`` raises :class:`analysis.fit.FitError` instead of flagging.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from analysis.fit import FitError, FitResult, huber, minimize_multistart, minimize_newton_stacked

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


class Law:
    """Base estimator. Subclasses define the model in optimiser space (``_model``), the
    transform of the observed target (``_target``), the grid of starts and the bounds."""

    param_names: tuple[str, ...] = ()
    delta: float | None = None  # Huber δ on residuals; None = least squares
    resid_scale: float = 1.0  # residual unit for least squares (keeps the objective O(1))
    tol: float = 1e-8  # converged when the achievable decrease is below tol x loss

    def __init__(self):
        self.theta_: np.ndarray | None = None
        self.result_: FitResult | None = None

    # -- subclass interface --------------------------------------------------------------
    def _features(self, *X) -> np.ndarray:  # (k, n) array of model inputs
        raise NotImplementedError

    def _model(self, theta: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """theta (S, p), F (k, n) -> prediction in residual space (S, n), jacobian (S, n, p)."""
        raise NotImplementedError

    def _target(self, y: np.ndarray) -> np.ndarray:
        return y

    def _untarget(self, z: np.ndarray) -> np.ndarray:
        return z

    def _grid(self, F: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _bounds(self, F: np.ndarray, z: np.ndarray) -> np.ndarray | None:
        return None

    def _named(self, theta: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    # -- objective -----------------------------------------------------------------------
    def objective(self, F: np.ndarray, z: np.ndarray, w: np.ndarray):
        """Batch objective for weights w (n,) or (S, n): weighted mean loss per row."""
        w = np.asarray(w, dtype=float)
        if w.ndim == 2:  # per-replicate weights: allow restricting to some replicates
            def with_rows(rows):
                return self.objective(F, z, w[rows])
        else:
            with_rows = None

        def obj(theta: np.ndarray, hessian: bool | str = False):
            theta = np.atleast_2d(theta)
            pred, J = self._model(theta, F)
            r = pred - z
            if self.delta is None:
                val, der = huber(r / self.resid_scale, None)
                der = der / self.resid_scale
                curv = np.full_like(r, 1.0 / self.resid_scale ** 2)
            else:
                val, der = huber(r, self.delta)
                if hessian == "irls":  # psi(r)/r: the Huber majoriser's curvature
                    curv = 1.0 / (self.delta * np.maximum(np.abs(r), self.delta))
                else:  # exact second derivative
                    curv = (np.abs(r) <= self.delta) / self.delta ** 2
            W = np.broadcast_to(w, r.shape)
            tot = W.sum(axis=-1)
            loss = (W * val).sum(axis=-1) / tot
            grad = np.matmul((W * der)[:, None, :], J)[:, 0, :] / tot[:, None]
            bad = ~np.isfinite(loss)
            if bad.any():
                loss = np.where(bad, np.inf, loss)
                grad = np.where(bad[:, None], 0.0, grad)
            if hessian:  # Gauss-Newton, for the convergence test
                H = np.matmul(np.swapaxes(J * (W * curv)[..., None], 1, 2), J) / tot[:, None, None]
                return loss, grad, H
            return loss, grad

        if with_rows is not None:
            obj.with_rows = with_rows

        return obj

    # -- estimator API -------------------------------------------------------------------
    def _set_scale(self, *X) -> None:
        """Data-dependent reparametrisation fixed at fit time (e.g. centring log N)."""

    def _prepare(self, X, y, weights):
        self._set_scale(*X)
        F = self._features(*X)
        y = np.asarray(y, dtype=float).reshape(-1)
        if F.shape[1] != y.size:
            raise ValueError(f"{type(self).__name__}: {F.shape[1]} inputs but {y.size} targets")
        if not (np.all(np.isfinite(F)) and np.all(np.isfinite(y))):
            raise ValueError(f"{type(self).__name__}: inputs contain NaN/inf")
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        return F, self._target(y), w

    def fit(self, *X, y, weights=None, strict: bool = False):
        """Fit on inputs ``X`` (one array per input) and targets ``y``. A fit that does not
        converge is flagged in ``converged_``/``result_`` and warned about; with
        ``strict=True`` it raises FitError."""
        F, z, w = self._prepare(X, y, weights)
        p = len(self.param_names)
        if np.count_nonzero(w) < p:
            raise ValueError(f"{type(self).__name__}: {np.count_nonzero(w)} points cannot "
                             f"determine {p} parameters")
        self._fit_data = (F, z, w)
        res = minimize_multistart(self.objective(F, z, w), self._grid(F, z, w),
                                  bounds=self._bounds(F, z), tol=self.tol)
        self.theta_ = res.theta
        self.result_ = res
        if not res.success:
            msg = f"{type(self).__name__} fit did not converge: {res.summary()}"
            if strict:
                raise FitError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return self

    @property
    def converged_(self) -> bool:
        return bool(self.result_ is not None and self.result_.success)

    @property
    def params_(self) -> dict[str, float]:
        self._check_fitted()
        return self._named(self.theta_)

    def __getattr__(self, name):  # fitted params as attributes: law.E, law.alpha, ...
        if name in type(self).param_names or name in getattr(type(self), "extra_names", ()):
            if self.__dict__.get("theta_") is None:
                raise AttributeError(f"{type(self).__name__} is not fitted")
            return self._named(self.theta_)[name]
        raise AttributeError(name)

    def _check_fitted(self):
        if self.theta_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def predict(self, *X) -> np.ndarray:
        self._check_fitted()
        return self.predict_theta(self.theta_[None, :], *X)[0]

    def predict_theta(self, theta: np.ndarray, *X) -> np.ndarray:
        """Predictions for several parameter vectors (S, p) -> (S, n)."""
        F = self._features(*X)
        pred, _ = self._model(np.atleast_2d(theta), F)
        return self._untarget(pred)

    def bootstrap(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refit under B resampling weight vectors (B, n), warm-started at the point estimate,
        all replicates at once with vectorised damped Newton steps (few iterations: the start
        is close). Returns (theta (B, p), converged (B,)); callers drop unconverged rows."""
        self._check_fitted()
        F, z, _ = self._fit_data
        W = np.asarray(weights, dtype=float)
        theta0 = np.tile(self.theta_, (len(W), 1))
        bounds = self._bounds(F, z)
        theta, ok = minimize_newton_stacked(self.objective(F, z, W), theta0, bounds=bounds,
                                            tol=self.tol)
        return theta, ok

    def __repr__(self):
        if self.theta_ is None:
            return f"{type(self).__name__}()"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({ps}{'' if self.converged_ else ', NOT CONVERGED'})"


# ------------------------------------------------------------------------------ power laws


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


# ------------------------------------------------------------------------------ links


def sigmoid_model(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lo + (hi - lo) / (1 + exp(s (x - x0))) and its Jacobian in (lo, hi, s, x0), for parameter
    rows ``theta`` (rows, 4) and inputs ``x`` (1 or rows, points). The last Jacobian column is
    minus d pred / d x, which the single-step law chains through its loss law."""
    lo, hi, s, x0 = (theta[:, i:i + 1] for i in range(4))
    t = np.clip(s * (x - x0), -500, 500)
    sig = 1.0 / (1.0 + np.exp(t))  # high accuracy at low loss
    pred = lo + (hi - lo) * sig
    dsig = -sig * (1 - sig)  # d sig / d t
    J = np.stack(np.broadcast_arrays(1 - sig, sig, (hi - lo) * dsig * (x - x0),
                                     -(hi - lo) * dsig * s), axis=-1)
    return pred, J


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
        super().__init__()
        self.floor = floor
        self.ceiling = ceiling
        self.pin_ceiling = pin_ceiling  # hi = ceiling exactly (perfect accuracy as loss -> 0)

    def _features(self, loss):
        x = np.asarray(loss, dtype=float).reshape(-1)
        if self.log_input:
            if np.any(x <= 0):
                raise ValueError("LogSigmoidLink: losses must be positive")
            x = np.log(x)
        return x[None, :]

    def _model(self, theta, F):
        return sigmoid_model(theta, F[0][None, :])

    def _scale(self, F):
        x = F[0]
        return float(np.min(x)), float(np.max(x) - np.min(x)) or 1.0

    def _grid(self, F, z, w):
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

    def _bounds(self, F, z):
        xmin, rng = self._scale(F)
        lo_b = (self.floor, self.floor) if self.floor is not None else (0.0, 1.0)
        hi_b = (self.ceiling, self.ceiling) if self.pin_ceiling else (0.0, self.ceiling)
        return np.array([lo_b, hi_b, [1e-3 / rng, 1e3 / rng],
                         [xmin - 20 * rng, xmin + 21 * rng]], float)

    def _named(self, t):
        lo, hi, s, x0 = (float(v) for v in t)
        return {"a": hi - lo, "k": -s, "L0": x0, "b": lo, "lo": lo, "hi": hi}


class LogSigmoidLink(SigmoidLink):
    """Acc(L) = a / (1 + exp(-k (ln L - L0))) + b: the sigmoid in log-loss, i.e. a power-law
    approach to the asymptotes (L0 is a log-loss)."""

    log_input = True


LAWS = {"chinchilla": ChinchillaLaw, "chinchilla_tied": TiedChinchillaLaw, "compute": ComputeLaw, "sigmoid": SigmoidLink,
        "log_sigmoid": LogSigmoidLink}
