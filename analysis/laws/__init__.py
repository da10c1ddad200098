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

``base.py`` holds the estimator shell (``Law``, whose public methods are the interface a new law
implements), ``power.py`` the power laws and their grid of starts, ``links.py`` the sigmoid
links, ``registry.py`` the laws a fit may use, by name. Every estimator keeps ``result_`` (a :class:`analysis.fit.FitResult`) and ``converged_``;
``fit(..., strict=True)`` raises :class:`analysis.fit.FitError` instead of flagging.
"""

from analysis.lazy import attach

# loaded on first use: the registry of law names alone imports no numpy (a command's options)
__getattr__, __dir__, __all__ = attach(__name__, {
    "analysis.laws.base": ("Law",),
    "analysis.laws.links": ("LogSigmoidLink", "SigmoidLink", "sigmoid_model"),
    "analysis.laws.power": ("ChinchillaLaw", "ComputeLaw", "TiedChinchillaLaw", "power_law_starts"),
})
