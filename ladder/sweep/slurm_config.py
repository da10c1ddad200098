"""A recipe's ``slurm:`` block, read and checked: cluster-wide defaults, per-size resources
and the sweep's knobs (signal lead time, retries, throttle, setup lines, GPU memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ladder.sweep.launcher import JobSpecError, Resources

_SWEEP_KNOBS = {"signal_seconds": int, "max_retries": int, "max_parallel": int, "setup": list,
                "gpu_memory_gib": int, "branch_poll_seconds": int}


@dataclass
class SlurmConfig:
    """A recipe's ``slurm:`` block: cluster-wide defaults, per-size overrides, sweep knobs.

    ``resources(size)`` is the defaults with that size's keys on top, so a recipe states the
    partition/account once and only what differs per size (nodes, GPUs, time)."""

    defaults: Resources = field(default_factory=Resources)
    sizes: dict[str, Resources] = field(default_factory=dict)
    signal_seconds: int = 300
    max_retries: int = 2
    max_parallel: int | None = None
    setup: tuple[str, ...] = ()
    gpu_memory_gib: int | None = None  # the partition's GPU memory: the dry run checks the estimate
    branch_poll_seconds: int = 30  # WSD: a stable run's batch shell looks for branch points this often

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "slurm",
                  known_sizes: Iterable[str] | None = None) -> "SlurmConfig":
        if d is not None and not isinstance(d, dict):
            raise JobSpecError(f"{where}: expected a mapping, got {type(d).__name__}")
        d = dict(d or {})
        sizes = d.pop("sizes", None) or {}
        if not isinstance(sizes, dict):
            raise JobSpecError(f"{where}.sizes: expected a mapping size -> resources")
        knobs = {}
        for key, typ in _SWEEP_KNOBS.items():
            if key in d:
                value = d.pop(key)
                if not isinstance(value, typ) or isinstance(value, bool):
                    raise JobSpecError(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
                knobs[key] = tuple(value) if typ is list else value
        defaults = Resources.from_dict(d, where)
        if known_sizes is not None:
            unknown = sorted(set(map(str, sizes)) - set(known_sizes))
            if unknown:
                raise JobSpecError(f"{where}.sizes: unknown size(s) {', '.join(unknown)} "
                                   f"(the recipe has: {', '.join(known_sizes)})")
        merged = {}
        for size, over in sizes.items():
            if not isinstance(over, dict):
                raise JobSpecError(f"{where}.sizes.{size}: expected a mapping of resources")
            merged[str(size)] = Resources.from_dict({**_as_dict(defaults), **over},
                                                    f"{where}.sizes.{size}")
        return cls(defaults, merged, **knobs)

    def resources(self, size: str) -> Resources:
        return self.sizes.get(size, self.defaults)


def _as_dict(r: Resources) -> dict[str, Any]:
    return {k: getattr(r, k) for k in r.__dataclass_fields__}
