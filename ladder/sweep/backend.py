"""Where a sweep's rungs run: the backend protocol and its registry.

A backend plans what each size asks for, checks before anything runs what only it can check,
shows what it would submit, runs or submits the rungs (and the final prediction), reports what
each rung is doing and cancels. `ladder sweep`, `status`, `plan`, `cancel` and the pre-submit
checks talk to this interface only, so a new backend is one module with a class and one line in
:data:`BACKENDS` (or an entry point in the ``ladder.backends`` group, for a package of its own).

A backend's recipe settings live in ``backends.<name>`` (SLURM's keep their historical top-level
``slurm:`` section); the sweep records which backend ran it in ``sweep.json``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: the CLI's option parsing imports none of these
    from ladder.recipe import Recipe
    from ladder.sweep.checks import Check
    from ladder.sweep.launcher import Resources
    from ladder.sweep.plan import SweepPlan
    from ladder.sweep.sweepdir import Sweep

# name -> "module:Class"; imported only when used.
BACKENDS: dict[str, str] = {
    "local": "ladder.sweep.local:LocalBackend",
    "slurm": "ladder.sweep.slurm_backend:SlurmBackend",
}
ENTRY_POINTS = "ladder.backends"


class BackendError(ValueError):
    """An unknown backend, or its settings are wrong; the message names the key."""


@dataclass
class LaunchOptions:
    """Command-line choices a backend may honour (None: the recipe's)."""

    parallel: int | None = None  # rungs side by side (local)
    max_retries: int | None = None  # restarts of a failed rung
    predict: bool = True  # predict the targets when every rung is done


class Status(Protocol):
    """What each rung is doing, as `ladder status` prints it."""

    def table(self) -> str: ...

    def to_json(self) -> Any: ...


class Backend(Protocol):
    name: ClassVar[str]

    @classmethod
    def from_plan(cls, plan: SweepPlan) -> Backend:
        """The backend with the recipe's settings for it, checked (BackendError naming the key)."""

    def resources(self, size: str) -> Resources:
        """What one rung of ``size`` asks for (nodes, GPUs, processes, time)."""

    def device_memory_gib(self, size: str) -> float | None:
        """Memory of one device a rung of ``size`` gets, where the backend knows it."""

    def checks(self, plan: SweepPlan, estimates: dict) -> list[Check]:
        """Checks only this backend can make (``estimates``: per size, the memory estimate per
        process, the parallel settings and whether it fits the device: sweep/checks.py)."""

    def render(self, sweep: Sweep, options: LaunchOptions) -> str:
        """What :meth:`launch` would run or submit, for ``--dry-run``; writes nothing."""

    def launch(self, sweep: Sweep, options: LaunchOptions, echo: Callable[[str], None]) -> bool:
        """Run or submit the rungs (and, where they run elsewhere, the final prediction).
        True when every rung has finished here and now: the caller then predicts."""

    def status(self, sweep: Sweep) -> Status: ...

    def cancel(self, sweep: Sweep) -> list[str]:
        """Stop the sweep's rungs (they keep their checkpoints); what was stopped."""

    @classmethod
    def owns(cls, sweep_dir: Path) -> bool:
        """Whether a sweep directory from before sweep.json named its backend was run here."""


def backend_names() -> list[str]:
    return list(dict.fromkeys([*BACKENDS, *_entry_points()]))


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def backend_class(name: str) -> type[Backend]:
    if name in BACKENDS:
        module, _, cls = BACKENDS[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    raise BackendError(f"--backend {name!r}: unknown backend (known: {', '.join(backend_names())})")


def settings(recipe: Recipe, name: str) -> dict[str, Any]:
    """A backend's section of the recipe: ``backends.<name>`` (``slurm:`` for SLURM)."""
    if name == "slurm" and recipe.slurm:
        return recipe.slurm
    section = recipe.backends.get(name) or {}
    if not isinstance(section, dict):
        raise BackendError(f"{recipe.source}: 'backends.{name}' must be a mapping, got {section!r}")
    return section


def default_backend(recipe: Recipe) -> str:
    """For `ladder plan`: the backend the recipe has settings for (SLURM before others), else
    local."""
    configured = [n for n in backend_names() if n != "local" and (
        (n == "slurm" and recipe.slurm) or n in recipe.backends)]
    return configured[0] if configured else "local"


def backend_of(sweep_dir: Path) -> str:
    """The backend recorded in the sweep's manifest; for older sweeps, the one that owns it."""
    import json

    from ladder.sweep.sweepdir import MANIFEST

    try:
        name = json.loads((Path(sweep_dir) / MANIFEST).read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        name = None
    if isinstance(name, str):
        return name
    return next((n for n in backend_names() if n != "local" and backend_class(n).owns(Path(sweep_dir))),
                "local")
