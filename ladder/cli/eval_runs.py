"""`ladder eval-runs SWEEP_OR_RUN_DIR --tasks TASKS`: score the kept checkpoints of finished runs
offline and merge the scores into each run's metrics.jsonl (the row of the checkpoint's step), so
a ladder trained without in-loop tasks (or with other tasks) can still be fitted and predicted.

Rows are rewritten atomically; columns already present are kept unless --overwrite. A run whose
status says it is still running is refused (two writers would corrupt its log)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="SWEEP_OR_RUN_DIR", help="a sweep directory or one run directory")
    p.add_argument("--tasks", required=True, help="'paper', 'all', a task name or a comma list")
    p.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overwrite", action="store_true", help="replace task columns already logged")


def run_dirs(path: Path) -> list[Path]:
    if (path / "run.json").is_file():
        return [path]
    found = sorted(p.parent for p in (path / "runs").glob("*/run.json"))
    if not found:
        raise ValueError(f"{path}: neither a run directory (run.json) nor a sweep directory (runs/*/run.json)")
    return found


def evaluate_run(run_dir: Path, tasks: str, *, limit: int | None, batch_size: int, overwrite: bool,
                 echo=print) -> int:
    """Score every checkpoint holding weights; returns how many rows were updated."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.files import atomic_write_text
    from analysis.rowlog import format_row
    from analysis.runlog import METRICS_JSONL, read_metrics_jsonl
    from ladder.eval.evaluator import build_task_evaluator
    from ladder.exit_codes import RUNNING
    from ladder.train import checkpoint as ckpt
    from ladder.train.status import read_status

    if (read_status(run_dir) or {}).get("outcome") == RUNNING:
        raise ValueError(f"{run_dir}: its status.json says the run is still running; evaluate it when it stops")
    rows = read_metrics_jsonl(run_dir / METRICS_JSONL)
    by_step = {int(r["step"]): r for r in rows}
    seed = json.loads((run_dir / "run.json").read_text()).get("seed", 0)
    evaluator, updated = None, 0
    for c in ckpt.list_checkpoints(run_dir):
        row = by_step.get(c.step)
        if row is None:
            continue
        problem = ckpt.checkpoint_problem(c)  # digests: a damaged byte is never evaluated
        if problem:
            echo(f"{run_dir.name} step {c.step}: skipped, the checkpoint is damaged ({problem})")
            continue
        tok = AutoTokenizer.from_pretrained(c.path)
        if evaluator is None:  # requests tokenised once per run: the tokenizer is the run's
            evaluator = build_task_evaluator(tasks, tok, limit=limit, batch_size=batch_size,
                                             corpus_val_docs=None, seed=seed)
        model = AutoModelForCausalLM.from_pretrained(c.path, torch_dtype=torch.float32)
        scores = evaluator(model)
        new = {k: v for k, v in scores.items() if overwrite or k not in row}
        row.update(new)
        updated += bool(new)
        echo(f"{run_dir.name} step {c.step}: {len(new)} task columns")
    atomic_write_text(run_dir / METRICS_JSONL, "".join(format_row(r) for r in rows))
    return updated


def run(args: argparse.Namespace) -> int:
    from ladder.eval.tasks import resolve_task_groups

    try:
        resolve_task_groups(args.tasks)
        dirs = run_dirs(Path(args.path))
        total = 0
        for d in dirs:
            total += evaluate_run(d, args.tasks, limit=args.limit, batch_size=args.batch_size,
                                  overwrite=args.overwrite)
    except (KeyError, ValueError, OSError) as e:
        print(f"ladder eval-runs: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{total} evaluation rows updated in {len(dirs)} run(s)")
    return EXIT_OK
