"""The laws a fit can use, by name: the one list that TwoStepConfig's choices, the CLI's
`--step1`, `--link` and `--direct-exponents` choices and the fit's dispatch all read.

A new law is one module (a :class:`analysis.laws.Law` subclass) and one line here. An entry is
"module:attribute", imported when used: a Law subclass (built with no arguments; links with
``floor``, ``ceiling`` and ``pin_ceiling``), or for step 1 a function ``(config, n_sizes) -> Law``
where the choice depends on the ladder (the Chinchilla law ties its exponents below 3 sizes).
"""

from __future__ import annotations

import importlib
from typing import Any

STEP1_LAWS: dict[str, str] = {  # (N, D) -> the intermediate feature
    "chinchilla": "analysis.laws.power:chinchilla_step1",
    "compute": "analysis.laws.power:ComputeLaw",
}
LINKS: dict[str, str] = {  # feature -> accuracy
    "sigmoid": "analysis.laws.links:SigmoidLink",
    "log_sigmoid": "analysis.laws.links:LogSigmoidLink",
}
DIRECT_LAWS: dict[str, str] = {  # (N, D) -> accuracy in one fit (--mode direct), by exponents
    "tied": "analysis.twostep.direct:DirectLaw",
    "free": "analysis.twostep.direct:FreeDirectLaw",
}
MODES = ("chained", "single", "direct")  # two steps chained; jointly refitted; direct law


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _known(table: dict[str, str], name: str, what: str) -> str:
    if name not in table:
        raise ValueError(f"{what}={name!r}; expected one of {', '.join(table)}")
    return table[name]


def step1_law(config, n_sizes: int):
    """A fresh step-1 law for ``config.step1`` on a ladder of ``n_sizes`` model sizes."""
    from analysis.laws.base import Law

    make = _load(_known(STEP1_LAWS, config.step1, "step1"))
    return make() if isinstance(make, type) and issubclass(make, Law) else make(config, n_sizes)


def link_law(name: str, *, floor: float | None = None, pin_ceiling: bool = True):
    """A fresh link ``name`` (step 2), its low asymptote pinned at ``floor`` when given."""
    return _load(_known(LINKS, name, "link"))(floor=floor, pin_ceiling=pin_ceiling)


def direct_law(exponents: str):
    return _load(_known(DIRECT_LAWS, exponents, "direct_exponents"))()
