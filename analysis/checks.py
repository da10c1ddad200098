"""Physical sanity of a prediction's inputs, before any fit: a ladder too small to fit two
steps, a target far outside the ladder's range, an ``--actual`` run of another model. Errors
raise :class:`InputError` (one line, naming the input); doubts come back as warnings that
are said once and recorded with the predictions."""

from __future__ import annotations

import math

MIN_RUNS = 3  # fewer runs cannot constrain a step-1 law (its free parameters)
MIN_SIZES = 2  # one model size: no N axis at all
RELIABLE_SIZES = 3  # below this the N exponent rests on two points: said with every prediction
MAX_EXTRAPOLATION = 100.0  # target N or D beyond 100x the ladder's largest: warned


class InputError(ValueError):
    """An input outside what the method can use; the message names it."""


def check_ladder(runs) -> list[str]:
    """Refuse a ladder that cannot be fitted; return warnings for one that is thin."""
    sizes = sorted({r.n for r in runs})
    if len(runs) < MIN_RUNS or len(sizes) < MIN_SIZES:
        raise InputError(f"a ladder needs at least {MIN_RUNS} runs over at least {MIN_SIZES} model "
                         f"sizes to fit; got {len(runs)} run(s) over {len(sizes)} size(s)")
    if len(sizes) < RELIABLE_SIZES:
        return [f"only {len(sizes)} model sizes in the ladder: the N exponent rests on two points, so "
                f"treat these predictions as unreliable (add a size)"]
    return []


def check_target(runs, n: float, d: float, name: str = "target") -> list[str]:
    """Target N and D must be positive and finite; far beyond the ladder they are warned."""
    for flag, v in (("N", n), ("D", d)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InputError(f"{name}: {flag} must be a positive finite number, got {v!r}")
    warnings = []
    max_n, max_d = max(r.n for r in runs), max(r.d for r in runs)
    for flag, v, top in (("N", n, max_n), ("D", d, max_d)):
        if v > MAX_EXTRAPOLATION * top:
            warnings.append(f"{name}: {flag} = {v:.3g} is {v / top:.3g}x the ladder's largest "
                            f"({top:.3g}); predictions this far out are extrapolations no backtest covers")
    if n < min(r.n for r in runs):
        warnings.append(f"{name}: N = {n:.3g} is smaller than every model of the ladder; fit a law to "
                        f"predict beyond a ladder, not inside or below it")
    return warnings


def check_actual(actual, n: float, name: str = "target") -> None:
    """An ``--actual`` run must be the target: its N (when known) within 2x of the target's."""
    try:
        actual_n = actual.n
    except ValueError:  # N unknown: nothing to compare
        return
    if not (0.5 <= actual_n / n <= 2.0):
        raise InputError(f"--actual {actual.source}: run '{actual.name}' has N = {actual_n:.3g}, but "
                         f"{name} has N = {n:.3g}; give the target's own log")


def once(say=None):
    """A warn function that says each message once (the same warning from every held-out run
    or every target is one line). ``say`` prints it (default: "warning: ..." on stderr)."""
    import sys

    say = say or (lambda m: print(f"warning: {m}", file=sys.stderr))
    seen: set[str] = set()

    def warn(message: str) -> None:
        if message not in seen:
            seen.add(message)
            say(message)

    return warn
