"""The robust fitter behind every law: Huber loss, grid of starts, Levenberg-Marquardt on the
Gauss-Newton/IRLS curvature, no silent failure.

Why this shape (Chinchilla Approach 3, Hoffmann et al. 2022, and what breaks in practice):
  * the objective is scaled so it is O(1) (Huber of residual/δ); with the raw Huber δ=1e-3 the
    loss is ~1e-7 and L-BFGS-B's default tolerances declare "converged" at the first step;
  * a whole grid of starts is screened with one vectorised evaluation, then the best few
    distinct starts are refined together, as rows of one vectorised Levenberg-Marquardt
    refit: deterministic, and insensitive to one bad start (the ladder paper's code uses a
    single start and ignores 4 of 8 optimiser failures);
  * convergence is judged by the Newton decrement at the returned point (the loss decrease
    still achievable), not by an optimiser's message; a start that fails that test while its
    loss is still below the best converged one gets a second opinion from scipy's L-BFGS-B,
    and a fit none of whose starts passes is flagged;
  * bootstrap replicates are fitted the same way, all at once, warm-started at the point
    estimate, so intervals cost one vectorised refit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Objective: theta (S, p), returns loss (S,) and grad (S, p). Weights are bound inside.
BatchObjective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


_SINGLE_DEPTH = 0
LM_MAXITER = 500  # point fits: LM iterations before a start is handed to L-BFGS-B


@contextlib.contextmanager
def single_threaded_blas():
    """One BLAS thread while fitting. The problems are tiny (5 parameters); OpenBLAS threads
    only add synchronisation, which on a loaded machine costs more than the fit (docs/analysis.md).
    Re-entrant and cheap when nested."""
    global _SINGLE_DEPTH
    if _SINGLE_DEPTH:
        _SINGLE_DEPTH += 1
        try:
            yield
        finally:
            _SINGLE_DEPTH -= 1
        return
    try:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # optional: fits are correct without it, only slower under load
        ctx = contextlib.nullcontext()
    _SINGLE_DEPTH += 1
    try:
        with ctx:
            yield
    finally:
        _SINGLE_DEPTH -= 1


class FitError(RuntimeError):
    """A fit did not converge (raised only when the caller asks for strict fits)."""


@dataclass
class FitResult:
    """Diagnostics of one fit. ``success`` is the fitter's verdict, not an optimiser's message."""

    theta: np.ndarray  # optimiser-space parameters
    loss: float
    success: bool
    message: str
    grad_norm: float
    nit: int
    n_starts: int  # starts refined
    n_converged: int  # of those, how many converged
    n_agree: int  # converged starts that reached the best loss (within 1e-6 relative)
    n_grid: int = 0  # grid points screened
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        state = "converged" if self.success else "NOT CONVERGED"
        return (f"{state}: loss={self.loss:.6g} |grad|={self.grad_norm:.2g} nit={self.nit} "
                f"starts={self.n_converged}/{self.n_starts} converged, {self.n_agree} agree "
                f"({self.message})")

    def to_json(self) -> dict:
        return {"success": bool(self.success), "message": self.message, "loss": float(self.loss),
                "grad_norm": float(self.grad_norm), "nit": int(self.nit),
                "n_starts": int(self.n_starts), "n_converged": int(self.n_converged),
                "n_agree": int(self.n_agree)}


def huber(u: np.ndarray, delta: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Huber of u/δ (value, derivative w.r.t. u), i.e. Huber_δ(u)/δ²: O(1) for any δ.
    ``delta=None`` is the plain squared loss u²/2."""
    if delta is None:
        return 0.5 * u * u, u
    z = u / delta
    a = np.abs(z)
    quad = a <= 1.0
    val = np.where(quad, 0.5 * z * z, a - 0.5)
    der = np.where(quad, z, np.sign(z)) / delta
    return val, der


def _projected_grad(theta: np.ndarray, grad: np.ndarray, bounds: np.ndarray | None) -> np.ndarray:
    """Gradient with the components that push against an active bound zeroed."""
    if bounds is None:
        return grad
    g = grad.copy()
    lo, hi = bounds[:, 0], bounds[:, 1]
    eps = 1e-9 * (1 + np.abs(theta))
    g[(theta <= lo + eps) & (g > 0)] = 0.0
    g[(theta >= hi - eps) & (g < 0)] = 0.0
    return g


def _lbfgsb(obj: BatchObjective, theta0: np.ndarray, bounds: np.ndarray | None, maxiter: int):
    from scipy.optimize import minimize  # here only: importing scipy costs more than a prediction

    shape = theta0.shape

    def f(x):
        loss, grad = obj(x.reshape(shape))
        return float(np.sum(loss)), grad.reshape(-1)

    b = None
    if bounds is not None:
        b = np.tile(bounds, (int(np.prod(shape[:-1])), 1)) if theta0.ndim == 2 else bounds
    res = minimize(f, theta0.reshape(-1), jac=True, method="L-BFGS-B", bounds=b,
                   options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 20})
    return res


def newton_decrement(grad: np.ndarray, hess: np.ndarray, free: np.ndarray) -> float:
    """g' H^-1 g / 2 over the free (not bound-active) parameters: the loss decrease a Newton
    step could still achieve. Scale-aware where a raw gradient norm is not: a Huber fit with
    points inside the tiny quadratic zone has huge curvature, so a visible gradient there
    means a parameter change of ~1e-12 and nothing left to gain."""
    g, H = grad[free], hess[np.ix_(free, free)]
    if g.size == 0:
        return 0.0
    mu = 1e-10 * max(float(np.max(np.abs(np.diag(H)))), 1e-300)
    try:
        step = np.linalg.solve(H + mu * np.eye(g.size), g)
    except np.linalg.LinAlgError:
        return float("inf")
    return float(0.5 * max(g @ step, 0.0))


def _check(obj, theta: np.ndarray, bounds) -> tuple[float, float, float]:
    """(loss, projected gradient norm, Newton decrement) at theta (p,)."""
    loss, grad, hess = obj(theta[None, :], hessian=True)
    g = _projected_grad(theta, grad[0], bounds)
    free = np.ones(theta.size, bool) if bounds is None else ~((g == 0) & (grad[0] != 0))
    return float(loss[0]), float(np.linalg.norm(g)), newton_decrement(g, hess[0], free)


def minimize_multistart(obj: BatchObjective, grid: np.ndarray, *, bounds: np.ndarray | None = None,
                        n_refine: int = 3, tol: float = 1e-8, maxiter: int = 2000,
                        scale: float = 1.0, method: str = "lm") -> FitResult:
    """Screen ``grid`` (S, p) with one vectorised evaluation, refine the ``n_refine`` best
    distinct starts together (vectorised Levenberg-Marquardt), return the best converged one.
    A start that does not pass the convergence test while its loss is below the best converged
    one is refined again from scratch by scipy's L-BFGS-B (a different method, with one
    restart); if none passes, the fit is flagged.
    ``method="lbfgsb"`` refines every start with L-BFGS-B alone (the fitter before; kept to
    compare, tests/benchmarks/bench_fitter.py).

    Converged means: the Newton decrement (the decrease still achievable) is <= ``tol`` *
    max(``scale``, loss); the objective is O(1) by construction."""
    if method not in ("lm", "lbfgsb"):
        raise ValueError(f"method must be 'lm' or 'lbfgsb', got {method!r}")
    with single_threaded_blas():
        return _minimize_multistart(obj, grid, bounds, n_refine, tol, maxiter, scale, method)


def _starts(obj, grid, bounds, n_refine):
    """The grid clipped to the bounds, and its ``n_refine`` best distinct finite points."""
    grid = np.atleast_2d(np.asarray(grid, dtype=float))
    if bounds is not None:
        grid = np.clip(grid, bounds[:, 0], bounds[:, 1])
    losses, _ = obj(grid)
    losses = np.where(np.isfinite(losses), losses, np.inf)
    starts: list[np.ndarray] = []
    for i in np.argsort(losses, kind="stable"):  # skip near-duplicates of a chosen start
        if not np.isfinite(losses[i]):
            break
        if all(np.max(np.abs(grid[i] - s)) > 1e-9 for s in starts):
            starts.append(grid[i])
        if len(starts) >= n_refine:
            break
    return grid, starts


def _minimize_multistart(obj, grid, bounds, n_refine, tol, maxiter, scale, method) -> FitResult:
    bounds = None if bounds is None else np.asarray(bounds, dtype=float)
    grid, starts = _starts(obj, grid, bounds, n_refine)
    if not starts:
        return FitResult(grid[0], float("inf"), False, "objective is not finite at any start",
                         float("inf"), 0, 0, 0, 0, len(grid))

    def judged(theta, nit, message):
        loss, gnorm, dec = _check(obj, theta, bounds)
        ok = bool(np.isfinite(loss) and dec <= tol * max(scale, abs(loss)))
        return (loss, ok, gnorm, np.asarray(theta, dtype=float), dec, nit, message)

    if method == "lbfgsb":
        runs = [_lbfgsb_refined(obj, s, bounds, maxiter, judged) for s in starts]
    else:
        # the LM rows stop on the IRLS curvature's decrement; a tenth of the tolerance there
        # passes the exact-curvature test (the Huber majoriser's curvature is larger)
        theta, _, nit = _newton_stacked(obj, np.array(starts), bounds, 0.1 * tol,
                                        min(maxiter, LM_MAXITER))
        runs = [judged(t, nit, "Levenberg-Marquardt") for t in theta]
        best_conv = min((r[0] for r in runs if r[1]), default=float("inf"))
        for i, s in enumerate(starts):
            # a start LM leaves unconverged below the best converged loss may still hold the
            # best optimum (one LM row can stop on a worse plateau while another wanders):
            # L-BFGS-B refines it afresh. One stuck above it would only confirm the best.
            if not runs[i][1] and runs[i][0] < best_conv:
                alt = _lbfgsb_refined(obj, s, bounds, maxiter, judged)
                if alt[1] or alt[0] < runs[i][0]:
                    runs[i] = alt
    conv = [r for r in runs if r[1]]
    best = min(conv or runs, key=lambda r: r[0])
    agree = sum(1 for r in conv if abs(r[0] - best[0]) <= 1e-6 * max(abs(best[0]), 1e-12))
    msg = best[6]
    if not conv:
        msg = (f"no start converged (best: |grad|={best[2]:.3g}, achievable decrease "
               f"{best[4]:.3g}); {msg}")
    return FitResult(best[3], best[0], bool(conv), msg, best[2], int(best[5]), len(runs),
                     len(conv), agree, len(grid), {"newton_decrement": best[4]})


def _lbfgsb_refined(obj, start, bounds, maxiter, judged):
    """One start refined by L-BFGS-B, with one restart (a fresh Hessian memory) if needed."""
    res = _lbfgsb(obj, start, bounds, maxiter)
    run = judged(res.x, res.nit, f"scipy L-BFGS-B: {res.message}")
    if not run[1]:
        res2 = _lbfgsb(obj, res.x, bounds, maxiter)
        run2 = judged(res2.x, res.nit + res2.nit, f"scipy L-BFGS-B: {res2.message}")
        if run2[0] <= run[0]:
            run = run2
    return run


def minimize_newton_stacked(obj: BatchObjective, theta0: np.ndarray, *,
                            bounds: np.ndarray | None = None, tol: float = 1e-8,
                            maxiter: int = 400,
                            blocks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """B independent refits from a nearby start (bootstrap replicates), vectorised:
    Levenberg-Marquardt steps on the Gauss-Newton / IRLS curvature (the Huber majoriser,
    so accepted steps always decrease the loss), projected onto the bounds; each row stops
    when its Newton decrement is below ``tol`` x max(1, loss). Only unfinished rows are
    evaluated. Returns (theta (B, p), converged (B,)).

    ``bounds`` is (p, 2), or (B, p, 2) for rows of several problems stacked together, whose
    ``blocks`` (B,) label each row's problem: every row then takes exactly the steps it takes
    when its problem is refitted alone (rows never interact; see :func:`_solve`)."""
    theta, ok, _ = _newton_stacked(obj, theta0, bounds, tol, maxiter, blocks)
    return theta, ok


def _newton_stacked(obj, theta0, bounds, tol, maxiter, blocks=None):
    """:func:`minimize_newton_stacked`, also returning the iterations taken."""
    theta = np.array(theta0, dtype=float)
    B, p = theta.shape
    lam = np.full(B, 1e-4)
    ok = np.zeros(B, bool)
    bounds = None if bounds is None else np.asarray(bounds, dtype=float)
    lo_all, hi_all = (bounds[..., 0], bounds[..., 1]) if bounds is not None else (-np.inf, np.inf)
    per_row = bounds is not None and bounds.ndim == 3
    lo, hi = lo_all, hi_all
    eye = np.eye(p)
    with single_threaded_blas():
        rows = np.arange(B)
        sub = _subset(obj, rows)
        loss, grad, H = sub(theta, hessian="irls")
        it = 0
        for it in range(1, maxiter + 1):
            gf, Hf = _free_system(theta[rows], grad, H, lo, hi)
            blk = blocks[rows] if blocks is not None else None
            dec = 0.5 * np.einsum("bp,bp->b", gf, _solve(Hf, gf, blk))
            done = np.isfinite(loss) & (dec <= tol * np.maximum(1.0, np.abs(loss)))
            ok[rows[done]] = True
            if done.any():  # drop the finished rows (most iterations finish none)
                keep = ~done
                if not keep.any():
                    break
                rows, loss, grad, H = rows[keep], loss[keep], grad[keep], H[keep]
                gf, Hf, blk = gf[keep], Hf[keep], blk[keep] if blk is not None else None
                sub = _subset(obj, rows)
                if per_row:
                    lo, hi = lo_all[rows], hi_all[rows]
            diag = np.einsum("bpp->bp", Hf)
            A = Hf + (lam[rows][:, None] * np.maximum(diag, 1e-12))[:, :, None] * eye
            cand = np.clip(theta[rows] - _solve(A, gf, blk), lo, hi)
            lc, gc, Hc = sub(cand, hessian="irls")
            better = np.isfinite(lc) & (lc <= loss)
            theta[rows[better]] = cand[better]
            loss = np.where(better, lc, loss)
            grad = np.where(better[:, None], gc, grad)
            H = np.where(better[:, None, None], Hc, H)
            lam[rows] = np.where(better, np.maximum(lam[rows] / 5, 1e-9), lam[rows] * 10)
            stalled = ~better & (lam[rows] > 1e10)  # no descent left at float precision
            ok[rows[stalled]] = True
    return theta, ok, it


def _solve(A: np.ndarray, b: np.ndarray, blocks: np.ndarray | None = None) -> np.ndarray:
    """Batched solve; if any matrix is singular, the pseudo-inverse for the whole batch, or
    with ``blocks`` for each block that has a singular one (as if solved block by block)."""
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        if blocks is None:
            return np.einsum("bpq,bq->bp", np.linalg.pinv(A), b)
        out = np.empty_like(b)
        for k in np.unique(blocks):
            m = blocks == k
            out[m] = _solve(A[m], b[m])
        return out


def _free_system(theta, grad, H, lo, hi):
    """Gradient and curvature restricted to the parameters not held by an active bound
    (held ones get a unit diagonal and a zero gradient: no step, no decrement)."""
    eps = 1e-9 * (1 + np.abs(theta))
    held = ((theta <= lo + eps) & (grad > 0)) | ((theta >= hi - eps) & (grad < 0))
    free = (~held).astype(float)
    gf = grad * free
    Hf = H * free[:, :, None] * free[:, None, :] + np.einsum("bp,pq->bpq", 1 - free, np.eye(theta.shape[1]))
    # relative regularisation: in a flat valley (a replicate that duplicates few runs) the
    # decrement along near-singular directions is noise, not progress still to be made
    Hf = Hf + 1e-8 * np.abs(Hf).max(axis=(1, 2), keepdims=True) * np.eye(theta.shape[1])
    return gf, Hf


def _subset(obj, rows: np.ndarray):
    """The stacked objective restricted to some replicates (objectives built with per-row
    weights expose ``with_rows``; others are row-independent already)."""
    return obj.with_rows(rows) if hasattr(obj, "with_rows") else obj
