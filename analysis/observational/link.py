"""The sigmoid link of observational scaling laws: ``y = floor + (1 - floor) * sigmoid(w0 + X @ w)``.

A small self-contained interface (arrays in, a ``SigmoidLinkFit`` out). It does not reuse
``analysis.laws.sigmoid_model``: that one is a sigmoid of one scalar input with both asymptotes
free, fitted by ``analysis.fit``; this one is a sigmoid of a linear function of several PCs with
the ceiling fixed at 1, fitted by scipy's least squares as in the paper's code (the benchmark
compares against that code), and its logistic is written with ``tanh``, which differs from
``1 / (1 + exp(-z))`` in the last bits and would move every published figure in the last digits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis.observational.errors import ObservationalError

LOSSES = ("linear", "huber")
_EPS = 1e-3  # bounded starts are moved this fraction of floor_max inside the bounds
_MAX_NFEV = 2000


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
        return self.floor + (1.0 - self.floor) * logistic(self.linear(X))

    def parameters(self) -> np.ndarray:
        """``[intercept, weights..., floor]``: the ``init`` that warm-starts a refit."""
        return np.r_[self.intercept, self.weights, self.floor]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = [float(w) for w in self.weights]
        return d


def logistic(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


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
    _check_arguments(X.shape, floor_max, floor_fixed, loss, ridge)
    problem = _Problem(X, y, floor_max, floor_fixed, loss, delta, ridge)
    if init is not None:
        init = np.asarray(init, dtype=float)
        k = X.shape[1]
        if init.shape != (k + 2,):
            raise ObservationalError(f"init must have {k + 2} parameters, got shape {init.shape}")
        init = init[:problem.n_par]
        if not multistart:
            try:
                return problem.solve([init])
            except ObservationalError:
                pass  # fall back to every start
    return problem.solve(problem.starts(init))


def _check_arguments(shape, floor_max, floor_fixed, loss, ridge) -> None:
    n, k = shape
    n_par = k + 1 + (0 if floor_fixed is not None else 1)
    if n < n_par:
        raise ObservationalError(
            f"the sigmoid link has {n_par} parameters but only {n} training models")
    if loss not in LOSSES:
        raise ObservationalError(f"loss must be 'linear' or 'huber', got {loss!r}")
    if ridge < 0:
        raise ObservationalError(f"ridge must be >= 0, got {ridge}")
    if ridge > 0 and loss != "linear":
        raise ObservationalError("ridge is only defined for the least-squares loss")
    if floor_fixed is not None and not 0 <= floor_fixed < 1:
        raise ObservationalError(f"floor_fixed must be in [0, 1), got {floor_fixed}")
    if floor_fixed is None and not 0 < floor_max < 1:
        raise ObservationalError(f"floor_max must be in (0, 1), got {floor_max}")


class _Problem:
    """Residuals, analytic Jacobian, starts and the multistart solve of one link fit."""

    def __init__(self, X, y, floor_max, floor_fixed, loss, delta, ridge):
        n, k = X.shape
        self.y, self.k, self.loss, self.delta = y, k, loss, delta
        self.floor_max, self.floor_fixed = floor_max, floor_fixed
        self.fixed = floor_fixed is not None
        self.n_par = k + 1 + (0 if self.fixed else 1)
        self.A = np.column_stack([np.ones(n), X])
        self.pen = np.sqrt(n * ridge) * X.std(axis=0) if ridge > 0 else None  # penalty row scales
        self.lo = np.full(self.n_par, -np.inf)
        self.hi = np.full(self.n_par, np.inf)
        if not self.fixed:
            self.lo[-1], self.hi[-1] = 0.0, floor_max

    def floor_of(self, p):
        return self.floor_fixed if self.fixed else p[-1]

    def resid(self, p):
        b = self.floor_of(p)
        k = self.k
        r = b + (1.0 - b) * logistic(self.A @ p[:k + 1]) - self.y
        return r if self.pen is None else np.r_[r, self.pen * p[1:k + 1]]

    def jac(self, p):
        b = self.floor_of(p)
        k, n = self.k, len(self.y)
        s = logistic(self.A @ p[:k + 1])
        J = np.zeros((n + (0 if self.pen is None else k), self.n_par))
        J[:n, :k + 1] = ((1.0 - b) * s * (1.0 - s))[:, None] * self.A
        if not self.fixed:
            J[:n, -1] = 1.0 - s
        if self.pen is not None:
            J[n + np.arange(k), 1 + np.arange(k)] = self.pen
        return J

    def starts(self, init) -> list[np.ndarray]:
        """The paper's start, logit-linear regressions at one or two floors, ``init`` first."""
        k, y = self.k, self.y
        starts = [np.r_[0.0, np.full(k, 1e-2), 0.0][:self.n_par]]
        floors = (self.floor_fixed,) if self.fixed else (0.0, min(0.5 * float(np.min(y)), self.floor_max))
        for b in floors:
            u = np.clip((y - b) / (1.0 - b), 0.01, 0.99)
            coef, *_ = np.linalg.lstsq(self.A, np.log(u / (1.0 - u)), rcond=None)
            starts.append(np.r_[coef, b][:self.n_par])
        if init is not None:
            starts.insert(0, init)
        return starts

    def solve(self, starts) -> SigmoidLinkFit:
        results = [r for r in map(self._run, starts) if np.all(np.isfinite(r.x))]
        ok = [r for r in results if r.status > 0]
        if not ok:
            msgs = "; ".join(sorted({r.message for r in results})) or "non-finite parameters"
            raise ObservationalError(
                f"sigmoid link fit did not converge from any of {len(starts)} start(s): {msgs}")
        best = min(ok, key=lambda r: r.cost)
        k = self.k
        return SigmoidLinkFit(
            weights=best.x[1:k + 1].copy(), intercept=float(best.x[0]),
            floor=float(self.floor_of(best.x)), cost=float(best.cost), converged=True,
            n_starts=len(starts), n_starts_converged=len(ok),
            cost_spread=float(max(r.cost for r in ok) - best.cost), message=str(best.message),
            loss=self.loss)

    def _run(self, p0):
        p0 = p0.copy()
        if not self.fixed:  # strictly inside the floor's bounds
            p0[-1] = min(max(p0[-1], _EPS * self.floor_max), self.floor_max * (1 - _EPS))
        if self.fixed and self.loss == "linear":  # unbounded least squares: MINPACK's LM
            return least_squares(self.resid, p0, jac=self.jac, method="lm", x_scale="jac",
                                 max_nfev=_MAX_NFEV)
        return least_squares(self.resid, p0, jac=self.jac, bounds=(self.lo, self.hi), method="trf",
                             loss=self.loss, f_scale=self.delta, x_scale="jac", max_nfev=_MAX_NFEV)
