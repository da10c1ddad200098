"""End-to-end training: logs, checkpoints, exact resume after SIGKILL/SIGTERM/crashed saves,
NaN handling, task-evaluator hook and bad input. Tiny model, ~80 steps per run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.runlog import read_run
from ladder.exit_codes import EXIT_DIVERGED
from ladder.train import checkpoint as ckpt
from ladder.recipe import from_dict, load_recipe

ROOT = Path(__file__).resolve().parents[1]
VAL = "eval/pystdlib-validation/CrossEntropyLoss"
RECIPE = {
    "name": "test-ladder",
    "model": {"sizes": ["tiny-25k", "tiny-43k"], "tokenizer_vocab_size": 512},
    "data": {"source": "pystdlib", "max_bytes": 1_500_000, "validation_tokens": 4096},
    "multipliers": [0.25, 0.5],
    "train": {"seq_len": 64, "batch_tokens": 1024, "micro_batch_size": 8, "cpu_threads": 1},
    "evaluation": {"count": 10, "early": 2, "batch_size": 32},
    "checkpoint": {"keep_last": 2, "keep_eval_weights": True},
    "tracking": {"log_interval": 5},
}


PINNED_PEAK = "2e10"  # FLOP/s per process, the same for every run here: MFUs compare like with like


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "test.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, recipe_file, cache):
    """One uninterrupted run, the reference for every resume test."""
    from ladder.train.loop import train

    out = tmp_path_factory.mktemp("baseline") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LADDER_PEAK_FLOPS", PINNED_PEAK)
        result = train(load_recipe(recipe_file), out=out, cache=cache, progress=False)
    return result, read_run(out)


def cli(recipe_file, out, cache, *extra, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_CACHE": str(cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ladder", "train", str(recipe_file), "--out", str(out), "--no-progress", *extra]
    if wait:
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(out, min_step, proc, timeout=120):
    t_end = time.time() + timeout
    while time.time() < t_end and proc.poll() is None:
        c = ckpt.latest_resumable(out)
        if c is not None and c.step >= min_step:
            return c
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {min_step} appeared (rc={proc.poll()})")


def assert_same_as_baseline(out, baseline):
    _, ref = baseline
    run = read_run(out)
    assert list(run.evals["step"]) == list(ref.evals["step"])  # every evaluation exactly once
    for col in ("train/CrossEntropyLoss", VAL):
        assert abs(run.evals[col].iloc[-1] - ref.evals[col].iloc[-1]) < 1e-5, col
        assert max(abs(run.evals[col] - ref.evals[col])) < 1e-5, col


def test_end_to_end_run(baseline, recipe_file, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, run = baseline
    assert result.status == "completed" and result.step == result.total_steps
    meta = json.loads((result.run_dir / "run.json").read_text())
    n = meta["n_params"]
    assert meta["name"] == "tiny-25k-0.25xC" and meta["size"] == "tiny-25k" and meta["status"] == "completed"
    assert meta["target_tokens"] == round(0.25 * 20 * n) and meta["multiplier"] == 0.25
    assert meta["batch_tokens"] == meta["tokens_per_step"] == 1024 and meta["seed"] == 0
    assert meta["n_nonembed"] == n - 512 * 16 and meta["total_steps"] == result.total_steps
    for key in ("lr", "recipe_hash", "corpus_hash", "tokenizer_hash", "versions", "recipe"):
        assert meta[key], key
    ev = run.evals
    assert len(ev) >= 10 and ev["step"].iloc[-1] == result.total_steps
    assert list(ev["tokens"]) == [s * 1024 for s in ev["step"]]
    assert ev[VAL].iloc[-1] < ev[VAL].iloc[0] - 0.5  # validation loss falls
    assert ev["eval/pystdlib-validation/bpb"].iloc[-1] < ev["eval/pystdlib-validation/bpb"].iloc[0]
    assert (ev["optim/learning_rate_group0"] > 0).all() and "throughput/tokens_per_second" in ev
    # Checkpoints: HF-loadable, and the final one reproduces the logged validation loss.
    final = result.run_dir / "checkpoints" / ckpt.step_dir_name(result.total_steps)
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.eos_token == "<|endoftext|>" and model.config.vocab_size == 512
    kept = ckpt.list_checkpoints(result.run_dir)
    assert [c.step for c in kept if c.has_state] == [c.step for c in kept][-2:]  # keep_last: 2
    assert {c.step for c in kept} == set(ev["step"])  # eval-step weights kept
    # Re-running a finished run changes nothing.
    again = cli(recipe_file, result.run_dir, cache)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert list(read_run(result.run_dir).evals["step"]) == list(ev["step"])


def test_sigkill_then_rerun_resumes_exactly(baseline, recipe_file, cache, tmp_path):
    out = tmp_path / "run"
    proc = cli(recipe_file, out, cache, wait=False)
    seen = wait_for_checkpoint(out, 16, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    total = baseline[0].total_steps
    assert seen.step < total
    again = cli(recipe_file, out, cache)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    assert_same_as_baseline(out, baseline)


def test_sigterm_checkpoints_and_exits_75(baseline, recipe_file, cache, tmp_path):
    out = tmp_path / "run"
    proc = cli(recipe_file, out, cache, wait=False)
    wait_for_checkpoint(out, 8, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, output
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "preempted"
    last = ckpt.latest_resumable(out)
    assert last is not None and last.step < baseline[0].total_steps
    assert "checkpoint saved at step" in output
    again = cli(recipe_file, out, cache)
    assert again.returncode == 0, again.stderr
    assert_same_as_baseline(out, baseline)


class _Crash(BaseException):
    pass


def test_kill_during_checkpoint_write_leaves_nothing_complete(baseline, recipe_file, cache, tmp_path, monkeypatch):
    from ladder.train.loop import train

    out = tmp_path / "run"
    calls = {"n": 0}
    real = ckpt.fsync_tree

    def crashing_fsync(path):
        calls["n"] += 1
        if calls["n"] == 4 and ".tmp-" in str(path):  # during the 4th save, after its files are written
            raise _Crash()
        return real(path)

    monkeypatch.setattr(ckpt, "fsync_tree", crashing_fsync)
    with pytest.raises(_Crash):
        train(load_recipe(recipe_file), out=out, cache=cache, progress=False)
    tmp_dirs = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert len(tmp_dirs) == 1 and (tmp_dirs[0] / "model.safetensors").exists()  # partial save on disk
    complete = ckpt.list_checkpoints(out)
    assert len(complete) == 3 and all(not c.path.name.startswith(".") for c in complete)
    crashed_step = int(tmp_dirs[0].name.split("step")[1])
    assert crashed_step > complete[-1].step
    assert crashed_step in set(read_run(out).evals["step"])  # its row was logged before the crash
    monkeypatch.setattr(ckpt, "fsync_tree", real)
    result = train(load_recipe(recipe_file), out=out, cache=cache, progress=False)
    assert result.status == "completed"
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_same_as_baseline(out, baseline)


def test_async_save_does_not_stall_the_next_steps(baseline, recipe_file, cache, tmp_path, monkeypatch):
    """checkpoint.async_save: a deliberately slow writer (held until three more steps ran) does not
    hold up training, and the run is identical to the synchronous baseline."""
    import threading

    from ladder.train import loop as train_mod
    from ladder.train import saver
    from ladder.train.loop import train

    events, released = [], threading.Event()
    real_step, real_write = train_mod._train_step, saver.write_snapshot

    def step(*args, **kw):
        out = real_step(*args, **kw)
        events.append("step")
        if "write-start" in events and events[events.index("write-start"):].count("step") == 3:
            released.set()
        return out

    def slow_write(snap, *args, **kw):
        # the first save at least 4 steps before the next (the next save waits for this one)
        held = snap.step >= 20 and not [e for e in events if isinstance(e, tuple)]
        events.append("write-start" if held else "other-write-start")
        if held:
            events.append(("released", released.wait(timeout=60), threading.current_thread().name))
        path = real_write(snap, *args, **kw)
        events.append("write-end")
        return path

    monkeypatch.setattr(train_mod, "_train_step", step)
    monkeypatch.setattr(saver, "write_snapshot", slow_write)
    out = tmp_path / "run"
    result = train(load_recipe(recipe_file, ["checkpoint.async_save=true"]), out=out, cache=cache, progress=False)
    assert result.status == "completed"
    (_, was_released, thread), = [e for e in events if isinstance(e, tuple)]
    assert was_released and thread != threading.main_thread().name  # steps ran while it was held
    first = events.index("write-start")
    assert events[first:events.index("write-end", first)].count("step") >= 3
    n_saves = events.count("write-start") + events.count("other-write-start")
    assert n_saves == events.count("write-end") == len(set(read_run(out).evals["step"]))  # all finished
    kept = ckpt.list_checkpoints(out)
    assert kept and all(c.manifest["async"] for c in kept)
    assert_same_as_baseline(out, baseline)


KILL_IN_BACKGROUND_WRITE = r"""
import os, sys, threading, time
from ladder.recipe import load_recipe
from ladder.train import checkpoint as ckpt
from ladder.train.loop import train

recipe, out, cache, marker = sys.argv[1:5]
real, seen = ckpt.fsync_tree, []

def hanging_fsync(path):
    if ".tmp-" in str(path):
        seen.append(path)
        if len(seen) == 2:  # the second save: files written, not yet renamed
            with open(marker, "w") as f:
                f.write(threading.current_thread().name)
            time.sleep(600)
    return real(path)

ckpt.fsync_tree = hanging_fsync
train(load_recipe(recipe, ["checkpoint.async_save=true"]), out=out, cache=cache, progress=False)
"""


def test_kill_during_background_write_keeps_the_previous_checkpoint(baseline, recipe_file, cache, tmp_path):
    """SIGKILL while the background thread writes checkpoint 2: checkpoint 1 (written in the
    background too) stays the newest intact one, and resuming from it is exact."""
    out, marker = tmp_path / "run", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_IN_BACKGROUND_WRITE, str(recipe_file), str(out),
                             str(cache), str(marker)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    t_end = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < t_end:
        time.sleep(0.02)
    proc.kill()
    output = proc.communicate()[0]
    assert marker.exists(), output[-2000:]
    assert marker.read_text() != "MainThread"
    tmp_dirs = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert len(tmp_dirs) == 1 and (tmp_dirs[0] / ckpt.MANIFEST).exists()  # all but renamed
    complete = ckpt.list_checkpoints(out)
    assert len(complete) == 1 and complete[0].manifest["async"]
    assert ckpt.latest_intact(out).step == complete[0].step < int(tmp_dirs[0].name.split("step")[1])
    again = cli(recipe_file, out, cache, "checkpoint.async_save=true")
    assert again.returncode == 0, again.stderr
    assert f"from {complete[0].path.name}" in again.stdout + again.stderr
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_same_as_baseline(out, baseline)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(recipe_file, cache, tmp_path, monkeypatch, capsys):
    import argparse

    import torch

    from ladder.train import loop as train_mod
    from ladder.cli import train as cli_train

    real_step, state = train_mod._train_step, {"n": 0}

    def poisoned(*args, **kw):
        loss, gnorm = real_step(*args, **kw)
        state["n"] += 1
        return (loss * float("nan") if state["n"] >= 30 else loss), gnorm

    monkeypatch.setattr(train_mod, "_train_step", poisoned)
    out = tmp_path / "run"
    args = argparse.Namespace(recipe=str(recipe_file), size=None, multiplier=None, seed=None, out=str(out),
                              cache=str(cache), no_progress=True, overrides=[])
    assert cli_train.run(args) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "loss is nan at step 30" in err and "last good checkpoint" in err
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"
    steps = [c.step for c in ckpt.list_checkpoints(out)]
    assert steps and max(steps) < 30
    assert ckpt.latest_resumable(out).step == max(steps)
    assert all(s < 30 for s in read_run(out).evals["step"])
    assert torch.isfinite(torch.tensor(read_run(out).evals[VAL].to_numpy())).all()


def test_task_evaluator_rows_and_wandb_offline(cache, tmp_path):
    from ladder.train.loop import train

    calls = []

    def fake_evaluator(model, accelerator=None):
        calls.append(model.training)
        return {"eval/downstream/fake_val_rc_5shot_len_norm": 0.25 + 0.01 * len(calls)}

    r = from_dict({**RECIPE, "multipliers": [0.1], "tracking": {"wandb": True, "mode": "offline"}})
    result = train(r, out=tmp_path / "run", cache=cache, task_evaluator=fake_evaluator, progress=False)
    ev = read_run(result.run_dir).evals
    col = ev["eval/downstream/fake_val_rc_5shot_len_norm"]
    assert len(calls) == len(ev) and calls == [False] * len(calls)  # evaluated in eval mode
    assert list(col) == pytest.approx([0.25 + 0.01 * (i + 1) for i in range(len(ev))])
    assert list((result.run_dir / "wandb").glob("offline-run-*"))


class _FailingOnlineAccelerator:
    """init_trackers as accelerate's: the tracker is kept even when its start raises."""

    def __init__(self):
        self.trackers, self.modes = [], []

    def init_trackers(self, project, config=None, init_kwargs=None):
        mode = init_kwargs["wandb"].get("mode", os.environ.get("WANDB_MODE"))
        self.trackers.append(mode)
        self.modes.append(list(self.trackers))
        if "online" in self.trackers:
            raise RuntimeError("Failed to get resume status: context deadline exceeded")


def test_wandb_online_failure_logs_offline_not_crash(monkeypatch, tmp_path):
    from ladder.train.tracking import start_trackers

    warned = []
    acc = _FailingOnlineAccelerator()
    monkeypatch.setenv("WANDB_MODE", "online")
    mode = start_trackers(acc, "p", {}, {"wandb": {"id": "abc"}}, tmp_path, warn=warned.append)
    assert mode == "offline" and acc.modes == [["online"], ["offline"]]
    assert len(warned) == 1 and "context deadline exceeded" in warned[0] and "wandb sync" in warned[0]
    # offline asked for and failing: a real error, not hidden
    monkeypatch.setenv("WANDB_MODE", "offline")
    acc = _FailingOnlineAccelerator()
    acc.init_trackers = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        start_trackers(acc, "p", {}, {"wandb": {}}, tmp_path, warn=warned.append)


def test_wandb_service_teardown_neither_hangs_nor_exits_the_rung(monkeypatch):
    """wandb.teardown joins a service that may retry a dead server for minutes, and calls
    sys.exit when that service ends with an error code: neither reaches the rung."""
    import threading
    import time

    import wandb

    from ladder.train.tracking import release_wandb_service

    release = threading.Event()
    monkeypatch.setattr(wandb, "teardown", lambda: release.wait(30))
    warned = []
    t0 = time.perf_counter()
    assert release_wandb_service(timeout=0.3, warn=warned.append) is False
    assert time.perf_counter() - t0 < 5 and "did not stop within 0.3 s" in warned[0]
    release.set()

    def exits():
        raise SystemExit(3)  # as wandb's _teardown does on the service's nonzero exit code

    monkeypatch.setattr(wandb, "teardown", exits)
    warned.clear()
    assert release_wandb_service(timeout=10, warn=warned.append) is True
    assert len(warned) == 1 and "SystemExit(3)" in warned[0]


@pytest.mark.slow
def test_run_with_unreachable_wandb_server_completes_offline(cache, recipe_file, tmp_path):
    """The real thing: online W&B against a closed port crashed the run after its setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), LADDER_CACHE=str(cache), HOME=str(tmp_path),
               WANDB_API_KEY="local-" + "0" * 40, WANDB_BASE_URL="http://127.0.0.1:9",
               WANDB_INIT_TIMEOUT="8", WANDB_SILENT="true")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ladder", "train", str(recipe_file), "--out", str(out),
           "--no-progress", "--size", "tiny-25k", "--multiplier", "0.25",
           "tracking.wandb=true", "tracking.mode=online"]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "W&B online failed" in r.stderr and "wandb sync" in r.stderr
    assert json.loads((out / "status.json").read_text())["outcome"] == "completed"
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1


def test_bad_input_errors(recipe_file, cache, tmp_path, capsys):
    import argparse

    from ladder.cli import train as cli_train

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**RECIPE, "train": {**RECIPE["train"], "learning_rate": 0.1}}))
    # Through the real command line (options and KEY=VALUE overrides intermixed).
    r = cli(bad, tmp_path / "a", cache, "train.lr=0.01")
    assert r.returncode == 2 and "unknown key 'train.learning_rate'" in r.stderr and str(bad) in r.stderr

    def run(*overrides, size=None):
        args = argparse.Namespace(recipe=str(recipe_file), size=size, multiplier=None, seed=None,
                                  out=str(tmp_path / "x"), cache=str(cache), no_progress=True,
                                  overrides=list(overrides))
        return cli_train.run(args), capsys.readouterr().err

    code, err = run(size="190M")
    assert code == 2 and "--size '190M' is not in" in err
    code, err = run("train.seq_len=8192", "train.batch_tokens=8192", "data.max_bytes=20000")
    assert code == 2 and "fewer than one sequence of train.seq_len=8192" in err
    code, err = run("train.lr=hot")
    assert code == 2 and "'train.lr' must be float or null" in err and str(recipe_file) in err
    code, err = run("model.vocab_size=100")
    assert code == 2 and "'model.vocab_size' (100) is smaller than the tokenizer" in err


def test_refuses_to_mix_two_runs_in_one_directory(baseline, cache):
    from ladder.train.loop import train

    run_dir = baseline[0].run_dir
    with pytest.raises(ValueError, match="holds a different run"):
        train(from_dict({**RECIPE, "train": {**RECIPE["train"], "lr": 0.001}}), out=run_dir, cache=cache,
              progress=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(baseline, recipe_file, cache, tmp_path):
    """accelerate launch with 2 CPU processes (gloo), same global batch: same loss curve."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_CACHE": str(cache), "LADDER_PEAK_FLOPS": PINNED_PEAK}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "launch/accelerate/cpu-2proc.yaml"), "--main_process_port", str(_free_port()),
           "-m", "ladder", "train", str(recipe_file), "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["num_processes"] == 2 and meta["batch_tokens"] == 1024
    assert_same_as_baseline(out, baseline)
    # MFU: the global batch's FLOPs over both processes' peaks, exactly, in every logged row (the
    # bug divided by one process's peak: twice the truth here, 8x on 8 GPUs)
    two = read_run(out)
    tps = two.column("throughput/tokens_per_second")
    assert np.allclose(two.column("throughput/mfu"), meta["flops_per_token"] * tps / (2 * float(PINNED_PEAK)),
                       rtol=1e-9, equal_nan=True)
    # and physically: never above one process's MFU (the bug's factor 2), never above 1. Not
    # "equal": at this size each process's optimizer step, clipping and DDP hooks do not split,
    # so two processes reach about half to two thirds of one's MFU (0.53 and 0.66 measured)
    mfu = two.evals["throughput/mfu"].median(), baseline[1].evals["throughput/mfu"].median()
    assert mfu[0] / mfu[1] < 1.25 and max(mfu) <= 1, mfu


@pytest.mark.slow
def test_compiled_run_resumes_exactly_and_tracks_eager(baseline, recipe_file, cache, tmp_path):
    """train.compile: true — checkpoints hold the plain module's weights (HF-loadable), a SIGKILLed
    compiled run resumes exactly, and the compiled curve follows the eager one."""
    from transformers import AutoModelForCausalLM

    from ladder.train.loop import train

    ref_out = tmp_path / "ref"
    ref = train(load_recipe(recipe_file, ["train.compile=true"]), out=ref_out, cache=cache, progress=False)
    assert ref.status == "completed"
    final = ref_out / "checkpoints" / ckpt.step_dir_name(ref.total_steps)
    _, info = AutoModelForCausalLM.from_pretrained(final, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    compiled = read_run(ref_out)
    eager = baseline[1]
    # Same math, other kernels: rounding differences grow over training but stay small.
    assert max(abs(compiled.evals[VAL] - eager.evals[VAL])) < 0.05
    assert abs(compiled.evals[VAL].iloc[0] - eager.evals[VAL].iloc[0]) < 1e-4

    out = tmp_path / "run"
    proc = cli(recipe_file, out, cache, "train.compile=true", wait=False)
    wait_for_checkpoint(out, 16, proc, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    again = cli(recipe_file, out, cache, "train.compile=true")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    assert_same_as_baseline(out, (ref, compiled))


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-40GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12), ("Tesla T4", None),
])
def test_gpu_peaks_match_the_part(name, peak):
    """Dense bf16 peaks per device name: a PCIe or NVL H100 is not an SXM one, an L40 is neither
    an L40S nor an L4; an unknown device has no peak (no MFU), not a guess."""
    from ladder.train.tracking import gpu_peak_flops

    assert gpu_peak_flops(name)[0] == peak


def test_built_model_has_the_planned_n():
    """Plans count N in closed form; the trainer refuses a model whose N differs."""
    import dataclasses

    from ladder.presets import model_params
    from ladder.runplan import plan_run
    from ladder.train.setup import build_model

    plan = plan_run(from_dict(RECIPE), "tiny-43k", 1.0, 0, 1024)
    assert model_params(build_model(plan)).n == plan.n_params
    off = dataclasses.replace(plan, n_params=plan.n_params + 1)
    with pytest.raises(RuntimeError, match="the plan counted"):
        build_model(off)
