"""Fitting task scaling laws on run logs and predicting targets. Imports no torch.

    from analysis import read_runs, predict_target, Target, fit_loss_law

The names below are loaded on first use (PEP 562): importing one light submodule (e.g.
``analysis.twostep.config`` for a command's options) does not import scipy and pandas.
"""

from analysis.lazy import attach

__getattr__, __dir__, _EXPORTED = attach(__name__, {
    "analysis.fit": ("FitError", "FitResult"),
    "analysis.laws": ("ChinchillaLaw", "ComputeLaw", "LogSigmoidLink", "SigmoidLink"),
    "analysis.predict": ("Prediction", "Target", "predict_target", "predict_targets"),
    "analysis.runlog": ("RunLog", "RunLogError", "RunLogWriter", "RunMeta", "read_run", "read_runs"),
    "analysis.sources": ("read_ladder",),
    "analysis.metrics": ("TaskSpec",),
    "analysis.twostep": ("TaskModel", "TwoStepConfig", "fit_task"),
})


def fit_loss_law(n, d, loss, *, delta: float = 1e-3, strict: bool = False):
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to arrays of (N, D, loss) (Chinchilla
    Approach 3: Huber on log residuals, grid of starts, refined as in analysis.fit). The result has
    ``E, A, B, alpha, beta``, ``params_``, ``predict(n, d)`` and ``result_`` (diagnostics);
    a non-converged fit warns (``strict=True``: raises FitError)."""
    from analysis.laws import ChinchillaLaw
    return ChinchillaLaw(delta=delta).fit(n, d, y=loss, strict=strict)


__all__ = sorted([*_EXPORTED, "fit_loss_law"])
