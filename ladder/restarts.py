"""Which recipe keys may change between restarts: one rule, read from the recipe's fields.

A run directory and a sweep directory are each bound to what they compute. Resuming either
under a recipe that computes something else would splice two experiments into one record, so
both refuse it and name the keys. What may change is declared once, as metadata on the recipe
dataclasses' fields (``ladder.recipe.OPERATIONAL`` and ``LADDER``):

* operational keys change how or where a run is executed, never its numbers (threads,
  compilation, scoring batch sizes, checkpoint policy, tracking, sweep and cluster settings);
* ladder keys say which runs a ladder has (its sizes, multipliers, seeds, targets): a run
  ignores them, a sweep does not;
* every other key is science: it changes what a run computes.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Literal

from ladder.recipe import Recipe

Scope = Literal["run", "ladder"]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def key_kind(key: str) -> str:
    """'operational', 'ladder' or 'science' for a dotted recipe key (a key below a mapping
    section such as ``slurm.*`` takes its section's kind; keys unknown to this version are
    science: they are compared)."""
    cls: Any = Recipe
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            break
        f = next((f for f in dataclasses.fields(cls) if f.name == part), None)
        if f is None:
            return "science"
        kind = f.metadata.get("restart")
        if kind is not None:
            return kind
        cls = typing.get_type_hints(cls).get(part)
    return "science"


def _counts(key: str, scope: Scope) -> bool:
    kind = key_kind(key)
    return kind == "science" or (scope == "ladder" and kind == "ladder")


def differences(old: dict, new: dict, scope: Scope) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every key that counts at ``scope`` ("run": what
    one run computes; "ladder": that, plus which runs the ladder has) and differs. A key the
    old record lacks (written by an older version) counts as its default."""
    defaults = _flat(json.loads(json.dumps(Recipe().to_dict(), default=str)))
    a = _flat(json.loads(json.dumps(old, default=str)))  # compare as run.json stores them
    b = _flat(json.loads(json.dumps(new, default=str)))
    out = []
    for k in sorted(set(a) | set(b)):
        if not _counts(k, scope):
            continue
        va, vb = a.get(k, defaults.get(k)), b.get(k, defaults.get(k))
        if va != vb:
            out.append((k, va, vb))
    return out


def science_hash(recipe: Recipe, scope: Scope = "ladder") -> str:
    """Hash of the keys that count at ``scope``: equal for two recipes that compute the same."""
    import hashlib

    flat = {k: v for k, v in _flat(json.loads(json.dumps(recipe.to_dict(), default=str))).items()
            if _counts(k, scope)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]
