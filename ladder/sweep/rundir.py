"""What a run directory says about its run, independent of any scheduler: both the local backend
and SLURM decide from it what to (re)launch, and `ladder status` shows it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.files import finite_or_none
from analysis.runlog import METRICS_JSONL, RUN_JSON, TOKENS, TRAIN_LOSS, RunLogError, read_metrics_jsonl

DONE_MARKER = "DONE"


@dataclass
class RunState:
    """What a run directory says about its run, independent of any scheduler."""

    state: str  # "new" (nothing logged), "partial" (logged, not finished), "done"
    tokens: float | None = None  # of the last evaluation
    target_tokens: float | None = None
    loss: float | None = None  # last logged train/CrossEntropyLoss
    evals: int = 0
    note: str = ""

    @property
    def done(self) -> bool:
        return self.state == "done"


def run_state(run_dir: str | os.PathLike | None) -> RunState:
    """Done = a ``DONE`` marker, or the last metrics row reached ``target_tokens`` from run.json
    (within half a batch, since step counts are rounded). Never raises on a damaged directory:
    status must work while runs are being written; the problem goes into ``note``."""
    if run_dir is None:
        return RunState("new", note="no run directory")
    d = Path(run_dir)
    meta: dict[str, Any] = {}
    note = ""
    if (d / RUN_JSON).exists():
        try:
            meta = json.loads((d / RUN_JSON).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            note = f"{d / RUN_JSON}: {e}"
        if not isinstance(meta, dict):
            meta, note = {}, f"{d / RUN_JSON}: not a JSON object"
    try:
        rows = read_metrics_jsonl(d / METRICS_JSONL)
    except (OSError, RunLogError) as e:
        rows, note = [], str(e)
    target = meta.get("target_tokens")
    target = float(target) if isinstance(target, (int, float)) else None
    tokens = finite_or_none(rows[-1].get(TOKENS)) if rows else None
    loss = next((finite_or_none(r[TRAIN_LOSS]) for r in reversed(rows)
                 if finite_or_none(r.get(TRAIN_LOSS)) is not None), None)
    slack = 0.5 * float(meta.get("batch_tokens") or 0)
    done = (d / DONE_MARKER).exists() or (
        tokens is not None and target is not None and tokens >= target - slack)
    state = "done" if done else "partial" if rows else "new"
    return RunState(state, tokens, target, loss, len(rows), note)
