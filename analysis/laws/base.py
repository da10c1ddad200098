"""``Law``: the estimator shell every functional form shares (``fit``, ``predict``, named
fitted parameters, batch objective, warm-started bootstrap refits) over :mod:`analysis.fit`."""

from __future__ import annotations

import warnings

import numpy as np

from analysis.fit import FitError, FitResult, huber, minimize_multistart, minimize_newton_stacked


def _gram(Jp: np.ndarray, c: np.ndarray) -> np.ndarray:
    """J' diag(c) J per row, from Jacobian planes Jp (p, S, n) and weights c (S, n): one
    row-wise dot product per pair of parameters, which beats a batched matmul of (p, n) blocks."""
    p = Jp.shape[0]
    H = np.empty((Jp.shape[1], p, p))
    for i in range(p):
        ci = Jp[i] * c
        for j in range(i, p):
            H[:, i, j] = np.einsum("sn,sn->s", ci, Jp[j])
            H[:, j, i] = H[:, i, j]
    return H


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
        """Batch objective for weights w (n,) or (S, n) and targets z (n,) or (S, n) (rows of
        several problems on the same inputs): weighted mean loss per row."""
        w = np.asarray(w, dtype=float)
        w_sum = w.sum(axis=-1)  # per row: what summing w broadcast to each row gives
        if w.ndim == 2 or np.ndim(z) == 2:  # per-row weights: allow restricting to some rows
            def with_rows(rows):
                return self.objective(F, z[rows] if np.ndim(z) == 2 else z,
                                      w[rows] if w.ndim == 2 else w)
        else:
            with_rows = None

        def obj(theta: np.ndarray, hessian: bool | str = False):
            theta = np.atleast_2d(theta)
            pred, J = self._model(theta, F)
            r = pred - z
            if self.delta is None:
                val, der = huber(r / self.resid_scale, None)
                der = der / self.resid_scale
            else:
                val, der = huber(r, self.delta)
            tot = np.broadcast_to(w_sum, r.shape[:1])
            loss = (w * val).sum(axis=-1) / tot
            Jp = np.moveaxis(J, -1, 0)  # (p, S, n): contiguous where the law builds planes
            grad = np.matmul(Jp.transpose(1, 0, 2), (w * der)[:, :, None])[..., 0] / tot[:, None]
            bad = ~np.isfinite(loss)
            if bad.any():
                loss = np.where(bad, np.inf, loss)
                grad = np.where(bad[:, None], 0.0, grad)
            if hessian:  # Gauss-Newton, for the convergence test
                if self.delta is None:
                    curv = np.full_like(r, 1.0 / self.resid_scale ** 2)
                elif hessian == "irls":  # psi(r)/r: the Huber majoriser's curvature
                    curv = 1.0 / (self.delta * np.maximum(np.abs(r), self.delta))
                else:  # exact second derivative
                    curv = (np.abs(r) <= self.delta) / self.delta ** 2
                return loss, grad, _gram(Jp, w * curv) / tot[:, None, None]
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
