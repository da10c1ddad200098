"""`ladder eval-runs`: a run trained without in-loop tasks gets its kept checkpoints scored
offline and the task columns merged into the rows of their steps."""

import os
import subprocess
import sys
from pathlib import Path

from analysis.runlog import read_metrics_jsonl
from ladder.recipe import from_dict
from ladder.train import checkpoint as ckpt
from ladder.train.status import write_status

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {
    "name": "eval-runs-test",
    "model": {"sizes": ["tiny-9k"], "tokenizer_vocab_size": 300},
    "data": {"source": "pystdlib", "max_bytes": 300_000, "validation_tokens": 1024},
    "multipliers": [0.5],
    "train": {"seq_len": 32, "batch_tokens": 256, "micro_batch_size": 8, "cpu_threads": 1},
    "evaluation": {"count": 3, "early": 0, "batch_size": 16},
    "checkpoint": {"keep_last": 1, "keep_eval_weights": True},
}


def test_eval_runs_merges_task_scores_into_each_evaluated_row(tmp_path):
    from ladder.train.loop import train

    sweep = tmp_path / "sweep"
    run = sweep / "runs" / "tiny-9k-0.5xC"
    train(from_dict(RECIPE), out=run, cache=tmp_path / "cache", progress=False)
    steps = [c.step for c in ckpt.list_checkpoints(run)]
    assert len(steps) == 3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ladder", "eval-runs", str(sweep), "--tasks", "arc_easy", "--limit", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {int(row["step"]): row for row in read_metrics_jsonl(run / "metrics.jsonl")}
    col = "eval/downstream/arc_easy_test_rc_5shot_len_norm"
    scored = [s for s, row in rows.items() if col in row]
    assert scored == steps and all(0 <= rows[s][col] <= 1 for s in scored)

    write_status(run, "running")  # another writer: refused, log untouched
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and "still running" in r.stderr
