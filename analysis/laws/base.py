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
    """Base estimator: a functional form fitted by the robust fitter, scikit-learn style.

    ``__init__`` only stores hyperparameters (keyword arguments, checked by :meth:`check_params`
    when ``fit`` runs); ``fit(*X, y=...)`` sets the fitted attributes (``theta_``, ``result_``,
    and whatever :meth:`set_scale` fixes, all with a trailing underscore); ``predict(*X)`` uses
    only those.

    A new law is a subclass that defines, in the optimiser's parametrisation ``theta`` (one row
    per parameter vector, so bootstrap replicates are fitted as a batch):

    * :meth:`features` -- its inputs as a (k, n) array (e.g. log N and log D, centred);
    * :meth:`model` -- prediction in target space (S, n) and its Jacobian (S, n, p);
    * :meth:`starts` -- the grid of starting points (m, p); :meth:`bounds` -- (p, 2) or None;
    * :meth:`named` -- theta as the law's named parameters (``param_names``);
    * optionally :meth:`to_target_space` / :meth:`from_target_space` (e.g. log of a loss) and
      :meth:`inputs` (which of N, D a two-step fit gives it).

    Other modules (bootstrap, the single-step law, uncertainty) call these public methods."""

    param_names: tuple[str, ...] = ()
    delta: float | None = None  # Huber δ on residuals; None = least squares
    resid_scale: float = 1.0  # residual unit for least squares (keeps the objective O(1))
    tol: float = 1e-8  # converged when the achievable decrease is below tol x loss

    def get_params(self) -> dict:
        """The hyperparameters, as ``__init__`` took them."""
        import inspect

        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters
                if k != "self" and hasattr(self, k)}

    def check_params(self) -> None:
        """Raise ValueError naming a hyperparameter outside its range (called by ``fit``)."""
        if self.delta is not None and not (isinstance(self.delta, (int, float)) and self.delta > 0):
            raise ValueError(f"{type(self).__name__}: delta must be a positive number or None, "
                             f"got {self.delta!r}")

    @staticmethod
    def inputs(n, d) -> tuple:
        """The inputs of this law for runs of N parameters and D tokens, as ``fit``/``predict``
        take them: (N, D) by default; a law of compute takes (6ND,)."""
        return np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))

    # -- the law: subclasses define these ------------------------------------------------
    def features(self, *X) -> np.ndarray:
        """The inputs ``X`` as a (k, n) array in the law's own coordinates."""
        raise NotImplementedError

    def model(self, theta: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """theta (S, p), F (k, n) -> prediction in target space (S, n), Jacobian (S, n, p)."""
        raise NotImplementedError

    def to_target_space(self, y: np.ndarray) -> np.ndarray:
        """Observed targets -> the space residuals are taken in (identity by default)."""
        return y

    def from_target_space(self, z: np.ndarray) -> np.ndarray:
        return z

    def starts(self, F: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Starting points (m, p) for the multistart fit."""
        raise NotImplementedError

    def bounds(self, F: np.ndarray, z: np.ndarray) -> np.ndarray | None:
        """Box bounds (p, 2) on theta, or None."""
        return None

    def named(self, theta: np.ndarray) -> dict[str, float]:
        """One parameter vector as the law's named parameters."""
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
            pred, J = self.model(theta, F)
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
    def set_scale(self, *X) -> None:
        """Fix a data-dependent reparametrisation at fit time (e.g. centring log N): a fitted
        attribute, set only here."""

    def _prepare(self, X, y, weights):
        self.set_scale(*X)
        F = self.features(*X)
        y = np.asarray(y, dtype=float).reshape(-1)
        if F.shape[1] != y.size:
            raise ValueError(f"{type(self).__name__}: {F.shape[1]} inputs but {y.size} targets")
        if not (np.all(np.isfinite(F)) and np.all(np.isfinite(y))):
            raise ValueError(f"{type(self).__name__}: inputs contain NaN/inf")
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        return F, self.to_target_space(y), w

    def fit(self, *X, y, weights=None, strict: bool = False):
        """Fit on inputs ``X`` (one array per input) and targets ``y``. A fit that does not
        converge is flagged in ``converged_``/``result_`` and warned about; with
        ``strict=True`` it raises FitError."""
        self.check_params()
        F, z, w = self._prepare(X, y, weights)
        p = len(self.param_names)
        if np.count_nonzero(w) < p:
            raise ValueError(f"{type(self).__name__}: {np.count_nonzero(w)} points cannot "
                             f"determine {p} parameters")
        self._fit_data = (F, z, w)
        res = minimize_multistart(self.objective(F, z, w), self.starts(F, z, w),
                                  bounds=self.bounds(F, z), tol=self.tol)
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
        result = self.__dict__.get("result_")
        return bool(result is not None and result.success)

    @property
    def params_(self) -> dict[str, float]:
        self._check_fitted()
        return self.named(self.theta_)

    def __getattr__(self, name):  # fitted params as attributes: law.E, law.alpha, ...
        if name in type(self).param_names or name in getattr(type(self), "extra_names", ()):
            if self.__dict__.get("theta_") is None:
                raise AttributeError(f"{type(self).__name__} is not fitted")
            return self.named(self.theta_)[name]
        raise AttributeError(name)

    def _check_fitted(self):
        if self.__dict__.get("theta_") is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def predict(self, *X) -> np.ndarray:
        self._check_fitted()
        return self.predict_theta(self.theta_[None, :], *X)[0]

    def predict_theta(self, theta: np.ndarray, *X) -> np.ndarray:
        """Predictions for several parameter vectors (S, p) -> (S, n)."""
        F = self.features(*X)
        pred, _ = self.model(np.atleast_2d(theta), F)
        return self.from_target_space(pred)

    def bootstrap(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refit under B resampling weight vectors (B, n), warm-started at the point estimate,
        all replicates at once with vectorised damped Newton steps (few iterations: the start
        is close). Returns (theta (B, p), converged (B,)); callers drop unconverged rows."""
        self._check_fitted()
        F, z, _ = self._fit_data
        W = np.asarray(weights, dtype=float)
        theta0 = np.tile(self.theta_, (len(W), 1))
        bounds = self.bounds(F, z)
        theta, ok = minimize_newton_stacked(self.objective(F, z, W), theta0, bounds=bounds,
                                            tol=self.tol)
        return theta, ok

    def __repr__(self):
        if self.__dict__.get("theta_") is None:
            return f"{type(self).__name__}()"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({ps}{'' if self.converged_ else ', NOT CONVERGED'})"
