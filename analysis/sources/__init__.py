"""Every input format a lab's ladder comes in, read into run logs (the analysis's one input
contract, ``analysis.runlog``):

* run directories (``run.json`` + ``metrics.jsonl``) and OLMo-ladder W&B CSV exports, one run each;
* one table for the whole ladder, CSV or parquet, wide or long (``analysis.sources.table``);
* lm-evaluation-harness output directories, a results JSON per checkpoint
  (``analysis.sources.harness``);
and N and tokens per run from a runs table where an input lacks them
(``analysis.sources.runs_table``), never guessed. Each reader says what it took from where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from analysis.runlog import RunLog, RunLogError, read_run
from analysis.sources.harness import is_harness_dir, read_harness_dir
from analysis.sources.runs_table import RunInfo, read_runs_table
from analysis.sources.table import is_ladder_table, read_ladder_table


def read_ladder(paths: Iterable[str | os.PathLike], *, runs_table=None,
                tokens_per_step: float | None = None, say=lambda m: None) -> list[RunLog]:
    """The runs of every input path (each path: one run, or a table or results directory of
    many); ``runs_table``: a file of N (and tokens per step or final tokens) per run."""
    info: dict[str, RunInfo] = read_runs_table(runs_table) if runs_table else {}
    runs: list[RunLog] = []
    for p in map(Path, paths):
        if p.is_file() and is_ladder_table(p):
            runs += read_ladder_table(p, info, tokens_per_step, say)
        elif is_harness_dir(p):
            runs += read_harness_dir(p, info, tokens_per_step, say)
        else:
            run = read_run(p, tokens_per_step)
            if run.meta.n_params is None and run.name in info:
                run.meta.n_params = int(round(info[run.name].n))
            runs.append(run)
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RunLogError(f"duplicate run names: {', '.join(dup)}")
    if info:
        unused = sorted(set(info) - set(names))
        if unused:
            say(f"--runs-table: {len(unused)} run(s) not among the inputs ({', '.join(unused[:5])})")
    return runs
