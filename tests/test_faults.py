"""Fault injection: every way found to corrupt a ladder's data with exit code 0, reproduced, and
shown refused or repaired (docs/reliability.md maps guarantees to these tests). Numbers refer to
the list in docs/reliability.md. Training runs are a tiny-9k rung of ~26 steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.files import atomic_write_text, output_dir
from analysis.runlog import RunLogError, read_run
from ladder.sweep.lock import DirLock, LockHeld, read_holder

ROOT = Path(__file__).resolve().parents[1]
VAL = "eval/pystdlib-validation/CrossEntropyLoss"
RECIPE = {
    "name": "faults",
    "model": {"sizes": ["tiny-9k"], "tokenizer_vocab_size": 512},
    "data": {"source": "pystdlib", "max_bytes": 1_500_000, "validation_tokens": 2048},
    "multipliers": [0.25],
    "train": {"seq_len": 64, "batch_tokens": 1024, "micro_batch_size": 16, "cpu_threads": 1},
    "evaluation": {"count": 4, "early": 0, "batch_size": 32},
    "checkpoint": {"keep_last": 2, "keep_eval_weights": False},
    "tracking": {"log_interval": 5},
}


def ladder(*args, cache=None, timeout=600, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    if cache:
        env["LADDER_CACHE"] = str(cache)
    cmd = [sys.executable, "-m", "ladder", *map(str, args)]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **kw)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(res, *fragments):
    """Exit 2, no traceback, one error line on stderr naming what was wrong (notes such as the
    data's may come before it)."""
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], err[-2000:])
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    for f in fragments:
        assert f in errors[0], (f, err)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "faults.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


@pytest.fixture(scope="module")
def finished(tmp_path_factory, recipe_file, cache):
    """One uninterrupted run: the reference every repaired run must reproduce."""
    from ladder.recipe import load_recipe
    from ladder.train.loop import train

    out = tmp_path_factory.mktemp("finished") / "run"
    train(load_recipe(recipe_file), out=out, cache=cache, progress=False)
    return out


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def train_in_process(recipe_file, out, cache, *overrides, **kw):
    from ladder.recipe import load_recipe
    from ladder.train.loop import train

    return train(load_recipe(recipe_file, list(overrides)), out=out, cache=cache, progress=False, **kw)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_evaluations(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [r[VAL] for r in a] == [r[VAL] for r in b]  # bit-identical, not approximately


# ---------------------------------------------------------------------------- 1. one writer


def test_a_directory_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from ladder.sweep.lock import DirLock; DirLock(sys.argv[2]).acquire();"
                               "print('held', flush=True); time.sleep(60)", str(ROOT), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld, match=rf"in use by pid {holder.pid} on host "):
        DirLock(tmp_path).acquire()
    holder.kill()  # SIGKILL: no cleanup ran, the kernel drops the lock
    holder.wait()
    with DirLock(tmp_path):
        pass


def test_lock_without_flock_detects_a_stale_holder(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")  # Lustre without -o flock

    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / ".ladder.lock.excl").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead)}))
    lock = DirLock(tmp_path).acquire()  # the holder's pid is gone: taken over
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        DirLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / ".ladder.lock.excl").exists()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_sweeps_on_one_directory_and_a_killed_sweep(tmp_path, recipe_file, cache):
    """The real CLI: a second sweep is refused naming the first; SIGKILL of the sweep stops its
    trainer (which checkpoints); a rerun resumes and logs every evaluation exactly once."""
    from ladder.recipe import load_recipe
    from ladder.runplan import eval_steps

    S = tmp_path / "S"
    # 4xC: the rung must outlive the second sweep's start-up on an idle machine
    args = ("sweep", recipe_file, "--out", S, "--no-predict", "multipliers=[4]", "targets=[]")
    first = ladder(*args, cache=cache, background=True, start_new_session=True)
    try:
        _wait(lambda: read_holder(S).get("pid") == first.pid, 120,
              "the first sweep to hold the directory")
        os.kill(first.pid, signal.SIGSTOP)  # it cannot finish (and release) while the second starts
        try:
            one_line_error(ladder(*args, cache=cache), f"in use by pid {first.pid}")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        trainer = _wait(lambda: _children(first.pid), 60, "the sweep to start its trainer")[0]
        run_dir = S / "runs" / "tiny-9k-4xC"
        _wait(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").stat().st_size,
              240, "the trainer's first evaluation")
        os.kill(first.pid, signal.SIGKILL)  # no handler runs in the sweep
        _wait(lambda: not _alive(trainer), 120, "the orphaned trainer to stop")
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    res = ladder(*args, cache=cache)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recipe = load_recipe(S / "recipe.yaml")
    meta = json.loads((run_dir / "run.json").read_text())
    assert [r["step"] for r in rows(run_dir)] == eval_steps(meta["total_steps"], recipe.evaluation)
    assert "resuming" in (S / "logs" / "tiny-9k-4xC.log").read_text()


# ---------------------------------------------------------------------------- 2. recipe binding


def test_a_run_directory_is_bound_to_its_recipe(tmp_path, finished, recipe_file, cache):
    from ladder.train.binding import RunBindingError

    run = copy_run(finished, tmp_path)
    before = (run / "run.json").read_bytes()
    with pytest.raises(RunBindingError, match=r"train\.schedule: 'cosine' there, 'wsd' now"):
        train_in_process(recipe_file, run, cache, "train.schedule=wsd")
    res = ladder("train", recipe_file, "--out", run, "--no-progress", "train.seq_len=32", cache=cache)
    one_line_error(res, "train.seq_len: 64 there, 32 now", "--force-new")
    assert (run / "run.json").read_bytes() == before  # a refused run rewrites nothing
    # operational keys may change between restarts
    assert train_in_process(recipe_file, run, cache, "train.cpu_threads=2").status == "already-complete"
    result = train_in_process(recipe_file, run, cache, "train.schedule=wsd", force_new=True)
    assert result.status == "completed"
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and json.loads((moved[0] / "run.json").read_text())["schedule"] == "cosine"
    assert json.loads((run / "run.json").read_text())["schedule"] == "wsd"


# ---------------------------------------------------------------------------- 3. forked workers


def test_forked_workers_die_with_their_parent(tmp_path):
    script = ("import os, sys, time; sys.path.insert(0, sys.argv[1])\n"
              "from analysis.parallel import parallel_map\n"
              "def work(x):\n"
              "    open(os.path.join(sys.argv[2], str(os.getpid())), 'w').close()\n"
              "    time.sleep(120)\n"
              "    return b'x' * (1 << 20)  # more than a pipe holds\n"
              "parallel_map(work, [1, 2, 3], workers=3)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(tmp_path)])
    try:
        pids = _wait(lambda: [int(p.name) for p in tmp_path.iterdir()] if len(list(tmp_path.iterdir())) == 3
                     else None, 60, "three workers")
        workers = [p for p in pids if p != parent.pid]
        assert len(workers) == 2
        parent.kill()
        parent.wait()
        _wait(lambda: not any(_alive(p) for p in workers), 10, "the workers to die with their parent")
    finally:
        if parent.poll() is None:
            parent.kill()


# ---------------------------------------------------------------------------- 4. damage


def test_a_torn_last_row_is_repaired_and_its_step_evaluated_again(tmp_path, finished, recipe_file, cache):
    run = copy_run(finished, tmp_path)
    reference = rows(finished)
    data = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(data[:-40])  # the final row cut by a kill
    with pytest.raises(RunLogError, match="cut short although the run completed"):
        read_run(run)
    result = train_in_process(recipe_file, run, cache)
    assert result.status == "completed"
    same_evaluations(rows(run), reference)
    read_run(run)


def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, finished, recipe_file, cache,
                                                                  capsys):
    run = copy_run(finished, tmp_path)
    latest = sorted((run / "checkpoints").iterdir())[-1]
    with open(latest / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    result = train_in_process(recipe_file, run, cache)
    assert result.status == "completed"
    assert f"checkpoint {latest.name} is damaged" in capsys.readouterr().out
    assert (run / "checkpoints" / f"damaged-{latest.name}").is_dir()
    same_evaluations(rows(run), rows(finished))


# ---------------------------------------------------------------------------- 5. outputs as a set


def test_outputs_are_replaced_as_a_set(tmp_path):
    out = tmp_path / "pred"
    with output_dir(out) as d:
        (d / "predictions.json").write_text("old")
        (d / "step1.png").write_text("old plot")
    with pytest.raises(RuntimeError):
        with output_dir(out) as d:
            (d / "predictions.json").write_text("new")
            raise RuntimeError("killed mid-report")
    assert (out / "predictions.json").read_text() == "old" and (out / "step1.png").exists()
    kill = ("import os, sys; sys.path.insert(0, sys.argv[1])\n"
            "from analysis.files import output_dir\n"
            "with output_dir(sys.argv[2]) as d:\n"
            "    (d / 'predictions.json').write_text('new')\n"
            "    os._exit(9)\n")
    subprocess.run([sys.executable, "-c", kill, str(ROOT), str(out)])
    assert (out / "predictions.json").read_text() == "old"
    with output_dir(out) as d:  # e.g. a --no-plots rerun: the old plots go with the old set
        (d / "predictions.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".ladder-output", "predictions.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # the killed writer's temp is swept


def test_an_out_directory_holding_other_files_is_refused(tmp_path):
    from analysis.files import OutputError

    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="thesis.tex"):
        with output_dir(tmp_path):
            pass
    assert (tmp_path / "thesis.tex").read_text() == "mine"


# ---------------------------------------------------------------------------- 8. shared results


def test_status_only_reads_and_files_follow_the_umask(tmp_path, recipe_file):
    from ladder.recipe import load_recipe
    from ladder.sweep.sweepdir import open_sweep

    S = tmp_path / "S"
    open_sweep(load_recipe(recipe_file), S)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in S.iterdir()}
    res = ladder("status", S)
    assert res.returncode == 0, res.stderr
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in S.iterdir()} == before
    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664


# ---------------------------------------------------------------------------- 6, 7. bad input


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    """`ladder ARGS` in this process (no interpreter start per case): exit code and output."""
    from ladder.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tests.analysis_synthetic import write_ladder

    return write_ladder(tmp_path_factory.mktemp("synth"), n_evals=12)


def _edit_csv(src: Path, dst: Path, column: str, row: int, value: str) -> Path:
    dst.parent.mkdir(exist_ok=True)
    header, *body = src.read_text().strip().split("\n")
    cols = header.split(",")
    if column not in cols:
        cols.append(column)
        body = [r + ",1048576" for r in body]
    cells = body[row].split(",")
    cells[cols.index(column)] = value
    body[row] = ",".join(cells)
    dst.write_text("\n".join([",".join(cols)] + body) + "\n")
    return dst


def _observe_table(path: Path, scale: float = 1.0, flops: str | None = None, inf: bool = False) -> Path:
    rng = np.random.default_rng(0)
    rows = ["Model,Model Family,Model Size (B),Pretraining Data Size (T),FLOPs (1E21),MMLU,ARC-C,HellaSwag"]
    for i in range(14):
        acc = np.clip(0.25 + 0.05 * i + rng.normal(0, 0.01, 3), 0, 1) * scale
        f = flops if (flops and i == 3) else f"{0.01 * 2 ** i:g}"
        a = ["inf" if inf and i == 5 and j == 0 else f"{v:.4f}" for j, v in enumerate(acc)]
        rows.append(f"m{i},fam{i % 3},{i + 1},{0.1 * (i + 1):g},{f},{','.join(a)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_bad_inputs_are_one_line_errors(tmp_path, synth, finished, recipe_file, capsys):
    from tests.analysis_synthetic import ACC, write_target

    target = ("--target-name", "7B", "--target-n", "6.9e9", "--target-d", "4e11", "--tasks", "hellaswag")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    small_actual = write_target(tmp_path, size="190M", d=4e9).rename(tmp_path / "190M-4xC.csv")  # N known
    bad_recipes = {"empty.yaml": b"", "binary.yaml": bytes(range(256)), "dup.yaml": b"name: a\nname: b\n"}
    for name, data in bad_recipes.items():
        (tmp_path / name).write_bytes(data)
    cases = [
        (("predict", *synth, *target, "--n-boot", n, "--out", tmp_path / "p"), ["--n-boot must be at least 40"])
        for n in ("0", "-5", "39")] + [
        (("predict", *synth, *target, "--seed", "-1", "--out", tmp_path / "p"), ["--seed", "[0, 2^63)"]),
        (("sweep", recipe_file, "--dry-run", "--n-boot", "20"), ["--n-boot must be at least 40"]),
        (("train", recipe_file, "--seed", "-1", "--out", tmp_path / "t"), ["--seed", "[0, 2^63)"]),
        (("train", recipe_file, "--cache", a_file, "--out", tmp_path / "t"), ["--cache", "not a directory"]),
        (("predict", *synth, "--target-name", "x", "--target-n", "inf", "--target-d", "1e9", "--out",
          tmp_path / "p"), ["--target-n", "positive finite"]),
        (("predict", *synth[:2], *target, "--out", tmp_path / "p"), ["at least 3 runs"]),
        (("predict", *synth, *target, "--actual", small_actual, "--out", tmp_path / "p"), ["--actual", "N ="]),
        (("predict", *synth, *target, "--out", a_file), ["exists and is not a directory"]),
        (("predict", *synth[1:], _edit_csv(synth[0], tmp_path / "acc" / "190M-1xC.csv", ACC, 4, "7.5"), *target,
          "--out", tmp_path / "p"), [ACC, "7.5", "fractions in [0, 1]"]),
        (("predict", *synth[1:], _edit_csv(synth[0], tmp_path / "bs" / "190M-1xC.csv", "batch_size_in_tokens",
                                           2, "inf"), *target, "--out", tmp_path / "p"), ["batch_size_in_tokens"]),
        (("backtest", *synth, "--out", a_file), ["exists and is not a directory"]),
        (("backtest", *synth, "--intervals", "--n-boot", "5", "--out", tmp_path / "b"), ["--n-boot"]),
        (("plan-ladder", *synth, "--out", a_file), ["exists and is not a directory"]),
        (("observe", _observe_table(tmp_path / "pct.csv", scale=100), "--target", "HellaSwag", "--test-fraction", "0.3",
          "--predictors", "MMLU,ARC-C", "--out", tmp_path / "o"), ["'MMLU'", "fractions in [0, 1]"]),
        (("observe", _observe_table(tmp_path / "inf.csv", inf=True), "--target", "HellaSwag", "--test-fraction", "0.3", "--out",
          tmp_path / "o"), ["'MMLU'", "inf"]),
        (("observe", _observe_table(tmp_path / "txt.csv", flops="lots"), "--target", "HellaSwag", "--test-fraction", "0.3", "--out",
          tmp_path / "o"), ["FLOPs (1E21)", "'lots'"]),
        (("train", recipe_file, "--multiplier", "-1", "--out", tmp_path / "t"), ["--multiplier", "positive"]),
        (("train", recipe_file, "--out", a_file), ["exists and is not a directory"]),
        (("eval", finished / "checkpoints" / "step0000026", "--limit", "0", "--out", tmp_path / "e.json"),
         ["--limit", "positive integer"]),
        (("eval", finished / "checkpoints" / "step0000026", "--max-length", "-5", "--out", tmp_path / "e.json"),
         ["--max-length"]),
        (("eval", finished / "checkpoints" / "step0000026", "--out", tmp_path), ["is a directory"]),
    ] + [(("train", tmp_path / name), [str(tmp_path / name)]) for name in bad_recipes]
    for args, fragments in cases:
        one_line_error(in_process(capsys, *args), *fragments)
    assert not (tmp_path / "p").exists() and not (tmp_path / "b").exists() and not (tmp_path / "o").exists()
    t = tmp_path / "t"  # at most the outcome a scheduler reads (status.json: bad input)
    assert (not t.exists() or [p.name for p in t.iterdir()] == ["status.json"]) and not list(tmp_path.glob(".*tmp*"))
    # the same through the real command line: one line, exit 2
    one_line_error(ladder("predict", *synth, *target, "--n-boot", "39", "--out", tmp_path / "p"), "--n-boot")


def test_thin_ladders_and_far_targets_are_said_once(tmp_path, synth, capsys):
    thin = [p for p in synth if p.name.startswith(("190M", "370M"))]  # two sizes
    res = in_process(capsys, "predict", *thin, "--target-name", "huge", "--target-n", "1e12", "--target-d",
                     "1e13", "--tasks", "hellaswag", "--n-boot", "40", "--no-plots", "--out", tmp_path / "p")
    assert res.returncode in (0, 1), res.stderr
    assert res.stderr.count("treat these predictions as unreliable") == 1
    assert res.stderr.count("extrapolations no backtest covers") == 2  # N and D, each once
    assert "huge: N = 1e+12" in res.stderr and "huge: D = 1e+13" in res.stderr
    (pred,) = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert any("unreliable" in w for w in pred["warnings"]) and any("1e+12" in w for w in pred["warnings"])


def test_status_survives_a_garbage_run_json(tmp_path, recipe_file, capsys):
    from ladder.recipe import load_recipe
    from ladder.sweep.sweepdir import open_sweep

    sweep = open_sweep(load_recipe(recipe_file), tmp_path / "S")
    run = sweep.run_dir(sweep.plan.rungs[0])
    run.mkdir(parents=True)
    (run / "run.json").write_text("[1, 2, 3]")
    res = in_process(capsys, "status", tmp_path / "S")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr


def test_a_damaged_cached_tokenizer_is_named(tmp_path):
    """A cached tokenizer cut short made `ladder train` say only "Expecting property name
    enclosed in double quotes": now the entry is named, with the way out."""
    from ladder.data.errors import DataError
    from ladder.data.tokenizer import load_tokenizer
    from ladder.recipe import ModelConfig

    entry = tmp_path / "tokenizers" / "bpe-512-abc"
    entry.mkdir(parents=True)
    (entry / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(DataError) as e:
        load_tokenizer(ModelConfig(tokenizer_vocab_size=512), train_docs=[], corpus_hash="abc",
                       cache=tmp_path)
    assert str(entry) in str(e.value) and "remove that directory" in str(e.value)
    assert "\n" not in str(e.value)
