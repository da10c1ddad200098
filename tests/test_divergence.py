"""A diverging loss is a failure (exit 3, status diverged, last good checkpoint kept) and the rule
never fires on the tiny recipes (slow); a stop signal during start-up exits 75 with one line;
bench_checkpoint's smoke mode. docs/reliability.md, "Integrity" (10)."""

import os
import signal
from pathlib import Path

import pytest

from ladder.exit_codes import DIVERGED, EXIT_DIVERGED, EXIT_PREEMPTED, PREEMPTED
from ladder.train import checkpoint as ckpt
from ladder.train.status import read_status
from tests.test_faults import cache, recipe_file  # noqa: F401 (fixtures)
from tests.test_integrity import cli_args


# ---------------------------------------------------------------------------- divergence, signals


def test_a_finite_loss_far_above_its_trend_is_divergence(tmp_path, recipe_file, cache, monkeypatch, capsys):
    from ladder.cli import train as cli_train
    from ladder.train import loop

    real, n = loop._train_step, {"steps": 0}

    def spiking(*a, **kw):
        loss, gnorm = real(*a, **kw)
        n["steps"] += 1
        return (loss * 1e3 if n["steps"] >= 23 else loss), gnorm

    monkeypatch.setattr(loop, "_train_step", spiking)
    out = tmp_path / "run"
    assert cli_train.run(cli_args(recipe_file, out, cache)) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "over 3x the median of the previous 50 steps" in err and "at step 23" in err
    status = read_status(out)
    assert status["outcome"] == DIVERGED and status["step"] == 23
    assert ckpt.latest_resumable(out).step < 23 and ckpt.checkpoint_problem(ckpt.latest_resumable(out)) is None


def _worst_ratio(recipe, out, cache, monkeypatch) -> tuple[float, int]:
    """Train ``recipe``'s first rung, recording each step's loss over the median the rule
    compares it with: (the worst ratio, steps judged)."""
    from ladder.train import divergence, loop

    ratios, real = [], divergence.DivergenceMonitor.check

    def recording(self, step, value):
        ratios.append(self.ratio(value))
        return real(self, step, value)

    monkeypatch.setattr(divergence.DivergenceMonitor, "check", recording)
    assert loop.train(recipe, out=out, cache=cache, progress=False).status == "completed"
    judged = [r for r in ratios if r is not None]
    print(f"{recipe.model.sizes[0]}: worst loss / running median {max(judged):.3f} over {len(judged)} steps")
    return max(judged), len(judged)


@pytest.mark.slow
def test_the_divergence_rule_never_fires_on_a_healthy_tiny_run(tmp_path, cache, monkeypatch):
    """The whole tiny-9k rung of tests/test_status_file.py: every step after the first 20 judged."""
    from ladder.recipe import from_dict
    from ladder.train import divergence
    from tests.test_status_file import RECIPE

    recipe = from_dict({**RECIPE, "checkpoint": {"interval": None, "keep_last": 1}})
    worst, judged = _worst_ratio(recipe, tmp_path / "run", cache, monkeypatch)
    assert judged > 300 and worst < divergence.SPIKE_FACTOR / 2


@pytest.mark.slow
@pytest.mark.parametrize("size", ["tiny-9k", "tiny-25k", "tiny-43k"])
def test_the_divergence_rule_never_fires_on_the_tiny_cpu_recipe(tmp_path, size, monkeypatch):
    """recipes/tiny-cpu.yaml's rungs at 1xC (the corpus task off: it does not change training)."""
    from ladder.recipe import load_recipe
    from ladder.train import divergence

    recipe = load_recipe(Path(__file__).parents[1] / "recipes/tiny-cpu.yaml",
                         [f"model.sizes=[{size}]", "evaluation.tasks=null", "targets=[]"])
    worst, judged = _worst_ratio(recipe, tmp_path / "run", tmp_path / "cache", monkeypatch)
    assert judged > 100 and worst < divergence.SPIKE_FACTOR / 2


def test_a_signal_during_start_up_exits_75(tmp_path, recipe_file, cache, monkeypatch, capsys):
    from ladder.cli import train as cli_train
    from ladder.train import setup

    real, before = setup.build_model, signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(setup, "build_model", lambda plan: os.kill(os.getpid(), signal.SIGTERM) or real(plan))
    out = tmp_path / "run"
    assert cli_train.run(cli_args(recipe_file, out, cache)) == EXIT_PREEMPTED
    err = capsys.readouterr().err
    assert "SIGTERM during start-up" in err and "Traceback" not in err
    assert read_status(out)["outcome"] == PREEMPTED
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_bench_checkpoint_smoke(capsys):
    """tests/benchmarks/bench_checkpoint.py runs (its figures: docs/reliability.md)."""
    import importlib.util

    path = Path(__file__).parent / "benchmarks" / "bench_checkpoint.py"
    spec = importlib.util.spec_from_file_location("bench_checkpoint", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--smoke"])
    out = capsys.readouterr().out
    assert "ms with digests" in out and "ms with sizes only" in out


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_sigterm_during_start_up_through_the_cli_exits_75(tmp_path, recipe_file, cache, delay):
    """The real `ladder train`: SIGTERM once it has parsed its arguments, while it imports torch (1.5 s) or builds the run (4 s)."""
    import subprocess
    import sys
    import time

    from tests.test_faults import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "ladder", "train", str(recipe_file), "--out",
                             str(tmp_path / "run"), "--no-progress", "--cache", str(cache)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and ("SIGTERM during start-up" in err or "preemption signal" in out), err[-2000:]
