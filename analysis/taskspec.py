"""A lab's own tasks: declared in a YAML file (``--task-spec``) or inferred from the ladder's
columns, with the mapping printed so that nothing is guessed silently.

    tasks:
      arc_easy:
        accuracy: lm_eval/arc_easy/acc_norm      # a column, a list, or {column: weight}
        loss: lm_eval/arc_easy/bpb               # optional: the task's own loss (step 1's feature)
        chance: 0.25                             # or `choices: 4`
        metric: acc_norm                         # optional, for readers
    sets:
      mine: [arc_easy, piqa]                     # optional: --tasks mine

Inference recognises the OLMo-ladder columns (``eval/downstream/<task>_<split>_<shots>_len_norm``,
the built-in declarations first), ``<prefix>/<task>/<metric>`` columns (lm-evaluation-harness
results read by ``analysis.sources``: ``lm_eval/arc_easy/acc_norm``) and ``<task>_<metric>``
columns, with chance levels of tasks known by name (``analysis.metrics.KNOWN_CHANCE``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from analysis.metrics import (PAPER_TASKS, TaskSpec, builtin_tasks, known_chance, olmes_task,
                              resolve_tasks)

ACC_KINDS = ("acc_norm", "len_norm", "acc", "accuracy", "exact_match")  # preferred first
LOSS_KINDS = ("bpb", "bits_per_byte", "loss", "ce", "nll")
_OLMES = re.compile(r"^eval/downstream/(.+)_(val|test|train|validation)_((?:rc|mc)_\d+shot)_"
                    r"(len_norm|acc|per_token)$")
_SLASH = re.compile(rf"^(?:(.*)/)?([^/]+)/({'|'.join(ACC_KINDS + LOSS_KINDS)})$")
_FLAT = re.compile(rf"^([A-Za-z0-9][\w.-]*?)_({'|'.join(ACC_KINDS + LOSS_KINDS)})$")
_FIELDS = {"accuracy", "loss", "chance", "choices", "metric"}


class TaskSpecError(ValueError):
    """A task declaration file that cannot be used; the message names the file and key."""


def _columns(value, where: str) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str) and value.strip():
        return ((value.strip(), 1.0),)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple((v, 1.0) for v in value)
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        return tuple((k, v) for k, v in value.items())
    raise TaskSpecError(f"{where}: expected a column name, a list of them, or {{column: weight}}, "
                        f"got {value!r}")


def _chance(d: dict, where: str) -> float | None:
    if "chance" in d and "choices" in d:
        raise TaskSpecError(f"{where}: give 'chance' or 'choices', not both")
    if "choices" in d:
        c = d["choices"]
        if not (isinstance(c, int) and not isinstance(c, bool) and c >= 2):
            raise TaskSpecError(f"{where}.choices: expected a whole number >= 2, got {c!r}")
        return 1 / c
    c = d.get("chance")
    if c is not None and not (isinstance(c, (int, float)) and not isinstance(c, bool)
                              and math.isfinite(c) and 0 <= c < 1):
        raise TaskSpecError(f"{where}.chance: expected a fraction in [0, 1), got {c!r}")
    return c


def read_task_spec(path) -> tuple[dict[str, TaskSpec], dict[str, tuple[str, ...]]]:
    """(tasks, sets) declared in a YAML file."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TaskSpecError(f"--task-spec {p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        raise TaskSpecError(f"--task-spec {p}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not doc["tasks"]:
        raise TaskSpecError(f"--task-spec {p}: expected a mapping with a non-empty 'tasks:' mapping")
    extra = set(doc) - {"tasks", "sets"}
    if extra:
        raise TaskSpecError(f"--task-spec {p}: unknown key '{sorted(extra)[0]}' (expected tasks, sets)")
    tasks = {}
    for name, d in doc["tasks"].items():
        where = f"--task-spec {p}: tasks.{name}"
        if not isinstance(d, dict) or "accuracy" not in d:
            raise TaskSpecError(f"{where}: expected a mapping with at least 'accuracy'")
        unknown = set(d) - _FIELDS
        if unknown:
            raise TaskSpecError(f"{where}: unknown key '{sorted(unknown)[0]}' (expected "
                                f"{', '.join(sorted(_FIELDS))})")
        acc = _columns(d["accuracy"], where + ".accuracy")
        loss = _columns(d["loss"], where + ".loss") if d.get("loss") else ()
        chance = _chance(d, where)
        try:
            tasks[str(name)] = TaskSpec(str(name), acc, loss, chance, str(d.get("metric") or ""))
        except ValueError as e:  # weights: the declaration's own checks
            raise TaskSpecError(f"--task-spec {p}: {e}") from None
    sets = {}
    for name, members in (doc.get("sets") or {}).items():
        if not (isinstance(members, list) and members and all(m in tasks or m in builtin_tasks()
                                                              for m in members)):
            raise TaskSpecError(f"--task-spec {p}: sets.{name}: expected a list of declared tasks, "
                                f"got {members!r}")
        sets[str(name)] = tuple(members)
    return tasks, sets


def _olmes_inferred(common: set[str], out: dict[str, TaskSpec]) -> None:
    covered = set()  # (part, split, shots) of the built-in tasks found, whatever their kind
    for name, spec in builtin_tasks().items():
        if all(c in common for c, _ in spec.accuracy):
            out[name] = spec
            covered |= {m.groups()[:3] for c, _ in spec.accuracy if (m := _OLMES.match(c))}
    groups: dict[tuple, dict[str, str]] = {}
    for c in sorted(common):
        if (m := _OLMES.match(c)) and m.groups()[:3] not in covered:
            groups.setdefault(m.groups()[:3], {})[m.group(4)] = c
    for (part, split, shots), kinds in groups.items():
        kind = "len_norm" if "len_norm" in kinds else next(iter(kinds))
        name = f"{part}_{split}" if f"{part}_{split}" not in out else f"{part}_{split}_{shots}"
        out[name] = olmes_task(name, split, ((part, 1.0),), acc_kind=kind, shots=shots,
                               chance=known_chance(part))


def infer_tasks(runs) -> dict[str, TaskSpec]:
    """Tasks recognised in the columns every run has (see the module's docstring)."""
    common = set(runs[0].columns).intersection(*(r.columns for r in runs[1:])) if runs else set()
    out: dict[str, TaskSpec] = {}
    _olmes_inferred(common, out)
    found: dict[tuple[str, str], dict[str, str]] = {}
    for c in sorted(common):
        if c.startswith("eval/downstream"):
            continue
        m = _SLASH.match(c)
        key, kind = ((m.group(1) or "", m.group(2)), m.group(3)) if m else (None, None)
        if m is None and (m := _FLAT.match(c)):
            key, kind = ("", m.group(1)), m.group(2)
        if key is not None:
            found.setdefault(key, {}).setdefault(kind, c)
    for (prefix, task), kinds in found.items():
        acc = next((kinds[k] for k in ACC_KINDS if k in kinds), None)
        if acc is None:
            continue
        loss = next((kinds[k] for k in LOSS_KINDS if k in kinds), None)
        name = task if task not in out else f"{prefix.replace('/', '_')}_{task}".strip("_")
        kind = next(k for k in ACC_KINDS if kinds.get(k) == acc)
        out[name] = TaskSpec(name, ((acc, 1.0),), ((loss, 1.0),) if loss else (),
                             known_chance(task), kind)
    return out


def describe(spec: TaskSpec, builtin: bool) -> str:
    """One line of the printed mapping."""
    def cols(c):
        return " + ".join(f"{w:g}*{n}" if len(c) > 1 else n for n, w in c) if c else "none"
    chance = ("unknown (declare `chance:` in --task-spec)" if spec.chance is None
              else f"{spec.chance:.3g}")
    return (f"  {spec.name}{' (built in)' if builtin else ''}: accuracy {cols(spec.accuracy)}; "
            f"loss {cols(spec.loss)}; chance {chance}")


def ladder_tasks(spec: str, runs, task_spec=None, say=lambda m: None) -> dict[str, TaskSpec]:
    """The tasks to predict. ``spec``: 'auto' (the declared tasks; else the paper's 8 where every
    run has their columns; else those inferred from the columns, printed), a set ('paper',
    'all', 'corpus', a declared one) or a comma list of names, resolved declared first, then
    inferred from this ladder's columns, then built in."""
    declared, sets = read_task_spec(task_spec) if task_spec else ({}, {})
    has = lambda t: all(all(r.has(c) for r in runs) for c, _ in t.accuracy)  # noqa: E731
    if spec == "auto" and declared:
        return dict(declared)
    if spec == "auto" and runs and all(has(t) for t in PAPER_TASKS.values()):
        return dict(PAPER_TASKS)
    inferred = infer_tasks(runs)
    if spec == "auto":
        if not inferred:
            raise TaskSpecError("no task columns recognised in the runs (accuracy columns like "
                                "eval/downstream/<task>_..._len_norm, <task>/acc_norm or <task>_acc); "
                                "declare the tasks with --task-spec FILE")
        builtins = builtin_tasks()
        say("tasks inferred from the runs' columns (declare them with --task-spec FILE to change "
            "this):\n" + "\n".join(describe(t, builtins.get(n) == t) for n, t in inferred.items()))
        return inferred
    return resolve_tasks(spec, {**inferred, **declared}, sets)
