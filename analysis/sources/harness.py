"""lm-evaluation-harness output, the most common evaluation format outside OLMo: a results JSON
(``results_<date>.json``, or ``results.json`` from older versions) per checkpoint, each holding
``results: {task: {"acc,none": ..., "acc_norm,none": ...}}`` and the model it evaluated
(``config.model_args``: ``pretrained=ORG/NAME,revision=step143000``).

Each file is one evaluation of one run: the run is the model without its revision, the
checkpoint's step comes from the revision (``step143000``) or a path component (``step143000/``,
``global_step143000``, ``checkpoint-143000``); a run evaluated once needs no step. Metrics become
columns ``lm_eval/<task>/<metric>`` (a filter other than ``none`` is kept: ``exact_match,flexible``).
N and tokens are never in these files: they come from ``--runs-table`` (N, and tokens per step or
the final tokens) or ``--tokens-per-step``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from analysis.columns import column_from
from analysis.runlog import RunLog, RunLogError
from analysis.sources.runs_table import RunInfo
from analysis.sources.table import runs_from_columns

PREFIX = "lm_eval/"
RESULTS_GLOB = "results*.json"
_STEP = re.compile(r"^(?:.*[-_=])?(?:global_)?step[-_]?(\d+)$|^checkpoint-(\d+)$", re.I)


def is_harness_dir(path: Path) -> bool:
    return path.is_dir() and not (path / "run.json").exists() and next(
        path.rglob(RESULTS_GLOB), None) is not None


def _step_of(part: str) -> int | None:
    m = _STEP.match(part.strip())
    return int(m.group(1) or m.group(2)) if m else None


def _model_args(doc: dict) -> dict[str, str]:
    args = (doc.get("config") or {}).get("model_args") if isinstance(doc.get("config"), dict) else None
    if isinstance(args, dict):
        return {str(k): str(v) for k, v in args.items()}
    if isinstance(args, str):
        return dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    return {}


def _identity(doc: dict, file: Path, root: Path) -> tuple[str, int | None]:
    """(run name, step) of one results file."""
    args = _model_args(doc)
    model = args.get("pretrained") or args.get("model") or args.get("path") or doc.get("model_name") or ""
    step = _step_of(args.get("revision", "")) if args.get("revision") else None
    model_parts = [p for p in str(model).replace("\\", "/").split("/") if p]
    file_parts = list(file.parent.relative_to(root).parts) if file.parent != root else []
    for part in reversed(model_parts + file_parts):
        if step is None and (s := _step_of(part)) is not None:
            step = s
    names = [p for p in model_parts if _step_of(p) is None] or \
            [p.split("__")[-1] for p in file_parts if _step_of(p) is None] or [root.name]
    return names[-1], step


def _metrics(doc: dict, file: Path) -> dict[str, float]:
    res = doc.get("results")
    if not isinstance(res, dict) or not res:
        raise RunLogError(f"{file}: not lm-evaluation-harness output (no 'results' object with tasks)")
    out = {}
    for task, vals in res.items():
        if not isinstance(vals, dict):
            raise RunLogError(f"{file}: results['{task}'] is not an object of metrics")
        for key, v in vals.items():
            metric, _, filt = str(key).partition(",")
            if metric == "alias" or metric.endswith("_stderr") or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[f"{PREFIX}{task}/{metric}" + (f",{filt}" if filt and filt != "none" else "")] = float(v)
    if not out:
        raise RunLogError(f"{file}: no numeric metric in its results")
    return out


def read_harness_dir(root: Path, runs_info: dict[str, RunInfo] | None = None,
                     tokens_per_step: float | None = None, say=lambda m: None) -> list[RunLog]:
    """Every run evaluated under ``root`` (searched recursively)."""
    evals: dict[tuple[str, int | None], tuple[dict, Path]] = {}
    files = sorted(root.rglob(RESULTS_GLOB))
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunLogError(f"{f}: cannot read as JSON ({' '.join(str(e).split())})") from None
        if not isinstance(doc, dict):
            raise RunLogError(f"{f}: not lm-evaluation-harness output (expected a JSON object)")
        key, metrics = _identity(doc, f, root), _metrics(doc, f)
        if key in evals and key[1] is None and set(metrics) & set(evals[key][0]):
            raise RunLogError(f"{root}: run '{key[0]}' has several results files of the same tasks "
                              f"({evals[key][1].name}, {f.name}) that do not name their checkpoint "
                              f"(revision=stepN, or a stepN/ directory)")
        if key in evals:  # tasks evaluated in separate calls: one evaluation
            old, src = evals[key]
            clash = [k for k in metrics if k in old and old[k] != metrics[k]]
            if clash:
                raise RunLogError(f"{f}: {clash[0]} = {metrics[clash[0]]:g} for run '{key[0]}' at step "
                                  f"{key[1]}, but {src} has {old[clash[0]]:g}")
            old.update(metrics)
        else:
            evals[key] = (dict(metrics), f)
    for run in dict.fromkeys(r for r, _ in evals):
        steps = [s for r, s in evals if r == run]
        if None in steps and len(steps) > 1:
            raise RunLogError(f"{root}: run '{run}' has {len(steps)} results files but not every one "
                              f"names its checkpoint (revision=stepN, or a stepN/ directory)")
    rows = list(evals.items())
    names = list(dict.fromkeys(k for _, (m, _) in rows for k in m))
    cols = {"run": column_from([r for (r, _), _ in rows]),
            "step": np.array([np.nan if s is None else float(s) for (_, s), _ in rows])}
    cols.update({k: column_from([m.get(k) for _, (m, _) in rows]) for k in names})
    runs, said = runs_from_columns(root, cols, runs_info, tokens_per_step)
    say(f"{root}: lm-evaluation-harness results, {len(files)} file(s) -> {len(runs)} run(s) ("
        + ", ".join(f"{r.name}: {r.n_evals} evaluation(s)" for r in runs[:6])
        + (", ..." if len(runs) > 6 else "") + f"); {said}; metrics as {PREFIX}<task>/<metric>")
    return runs
