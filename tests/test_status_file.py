"""The run's outcome file and the one retry policy both backends act on: the trainer writes
completed / preempted / diverged / bad_input / crashed, the local backend and the SLURM batch
script (its bash, run here) decide the same next action from it."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ladder.exit_codes import (BAD_INPUT, COMPLETED, CRASHED, DIVERGED, DONE, EXIT_BAD_INPUT,
                               EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, GIVE_UP, OUTCOME_EXIT,
                               PARENT_FAILED, PREEMPTED, REQUEUE, RETRY, RUNNING, WAITING,
                               next_action)
from ladder.sweep.launcher import Job
from ladder.sweep.local import run_local, visible_devices
from ladder.sweep.slurm_script import action_function
from ladder.train.status import STATUS_FILE, clear_status, read_status, write_status

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = [None, RUNNING, *OUTCOME_EXIT]  # every outcome a trainer writes
CODES = [EXIT_OK, 1, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PREEMPTED, 137]


def test_policy():
    assert next_action(COMPLETED, 0) == DONE
    assert next_action(PREEMPTED, 1) == REQUEUE  # accelerate launch turned the worker's 75 into 1
    assert next_action(BAD_INPUT, 1) == GIVE_UP and next_action(DIVERGED, 1) == GIVE_UP
    assert next_action(RUNNING, 137) == RETRY  # killed hard: the status was never finished
    assert next_action(None, EXIT_BAD_INPUT) == GIVE_UP and next_action(None, 75) == REQUEUE
    assert next_action(None, 0) == DONE and next_action(None, 1) == RETRY
    # a branch whose parent has not saved its branch point waits; one whose parent failed, never
    assert next_action(WAITING, 75) == REQUEUE and next_action(PARENT_FAILED, 2) == GIVE_UP


def test_slurm_script_decides_like_the_local_backend():
    script = action_function() + "\nfor c in " + " ".join(
        f"'{o or ''}:{rc}'" for o in OUTCOMES for rc in CODES) + \
        '; do echo "$(ladder_action "${c%%:*}" "${c##*:}")"; done\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    expected = [next_action(o, rc) for o in OUTCOMES for rc in CODES]
    assert out.splitlines() == expected


def test_status_file_is_one_json_line_and_cleared_before_an_attempt(tmp_path):
    write_status(tmp_path, PREEMPTED, step=12, total_steps=40, message="signal\nreceived")
    text = (tmp_path / STATUS_FILE).read_text()
    assert text.count("\n") == 1
    rec = read_status(tmp_path)
    assert rec["outcome"] == PREEMPTED and rec["exit_code"] == EXIT_PREEMPTED and rec["step"] == 12
    assert rec["message"] == "signal received"
    clear_status(tmp_path)
    assert read_status(tmp_path) is None and (tmp_path / "status.prev.json").exists()
    with pytest.raises(ValueError):
        write_status(tmp_path, "exploded")


# ---------------------------------------------------------------------------- the trainer

RECIPE = {
    "name": "status-test",
    "model": {"sizes": ["tiny-9k"], "tokenizer_vocab_size": 300},
    "data": {"source": "pystdlib", "max_bytes": 300_000, "validation_tokens": 1024},
    "multipliers": [1.0],
    "train": {"seq_len": 32, "batch_tokens": 256, "micro_batch_size": 8, "cpu_threads": 1},
    "evaluation": {"count": 4, "early": 0, "batch_size": 16},
    "checkpoint": {"interval": 5, "keep_last": 2},
    "tracking": {"log_interval": 1},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "status.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


def _args(recipe_file, out, cache, *overrides):
    return argparse.Namespace(recipe=str(recipe_file), size=None, multiplier=None, seed=None,
                              out=str(out), cache=str(cache), no_progress=True, overrides=list(overrides))


def test_trainer_writes_each_outcome(recipe_file, cache, tmp_path, monkeypatch):
    from ladder.cli import train as cli_train
    from ladder.train import loop

    assert cli_train.run(_args(recipe_file, tmp_path / "ok", cache)) == EXIT_OK
    rec = read_status(tmp_path / "ok")
    assert rec["outcome"] == COMPLETED and rec["step"] == rec["total_steps"] > 0

    assert cli_train.run(_args(recipe_file, tmp_path / "bad", cache, "train.lr=hot")) == EXIT_BAD_INPUT
    rec = read_status(tmp_path / "bad")
    assert rec["outcome"] == BAD_INPUT and "train.lr" in rec["message"]

    real = loop._train_step
    monkeypatch.setattr(loop, "_train_step", lambda *a, **k: (real(*a, **k)[0] * float("nan"), 0.0))
    assert cli_train.run(_args(recipe_file, tmp_path / "nan", cache)) == EXIT_DIVERGED
    assert read_status(tmp_path / "nan")["outcome"] == DIVERGED

    def boom(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(loop, "_train_step", boom)
    with pytest.raises(RuntimeError):
        cli_train.run(_args(recipe_file, tmp_path / "crash", cache))
    rec = read_status(tmp_path / "crash")
    assert rec["outcome"] == CRASHED and "illegal memory access" in rec["message"]


@pytest.mark.slow
def test_sigterm_writes_preempted(recipe_file, cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ladder", "train", str(recipe_file), "--out", str(out),
           "--no-progress", "--cache", str(cache), "multipliers=[8]",
           "data.max_epochs=12"]  # a long run on the small corpus: time to be signalled
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (read_status(out) or {}).get("outcome") == RUNNING and (out / "checkpoints").is_dir():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == EXIT_PREEMPTED, proc.stdout.read()
    rec = read_status(out)
    assert rec["outcome"] == PREEMPTED and 0 < rec["step"] < rec["total_steps"]


# ---------------------------------------------------------------------------- local backend

FAKE = r'''
import json, os, sys
run, plan = sys.argv[1], sys.argv[2:]
os.makedirs(run, exist_ok=True)
n = len(open(os.path.join(run, "attempts")).read()) if os.path.exists(os.path.join(run, "attempts")) else 0
open(os.path.join(run, "attempts"), "a").write("x")
with open(os.path.join(run, "env"), "a") as f:
    f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "-") + "\n")
outcome, rc = plan[min(n, len(plan) - 1)].split(":")
if outcome:
    open(os.path.join(run, "status.json"), "w").write(json.dumps({"outcome": outcome}) + "\n")
sys.exit(int(rc))
'''


def test_local_backend_acts_on_the_status_file(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)

    def job(name, *plan):
        return Job(name, (sys.executable, str(fake), str(tmp_path / name), *plan), tmp_path / name)

    jobs = [job("bad", "bad_input:1"), job("diverged", "diverged:1"),
            job("preempted", "preempted:1", "preempted:1", "completed:0"),
            job("crash", ":1"), job("killed", "running:137", "completed:0")]
    outcomes = {o.name: o for o in run_local(jobs, tmp_path / "logs", parallel=2, max_retries=2,
                                             echo=lambda m: None, n_gpus=4)}
    attempts = {n: len((tmp_path / n / "attempts").read_text()) for n in outcomes}
    assert attempts == {"bad": 1, "diverged": 1, "preempted": 3, "crash": 3, "killed": 2}
    assert {n for n, o in outcomes.items() if o.ok} == {"preempted", "killed"}
    # two rungs side by side on 4 GPUs: two each, never all on cuda:0
    seen = {line for n in outcomes for line in (tmp_path / n / "env").read_text().split()}
    assert seen <= {"0,1", "2,3"} and len(seen) == 2


def test_visible_devices():
    assert visible_devices(8, 2) == ["0,1,2,3", "4,5,6,7"]
    assert visible_devices(2, 4) == ["0", "1", "0", "1"]  # more rungs than GPUs: shared
    assert visible_devices(0, 2) == [None, None]
