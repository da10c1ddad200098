"""Bootstrap refits of several laws at once: the step-1 laws of all tasks of a ladder share
their inputs (the runs' N and D), so their replicates are stacked into one vectorised refit.

A refit's cost is mostly per iteration (a few dozen small numpy calls), and it iterates until
its slowest replicate is done: refitting 8 tasks one by one pays for 8 slow tails, stacked they
pay for one. Each row still takes exactly the steps it takes alone (analysis.fit.
minimize_newton_stacked with ``blocks``), so the replicates are bit-identical.
"""

from __future__ import annotations

import numpy as np

from analysis.fit import minimize_newton_stacked
from analysis.laws.base import Law
from analysis.laws.links import LogSigmoidLink, SigmoidLink
from analysis.laws.power import ChinchillaLaw, ComputeLaw, TiedChinchillaLaw

# laws whose model is a function of (theta, inputs) alone: rows of two fitted instances can
# share one objective; subclasses (e.g. fixed exponents held by the instance) are not listed
STACKABLE = (ChinchillaLaw, TiedChinchillaLaw, ComputeLaw, SigmoidLink, LogSigmoidLink)


def _key(law: Law):
    return (type(law), law.delta, law.resid_scale, law.tol) if type(law) in STACKABLE else None


def bootstrap_many(laws: list[Law], weights: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[law.bootstrap(w) for law, w in zip(laws, weights)]``, with the laws of one kind fitted
    on the same inputs refitted together."""
    groups: list[list[int]] = []
    for i, law in enumerate(laws):
        law._check_fitted()
        k, F = _key(law), law._fit_data[0]
        for g in groups:
            j = g[0]
            if k is not None and _key(laws[j]) == k and np.array_equal(laws[j]._fit_data[0], F):
                g.append(i)
                break
        else:
            groups.append([i])
    out: list = [None] * len(laws)
    for g in groups:
        if len(g) == 1:
            out[g[0]] = laws[g[0]].bootstrap(weights[g[0]])
            continue
        for i, res in zip(g, _stacked([laws[i] for i in g], [weights[i] for i in g])):
            out[i] = res
    return out


def _stacked(laws: list[Law], weights: list[np.ndarray]):
    F = laws[0]._fit_data[0]
    W = [np.asarray(w, dtype=float) for w in weights]
    sizes = [len(w) for w in W]
    z = np.concatenate([np.broadcast_to(l._fit_data[1], (b, F.shape[1])) for l, b in zip(laws, sizes)])
    theta0 = np.concatenate([np.tile(l.theta_, (b, 1)) for l, b in zip(laws, sizes)])
    bounds = [l.bounds(F, l._fit_data[1]) for l in laws]
    if any(b is None for b in bounds):  # none of the stackable laws is unbounded
        return [l.bootstrap(w) for l, w in zip(laws, W)]
    bounds = np.concatenate([np.broadcast_to(bd, (b,) + bd.shape) for bd, b in zip(bounds, sizes)])
    blocks = np.repeat(np.arange(len(laws)), sizes)
    theta, ok = minimize_newton_stacked(laws[0].objective(F, z, np.concatenate(W)), theta0,
                                        bounds=bounds, tol=laws[0].tol, blocks=blocks)
    cuts = np.cumsum(sizes)[:-1]
    return list(zip(np.split(theta, cuts), np.split(ok, cuts)))

