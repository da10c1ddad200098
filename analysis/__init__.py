"""Fitting task scaling laws on run logs and predicting targets. Imports no torch.

    from analysis import read_runs, predict_target, Target, fit_loss_law

The names below are loaded on first use (PEP 562): importing one light submodule (e.g.
``analysis.twostep.config`` for a command's options) does not import scipy and pandas.
"""

import importlib

_EXPORTS = {
    "analysis.fit": ("FitError", "FitResult"),
    "analysis.laws": ("ChinchillaLaw", "ComputeLaw", "LogSigmoidLink", "SigmoidLink"),
    "analysis.predict": ("Prediction", "Target", "predict_target", "predict_targets"),
    "analysis.runlog": ("RunLog", "RunLogError", "RunLogWriter", "RunMeta", "read_run", "read_runs"),
    "analysis.twostep": ("TaskModel", "TwoStepConfig", "fit_task"),
}
_HOME = {name: mod for mod, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))


def fit_loss_law(n, d, loss, *, delta: float = 1e-3, strict: bool = False):
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to arrays of (N, D, loss) (Chinchilla
    Approach 3: Huber on log residuals, grid of starts, L-BFGS-B). The result has
    ``E, A, B, alpha, beta``, ``params_``, ``predict(n, d)`` and ``result_`` (diagnostics);
    a non-converged fit warns (``strict=True``: raises FitError)."""
    from analysis.laws import ChinchillaLaw
    return ChinchillaLaw(delta=delta).fit(n, d, y=loss, strict=strict)


__all__ = sorted([*_HOME, "fit_loss_law"])
